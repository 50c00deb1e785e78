"""The memory store's sorted records: order, lookups under concurrent writes, and their size.

The store contract (tests/test_store_contract.py) covers what every store
does; these tests cover what is particular to how the memory store keeps
its records (mkv/store/records.py): the key encoding that makes bytes
comparison order them, the chunks being split and merged, a reader on
another thread, and the memory a key costs.
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mkv.records import Write
from mkv.store import records
from mkv.store.base import Item
from mkv.store.memory import MemoryStore, unpack_record
from mkv.store.records import META, key_bound, key_prefix, record_key

# Keys from a tiny alphabet, so that prefixes of one another, 00 and FF bytes
# (the escape's own bytes) and repeated keys are common.
KEYS = st.binary(max_size=4).map(lambda b: bytes(c % 3 * 0x7F for c in b))
VALUES = st.binary(max_size=8)


@pytest.fixture
def small_chunks() -> Iterator[None]:
    """Chunks of 2 to 8 records, so that a few dozen keys split and merge them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "CHUNK", 4)
        yield


def record(key: bytes, seq: int, value: bytes) -> bytes:
    return key_prefix(key) + META.pack(seq, 0) + value


@given(
    a=st.binary(max_size=6),
    b=st.binary(max_size=6),
    seqs=st.tuples(st.integers(0, 9), st.integers(0, 9)),
)
def test_records_compare_as_their_keys_whatever_follows(
    a: bytes, b: bytes, seqs: tuple[int, int]
) -> None:
    ra, rb = record(a, seqs[0], b"\xff" * 3), record(b, seqs[1], b"")
    if a != b:
        assert (ra < rb) == (a < b)
    assert rb.startswith(key_prefix(a)) == (a == b)
    assert (ra >= key_bound(b)) == (a >= b)
    assert record_key(ra)[0] == a
    assert unpack_record(ra) == (a, Item(b"\xff" * 3, seqs[0], 0))


# A write: puts, then deletes.
WRITES = st.lists(
    st.tuples(st.lists(st.tuples(KEYS, VALUES), max_size=12), st.lists(KEYS, max_size=4)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(writes=WRITES, bounds=st.tuples(KEYS, st.none() | KEYS))
def test_the_store_reads_like_a_dict_through_splits_and_merges(
    writes: list[tuple[list[tuple[bytes, bytes]], list[bytes]]],
    bounds: tuple[bytes, bytes | None],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "CHUNK", 4)
        store = MemoryStore()
        model: dict[bytes, Item] = {}
        for seq, (puts, deletes) in enumerate(writes, start=1):
            removed = store.apply([Write(puts=puts, deletes=deletes, seq=seq, timestamp=seq * 7)])
            for key, value in puts:
                model[key] = Item(value, seq, seq * 7)
            count = 0
            for key in deletes:
                count += model.pop(key, None) is not None
            assert removed == [count]
            for key in {k for k, _ in puts} | set(deletes) | set(model):
                assert store.get(key) == model.get(key)
            assert store.stats().key_count == len(model)
        everything = sorted(model.items())
        assert store.scan(b"", None, 1000) == everything
        start, end = bounds
        inside = [(k, i) for k, i in everything if k >= start and (end is None or k < end)]
        assert store.scan(start, end, 1000) == inside
        assert store.scan(start, end, 2) == inside[:2]
        assert store.scan(start, end, 1000, keys_only=True) == [
            (k, Item(b"", i.seq, i.timestamp)) for k, i in inside
        ]


def test_big_keys_full_of_zero_bytes_and_big_values_round_trip() -> None:
    store = MemoryStore()
    zeros, ones = b"\x00" * 4096, b"\x00" * 4095 + b"\x01"
    value = bytes(range(256)) * 4096  # 1 MiB
    store.apply([Write(puts=[(ones, b"1"), (zeros, value), (b"", b"empty")], seq=1)])
    assert store.get(zeros) == Item(value, 1)
    assert store.get(zeros[:-1]) is None
    assert [key for key, _ in store.scan(b"", None, 10)] == [b"", zeros, ones]
    assert store.scan(zeros, ones, 10) == [(zeros, Item(value, 1))]


def test_a_copy_of_the_records_loads_into_an_equal_store(small_chunks: None) -> None:
    store = MemoryStore()
    store.apply(
        [Write(puts=[(b"k%03d\x00" % i, b"v%d" % i) for i in range(50)], seq=3, timestamp=9)]
    )
    chunks, last_seq, last_ts = store.copy_records()
    rows = [unpack_record(r) for chunk in chunks for r in chunk]
    assert [key for key, _ in rows] == sorted(key for key, _ in rows)

    restored = MemoryStore()
    restored.load([rows[:20], rows[20:]], last_seq, last_ts)
    assert restored.scan(b"", None, 100) == store.scan(b"", None, 100)
    assert (restored.last_seq(), restored.last_timestamp()) == (3, 9)
    # Batches out of order (or overlapping what is there) are put one by one.
    shuffled = MemoryStore()
    shuffled.load([rows[25:], rows[:25], rows[10:12]], last_seq, last_ts)
    assert shuffled.scan(b"", None, 100) == store.scan(b"", None, 100)
    assert shuffled.stats().key_count == 50


def test_replayed_rows_keep_their_own_numbers() -> None:
    store = MemoryStore()
    store.apply_puts([(b"b", b"1", 4, 40), (b"a", b"2", 5, 50), (b"b", b"3", 6, 0)])
    assert store.scan(b"", None, 10) == [(b"a", Item(b"2", 5, 50)), (b"b", Item(b"3", 6, 0))]
    assert (store.last_seq(), store.last_timestamp()) == (6, 50)


def test_get_on_another_thread_never_misses_a_key_that_stays(small_chunks: None) -> None:
    """``get`` runs on the event loop while applies run on the worker thread.

    With a switch interval of a microsecond, the reader is preempted between
    its binary search and its read of the record about as often as it can
    be; the writer inserts and removes other keys around the ones read, so
    records shift and chunks split and merge under it.
    """
    store = MemoryStore()
    stay = [b"s%04d" % i for i in range(0, 400, 2)]
    store.apply([Write(puts=[(key, b"x") for key in stay], seq=1)])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            seq = 1
            while not stop.is_set():
                churn = [b"s%04d" % i for i in range(1, 400, 2)]
                store.apply([Write(puts=[(key, b"y") for key in churn], seq=seq + 1)])
                store.apply([Write(deletes=churn, seq=seq + 2)])
                seq += 2
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    thread.start()
    misses = gets = 0
    try:
        # Without the reader's check about 1 in 20,000 gets missed here (a
        # dozen a second); with it, none in millions.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for key in stay:
                gets += 1
                misses += store.get(key) is None
    finally:
        stop.set()
        thread.join(10)
        sys.setswitchinterval(old_interval)
    assert not errors
    assert gets > 20_000
    assert misses == 0


def test_a_key_costs_its_record_and_a_list_slot() -> None:
    """16-byte keys, 100-byte values: the record is 33 bytes of object header,
    18 of escaped key and end, 16 of seq and timestamp, and the value (167),
    plus 8 for its slot in a chunk and the chunks' spare room. The dict of
    key → packed value it replaced cost about 250 here (49 + 149 + a slot)."""
    keys = [b"k%015d" % i for i in range(50_000)]
    value = bytes(100)
    store = MemoryStore()
    tracemalloc.start()
    try:
        for start in range(0, len(keys), 9000):
            puts = [(key, value) for key in keys[start : start + 9000]]
            store.apply([Write(puts=puts, seq=start + 1)])
            del puts
        per_key = tracemalloc.get_traced_memory()[0] / len(keys)
    finally:
        tracemalloc.stop()
    assert store.stats().key_count == len(keys)
    assert 167 <= per_key < 185


def pairs_of(keys: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(key_prefix(key), record(key, 1, b"v")) for key in keys]


def test_a_run_of_new_keys_goes_in_whole_only_where_no_key_falls_among_it(
    small_chunks: None,
) -> None:
    held = records.SortedRecords()
    assert held.splice(pairs_of([b"a", b"m", b"z"]))  # an empty store
    run = [b"n%03d" % i for i in range(50)]
    assert held.splice(pairs_of(run))
    assert held.splice(pairs_of([b"zz", b"zzz"]))  # above every key
    assert held.splice(pairs_of([b"", b"\x00"]))  # below every key
    # Refused, changing nothing: a held key among the run, a held key as its
    # first or last, and one key twice.
    assert not held.splice(pairs_of([b"l", b"n"]))
    assert not held.splice(pairs_of([b"m", b"mm"]))
    assert not held.splice(pairs_of([b"ma", b"n000"]))
    assert not held.splice(pairs_of([b"y", b"y"]))
    assert not held.splice(pairs_of([b"z"]))
    want = sorted([b"", b"\x00", b"a", b"m", b"z", b"zz", b"zzz", *run])
    assert [record_key(r)[0] for r in held.iter_from(b"")] == want
    assert len(held) == len(want)
    chunks, maxes = held._index
    assert all(1 <= len(chunk) <= 2 * records.CHUNK for chunk in chunks)
    assert maxes == [chunk[-1] for chunk in chunks]
    for key in want:
        assert held.find(key_prefix(key)) is not None
