"""Snapshot, then catch up from the log: a key range's state built apart from its partition.

A split builds its new partition's store this way, while the parent goes on
taking writes; a new replica and a partition move (the cluster issues) are
the same problem and reuse it:

1. ``start``: the parent's state is captured at one sequence number S (a
   ``Read``, between two writes: ``mkv.snapshots.stores.begin_capture``) and
   written out off the event loop; the rows of the range are copied into a
   new file in mkv's layout (the *range file*), whose meta says S.
2. ``catch_up``: the parent's writes after S, read from its change feed, are
   applied to the range file filtered to the range, in seq order, each key
   keeping the seq and timestamp of the write that set it. Repeated while
   writes go on, until little is left.
3. ``finish``: the range file's meta is set to the parent's seq at the
   cut-over, so a store opened on it numbers its writes above every seq the
   parent gave (a key's seq never goes backwards), and fsynced. It is then
   installed as a store of any kind (``mkv.snapshots.stores.install``).

The blocking part, ``RangeFile``, knows no partition or event loop: it is
handed rows and ``Write`` records, so another source (a replication stream)
can feed it as well.

A merge builds the right partition's state the same way, then puts it into
the surviving partition's live store in small steps (``remove_range``,
``load_rows``, ``load_writes``: jobs in the survivor's own queue) and, at
the cut-over, sets its last seq above both (``set_last_seq``).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from mkv.errors import StorageError
from mkv.operations import Operation, run_stoppable
from mkv.partition.feed import ChangeFeed
from mkv.partition.task import Partition, Read
from mkv.records import Write
from mkv.router import KeyRange
from mkv.snapshots.stores import Capture, begin_capture
from mkv.store import StateStore
from mkv.store.sqlite import create_layout

__all__ = [
    "RangeFile",
    "catch_up_to",
    "copy_range",
    "feed_writes",
    "feed_writes_through",
    "hash_rows",
    "load_rows",
    "load_writes",
    "remove_range",
    "set_last_seq",
]

# Feed bytes read per catch-up step (each is one transaction on the range file).
CATCH_UP_BYTES = 4 * 1024 * 1024
_CAPTURE_NAME = "transfer-capture.sqlite3.tmp"
_ROW_HEAD = struct.Struct(">I")
_ROW_TAIL = struct.Struct(">QQ")
_UPSERT = "INSERT OR REPLACE INTO kv (key, value, seq, ts) VALUES (?, ?, ?, ?)"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


class RangeFile:
    """A database in mkv's layout holding one key range's state at ``seq``; blocking.

    Raises (every method):
        StorageError: the file cannot be written.
    """

    def __init__(self, path: Path, key_range: KeyRange) -> None:
        self.path = path
        self.range = key_range
        self.seq = 0
        self.timestamp = 0
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Nobody reads it until ``finish`` has fsynced it: no journal.
            self._conn.execute("PRAGMA journal_mode=OFF")
            self._conn.execute("PRAGMA synchronous=OFF")
            create_layout(self._conn)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot create {path} ({exc}).") from exc

    def fill_from(self, source: Path, seq: int, timestamp: int) -> int:
        """Copy the rows of the range from ``source`` (a snapshot in mkv's
        layout at ``seq``); returns how many."""
        rng = self.range
        query = "INSERT INTO kv SELECT key, value, seq, ts FROM src.kv WHERE key >= ?"
        params: tuple[bytes, ...] = (rng.start,)
        if rng.end is not None:
            query += " AND key < ?"
            params += (rng.end,)
        try:
            # as_uri() refuses a relative path, and the data dir is relative
            # on a node started as the Quick start says (./mkv-data).
            uri = f"{source.absolute().as_uri()}?mode=ro"
            self._conn.execute("ATTACH DATABASE ? AS src", (uri,))
            try:
                self._conn.execute("BEGIN")
                count = self._conn.execute(query, params).rowcount
                self._set_meta(seq, timestamp)
                self._conn.execute("COMMIT")
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.execute("DETACH DATABASE src")
        except sqlite3.Error as exc:
            raise StorageError(f"Copying the range into {self.path} failed ({exc}).") from exc
        return count

    def put_rows(self, rows: Sequence[tuple[bytes, bytes, int, int]]) -> None:
        """Insert ``(key, value, seq, ts)`` rows (a snapshot streamed from
        another node, in key order) in one transaction; the meta is left
        alone until ``set_position`` says whose state they are."""
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(_UPSERT, rows)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StorageError(f"Writing rows into {self.path} failed ({exc}).") from exc

    def set_position(self, seq: int, timestamp: int) -> None:
        """Say the file holds the source's state at ``seq`` (a streamed
        snapshot, every row in): writes up to it are skipped by ``apply``."""
        try:
            self._conn.execute("BEGIN")
            self._set_meta(seq, timestamp)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StorageError(f"Writing {self.path} failed ({exc}).") from exc

    def apply(self, writes: Iterable[Write]) -> int:
        """Apply ``writes`` (numbered above ``seq``, in order) filtered to the
        range, in one transaction; returns the last seq applied."""
        rng = self.range
        try:
            self._conn.execute("BEGIN")
            for write in writes:
                if write.seq <= self.seq:
                    continue  # already in the copy
                puts = [(k, v, write.seq, write.timestamp) for k, v in write.puts if k in rng]
                if puts:
                    self._conn.executemany(_UPSERT, puts)
                deletes = [(k,) for k in write.deletes if k in rng]
                if deletes:
                    self._conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
                self._set_meta(write.seq, write.timestamp or self.timestamp)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StorageError(f"Catching up {self.path} failed ({exc}).") from exc
        return self.seq

    def rows_after(self, after: bytes | None, limit: int) -> list[tuple[bytes, bytes, int, int]]:
        """Up to ``limit`` rows ``(key, value, seq, ts)`` in key order, after
        the key ``after`` (None: from the first)."""
        query = "SELECT key, value, seq, ts FROM kv"
        params: tuple[bytes, ...] = ()
        if after is not None:
            query += " WHERE key > ?"
            params = (after,)
        try:
            return list(self._conn.execute(f"{query} ORDER BY key LIMIT ?", (*params, limit)))
        except sqlite3.Error as exc:
            raise StorageError(f"Reading {self.path} failed ({exc}).") from exc

    def sync(self) -> None:
        """fsync what is written so far, so that ``finish`` (at a cut-over,
        while the source waits) has only the catch-up's pages to flush."""
        try:
            _fsync(self.path)
        except OSError as exc:
            raise StorageError(f"Syncing {self.path} failed ({exc}).") from exc

    def finish(self, seq: int, timestamp: int) -> None:
        """Mark the state as the source's at ``seq`` (every write up to it
        applied) and make the file durable; the file is closed."""
        try:
            self._conn.execute("BEGIN")
            self._set_meta(max(seq, self.seq), max(timestamp, self.timestamp))
            self._conn.execute("COMMIT")
            self._conn.close()
            _fsync(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"Finishing {self.path} failed ({exc}).") from exc

    def close(self) -> None:
        self._conn.close()

    def _set_meta(self, seq: int, timestamp: int) -> None:
        self.seq, self.timestamp = seq, timestamp
        self._conn.executemany(
            "UPDATE meta SET value = ? WHERE name = ?", [(seq, "last_seq"), (timestamp, "last_ts")]
        )


def hash_rows(hasher: Hasher, rows: Iterable[tuple[bytes, bytes, int, int]]) -> None:
    """Feed ``(key, value, seq, ts)`` rows into ``hasher`` (SHA-256) in the
    one encoding both ends of a streamed snapshot use (replication.proto's
    ``SnapshotEnd``): a reordered, dropped or changed row changes the digest."""
    for key, value, seq, ts in rows:
        hasher.update(_ROW_HEAD.pack(len(key)))
        hasher.update(key)
        hasher.update(_ROW_HEAD.pack(len(value)))
        hasher.update(value)
        hasher.update(_ROW_TAIL.pack(seq, ts))


def feed_writes(feed: ChangeFeed, after_seq: int, up_to: int | None = None) -> list[Write]:
    """The writes in ``feed`` numbered above ``after_seq`` (and at most
    ``up_to``), about ``CATCH_UP_BYTES`` of them, decoded.

    Raises:
        CompactedError: the feed no longer holds writes after ``after_seq``.
    """
    writes: list[Write] = []
    for entry in feed.read(after_seq, CATCH_UP_BYTES):
        if up_to is not None and entry.seq > up_to:
            break
        if entry.write is not None:
            writes.append(entry.write)
        else:
            # Loaded from the log at start: its changes are decoded on demand.
            changes = list(entry.changes(b"", None))
            writes.append(
                Write(
                    puts=[(c.key, c.value) for c in changes if c.value is not None],
                    deletes=[c.key for c in changes if c.value is None],
                    seq=entry.seq,
                    timestamp=entry.timestamp,
                )
            )
    return writes


def feed_writes_through(feed: ChangeFeed, after_seq: int, seq: int) -> list[Write]:
    """Every write in ``feed`` numbered above ``after_seq`` up to ``seq`` (a
    cut-over's tail: keep it small).

    Raises:
        CompactedError: the feed no longer holds writes after ``after_seq``.
    """
    writes: list[Write] = []
    while after_seq < seq and (more := feed_writes(feed, after_seq, seq)):
        writes += more
        after_seq = more[-1].seq
    return writes


async def copy_range(
    operation: Operation,
    partition: Partition,
    key_range: KeyRange,
    target: RangeFile,
    *,
    settle_writes: int = 64,
) -> None:
    """Fill ``target`` with ``partition``'s state of ``key_range`` at one seq,
    then catch it up from the feed until fewer than ``settle_writes`` writes
    are left behind (the rest is applied at the cut-over, ``catch_up_to``).

    Raises:
        CompactedError: writes came faster than the feed retains them.
        StorageError, UnavailableError: as for a snapshot.
    """
    capture: Capture | None = None
    temp = target.path.with_name(_CAPTURE_NAME)
    try:
        capture = await partition.submit(Read(begin_capture))
        assert capture is not None
        operation.report("copy", 0, 0)
        seq, timestamp = capture.seq, capture.timestamp
        await trio.to_thread.run_sync(_create_empty, temp)

        def copy(stop: threading.Event) -> None:
            assert capture is not None

            def report(done: int, total: int, unit: str) -> None:
                operation.report("copy", done, total, unit)

            capture.write(str(temp), report, stop)

        await run_stoppable(copy, name=f"mkv-split-{partition.id}")
        await trio.to_thread.run_sync(capture.close)
        capture = None
        operation.report("filter", 0, 0)
        await trio.to_thread.run_sync(target.fill_from, temp, seq, timestamp)
    finally:
        with trio.CancelScope(shield=True):
            if capture is not None:
                await trio.to_thread.run_sync(capture.close)
            await trio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))
    while partition.last_seq() - target.seq >= settle_writes:
        operation.report("catch-up", target.seq, partition.last_seq(), "seq")
        await catch_up_to(partition.feed, target, partition.last_seq())
    operation.report("sync", 0, 0)
    await trio.to_thread.run_sync(target.sync)
    # Writes that came during the fsync: the fewer left, the shorter the cut-over.
    await catch_up_to(partition.feed, target, partition.last_seq())


async def catch_up_to(feed: ChangeFeed, target: RangeFile, seq: int) -> None:
    """Apply the feed's writes up to ``seq`` to ``target``.

    Raises:
        CompactedError: the feed no longer holds writes after ``target.seq``.
    """
    while target.seq < seq:
        writes = feed_writes(feed, target.seq, seq)
        if not writes:
            # Only failed writes (numbered, never applied) are left.
            break
        await trio.to_thread.run_sync(target.apply, writes)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_empty(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.touch()


# -- a merge's survivor takes the right partition's state in small steps --------
#
# Each runs on the survivor's worker thread (a ``Read`` job, or its ``Extend``),
# between its own writes. The survivor does not serve the range yet, and its
# own writes never touch it, so these rows can go in while it serves; every
# step keeps the store's ``last_seq`` (the survivor's log replays after it),
# in the same transaction, so a crash never leaves it at another partition's seq.


def _apply_keeping_seq(store: StateStore, writes: list[Write]) -> None:
    store.apply([*writes, Write(seq=store.last_seq(), timestamp=store.last_timestamp())])


def remove_range(store: StateStore, key_range: KeyRange, limit: int) -> int:
    """Delete up to ``limit`` keys of ``key_range`` from ``store``; returns how many.

    Keys the survivor still holds there (from a range it once gave away, or
    a merge a crash cut short) must not come back: only the right
    partition's rows stand.
    """
    stale = store.scan(key_range.start, key_range.end, limit, keys_only=True)
    if stale:
        _apply_keeping_seq(store, [Write(deletes=[key for key, _ in stale])])
    return len(stale)


def load_rows(store: StateStore, rows: Sequence[tuple[bytes, bytes, int, int]]) -> None:
    """Put ``(key, value, seq, ts)`` rows (``RangeFile.rows_after``) into
    ``store``, each with its own seq and timestamp."""
    if rows:
        _apply_keeping_seq(
            store,
            [Write(puts=[(key, value)], seq=seq, timestamp=ts) for key, value, seq, ts in rows],
        )


def load_writes(store: StateStore, writes: Iterable[Write], key_range: KeyRange) -> None:
    """Apply the right partition's ``writes`` (in seq order) to ``store``,
    filtered to ``key_range``."""
    filtered = []
    for write in writes:
        puts = [(k, v) for k, v in write.puts if k in key_range]
        deletes = [k for k in write.deletes if k in key_range]
        if puts or deletes:
            filtered.append(
                Write(puts=puts, deletes=deletes, seq=write.seq, timestamp=write.timestamp)
            )
    if filtered:
        _apply_keeping_seq(store, filtered)


def set_last_seq(store: StateStore, seq: int, timestamp: int) -> None:
    """Move ``store``'s last seq up to ``seq`` (the merge's ``top``) and make
    it durable: the survivor's log then replays only what it numbers after."""
    store.apply([Write(seq=seq, timestamp=max(timestamp, store.last_timestamp()))])
    store.sync()
