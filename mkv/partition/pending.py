"""Writes a partition has numbered but not yet applied: the state they will
leave, for decisions made before they reach the store. Sans-I/O.

Conditional writes and increments are decided when they are admitted, while
earlier writes may still be in the log's group commit. The state they must see
is the store plus those writes, newest last. Indexing every write by key as it
is admitted would cost a dict update per key on the hot path (a 1 MiB batch
holds ~9,000), so the index is built only when a decision needs it, and only
over the writes admitted since the last time.
"""

from __future__ import annotations

from collections import deque

from mkv.records import Write
from mkv.store.base import Item

__all__ = ["PendingWrites"]


class PendingWrites:
    def __init__(self) -> None:
        self._writes: deque[Write] = deque()
        # key → (its state after the newest indexed write that touches it, that write's seq)
        self._index: dict[bytes, tuple[Item | None, int]] = {}
        self._indexed_through = 0

    def __len__(self) -> int:
        return len(self._writes)

    def numbered(self, write: Write) -> None:
        """``write`` got its sequence number; writes come in sequence order."""
        assert not self._writes or self._writes[-1].seq < write.seq
        self._writes.append(write)

    def released(self, seq: int) -> None:
        """The oldest write, numbered ``seq``, is applied or has failed."""
        write = self._writes.popleft()
        assert write.seq == seq, "writes are released in sequence order"
        if seq <= self._indexed_through:
            index = self._index
            for key in _keys(write):
                if key in index and index[key][1] == seq:
                    del index[key]

    def lookup(self, key: bytes) -> tuple[Item | None, int] | None:
        """The state the pending writes leave ``key`` in, and the seq of the
        write that set it; None when no pending write touches the key."""
        if not self._writes:
            return None
        if self._writes[-1].seq > self._indexed_through:
            self._index_new()
        return self._index.get(key)

    def _index_new(self) -> None:
        new: list[Write] = []
        for write in reversed(self._writes):
            if write.seq <= self._indexed_through:
                break
            new.append(write)
        index = self._index
        for write in reversed(new):
            seq = write.seq
            for key, value in write.puts:
                index[key] = (Item(value, seq, write.timestamp), seq)
            for key in write.deletes:
                index[key] = (None, seq)
        self._indexed_through = self._writes[-1].seq


def _keys(write: Write) -> list[bytes]:
    return [key for key, _ in write.puts] + list(write.deletes)
