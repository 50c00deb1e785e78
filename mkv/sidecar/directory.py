"""A plain directory as the destination: a mounted share, another disk, a test.

Every file is written the way mkv writes its own: under a temporary name
(``.<name>.part``), fsynced, renamed into place, the directory fsynced. A
sidecar killed mid-copy leaves only the temporary file, which no reader takes
for a snapshot and the next upload of the same key overwrites.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path, PurePosixPath

from mkv.errors import shown
from mkv.sidecar.destination import Destination, TransferOptions
from mkv.sidecar.errors import DestinationError, SidecarStopped
from mkv.snapshots.manifest import file_sha256
from mkv.store.files import fsync_directory, make_directory, write_atomically

__all__ = ["DirectoryDestination", "Throttle", "copy_file"]

_CHUNK = 1 << 20


class Throttle:
    """Holds a copy to ``rate`` bytes per second on average, measured from its start."""

    def __init__(self, rate: int | None, stop: threading.Event) -> None:
        self.rate = rate
        self.stop = stop
        self.started = time.monotonic()
        self.done = 0

    def wait_for(self, nbytes: int) -> None:
        """Account for ``nbytes`` more and sleep until they are within the rate.

        Raises:
            SidecarStopped: ``stop`` was set (checked on every chunk).
        """
        self.done += nbytes
        if self.rate is not None:
            ahead = self.done / self.rate - (time.monotonic() - self.started)
            if ahead > 0 and self.stop.wait(ahead):
                raise SidecarStopped
        if self.stop.is_set():
            raise SidecarStopped


def copy_file(source: Path, target: Path, *, rate: int | None, stop: threading.Event) -> None:
    """Copy ``source`` to ``target`` (a temporary name) in chunks, fsynced; blocking.

    Raises:
        OSError: either file failed.
        SidecarStopped: ``stop`` was set; ``target`` is removed.
    """
    throttle = Throttle(rate, stop)
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                throttle.wait_for(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise


class DirectoryDestination(Destination):
    def __init__(self, base: Path, options: TransferOptions) -> None:
        self.base = base
        self.options = options
        self.url = base.as_uri()

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        # Keys come from the scan of the snapshot root (or one file name for
        # download); refuse anything that could step outside the base anyway.
        if (
            not parts
            or any(p in ("", ".", "..") for p in parts)
            or PurePosixPath(key).is_absolute()
        ):
            raise DestinationError(f"'{shown(key, 80)}' is not a valid key.", retryable=False)
        return self.base.joinpath(*parts)

    def get_small(self, key: str, limit: int) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _failed("read", path, exc) from None
        if len(data) > limit:
            raise DestinationError(
                f"{shown(str(path), 80)} is larger than {limit} bytes.", retryable=False
            )
        return data

    def data_matches(self, key: str, size: int, sha256: str) -> bool:
        path = self._path(key)
        try:
            if path.stat().st_size != size:
                return False
            return file_sha256(path) == sha256
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _failed("read", path, exc) from None

    def put_file(self, key: str, source: Path, *, sha256: str, stop: threading.Event) -> None:
        path = self._path(key)
        part = path.with_name(f".{path.name}.part")
        try:
            make_directory(path.parent)
            copy_file(source, part, rate=self.options.max_bandwidth, stop=stop)
            os.replace(part, path)
            fsync_directory(path.parent)
        except OSError as exc:
            raise _failed("write", path, exc) from None

    def put_small(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            make_directory(path.parent)
            write_atomically(path, data)
        except OSError as exc:
            raise _failed("write", path, exc) from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            if path.parent.exists():
                fsync_directory(path.parent)
        except OSError as exc:
            raise _failed("delete", path, exc) from None

    def get_file(self, key: str, target: Path, *, stop: threading.Event) -> None:
        path = self._path(key)
        if not path.is_file():
            raise DestinationError(f"There is no {shown(str(path), 80)}.", retryable=False)
        try:
            copy_file(path, target, rate=self.options.max_bandwidth, stop=stop)
        except OSError as exc:
            raise _failed("read", path, exc) from None


def _failed(verb: str, path: Path, exc: OSError) -> DestinationError:
    return DestinationError(f"Cannot {verb} {shown(str(path), 80)} ({exc.strerror or exc}).")
