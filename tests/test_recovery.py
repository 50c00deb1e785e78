"""Bulk replay at start (mkv.partition.recovery): the same store and watch feed as
applying every logged write one by one, through the fast paths and around them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mkv.partition.feed import ChangeFeed, FeedEntry, entry_cost
from mkv.partition.recovery import _FeedTail, one_put, replay_log
from mkv.pipeline.payload import decode_write, encode_write
from mkv.records import Write
from mkv.store import StateStore
from mkv.store.memory import MemoryStore
from mkv.store.sqlite import SqliteStore
from mkv.v1 import data_pb2 as pb

Record = tuple[int, int, bytes]


def upsert_bytes(pairs: list[tuple[bytes, bytes]], map_version: int = 0) -> bytes:
    entries = [pb.Entry(key=k, value=v) for k, v in pairs]
    return bytes(pb.UpsertRequest(entries=entries, map_version=map_version).SerializeToString())


class FakeLog:
    """Records in read batches, as WalStage.record_batches hands them out."""

    def __init__(self, records: list[Record], batch: int, base_seq: int = 0) -> None:
        self.records = records
        self.batch = batch
        self.base_seq = base_seq

    def record_batches(self, after_seq: int) -> Iterator[list[Record]]:
        wanted = [r for r in self.records if r[0] > after_seq]
        for i in range(0, len(wanted), self.batch):
            yield wanted[i : i + self.batch]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (upsert_bytes([(b"k", b"v")]), True),
        (upsert_bytes([(b"k" * 16, b"v" * 100)]), True),
        (upsert_bytes([(b"k", b"v")], map_version=5), True),
        (upsert_bytes([(b"k", b"v")], map_version=300), True),
        (upsert_bytes([(b"k", b"v")], map_version=2**40), False),  # a longer varint
        (upsert_bytes([(b"k", b"v" * 200)]), False),  # an entry of 128 bytes or more
        (upsert_bytes([(b"a", b"1"), (b"b", b"2")]), False),
        (encode_write(Write(deletes=[b"k"])), False),
        (encode_write(Write(puts=[(b"k", b"v")], deletes=[b"j"])), False),
        (b"", False),
    ],
)
def test_one_put_recognises_exactly_the_one_key_upserts(payload: bytes, expected: bool) -> None:
    assert one_put(payload) is expected
    if expected:
        assert len(decode_write(payload, 1, 0).puts) == 1


def random_records(rng: random.Random, count: int) -> list[Record]:
    """Mostly one-key upserts, with multi-key upserts, removes and mixed writes between."""
    records: list[Record] = []
    for seq in range(1, count + 1):
        key = b"k%d" % rng.randrange(40)
        kind = rng.random()
        if kind < 0.6:
            payload = upsert_bytes([(key, b"v%d" % seq)], map_version=rng.choice([0, 3, 1000]))
        elif kind < 0.75:
            payload = upsert_bytes([(key, b"a%d" % seq), (b"k%d" % rng.randrange(40), b"b")])
        elif kind < 0.9:
            payload = encode_write(Write(deletes=[key]))
        else:
            payload = encode_write(Write(puts=[(key, b"p%d" % seq)], deletes=[b"k1"]))
        records.append((seq, seq * 10 if rng.random() < 0.8 else 0, payload))
    return records


def open_store(kind: str, directory: Path) -> StateStore:
    return SqliteStore(directory / "s.sqlite3", logged=True) if kind == "sqlite" else MemoryStore()


def contents(store: StateStore) -> list[tuple[bytes, bytes, int, int]]:
    return [
        (key, item.value, item.seq, item.timestamp) for key, item in store.scan(b"", None, 10_000)
    ]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.parametrize("applied", [0, 57, 300])
def test_bulk_replay_leaves_the_store_as_one_write_at_a_time(
    tmp_path: Path, kind: str, applied: int
) -> None:
    records = random_records(random.Random(applied), 300)
    for name in ("slow", "fast"):
        (tmp_path / name).mkdir()
    slow, fast = open_store(kind, tmp_path / "slow"), open_store(kind, tmp_path / "fast")
    for store in (slow, fast):
        # The store already holds the first ``applied`` writes.
        for seq, ts, payload in records[:applied]:
            store.apply([decode_write(payload, seq, ts)])
    for seq, ts, payload in records[applied:]:
        slow.apply([decode_write(payload, seq, ts)])

    feed = ChangeFeed(1 << 20, 0)
    replayed = replay_log(fast, FakeLog(records, batch=7), feed)

    assert replayed == len(records) - applied
    assert contents(fast) == contents(slow)
    assert fast.last_seq() == slow.last_seq() == 300
    assert fast.last_timestamp() == slow.last_timestamp()
    # Every logged write is in the feed, applied or not.
    assert [e.seq for e in feed.read(0, 1 << 30)] == list(range(1, 301))


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
    batch=st.integers(min_value=1, max_value=9),
    budget=st.integers(min_value=1, max_value=6000),
)
def test_the_feed_tail_is_what_appending_every_record_leaves(
    sizes: list[int], batch: int, budget: int
) -> None:
    records = [(seq, seq, b"x" * size) for seq, size in enumerate(sizes, start=1)]
    whole = ChangeFeed(budget, 0)
    for seq, ts, payload in records:
        whole.append(FeedEntry(seq, ts, entry_cost(None, payload, 0, 0), payload=payload))
    tail = _FeedTail(budget)
    for i in range(0, len(records), batch):
        tail.extend(records[i : i + batch])
    loaded = ChangeFeed(budget, 0)
    tail.load_into(loaded)

    assert loaded.retained_after == whole.retained_after
    assert loaded.last_seq == whole.last_seq
    assert loaded.bytes_retained == whole.bytes_retained
    assert loaded.read(loaded.retained_after, 1 << 30) == whole.read(whole.retained_after, 1 << 30)
