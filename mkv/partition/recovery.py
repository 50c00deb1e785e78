"""Bringing a partition's store and watch feed up to its write-ahead log at start.

Replay reads every record the log holds: the ones the store has not applied
go to the store, and the newest ones (as many as the feed's byte budget
keeps) go to the watch feed. Both are done in bulk, because start-up time is
replay time: a Python object per record (a ``Record``, a ``Write``, a feed
entry) cost over 30 µs a record, and a million records took half a minute.

- Records come from the log as ``(seq, timestamp, payload)`` tuples, a read
  chunk at a time.
- The most common record by far is an upsert of one key (its request bytes:
  one ``puts`` entry, perhaps a ``map_version``). Its shape is recognised
  from its first bytes, and a run of such records is decoded with one
  protobuf parse of their concatenation (protobuf appends the repeated
  fields of concatenated messages), which gives exactly one entry per
  record, in order. Any other record is decoded on its own.
- Stores that can (``PutApplying``) take the runs as plain rows, with no
  ``Write`` per record; the rest get ``Write`` objects.
- Only the records that the feed's budget would keep become feed entries;
  the older ones are counted and dropped as the feed itself would drop them.

Blocking throughout: runs on the partition's worker thread.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from mkv.errors import StorageError
from mkv.partition.feed import ENTRY_OVERHEAD, ChangeFeed, FeedEntry, entry_cost
from mkv.pipeline.payload import decode_write
from mkv.records import Write
from mkv.store.base import StateStore
from mkv.store.files import fsync_directory
from mkv.store.sqlite import StoreDamagedError
from mkv.v1 import wal_pb2

__all__ = ["PutApplying", "replay_log", "set_aside_for_rebuild"]

Record = tuple[int, int, bytes]  # seq, timestamp, payload
Row = tuple[bytes, bytes, int, int]  # key, value, seq, timestamp

# Payload bytes applied to the store in one transaction, at most (about).
MAX_APPLY_BYTES = 8 * 1024 * 1024
_PUTS_TAG = 0x0A  # field 1 (puts, as UpsertRequest's entries), length-delimited
_MAP_VERSION_TAG = 0x10  # field 2 (UpsertRequest.map_version), varint


@runtime_checkable
class PutApplying(Protocol):
    """A store that can apply plain rows of puts (replay's fast path)."""

    def apply_puts(self, rows: Sequence[Row]) -> None:
        """Apply ``(key, value, seq, timestamp)`` rows in order, all or none;
        the last row's seq becomes the store's ``last_seq``; blocking.

        Raises:
            StorageError: nothing was applied.
        """
        ...


class _Source(Protocol):
    def record_batches(self, after_seq: int) -> Iterator[list[Record]]: ...

    @property
    def base_seq(self) -> int: ...


def replay_log(
    store: StateStore, wal: _Source, feed: ChangeFeed, *, through: int | None = None
) -> int:
    """Apply the logged writes the store has not seen, and load the newest
    logged writes into ``feed`` (an empty feed starting at the log's
    ``base_seq``). Returns how many writes were applied.

    ``through``: apply (and feed) nothing above it: a replica's log may hold
    writes past the commit it knew, which its store must not hold yet."""
    applied = store.last_seq()
    tail = _FeedTail(feed.max_bytes)
    pending: list[Record] = []
    size = 0
    count = 0
    for batch in wal.record_batches(wal.base_seq):
        if through is not None and batch[-1][0] > through:
            batch = [record for record in batch if record[0] <= through]
            if not batch:
                break
        tail.extend(batch)
        if batch[-1][0] <= applied:
            continue
        if batch[0][0] <= applied:
            batch = [record for record in batch if record[0] > applied]
        pending.extend(batch)
        size += sum(len(payload) for _, _, payload in batch)
        if size >= MAX_APPLY_BYTES:
            count += _apply(store, pending)
            pending, size = [], 0
    count += _apply(store, pending)
    tail.load_into(feed)
    return count


def set_aside_for_rebuild(damaged: StoreDamagedError, wal: _Source) -> Path:
    """Move a damaged store's files aside, so that a new, empty store opened
    in their place is rebuilt by ``replay_log``; returns where they went.

    Only when the log holds every write from the first: nothing checkpointed
    away (``base_seq`` 0) and a first record numbered 1. A store restored
    from a snapshot has a log that starts after the snapshot, so it is never
    "rebuilt" into an empty one.

    Raises:
        StoreDamagedError: the log does not hold every write; nothing moved.
        StorageError: the files could not be moved.
    """
    if wal.base_seq != 0:
        starts: str | None = f"starts after seq {wal.base_seq}"
    else:
        # (Read from 0 only now: below base_seq it would be a WalGapError.)
        first = next(iter(wal.record_batches(0)), [(0, 0, b"")])[0][0]
        starts = None if first == 1 else "is empty" if first == 0 else f"starts at seq {first}"
    if starts is not None:
        raise StoreDamagedError(
            damaged.path,
            f"{damaged.detail}; its write-ahead log {starts}, so it cannot rebuild the "
            "store: restore the partition from a snapshot, or remove it",
        ) from damaged
    path = damaged.path
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                os.replace(source, aside.with_name(aside.name + suffix))
        # An empty file in its place: a caching store refuses to start when
        # its durable database is missing (it could be an unmounted disk).
        path.touch()
        fsync_directory(path.parent)
    except OSError as exc:
        raise StorageError(f"Could not move the damaged store {path} aside.") from exc
    return aside


def one_put(payload: bytes) -> bool:
    """True when ``payload`` is exactly one ``puts`` entry shorter than 128
    bytes, optionally followed by a one- or two-byte ``map_version``: the
    bytes of a one-key upsert. Anything else is False (decoded the slow way)."""
    n = len(payload)
    if n < 2 or payload[0] != _PUTS_TAG or payload[1] >= 0x80:
        return False
    rest = n - 2 - payload[1]
    if rest == 0:
        return True
    at = n - rest
    if rest == 2:
        return payload[at] == _MAP_VERSION_TAG and payload[at + 1] < 0x80
    if rest == 3:
        return (
            payload[at] == _MAP_VERSION_TAG and payload[at + 1] >= 0x80 and payload[at + 2] < 0x80
        )
    return False


def _apply(store: StateStore, records: Sequence[Record]) -> int:
    """Apply ``records`` in order: runs of one-key upserts as rows, the rest
    as writes, each group in one store transaction."""
    if not records:
        return 0
    rows: list[Row] = []
    writes: list[Write] = []
    run: list[Record] = []
    for record in records:
        if one_put(record[2]):
            if writes:
                store.apply(writes)
                writes = []
            run.append(record)
            continue
        if run:
            rows.extend(_rows(run))
            run = []
        if rows:
            _apply_rows(store, rows)
            rows = []
        writes.append(decode_write(record[2], record[0], record[1]))
    if run:
        rows.extend(_rows(run))
    if rows:
        _apply_rows(store, rows)
    if writes:
        store.apply(writes)
    return len(records)


def _rows(run: Sequence[Record]) -> list[Row]:
    """The rows of a run of one-key upserts: one parse of their concatenation."""
    merged = wal_pb2.WalWrite.FromString(b"".join([payload for _, _, payload in run]))
    puts = merged.puts
    # one_put() vouched for one entry a record; a mismatch would be our bug.
    if len(puts) != len(run) or merged.deletes:
        raise AssertionError("one-key upserts did not decode to one entry each")
    return [(e.key, e.value, seq, ts) for e, (seq, ts, _) in zip(puts, run, strict=True)]


def _apply_rows(store: StateStore, rows: Sequence[Row]) -> None:
    if isinstance(store, PutApplying):
        store.apply_puts(rows)
    else:
        store.apply([Write(puts=[(k, v)], seq=seq, timestamp=ts) for k, v, seq, ts in rows])


class _FeedTail:
    """The newest records within a feed's byte budget, as the feed itself
    would keep them (the longest suffix within budget, and at least the last
    record), found without a feed entry, or any Python step, per dropped
    record: whole read batches are dropped while the newer ones fill the
    budget on their own, and only the last few batches are trimmed record by
    record at the end."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Batches and their cost in feed bytes, oldest first.
        self._batches: deque[tuple[list[Record], int]] = deque()
        self._bytes = 0
        # The newest record dropped: the feed is complete only after it.
        self._dropped_through: int | None = None

    def extend(self, batch: list[Record]) -> None:
        cost = ENTRY_OVERHEAD * len(batch) + sum([len(payload) for _, _, payload in batch])
        self._batches.append((batch, cost))
        self._bytes += cost
        # The oldest batch cannot hold a kept record once the others fill the budget.
        while len(self._batches) > 1 and self._bytes - self._batches[0][1] >= self.max_bytes:
            dropped, dropped_cost = self._batches.popleft()
            self._bytes -= dropped_cost
            self._dropped_through = dropped[-1][0]

    def load_into(self, feed: ChangeFeed) -> None:
        records = [record for batch, _ in self._batches for record in batch]
        start, size = len(records), 0
        while start > 0:
            cost = entry_cost(None, records[start - 1][2], 0, 0)
            if size + cost > self.max_bytes and start < len(records):
                break
            size += cost
            start -= 1
        if start > 0:
            self._dropped_through = records[start - 1][0]
        if self._dropped_through is not None:
            feed.restart_after(self._dropped_through)
        for seq, timestamp, payload in records[start:]:
            feed.append(FeedEntry(seq, timestamp, entry_cost(None, payload, 0, 0), payload=payload))
