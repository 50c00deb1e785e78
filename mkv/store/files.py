"""Crash-safe file replacement, shared by the catalog and the stores."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory", "write_atomically"]


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
