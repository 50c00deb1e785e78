"""The sans-I/O parts of read-then-write: conditions, counters, in-flight
writes, and the change feed watchers read."""

from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mkv.errors import CompactedError, FailedPreconditionError
from mkv.partition.feed import ChangeFeed, FeedEntry
from mkv.partition.mutations import (
    COUNTER_MAX,
    COUNTER_MIN,
    Condition,
    add_deltas,
    decode_counter,
    encode_counter,
    first_failure,
)
from mkv.partition.pending import PendingWrites
from mkv.pipeline.payload import encode_write
from mkv.records import Write
from mkv.store import Item


def test_conditions_on_seq_and_value() -> None:
    item = Item(b"v", seq=7)
    assert Condition(seq=7).holds(item)
    assert not Condition(seq=6).holds(item)
    assert Condition(seq=0).holds(None), "seq 0 means: must not exist"
    assert not Condition(seq=0).holds(item)
    assert Condition(value=b"v").holds(item)
    assert not Condition(value=b"v").holds(None)
    assert not Condition(value=b"").holds(None), "an empty value still needs the key"


def test_first_failure_names_the_first_key_that_fails() -> None:
    state = {b"a": Item(b"1", 1), b"b": None}
    conditions = [(b"a", Condition(seq=1)), (b"b", Condition(seq=3)), (b"a", Condition(seq=2))]
    failure = first_failure(conditions, state.__getitem__)
    assert failure is not None
    assert (failure.key, failure.item) == (b"b", None)
    assert first_failure(conditions[:1], state.__getitem__) is None


@given(st.integers(COUNTER_MIN, COUNTER_MAX))
def test_counters_round_trip_as_canonical_decimal(number: int) -> None:
    encoded = encode_counter(number)
    assert encoded == str(number).encode()
    assert decode_counter(b"k", encoded) == number


@pytest.mark.parametrize(
    "value", [b"", b"x", b"1.0", b" 1", b"+1", b"01", b"-0", b"1e3", b"9223372036854775808"]
)
def test_anything_else_is_not_a_counter(value: bytes) -> None:
    with pytest.raises(FailedPreconditionError, match="not a counter"):
        decode_counter(b"k", value)


def test_deltas_add_up_in_order_and_overflow_is_refused() -> None:
    state: dict[bytes, Item | None] = {b"a": Item(b"10", 1), b"b": None}
    puts, values = add_deltas([(b"a", 5), (b"b", -1), (b"a", -20)], state.__getitem__)
    assert values == [15, -1, -5]
    assert puts == [(b"a", b"-5"), (b"b", b"-1")]
    with pytest.raises(FailedPreconditionError, match="overflow"):
        add_deltas([(b"a", COUNTER_MAX)], state.__getitem__)
    with pytest.raises(FailedPreconditionError, match="overflow"):
        add_deltas([(b"b", COUNTER_MIN), (b"b", -1)], state.__getitem__)
    with pytest.raises(FailedPreconditionError, match="not a counter"):
        add_deltas([(b"c", 1)], {b"c": Item(b"text", 1)}.__getitem__)


def test_pending_writes_show_the_newest_state_until_released() -> None:
    pending = PendingWrites()
    assert pending.lookup(b"a") is None
    pending.numbered(Write(puts=[(b"a", b"1"), (b"b", b"1")], seq=1, timestamp=9))
    assert pending.lookup(b"a") == (Item(b"1", 1, 9), 1)
    pending.numbered(Write(puts=[(b"a", b"2")], seq=2))
    pending.numbered(Write(deletes=[b"b"], seq=3))
    assert pending.lookup(b"a") == (Item(b"2", 2), 2)
    assert pending.lookup(b"b") == (None, 3), "a pending delete shows as absent"
    pending.released(1)
    assert pending.lookup(b"a") == (Item(b"2", 2), 2), "released 1 must not hide 2"
    pending.released(2)
    assert pending.lookup(b"a") is None, "once applied, the store answers"
    assert pending.lookup(b"b") == (None, 3)
    pending.released(3)
    assert pending.lookup(b"b") is None
    assert len(pending) == 0


def test_writes_numbered_after_indexing_are_indexed_too() -> None:
    pending = PendingWrites()
    pending.numbered(Write(puts=[(b"a", b"1")], seq=1))
    assert pending.lookup(b"a") is not None
    pending.numbered(Write(puts=[(b"a", b"2")], seq=2))
    assert pending.lookup(b"a") == (Item(b"2", 2), 2)


def _entry(seq: int, key: bytes = b"k", cost: int = 100) -> FeedEntry:
    return FeedEntry(seq, 0, cost, write=Write(puts=[(key, b"%d" % seq)], seq=seq))


def test_the_feed_keeps_the_newest_writes_within_its_budget() -> None:
    feed = ChangeFeed(max_bytes=350, retained_after=0)
    for seq in range(1, 6):
        feed.append(_entry(seq))
    assert feed.retained_after == 2
    assert [e.seq for e in feed.read(2, 10_000)] == [3, 4, 5]
    assert [e.seq for e in feed.read(3, 150)] == [4], "about max_bytes, at least one"
    assert feed.read(5, 10_000) == []
    with pytest.raises(CompactedError, match="no longer retained"):
        feed.read(1, 10_000)
    assert feed.lag_bytes(3) == 200
    assert feed.lag_bytes(5) == 0


def test_the_feed_compacts_its_lists_and_still_reads_right() -> None:
    feed = ChangeFeed(max_bytes=1000, retained_after=0)
    for seq in range(1, 5000):
        feed.append(_entry(seq))
    assert [e.seq for e in feed.read(4995, 10_000)] == [4996, 4997, 4998, 4999]
    assert feed.lag_bytes(4990) == 900
    assert feed.retained_after == 4989


def test_the_feed_lets_go_of_an_evicted_write_at_once() -> None:
    """Not only at the next compaction of its lists, which waits for 1,024
    evictions: with 1 MiB batches that kept a gigabyte alive."""
    feed = ChangeFeed(max_bytes=300, retained_after=0)
    first = Write(puts=[(b"k", b"v")], seq=1)
    feed.append(FeedEntry(1, 0, 200, write=first))
    alive = weakref.ref(first)
    del first
    feed.append(FeedEntry(2, 0, 200, write=Write(puts=[(b"k", b"w")], seq=2)))
    gc.collect()
    assert alive() is None
    assert [e.seq for e in feed.read(1, 1000)] == [2]


def test_feed_entries_from_the_log_decode_and_filter_by_range() -> None:
    write = Write(puts=[(b"a", b"1"), (b"m", b"2")], deletes=[b"b", b"z"], seq=4, timestamp=8)
    entry = FeedEntry(4, 8, 10, payload=encode_write(write))
    changes = list(entry.changes(b"a", b"n"))
    assert [(c.key, c.value) for c in changes] == [(b"a", b"1"), (b"m", b"2"), (b"b", None)]
    assert {(c.seq, c.timestamp) for c in changes} == {(4, 8)}


def test_skipped_sequence_numbers_keep_the_feed_complete() -> None:
    feed = ChangeFeed(max_bytes=1000, retained_after=10)
    feed.skip_to(12)
    assert feed.last_seq == 12
    feed.append(_entry(13))
    assert [e.seq for e in feed.read(12, 1000)] == [13]
