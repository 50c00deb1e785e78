"""A store that keeps everything in memory: compact, and gone at restart.

With the ``wal`` stage in its pipeline, a memory partition replays its whole
log at start and so recovers its full state. Without one its data is lost on
restart, but its sequence numbers still never go back: they are reserved in
blocks in a small file, so a restarted partition never reuses one.

Each key is one bytes object, its record: the key, escaped so that records
sort as keys do, then the value's sequence number and timestamp, then the
value (``mkv.store.records``). The records are kept sorted, so a scan reads
them in order and a snapshot copies them in order, and the store holds no
object per key but the record: about 190-205 bytes a key for 16-byte keys
and 100-byte values, against 275 for the dict of key → packed value it
replaced (measured with 1M keys; docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from pathlib import Path

from mkv.errors import StorageError
from mkv.limits import check_loaded
from mkv.records import Write
from mkv.store.base import Item, StoreStats
from mkv.store.files import write_atomically
from mkv.store.records import (
    META,
    SortedRecords,
    by_prefix,
    key_bound,
    key_prefix,
    record_item,
    record_key,
)

__all__ = ["MemoryStore", "unpack_record"]

# One small fsync'd write per this many sequence numbers.
SEQ_RESERVATION = 100_000

_first = itemgetter(0)


def unpack_record(record: bytes) -> tuple[bytes, Item]:
    """The key and item a record holds (see ``MemoryStore.copy_records``)."""
    key, meta = record_key(record)
    return key, record_item(record, meta)


class MemoryStore:
    kind = "memory"
    persistent = False

    def __init__(self, directory: Path | None = None) -> None:
        """Args:
        directory: where to keep the sequence reservation; None when the
            partition's log keeps the numbers (or for scratch use).
        """
        self._records = SortedRecords()
        self._seq_file = directory / "seq-reserved" if directory is not None else None
        self._reserved = 0
        if self._seq_file is not None and self._seq_file.exists():
            self._reserved = _read_reservation(self._seq_file)
        # After a restart everything up to the old reservation may have been
        # handed out, so numbering resumes above it.
        self._last_seq = self._reserved
        self._last_timestamp = 0

    def last_seq(self) -> int:
        return self._last_seq

    def last_timestamp(self) -> int:
        return self._last_timestamp

    def get(self, key: bytes) -> Item | None:
        prefix = key_prefix(key)
        record = self._records.find(prefix)
        return None if record is None else record_item(record, len(prefix))

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        return [self.get(key) for key in keys]

    def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int,
        *,
        keys_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, Item]]:
        stop = None if end is None else key_bound(end)
        page: list[tuple[bytes, Item]] = []
        size = 0
        if limit <= 0:
            return page
        for record in self._records.iter_from(key_bound(start)):
            if stop is not None and record >= stop:
                break
            key, meta = record_key(record)
            item = record_item(record, meta, keys_only=keys_only)
            page.append((key, item))
            size += len(key) + len(item.value)
            if len(page) >= limit or (max_bytes is not None and size >= max_bytes):
                break
        return page

    def apply(self, writes: Sequence[Write]) -> list[int]:
        if not writes:
            return []
        top = writes[-1].seq
        self._reserve(top)
        records = self._records
        removed: list[int] = []
        for write in writes:
            meta = META.pack(write.seq, write.timestamp)
            # In key order, each search starts near the last one (warm in the
            # CPU's cache).
            pairs = [
                (prefix, b"".join((prefix, meta, value))) for prefix, value in by_prefix(write.puts)
            ]
            # New keys that no key held falls among (sequential or
            # time-ordered keys) go in whole; any others one at a time.
            records.put_all(pairs)
            count = 0
            for key in write.deletes:
                count += records.remove(key_prefix(key))
            removed.append(count)
            self._last_timestamp = write.timestamp or self._last_timestamp
        self._last_seq = top
        return removed

    def apply_puts(self, rows: Sequence[tuple[bytes, bytes, int, int]]) -> None:
        """Replay's fast path (mkv.partition.recovery): ``(key, value, seq, ts)`` rows, no
        ``Write`` each."""
        if not rows:
            return
        top = rows[-1][2]
        self._reserve(top)
        pack = META.pack
        # Sorted as in apply: of two rows of one key, the later (stable sort) wins.
        puts = sorted(
            [(key_prefix(key), pack(seq, ts), value) for key, value, seq, ts in rows], key=_first
        )
        pairs = [(prefix, b"".join((prefix, meta, value))) for prefix, meta, value in puts]
        self._records.put_all(pairs)
        last_ts = next((row[3] for row in reversed(rows) if row[3]), 0)
        self._last_timestamp = last_ts or self._last_timestamp
        self._last_seq = top

    def _reserve(self, top: int) -> None:
        if self._seq_file is not None and top > self._reserved:
            reserved = top + SEQ_RESERVATION
            try:
                write_atomically(self._seq_file, str(reserved).encode())
            except OSError as exc:
                raise StorageError("Could not reserve sequence numbers on disk.") from exc
            self._reserved = reserved

    def sync(self) -> int:
        return self._last_seq  # nothing to flush; and nothing survives a restart

    def copy_records(self) -> tuple[list[list[bytes]], int, int]:
        """Every record (``unpack_record``) in key order, in chunks, with
        ``last_seq`` and ``last_ts``: one view, for a snapshot.

        Call between applies (a partition's ``Read``): writes wait for it. It
        copies the lists of records, O(keys) pointers, not the records
        (bytes are immutable); unpacking is left to the caller, off the
        worker thread.
        """
        return self._records.copy(), self._last_seq, self._last_timestamp

    def load(
        self, batches: Iterable[Sequence[tuple[bytes, Item]]], last_seq: int, last_ts: int
    ) -> None:
        """Start from a snapshot's items (a restored partition), before any apply."""
        records = self._records
        for batch in batches:
            pairs = [
                (
                    prefix := key_prefix(key),
                    b"".join((prefix, META.pack(item.seq, item.timestamp), item.value)),
                )
                for key, item in batch
            ]
            # A snapshot's rows come in key order: appended whole, no search each.
            if not records.extend([record for _, record in pairs]):
                for prefix, record in pairs:
                    records.put(prefix, record)
        # A reservation from before a restart may already be above the snapshot.
        self._last_seq = max(self._last_seq, last_seq)
        self._last_timestamp = max(self._last_timestamp, last_ts)

    def stats(self) -> StoreStats:
        return StoreStats(key_count=len(self._records), size_bytes=0)

    def close(self) -> None:
        self._records.clear()


def _read_reservation(path: Path) -> int:
    """The ceiling in ``seq-reserved``; blocking.

    Raises:
        StorageError: unreadable, not a number, or out of range.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"Could not read the sequence reservation {path}.") from exc
    try:
        reserved = int(text)
    except ValueError:
        raise StorageError(f"{path} does not hold a sequence number: {text[:40]!r}.") from None
    check_loaded(str(path), reserved_seq=reserved)
    return reserved
