"""Keep a large file's dirty pages few while it is written, and its thread in the background.

Copying a gigabyte into the page cache and fsyncing it at the end does two
bad things to a server that fsyncs its log on every write: the kernel lets
the dirty pages pile up until every process that writes is throttled (the
log's writer included), and the final fsync floods the disk queue in one go.
So as the copy goes on, ``Writeback.advance`` starts writing each new range
to disk at once and waits for ranges more than ``window`` bytes behind, which
bounds the copy's dirty pages (as RocksDB's ``bytes_per_sync`` does). The
final fsync then has little left to do.

``sync_file_range`` is Linux's; Python has no binding for it, so it is called
through ctypes. Where it is missing this does nothing, and the final fsync
does all the work, as it would anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable

__all__ = ["WINDOW", "Writeback", "lower_thread_priority"]

log = logging.getLogger(__name__)

# Dirty bytes a copy may have in flight before it waits for the disk.
WINDOW = 64 * 1024 * 1024

_WAIT_BEFORE = 1
_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load()


class Writeback:
    """Starts writeback of a file's new bytes as they are written; blocking calls."""

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        self._fd = fd
        self._window = window
        self._started = 0
        self._waited = 0

    def advance(self, written: int) -> None:
        """The file's first ``written`` bytes are written (to the page cache)."""
        if _sync_file_range is None or written <= self._started:
            return
        # Failure only means the final fsync does more: never worth failing a snapshot.
        if _sync_file_range(self._fd, self._started, written - self._started, _WRITE) != 0:
            return
        self._started = written
        behind = written - self._window
        if behind > self._waited:
            _sync_file_range(self._fd, self._waited, behind - self._waited, _WAIT_BEFORE)
            self._waited = behind


def lower_thread_priority(niceness: int) -> None:
    """Make the calling thread yield the CPU to the others (Linux: a nice value
    per thread). Use only on a thread that ends with its work: an unprivileged
    process can never raise a thread's priority again."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
