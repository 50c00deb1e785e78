"""A store that keeps everything in a dict: fast, and gone at restart.

With the ``wal`` stage in its pipeline, a memory partition replays its whole
log at start and so recovers its full state. Without one its data is lost on
restart, but its sequence numbers still never go back: they are reserved in
blocks in a small file, so a restarted partition never reuses one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

from mkv.errors import StorageError
from mkv.pipeline.write import Write
from mkv.store.base import Item, StoreStats
from mkv.store.files import write_atomically

__all__ = ["MemoryStore"]

# One small fsync'd write per this many sequence numbers.
SEQ_RESERVATION = 100_000


class MemoryStore:
    kind = "memory"
    persistent = False

    def __init__(self, directory: Path | None = None) -> None:
        """Args:
        directory: where to keep the sequence reservation; None when the
            partition's log keeps the numbers (or for scratch use).
        """
        self._data: dict[bytes, Item] = {}
        self._order = _KeyOrder()
        self._seq_file = directory / "seq-reserved" if directory is not None else None
        self._reserved = 0
        if self._seq_file is not None and self._seq_file.exists():
            self._reserved = int(self._seq_file.read_text())
        # After a restart everything up to the old reservation may have been
        # handed out, so numbering resumes above it.
        self._last_seq = self._reserved
        self._last_timestamp = 0

    def last_seq(self) -> int:
        return self._last_seq

    def last_timestamp(self) -> int:
        return self._last_timestamp

    def get(self, key: bytes) -> Item | None:
        return self._data.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        return [self._data.get(key) for key in keys]

    def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int,
        *,
        keys_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, Item]]:
        keys = self._order.sorted_keys()
        data = self._data
        page: list[tuple[bytes, Item]] = []
        size = 0
        for i in range(bisect.bisect_left(keys, start), len(keys)):
            key = keys[i]
            if len(page) >= limit or (end is not None and key >= end):
                break
            item = data[key]
            if keys_only:
                item = Item(b"", item.seq, item.timestamp)
            page.append((key, item))
            size += len(key) + len(item.value)
            if max_bytes is not None and size >= max_bytes:
                break
        return page

    def apply(self, writes: Sequence[Write]) -> list[int]:
        if not writes:
            return []
        top = writes[-1].seq
        if self._seq_file is not None and top > self._reserved:
            reserved = top + SEQ_RESERVATION
            try:
                write_atomically(self._seq_file, str(reserved).encode())
            except OSError as exc:
                raise StorageError("Could not reserve sequence numbers on disk.") from exc
            self._reserved = reserved
        data = self._data
        removed: list[int] = []
        for write in writes:
            for key, value in write.puts:
                if key not in data:
                    self._order.added(key)
                data[key] = Item(value, write.seq, write.timestamp)
            count = 0
            for key in write.deletes:
                if data.pop(key, None) is not None:
                    self._order.removed(key)
                    count += 1
            removed.append(count)
            self._last_timestamp = write.timestamp or self._last_timestamp
        self._last_seq = top
        return removed

    def sync(self) -> int:
        return self._last_seq  # nothing to flush; and nothing survives a restart

    def stats(self) -> StoreStats:
        return StoreStats(key_count=len(self._data), size_bytes=0)

    def close(self) -> None:
        self._data.clear()


class _KeyOrder:
    """The dict's keys in byte order, kept lazily for scans.

    Keeping a sorted list exact on every put would cost a list insertion per
    new key (O(n) each); instead new keys collect in a set and are merged at
    the next scan (one sort, which Timsort does in about linear time for a
    sorted list plus a sorted run), and removed keys leave the list then.
    """

    def __init__(self) -> None:
        self._sorted: list[bytes] = []
        self._added: set[bytes] = set()
        # In ``_sorted`` but no longer in the store.
        self._removed: set[bytes] = set()

    def added(self, key: bytes) -> None:
        if key in self._removed:
            self._removed.discard(key)  # still in the sorted list
        else:
            self._added.add(key)

    def removed(self, key: bytes) -> None:
        if key in self._added:
            self._added.discard(key)
        else:
            self._removed.add(key)

    def sorted_keys(self) -> list[bytes]:
        if self._removed:
            removed = self._removed
            self._sorted = [key for key in self._sorted if key not in removed]
            self._removed = set()
        if self._added:
            self._sorted.extend(sorted(self._added))
            self._sorted.sort()
            self._added = set()
        return self._sorted
