"""A memory store's entries as one sorted list of byte strings, and their encoding. Sans-I/O.

Each entry is ONE bytes object, its record::

    escaped key | 00 00 | seq (u64 le) | timestamp (u64 le) | value

The key is escaped so that records sort as their keys do: every 00 byte of
the key becomes 00 FF, and 00 00 ends it. Then no escaped key is a prefix of
another's record (00 00 appears first at the end of the key), and comparing two
records compares their keys first (the end marker 00 00 sorts below any
continuation, 00 FF or a byte above 00). So plain ``bytes`` comparison, in C,
both orders the records and finds one: the record of ``key`` is the first
record ``>= key_prefix(key)``, if it starts with it.

Why not a dict: a dict of key → packed value costs a key object (16 bytes of
key: 64 with its header), the dict slot (~42 bytes) and the list of keys a
scan needs in order (8): about 275 bytes a key for a 100-byte value. Sorted
records cost the record and a list slot: about 190-205 (see
docs/performance.md), and a scan needs no sort. The price is a binary search
(~20 comparisons, over records scattered in memory) per lookup instead of a
hash probe: a get takes a few microseconds more, and a batch of updates or
of scattered new keys applies several times slower than a dict's (measured
at 1M keys: 22-40 ms for 9k random keys, against 3-9). A run of new keys
that no held key falls among (sequential or time-ordered keys) goes in whole
(``splice``). A key's 00 bytes cost one byte each in its record.

``SortedRecords`` keeps the records in chunks of up to ``2 * CHUNK`` (as
sortedcontainers does), so an insertion moves at most a chunk's pointers.
"""

from __future__ import annotations

import operator
import struct
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from operator import itemgetter

from mkv.store.base import Item

__all__ = [
    "CHUNK",
    "META",
    "SortedRecords",
    "by_prefix",
    "key_bound",
    "key_prefix",
    "record_item",
    "record_key",
]

# Records a chunk is split to; chunks hold CHUNK // 2 to 2 * CHUNK records
# (fewer only when the store is that small). Lookups cost about the same for
# 64 to 1000 (measured at 1M keys); larger chunks mean fewer list objects.
CHUNK = 1000
# seq, timestamp: after the key's end marker.
META = struct.Struct("<QQ")
_ZERO = b"\x00"
_ESCAPED_ZERO = b"\x00\xff"
_END = b"\x00\x00"
_first = itemgetter(0)


def key_bound(key: bytes) -> bytes:
    """The escaped ``key``: records ``>=`` it are exactly those of keys ``>= key``."""
    return key.replace(_ZERO, _ESCAPED_ZERO)


def key_prefix(key: bytes) -> bytes:
    """What the record of ``key``, and no other record, starts with."""
    return key.replace(_ZERO, _ESCAPED_ZERO) + _END


def by_prefix(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``(key_prefix(key), value)`` for each pair, sorted by prefix; stable, so
    of two pairs of one key the later is still the later (and wins a ``put``)."""
    out = [(key.replace(_ZERO, _ESCAPED_ZERO) + _END, value) for key, value in pairs]
    out.sort(key=_first)
    return out


def record_key(record: bytes) -> tuple[bytes, int]:
    """The key of ``record``, and where its seq and timestamp start."""
    end = record.find(_END)
    key = record[:end]
    return key.replace(_ESCAPED_ZERO, _ZERO) if _ZERO in key else key, end + 2


def record_item(record: bytes, meta: int, *, keys_only: bool = False) -> Item:
    """The item of ``record`` whose seq and timestamp start at ``meta``."""
    seq, timestamp = META.unpack_from(record, meta)
    return Item(b"" if keys_only else record[meta + META.size :], seq, timestamp)


class SortedRecords:
    """Records (byte strings whose prefixes ``key_prefix`` makes unique) in byte order.

    One thread changes it (the partition's worker) while another may call
    ``find`` (``MemoryStore.get``, inline on the event loop). Every change is
    one step a reader sees whole (a single list operation, or one swap of
    ``_index``), and ``find`` notices, through ``_changes``, a change that
    moved records while it was looking: a reader preempted between its binary
    search and its read of the record could otherwise miss a key that is
    there all along.
    """

    def __init__(self) -> None:
        # (chunks, the last record of each): swapped whole when chunks are
        # split, merged or dropped, so a reader never pairs one with the
        # other's older state.
        self._index: tuple[list[list[bytes]], list[bytes]] = ([], [])
        self._count = 0
        # Odd while a change that moves records is under way (a seqlock).
        self._changes = 0

    def __len__(self) -> int:
        return self._count

    def find(self, prefix: bytes) -> bytes | None:
        """The record starting with ``prefix`` (a ``key_prefix``), if any; from any thread."""
        while True:
            changes = self._changes
            if changes & 1:
                time.sleep(0)  # let the writer finish the step it is in
                continue
            chunks, maxes = self._index
            try:
                chunk = chunks[bisect_left(maxes, prefix)]
                record = chunk[bisect_left(chunk, prefix)]
            except IndexError:  # above every key, or the chunk shrank meanwhile
                record = None
            # Only that key's record starts so, whatever moved meanwhile.
            if record is not None and record.startswith(prefix):
                return record
            if self._changes == changes:
                return None

    def put(self, prefix: bytes, record: bytes) -> bool:
        """Add ``record`` (starting with ``prefix``) or replace its key's record.

        Returns:
            True when the key is new.
        """
        chunks, maxes = self._index
        ci = bisect_left(maxes, prefix)
        if ci == len(chunks):
            if not chunks:
                self._swap([[record]], [record])
                self._count = 1
                return True
            # Above every key: the last chunk grows at its end, which moves
            # nothing a reader could be looking at.
            ci -= 1
            chunk = chunks[ci]
            chunk.append(record)
            maxes[ci] = record
        else:
            chunk = chunks[ci]
            i = bisect_left(chunk, prefix)
            if chunk[i].startswith(prefix):
                chunk[i] = record
                if i == len(chunk) - 1:
                    maxes[ci] = record
                return False
            self._changes += 1
            chunk.insert(i, record)
            self._changes += 1
        self._count += 1
        if len(chunk) > 2 * CHUNK:
            self._split(ci)
        return True

    def put_sorted(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """``put`` each ``(prefix, record)``, in order; a batch's, sorted by prefix.

        Sorted, each search starts where the last one ended, in a chunk the
        CPU has just read: a batch costs about half as much as one ``put`` a
        record.
        """
        ci = -1
        chunk: list[bytes] = []
        top = b""
        added = 0
        for prefix, record in pairs:
            if ci < 0 or prefix > top:
                chunks, maxes = self._index
                ci = bisect_left(maxes, prefix, max(ci, 0))
                if ci == len(chunks):
                    self.put(prefix, record)  # above every key; counts itself
                    ci = -1
                    continue
                chunk, top, i = chunks[ci], maxes[ci], 0
            i = bisect_left(chunk, prefix, i)
            if chunk[i].startswith(prefix):
                chunk[i] = record
                if i == len(chunk) - 1:
                    self._index[1][ci] = top = record
                continue
            self._changes += 1
            chunk.insert(i, record)
            self._changes += 1
            added += 1
            if len(chunk) > 2 * CHUNK:
                self._split(ci)
                ci = -1
        self._count += added

    def put_all(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """``put`` each ``(prefix, record)`` of a batch sorted by prefix: in
        one step when they are new keys no held key falls among (``splice``),
        else one at a time (``put_sorted``)."""
        if not self.splice(pairs):
            self.put_sorted(pairs)

    def splice(self, pairs: list[tuple[bytes, bytes]]) -> bool:
        """Insert ``(prefix, record)`` pairs of new keys, sorted, in one step,
        if no key held falls among them (a run of sequential or time-ordered
        keys); False, changing nothing, if one does or two pairs share a key.

        One list operation instead of a search and an insertion a key: for
        a batch of 9k such keys, about a tenth of ``put_sorted``'s time.
        """
        if not pairs:
            return True
        prefixes = [prefix for prefix, _ in pairs]
        if not all(map(operator.lt, prefixes, prefixes[1:])):
            return False
        chunks, maxes = self._index
        records = [record for _, record in pairs]
        if not chunks:
            self.extend(records)
            return True
        ci = bisect_left(maxes, prefixes[0])
        if ci == len(chunks):  # above every key
            ci -= 1
            i = len(chunks[ci])
        else:
            i = bisect_left(chunks[ci], prefixes[0])
            after, last = chunks[ci][i], prefixes[-1]
            # The record after the run must be of a key above all of it.
            if after < last or after.startswith(last):
                return False
        chunk = chunks[ci]
        joined = chunk[:i] + records + chunk[i:]
        pieces = [joined[j : j + CHUNK] for j in range(0, len(joined), CHUNK)]
        if len(pieces) > 1 and len(pieces[-1]) < CHUNK // 2:
            pieces[-2:] = [pieces[-2] + pieces[-1]]
        self._swap(
            [*chunks[:ci], *pieces, *chunks[ci + 1 :]],
            [*maxes[:ci], *(piece[-1] for piece in pieces), *maxes[ci + 1 :]],
        )
        self._count += len(records)
        return True

    def remove(self, prefix: bytes) -> bool:
        """Drop the record starting with ``prefix``; False when there is none."""
        chunks, maxes = self._index
        ci = bisect_left(maxes, prefix)
        if ci == len(chunks):
            return False
        chunk = chunks[ci]
        i = bisect_left(chunk, prefix)
        if not chunk[i].startswith(prefix):
            return False
        self._count -= 1
        if len(chunk) == 1:
            self._swap(chunks[:ci] + chunks[ci + 1 :], maxes[:ci] + maxes[ci + 1 :])
            return True
        self._changes += 1
        del chunk[i]
        self._changes += 1
        if i == len(chunk):
            maxes[ci] = chunk[-1]
        if len(chunk) < CHUNK // 2 and len(chunks) > 1:
            self._merge(ci)
        return True

    def extend(self, records: list[bytes]) -> bool:
        """Append ``records`` if they are in strictly increasing order and above
        every record held (a snapshot's rows, which come in key order, unique);
        False, changing nothing, if not.

        The records' keys must differ (a table's primary key): two records
        of one key would pass the order check.
        """
        chunks, maxes = self._index
        if not records:
            return True
        if (maxes and records[0] <= maxes[-1]) or not all(map(operator.lt, records, records[1:])):
            return False
        new = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
        if chunks and len(chunks[-1]) < CHUNK // 2:
            # Top up a small last chunk rather than leave it small.
            new[0][:0] = chunks[-1]
            chunks, maxes = chunks[:-1], maxes[:-1]
        self._swap(chunks + new, maxes + [chunk[-1] for chunk in new])
        self._count += len(records)
        return True

    def iter_from(self, bound: bytes) -> Iterator[bytes]:
        """Records ``>= bound``, in order; not while the records change."""
        chunks, maxes = self._index
        ci = bisect_left(maxes, bound)
        if ci == len(chunks):
            return
        i = bisect_left(chunks[ci], bound)
        yield from chunks[ci][i:]
        for chunk in chunks[ci + 1 :]:
            yield from chunk

    def copy(self) -> list[list[bytes]]:
        """Every record in order, in chunks: a copy of the lists, sharing the records."""
        return [chunk.copy() for chunk in self._index[0]]

    def clear(self) -> None:
        self._swap([], [])
        self._count = 0

    def _split(self, ci: int) -> None:
        chunks, maxes = self._index
        chunk = chunks[ci]
        low, high = chunk[:CHUNK], chunk[CHUNK:]
        self._swap(
            [*chunks[:ci], low, high, *chunks[ci + 1 :]],
            [*maxes[:ci], low[-1], high[-1], *maxes[ci + 1 :]],
        )

    def _merge(self, ci: int) -> None:
        """Join the small chunk ``ci`` with a neighbour, so chunks stay big
        enough that their number (and a search's length) follows the count."""
        chunks, maxes = self._index
        if ci == len(chunks) - 1:
            ci -= 1
        joined = chunks[ci] + chunks[ci + 1]
        self._swap(
            [*chunks[:ci], joined, *chunks[ci + 2 :]], [*maxes[:ci], joined[-1], *maxes[ci + 2 :]]
        )
        if len(joined) > 2 * CHUNK:
            self._split(ci)

    def _swap(self, chunks: list[list[bytes]], maxes: list[bytes]) -> None:
        self._changes += 1
        self._index = (chunks, maxes)
        self._changes += 1
