"""Restoring a partition from a snapshot: open, copy while hashing, check, rebuild, install.

The manifest and its data file are opened through the checked directory
(``mkv.snapshots.paths``), never following a symlink. The data file is then
copied into the new partition's directory and hashed as it is copied, so what
is checked next is exactly the bytes whose size and SHA-256 matched the
manifest (checking the file first and copying it after would leave room for
it to change between the two). That private copy is then checked to be what
mkv writes, and its rows copied into a fresh store (``mkv.snapshots.check``):
the partition never opens the snapshot's own file, so nothing in it but its
checked rows reaches the partition. The fresh store is installed for the
store kind (``mkv.snapshots.stores.install``). Any failure removes both
files; the registry removes the partition's directory and never names it in
its catalog.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mkv.errors import InvalidArgumentError, StorageError, shown
from mkv.router import KeyRange
from mkv.snapshots.check import SnapshotFile
from mkv.snapshots.manifest import Manifest, SnapshotCorruptError, read_manifest_at
from mkv.snapshots.paths import SnapshotRoot
from mkv.snapshots.stores import install
from mkv.store import StoreOptions
from mkv.store.files import fsync_directory

__all__ = ["RestoreSource", "restored_range"]

_CHUNK = 1024 * 1024
_COPY_NAME = "restore.sqlite3.tmp"
_FRESH_NAME = "restore-fresh.sqlite3.tmp"


class RestoreSource:
    """A snapshot opened for restore: its manifest, and its data file held open."""

    def __init__(self, manifest: Manifest, data_fd: int, path: str) -> None:
        self.manifest = manifest
        self.path = path
        self._data_fd = data_fd

    @classmethod
    def open(cls, root: SnapshotRoot, text: str) -> RestoreSource:
        """Open the manifest at ``text`` (inside ``root``) and its data file; blocking.

        Raises:
            InvalidArgumentError: a bad or outside path, no such manifest or
                data file, or not a valid manifest.
        """
        target = root.check_file(text)
        assert target.name is not None
        directory = root.open_directory(target, create=False)
        try:
            manifest = read_manifest_at(directory, target.name)
            try:
                data_fd = os.open(
                    manifest.file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                )
            except FileNotFoundError:
                raise SnapshotCorruptError(
                    f"The snapshot's data file {shown(manifest.file)} is missing."
                ) from None
            except OSError as exc:
                raise InvalidArgumentError(
                    f"Cannot open the snapshot's data file {shown(manifest.file)} ({exc.strerror})."
                ) from None
        finally:
            os.close(directory)
        return cls(manifest, data_fd, target.relative)

    def close(self) -> None:
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1

    def restore_into(self, directory: Path, store_kind: str, options: StoreOptions) -> None:
        """Copy, check and install the snapshot as the store of a new partition
        in ``directory`` (created here) with ``options``; blocking.

        Raises:
            SnapshotCorruptError: the data file's size or SHA-256 is not the manifest's.
            InvalidArgumentError: the data is not what mkv writes at the
                manifest's seq and range (``mkv.snapshots.check``).
            StorageError: the partition's directory cannot be written.
        """
        copy = directory / _COPY_NAME
        fresh = directory / _FRESH_NAME
        try:
            directory.mkdir(exist_ok=True)
            # The new directory's entry must last as long as what goes in it.
            fsync_directory(directory.parent)
            self._copy_checked(copy)
            with SnapshotFile(copy, self.manifest) as snapshot:
                snapshot.copy_into(fresh)
            copy.unlink()
            install(store_kind, directory, fresh, options)
        except OSError as exc:
            raise StorageError(f"Cannot write the restored partition ({exc.strerror}).") from exc
        finally:
            copy.unlink(missing_ok=True)
            fresh.unlink(missing_ok=True)

    def _copy_checked(self, copy: Path) -> None:
        manifest = self.manifest
        size = os.fstat(self._data_fd).st_size
        if size != manifest.size:
            raise SnapshotCorruptError(
                f"The snapshot's data file is {size} bytes; its manifest says {manifest.size}."
            )
        digest = hashlib.sha256()
        done = 0
        with open(copy, "wb") as out:
            while chunk := os.pread(self._data_fd, _CHUNK, done):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
        # Not fsynced: only read once, here, and then deleted; the fresh
        # store built from it is what must be durable.
        if done != manifest.size:
            raise SnapshotCorruptError(
                f"The snapshot's data file changed size while it was read ({done} bytes)."
            )
        if digest.hexdigest() != manifest.sha256:
            raise SnapshotCorruptError(
                "The snapshot's data file does not match its manifest's SHA-256 checksum."
            )


def restored_range(start: bytes, end: bytes | None, manifest: Manifest) -> KeyRange:
    """The range a partition restored from ``manifest`` gets.

    ``[b"", None)`` (what an AddPartition without a range says) means the
    manifest's range; any other range must be the manifest's: a partition
    holding keys outside its own range would serve none of them.

    Raises:
        InvalidArgumentError: another range was asked for.
    """
    own = KeyRange(manifest.start, manifest.end)
    asked = KeyRange(start, end)
    if asked == own or asked == KeyRange(b"", None):
        return own
    raise InvalidArgumentError(
        f"The snapshot holds range {own}; a partition restored from it takes that range "
        "(give no range, or exactly that one)."
    )
