"""A store that keeps everything in a dict: fast, and gone at restart.

Its data does not survive a restart (the write-ahead log of a later issue
brings that). Its sequence numbers do: they are reserved in blocks in a small
file, so a restarted partition never reuses one, as the partition contract
requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mkv.errors import StorageError
from mkv.store.base import Item, Mutation, StoreStats
from mkv.store.files import write_atomically

__all__ = ["MemoryStore"]

# One small fsync'd write per this many sequence numbers.
SEQ_RESERVATION = 100_000


class MemoryStore:
    kind = "memory"

    def __init__(self, directory: Path | None = None) -> None:
        """Args:
        directory: where to keep the sequence reservation; None for a store
            whose numbers may restart at 0 (tests, scratch use).
        """
        self._data: dict[bytes, Item] = {}
        self._seq_file = directory / "seq-reserved" if directory is not None else None
        self._reserved = 0
        if self._seq_file is not None and self._seq_file.exists():
            self._reserved = int(self._seq_file.read_text())
        # After a restart everything up to the old reservation may have been
        # handed out, so numbering resumes above it.
        self._last_seq = self._reserved

    def last_seq(self) -> int:
        return self._last_seq

    def get(self, key: bytes) -> Item | None:
        return self._data.get(key)

    def apply(self, mutations: Sequence[Mutation]) -> list[int]:
        if not mutations:
            return []
        top = mutations[-1].seq
        if self._seq_file is not None and top > self._reserved:
            reserved = top + SEQ_RESERVATION
            try:
                write_atomically(self._seq_file, str(reserved).encode())
            except OSError as exc:
                raise StorageError("Could not reserve sequence numbers on disk.") from exc
            self._reserved = reserved
        data = self._data
        removed: list[int] = []
        for mutation in mutations:
            item_seq = mutation.seq
            for key, value in mutation.puts:
                data[key] = Item(value, item_seq)
            count = 0
            for key in mutation.deletes:
                if data.pop(key, None) is not None:
                    count += 1
            removed.append(count)
        self._last_seq = top
        return removed

    def stats(self) -> StoreStats:
        return StoreStats(key_count=len(self._data), size_bytes=0)

    def close(self) -> None:
        self._data.clear()
