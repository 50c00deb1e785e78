"""Fetch one snapshot from remote storage into a local directory, ready for restore.

Data first, then the manifest, as everywhere: the data is downloaded under a
temporary name and checked against the remote manifest's size and SHA-256,
and then to be what mkv writes (``mkv.snapshots.check``: schema, meta, every
row; the same checks a restore makes again), before it takes its real name.
So a corrupt or forged remote copy leaves nothing behind, and a local
manifest exists only beside data that matches it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path, PurePosixPath

from mkv.errors import InvalidArgumentError, shown
from mkv.sidecar.backoff import RetryPolicy, retrying
from mkv.sidecar.destination import TransferOptions
from mkv.sidecar.errors import DestinationError, SidecarConfigError
from mkv.sidecar.locations import open_destination, split_location
from mkv.sidecar.scan import MAX_MANIFEST_BYTES
from mkv.snapshots.check import check_snapshot_file
from mkv.snapshots.manifest import (
    MANIFEST_SUFFIX,
    Manifest,
    SnapshotCorruptError,
    file_sha256,
)
from mkv.store.files import fsync_directory, make_directory, write_atomically

__all__ = ["download_snapshot"]


def download_snapshot(
    location: str,
    local_dir: Path,
    options: TransferOptions,
    *,
    retry: RetryPolicy | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Download the snapshot whose manifest is at ``location``; return the local manifest's path.

    Args:
        location: ``s3://bucket/key.manifest.json``, ``file:///path/...`` or a path.

    Raises:
        SidecarConfigError: ``location`` is not a manifest's, or a different
            snapshot already has that name in ``local_dir``.
        InvalidArgumentError: the remote manifest is malformed.
        SnapshotCorruptError: the remote data does not match its manifest.
        InvalidArgumentError: the remote data is not what mkv writes
            (``mkv.snapshots.check``); nothing was kept.
        DestinationError: the remote storage failed (after retries) or has no such snapshot.
        SidecarStopped: ``stop`` was set.
    """
    retry = retry or RetryPolicy()
    stop = stop or threading.Event()
    base, manifest_key = split_location(location)
    name = PurePosixPath(manifest_key).name
    if not name.endswith(MANIFEST_SUFFIX) or name == MANIFEST_SUFFIX:
        raise SidecarConfigError(
            f"'{shown(location, 80)}' is not a snapshot manifest "
            f"(its name ends in {MANIFEST_SUFFIX})."
        )
    destination = open_destination(base, options)
    try:
        raw = retrying(
            retry,
            stop,
            f"download of {name}",
            lambda: destination.get_small(manifest_key, MAX_MANIFEST_BYTES),
        )
        if raw is None:
            raise DestinationError(
                f"There is no snapshot manifest at {shown(location, 80)}.", retryable=False
            )
        manifest = _parse(raw, name)
        make_directory(local_dir)
        local_manifest = local_dir / name
        local_data = local_dir / manifest.file
        if local_manifest.exists():
            if local_manifest.read_bytes() == raw and _matches(local_data, manifest):
                return local_manifest  # downloaded before: nothing to do
            raise SidecarConfigError(
                f"{shown(str(local_manifest), 80)} already exists and is another snapshot; "
                "remove it or download elsewhere."
            )
        data_key = str(PurePosixPath(manifest_key).with_name(manifest.file))
        part = local_dir / f".{manifest.file}.part"
        try:
            retrying(
                retry,
                stop,
                f"download of {manifest.file}",
                lambda: destination.get_file(data_key, part, stop=stop),
            )
            if not _matches(part, manifest):
                raise SnapshotCorruptError(
                    "The downloaded data file does not match its manifest's size and "
                    "SHA-256; the remote copy is corrupt and nothing was kept."
                )
            # A bucket is no more trusted than the snapshot root: whoever can
            # write the data can write its manifest too.
            check_snapshot_file(part, manifest)
            _fsync(part)
            os.replace(part, local_data)
            fsync_directory(local_dir)
        finally:
            part.unlink(missing_ok=True)
        write_atomically(local_manifest, raw)
        return local_manifest
    finally:
        destination.close()


def _parse(raw: bytes, name: str) -> Manifest:
    try:
        manifest = Manifest.from_json(json.loads(raw))
    except ValueError:
        raise InvalidArgumentError("The remote snapshot manifest is not JSON.") from None
    if manifest.file + MANIFEST_SUFFIX != name:
        raise InvalidArgumentError(
            "The remote snapshot manifest names a data file other than the one beside it."
        )
    return manifest


def _matches(path: Path, manifest: Manifest) -> bool:
    try:
        return path.stat().st_size == manifest.size and file_sha256(path) == manifest.sha256
    except FileNotFoundError:
        return False


def _fsync(path: Path) -> None:
    # s3transfer writes and renames the file but does not fsync it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
