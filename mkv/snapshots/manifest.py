"""A snapshot's manifest: what the data file next to it holds, and its checksum.

A snapshot is two files in one directory: the data file (a SQLite database in
mkv's store layout, whatever the partition's store kind) and a manifest,
``<data file name>.manifest.json``, written last. Both are written under a
temporary name, fsynced, renamed and the directory fsynced, so a snapshot
whose manifest exists is complete, and one without a manifest is not a
snapshot at all (a crash mid-copy leaves only a temporary file).

The manifest is JSON, so people and scripts can read it::

    {"format": "mkv-snapshot/1", "partition_id": "p1",
     "range": {"start": "", "end": "6d"},   # hex; end null: unbounded
     "store_kind": "sqlite", "seq": 1234, "timestamp": 0,
     "file": "p1-1234.sqlite3", "size": 8192, "sha256": "…",
     "created": "2026-11-26T13:00:00Z",
     "pipeline": ["timestamp", "reject-prefix:u/internal/", "wal"]}

``pipeline`` (the partition's stage specs) is optional, and absent from
manifests written before mkv recorded it: a restore then cannot know the
pipeline and says so. The format name stays ``mkv-snapshot/1`` because the
field is only added: older mkv reads these manifests and ignores it.
``seq`` and ``timestamp`` must be integers in the range mkv handles
(``mkv.limits``), ``size`` a non-negative integer.

The ``*_at`` functions do the same relative to an open directory descriptor,
never following a symlink in the last component: the server writes and reads
snapshots only through directories it has checked (``mkv.snapshots.paths``).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mkv.errors import InvalidArgumentError, shown
from mkv.records import MANIFEST_FORMAT, Manifest
from mkv.store.files import write_atomically

__all__ = [
    "FORMAT",
    "MANIFEST_SUFFIX",
    "Manifest",
    "SnapshotCorruptError",
    "fd_sha256",
    "file_sha256",
    "manifest_path_for",
    "read_manifest",
    "read_manifest_at",
    "utc_now",
    "verify_snapshot",
    "write_manifest",
    "write_manifest_at",
]

# The record itself is in mkv.records: the admin client reports it too.
FORMAT = MANIFEST_FORMAT
MANIFEST_SUFFIX = ".manifest.json"
_CHUNK = 1024 * 1024
_MAX_MANIFEST_BYTES = 64 * 1024
_MAPPED_CHUNK = 8 * 1024 * 1024


class SnapshotCorruptError(InvalidArgumentError):
    """The data file does not match its manifest (size or checksum)."""


def utc_now() -> str:
    """The time now as a manifest's ``created``: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_path_for(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + MANIFEST_SUFFIX)


def write_manifest(data_file: Path, manifest: Manifest) -> Path:
    """Write the manifest of ``data_file`` atomically and durably; blocking."""
    path = manifest_path_for(data_file)
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomically(path, text.encode())
    return path


def write_manifest_at(dir_fd: int, manifest: Manifest) -> str:
    """Write the manifest of ``manifest.file`` in the directory ``dir_fd``:
    a temporary file, fsynced, renamed, the directory fsynced. Blocking.

    Returns:
        The manifest's file name.
    """
    name = manifest.file + MANIFEST_SUFFIX
    tmp = f".{name}.tmp"
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)
    return name


def read_manifest_at(dir_fd: int, name: str) -> Manifest:
    """Read the manifest ``name`` in the directory ``dir_fd`` (no symlink).

    Raises:
        InvalidArgumentError: missing, a symlink, unreadable or not a manifest.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InvalidArgumentError(f"No snapshot manifest named {shown(name)}.") from None
    except OSError as exc:
        raise InvalidArgumentError(
            f"Cannot open the snapshot manifest {shown(name)} ({exc.strerror})."
        ) from None
    try:
        with open(fd, "rb", closefd=False) as f:
            # A manifest is a few hundred bytes; a bound keeps a huge file out of memory.
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise InvalidArgumentError(f"{shown(name)} is too large to be a snapshot manifest.")
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(
            f"Cannot read the snapshot manifest {shown(name)} ({exc})."
        ) from None
    finally:
        os.close(fd)
    return Manifest.from_json(data)


def read_manifest(path: Path) -> Manifest:
    """Raises:
    InvalidArgumentError: missing, unreadable or not a manifest.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InvalidArgumentError(f"No snapshot manifest at {shown(str(path))}.") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(
            f"Cannot read the snapshot manifest {shown(str(path))} ({exc})."
        ) from None
    return Manifest.from_json(data)


def file_sha256(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in chunks; ``progress`` gets the bytes read so far."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


def fd_sha256(fd: int, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of the open file ``fd``, whatever its offset; ``progress`` gets
    the bytes hashed so far (and may raise to stop).

    Through a read-only mapping: no copy of each chunk into a new bytes
    object (a tenth of the time on a gigabyte), and the GIL is released
    while each chunk is hashed.
    """
    digest = hashlib.sha256()
    size = os.fstat(fd).st_size
    if size == 0:
        return digest.hexdigest()
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapped)
        try:
            for start in range(0, size, _MAPPED_CHUNK):
                digest.update(view[start : start + _MAPPED_CHUNK])
                if progress is not None:
                    progress(min(size, start + _MAPPED_CHUNK))
        finally:
            view.release()
    return digest.hexdigest()


def verify_snapshot(manifest_path: Path) -> tuple[Manifest, Path]:
    """Read a manifest and check its data file; blocking. Returns both.

    Raises:
        InvalidArgumentError: no valid manifest.
        SnapshotCorruptError: the data file is missing, or its size or
            checksum differs from the manifest's.
    """
    manifest = read_manifest(manifest_path)
    data_file = manifest_path.parent / manifest.file
    try:
        size = data_file.stat().st_size
    except FileNotFoundError:
        raise SnapshotCorruptError(
            f"The snapshot's data file {shown(manifest.file)} is missing."
        ) from None
    if size != manifest.size:
        raise SnapshotCorruptError(
            f"The snapshot's data file is {size} bytes; its manifest says {manifest.size}."
        )
    if file_sha256(data_file) != manifest.sha256:
        raise SnapshotCorruptError(
            "The snapshot's data file does not match its manifest's SHA-256 checksum."
        )
    return manifest, data_file
