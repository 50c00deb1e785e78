"""Taking one snapshot: capture, copy, fsync, checksum, rename, manifest.

The order is what makes a crash at any moment harmless:

1. the state is captured at one sequence number (a ``Read``: between writes);
2. it is written to ``.mkv-snapshot-<operation>.tmp`` in the target
   directory (a name no snapshot has), hashed and fsynced, in a thread of
   lowered priority that keeps the file's dirty pages few (see
   ``mkv.snapshots.writeback``): writers of the partition come first;
3. it is linked under its final name, ``<partition>-<seq>.sqlite3`` (or with
   ``-2``, ``-3``... when that name is taken: ``link`` never replaces a
   file), the temporary name removed and the directory fsynced;
4. the manifest is written last, the same way (``write_manifest_at``).

A crash before 4 leaves a temporary file or a data file without a manifest,
which is not a snapshot; the next snapshot into that directory removes the
temporary files no running operation owns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from mkv.errors import InvalidArgumentError, StorageError
from mkv.observe.logs import fields
from mkv.observe.metrics import SNAPSHOT_SECONDS
from mkv.operations import Operation, Stopped, run_stoppable
from mkv.partition.task import Partition, Read
from mkv.snapshots.manifest import Manifest, fd_sha256, utc_now, write_manifest_at
from mkv.snapshots.paths import Target
from mkv.snapshots.stores import Capture, begin_capture
from mkv.snapshots.writeback import Writeback, lower_thread_priority

__all__ = ["SnapshotResult", "take_snapshot"]

log = logging.getLogger(__name__)

TEMP_PREFIX = ".mkv-snapshot-"
# The copying thread's nice value: on a busy machine the partition's own
# threads (the event loop, the log's fsyncs) get the CPU first.
SNAPSHOT_NICENESS = 10
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"([0-9a-f]+)\.tmp")
# How many "-N" suffixes to try before giving up on a free name.
_MAX_SUFFIX = 1000


@attrs.frozen
class SnapshotResult:
    manifest: Manifest
    # Relative to the snapshot root.
    data_path: str
    manifest_path: str


async def take_snapshot(
    operation: Operation,
    partition: Partition,
    directory: int,
    target: Target,
    running_ids: Callable[[], set[str]],
) -> SnapshotResult:
    """Snapshot ``partition`` into the open directory ``directory`` (closed here).

    Args:
        running_ids: ids of the running operations, whose temporary files stay.

    Raises:
        UnavailableError: the partition is shutting down.
        StorageError: reading the store or writing the snapshot failed.
    """
    temp = f"{TEMP_PREFIX}{operation.id}.tmp"
    capture: Capture | None = None
    began = time.monotonic()
    try:
        await _remove_stale(directory, running_ids)
        capture = await partition.submit(Read(begin_capture))
        assert capture is not None
        operation.report("copy", 0, 0)
        fd = await trio.to_thread.run_sync(_create, directory, temp)
        try:
            size, sha256 = await run_stoppable(
                lambda stop: _write(capture, directory, temp, fd, operation, stop),
                name=f"mkv-snapshot-{partition.id}",
                setup=lambda: lower_thread_priority(SNAPSHOT_NICENESS),
            )
        finally:
            os.close(fd)
        base = f"{partition.id}-{capture.seq}"
        name = await trio.to_thread.run_sync(_publish, directory, temp, base)
        operation.report("manifest", size, size)
        manifest = Manifest(
            partition_id=partition.id,
            start=partition.range.start,
            end=partition.range.end,
            store_kind=partition.store_kind,
            seq=capture.seq,
            timestamp=capture.timestamp,
            file=name,
            size=size,
            sha256=sha256,
            created=utc_now(),
            pipeline=partition.pipeline_specs,
        )
        manifest_name = await trio.to_thread.run_sync(write_manifest_at, directory, manifest)
        SNAPSHOT_SECONDS.observe(time.monotonic() - began)  # complete snapshots only
    finally:
        with trio.CancelScope(shield=True):
            if capture is not None:
                await trio.to_thread.run_sync(capture.close)
            await trio.to_thread.run_sync(_discard, directory, temp)
            os.close(directory)
    prefix = f"{target.relative}/" if target.relative else ""
    return SnapshotResult(manifest, prefix + name, prefix + manifest_name)


async def _remove_stale(directory: int, running_ids: Callable[[], set[str]]) -> None:
    """Remove temporary files of snapshots that died with an earlier process."""
    names = await trio.to_thread.run_sync(os.listdir, directory)
    # Asked after listing: an operation creates its file only once it is running.
    running = running_ids()
    stale = [
        name
        for name in names
        if (match := _TEMP_NAME.fullmatch(name)) is not None and match[1] not in running
    ]
    for name in stale:
        await trio.to_thread.run_sync(_discard, directory, name)


def _create(directory: int, name: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, 0o644, dir_fd=directory)
    except OSError as exc:
        raise StorageError(f"Cannot create the snapshot file ({exc.strerror}).") from exc


def _write(
    capture: Capture,
    directory: int,
    name: str,
    fd: int,
    operation: Operation,
    stop: threading.Event,
) -> tuple[int, str]:
    """Write the captured state into the file ``fd`` (``name`` in
    ``directory``), hash it and fsync it; blocking. Returns its size and SHA-256."""
    began = time.monotonic()
    writeback = Writeback(fd)

    def report(done: int, total: int, unit: str) -> None:
        operation.report("copy", done, total, unit)
        writeback.advance(done if unit == "bytes" else os.fstat(fd).st_size)

    capture.write(_by_name(directory, name), report, stop)
    # SQLite opened the file by name. If that name led anywhere but to the
    # file created above in the checked directory (a directory swapped for a
    # symlink meanwhile), that file is still empty: refuse the snapshot.
    ours, named = os.fstat(fd), os.stat(name, dir_fd=directory, follow_symlinks=False)
    if ours.st_size == 0 or (ours.st_dev, ours.st_ino) != (named.st_dev, named.st_ino):
        raise InvalidArgumentError(
            "The snapshot directory changed while the snapshot was written; it was abandoned."
        )
    size = ours.st_size
    copied = time.monotonic()

    def hashed(done: int) -> None:
        if stop.is_set():
            raise Stopped
        operation.report("checksum", done, size)

    # Hashed first, while the tail is still being written back.
    sha256 = fd_sha256(fd, hashed)
    checked = time.monotonic()
    os.fsync(fd)
    log.info(
        "snapshot of %s at seq %d: %d bytes, copy %.2f s, checksum %.2f s, fsync %.2f s",
        operation.partition_id, capture.seq, size,
        copied - began, checked - copied, time.monotonic() - checked,
        extra=fields(
            event="snapshot_written", partition=operation.partition_id, seq=capture.seq,
            bytes=size,
        ),
    )  # fmt: skip
    return size, sha256


def _by_name(directory: int, name: str) -> str:
    """A name SQLite can open that leads through the open descriptor ``directory``."""
    via_proc = Path(f"/proc/self/fd/{directory}")
    if via_proc.is_dir():
        return str(via_proc / name)
    raise StorageError("Snapshots need /proc (Linux) to open files in a checked directory.")


def _publish(directory: int, temp: str, base: str) -> str:
    """Give the temporary file its final name, never replacing a file."""
    for n in range(1, _MAX_SUFFIX + 1):
        name = f"{base}.sqlite3" if n == 1 else f"{base}-{n}.sqlite3"
        try:
            os.link(temp, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StorageError(f"Cannot name the snapshot file ({exc.strerror}).") from exc
        os.unlink(temp, dir_fd=directory)
        os.fsync(directory)
        return name
    raise StorageError(f"Snapshot names {base}.sqlite3 to -{_MAX_SUFFIX} are all taken.")


def _discard(directory: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=directory)
