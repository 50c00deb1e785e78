"""A partition's recent mutations, for watchers: bounded, in order. Sans-I/O.

Every write the partition applies is appended (as the Write it already has,
or the log payload it was replayed from: nothing is copied per key on the
write path). The oldest are dropped once the feed holds more than its byte
budget; ``retained_after`` says from where it is complete. Watchers keep only
a position (a sequence number), never a buffer of their own, so the memory a
partition spends on watchers is this feed, however many there are and however
slowly they read.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import attrs

from mkv.errors import CompactedError
from mkv.pipeline.payload import decode_write
from mkv.records import Write

__all__ = ["WATCH_RETENTION_BYTES", "Change", "ChangeFeed", "FeedEntry"]

# Recent mutations a partition keeps for watchers, by default (Config).
WATCH_RETENTION_BYTES = 16 * 1024 * 1024

# What one retained write costs beyond its payload: the Write, its lists and
# tuples, and the entry (an estimate; the budget is approximate by design).
ENTRY_OVERHEAD = 256
PER_KEY_OVERHEAD = 120


@attrs.frozen
class Change:
    key: bytes
    # None for a removal.
    value: bytes | None
    seq: int
    timestamp: int


@attrs.frozen
class FeedEntry:
    seq: int
    timestamp: int
    # Bytes this entry is charged against the budget.
    cost: int
    # Decoded, or the log payload it decodes from (entries loaded at start).
    write: Write | None = None
    payload: bytes | None = None

    def changes(self, start: bytes, end: bytes | None) -> Iterator[Change]:
        """The write's mutations of keys in ``[start, end)``, in the order applied."""
        write = self.write
        if write is None:
            assert self.payload is not None
            write = decode_write(self.payload, self.seq, self.timestamp)
        for key, value in write.puts:
            if key >= start and (end is None or key < end):
                yield Change(key, value, self.seq, self.timestamp)
        for key in write.deletes:
            if key >= start and (end is None or key < end):
                yield Change(key, None, self.seq, self.timestamp)


class ChangeFeed:
    """Applied writes after ``retained_after``, oldest first, within ``max_bytes``."""

    def __init__(self, max_bytes: int, retained_after: int) -> None:
        self.max_bytes = max_bytes
        # Every applied write numbered above this is in the feed.
        self.retained_after = retained_after
        # The newest write appended (or, before any, where the feed starts).
        self.last_seq = retained_after
        # Slots before _head are evicted (None) until the next compaction.
        self._entries: list[FeedEntry | None] = []
        self._seqs: list[int] = []
        # Running total of cost through each entry, to measure a watcher's lag.
        self._cumulative: list[int] = []
        self._head = 0
        self._bytes = 0
        self._total = 0
        # Watch streams reading this feed now (mkv.node.watching counts them), for metrics.
        self.watchers = 0

    @property
    def bytes_retained(self) -> int:
        return self._bytes

    def append(self, entry: FeedEntry) -> None:
        assert entry.seq > self.last_seq, "writes are appended in sequence order"
        self._entries.append(entry)
        self._seqs.append(entry.seq)
        self._total += entry.cost
        self._cumulative.append(self._total)
        self._bytes += entry.cost
        self.last_seq = entry.seq
        while self._bytes > self.max_bytes and self._head < len(self._entries) - 1:
            dropped = self._entries[self._head]
            assert dropped is not None
            self._bytes -= dropped.cost
            self.retained_after = dropped.seq
            # Let the write go now, not at the next compaction: that waits for
            # 1,024 evictions, which for 1 MiB batches kept a gigabyte alive
            # (a memory partition loaded with 1M keys held twice its data).
            self._entries[self._head] = None
            self._head += 1
        if self._head > 1024 and self._head * 2 > len(self._entries):
            # Drop the evicted slots now and then, not per append (a list shift is O(n)).
            del self._entries[: self._head]
            del self._seqs[: self._head]
            del self._cumulative[: self._head]
            self._head = 0

    def restart_after(self, seq: int) -> None:
        """Let the (empty) feed start after ``seq``: writes up to it are not
        retained. For loading only the newest logged writes at start."""
        assert not self._entries, "only an empty feed restarts"
        self.retained_after = max(self.retained_after, seq)
        self.last_seq = max(self.last_seq, seq)

    def inherit(self, other: ChangeFeed, start: bytes, end: bytes | None) -> None:
        """Take ``other``'s retained changes of ``[start, end)`` as this (empty)
        feed's history: a split's new partition, so that a watcher of the
        moved range can resume on it from a position taken on the parent."""
        assert not self._entries, "only an empty feed inherits"
        assert other.last_seq <= self.last_seq, "the parent's history ends at the cut-over"
        last_seq = self.last_seq
        self.retained_after = self.last_seq = other.retained_after
        for entry in other._entries[other._head :]:
            assert entry is not None
            changes = list(entry.changes(start, end))
            if not changes:
                continue
            write = Write(
                puts=[(c.key, value) for c in changes if (value := c.value) is not None],
                deletes=[c.key for c in changes if c.value is None],
                seq=entry.seq,
                timestamp=entry.timestamp,
            )
            cost = entry_cost(write, None, write.size, len(changes))
            self.append(FeedEntry(entry.seq, entry.timestamp, cost, write=write))
        self.last_seq = last_seq

    def skip_to(self, seq: int) -> None:
        """Sequence numbers up to ``seq`` were used without a change being
        applied (a failed write): the feed is still complete through them."""
        self.last_seq = max(self.last_seq, seq)

    def read(self, after_seq: int, max_bytes: int) -> list[FeedEntry]:
        """Entries numbered above ``after_seq``, oldest first, about ``max_bytes``
        of them (always at least one when there is one).

        Raises:
            CompactedError: entries above ``after_seq`` were already dropped.
        """
        self.check_retained(after_seq)
        start = bisect.bisect_right(self._seqs, after_seq, lo=self._head)
        out: list[FeedEntry] = []
        size = 0
        entries = self._entries
        for i in range(start, len(entries)):
            entry = entries[i]
            assert entry is not None  # at or after _head
            if out and size + entry.cost > max_bytes:
                break
            out.append(entry)
            size += entry.cost
        return out

    def lag_bytes(self, after_seq: int) -> int:
        """How many bytes of entries lie above ``after_seq`` (a watcher's lag)."""
        start = bisect.bisect_right(self._seqs, after_seq, lo=self._head)
        if start >= len(self._entries):
            return 0
        entry = self._entries[start]
        assert entry is not None  # at or after _head
        return self._total - self._cumulative[start] + entry.cost

    def check_retained(self, after_seq: int) -> None:
        """Raises:
        CompactedError: writes numbered above ``after_seq`` were already dropped.
        """
        if after_seq < self.retained_after:
            raise CompactedError(
                f"Changes after seq {after_seq} are no longer retained (the oldest kept "
                f"follow seq {self.retained_after}); read the range with a scan and "
                "watch from the scan's seq."
            )


def entry_cost(write: Write | None, payload: bytes | None, size: int, keys: int) -> int:
    """Bytes to charge for a retained write of ``size`` payload bytes and ``keys`` keys."""
    decoded = 0 if write is None else size + PER_KEY_OVERHEAD * keys
    raw = 0 if payload is None else len(payload)
    return ENTRY_OVERHEAD + decoded + raw
