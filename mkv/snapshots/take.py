"""Taking one snapshot: capture, copy, fsync, checksum, rename, manifest.

The order is what makes a crash at any moment harmless:

1. the state is captured at one sequence number (a ``Read``: between writes);
2. it is written to ``.mkv-snapshot-<operation>.tmp`` in the target
   directory (a name no snapshot has), then fsynced, and hashed meanwhile;
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
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from mkv.errors import InvalidArgumentError, StorageError
from mkv.operations import Operation, run_stoppable
from mkv.partition import Partition, Read
from mkv.snapshots.manifest import Manifest, fd_sha256, utc_now, write_manifest_at
from mkv.snapshots.paths import Target
from mkv.snapshots.stores import Capture, begin_capture

__all__ = ["SnapshotResult", "take_snapshot"]

TEMP_PREFIX = ".mkv-snapshot-"
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
    try:
        await _remove_stale(directory, running_ids)
        capture = await partition.submit(Read(begin_capture))
        assert capture is not None
        operation.report("copy", 0, 0)
        fd = await trio.to_thread.run_sync(_create, directory, temp)
        try:
            await run_stoppable(lambda stop: _copy(capture, directory, temp, fd, operation, stop))
            size = os.fstat(fd).st_size
            operation.report("checksum", 0, size)
            sha256 = await _sync_and_hash(fd, operation, size)
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
        )
        manifest_name = await trio.to_thread.run_sync(write_manifest_at, directory, manifest)
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


def _copy(
    capture: Capture,
    directory: int,
    name: str,
    fd: int,
    operation: Operation,
    stop: threading.Event,
) -> None:
    def report(done: int, total: int, unit: str) -> None:
        operation.report("copy", done, total, unit)

    capture.write(_by_name(directory, name), report, stop)
    # SQLite opened the file by name. If that name led anywhere but to the
    # file created above in the checked directory (a directory swapped for a
    # symlink meanwhile), that file is still empty: refuse the snapshot.
    ours, named = os.fstat(fd), os.stat(name, dir_fd=directory, follow_symlinks=False)
    if ours.st_size == 0 or (ours.st_dev, ours.st_ino) != (named.st_dev, named.st_ino):
        raise InvalidArgumentError(
            "The snapshot directory changed while the snapshot was written; it was abandoned."
        )


def _by_name(directory: int, name: str) -> str:
    """A name SQLite can open that leads through the open descriptor ``directory``."""
    via_proc = Path(f"/proc/self/fd/{directory}")
    if via_proc.is_dir():
        return str(via_proc / name)
    raise StorageError("Snapshots need /proc (Linux) to open files in a checked directory.")


async def _sync_and_hash(fd: int, operation: Operation, size: int) -> str:
    """fsync the file and hash it side by side: one is disk-bound, the other
    CPU-bound on pages still in memory, and both release the GIL."""

    def report(done: int) -> None:
        operation.report("checksum", done, size)

    digest: list[str] = []

    async def hash_it() -> None:
        digest.append(await trio.to_thread.run_sync(fd_sha256, fd, report))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hash_it)
        await trio.to_thread.run_sync(os.fsync, fd)
    return digest[0]


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
