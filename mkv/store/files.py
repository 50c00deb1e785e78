"""Crash-safe file replacement and directory creation, shared by the catalog,
the stores, the log and snapshots.

A power cut keeps a new file or directory only if the directory that names
it was fsynced afterwards (fsyncing the file itself keeps its data, not its
name); tests/test_powercut.py runs the server on a file system that holds
mkv to exactly that.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_directory", "make_directory", "write_atomically"]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.

    Writes a temporary file, fsyncs it, renames it over ``path`` and fsyncs the
    directory, so the rename itself is durable. Blocking: call from a thread.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: Path) -> None:
    """``path.mkdir(parents=True, exist_ok=True)`` that a power cut cannot undo.

    Each directory it creates has its parent fsynced after it; the parent of
    ``path`` is fsynced even when ``path`` existed already, since whoever
    made it may have died before its fsync. Blocking: call from a thread.

    Raises:
        FileExistsError: ``path`` (or a parent) exists and is not a directory.
        OSError: a directory cannot be made or fsynced.
    """
    missing = []
    directory = path
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        # Made by someone else since: checked below, and fsynced here too.
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        fsync_directory(directory.parent)
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if not missing:
        fsync_directory(path.parent)
