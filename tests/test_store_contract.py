"""One contract, every store: what a partition relies on from its StateStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mkv.errors import StorageError
from mkv.records import Write
from mkv.store import Item, SqliteStore, StateStore, StoreOptions, open_store, store_kinds
from mkv.store.sqlite import ROWS_PER_INSERT

# Every kind with default settings, and the caching store again with a cache
# so small (a few entries) that most reads miss and writes evict.
VARIANTS = [(kind, StoreOptions()) for kind in store_kinds()] + [
    ("caching", StoreOptions(cache_bytes=1500))
]


@pytest.fixture(
    params=VARIANTS,
    ids=[kind if options == StoreOptions() else f"{kind}-tiny" for kind, options in VARIANTS],
)
def variant(request: pytest.FixtureRequest) -> tuple[str, StoreOptions]:
    kind, options = request.param
    return str(kind), options


@pytest.fixture
def kind(variant: tuple[str, StoreOptions]) -> str:
    return variant[0]


@pytest.fixture
def options(variant: tuple[str, StoreOptions]) -> StoreOptions:
    return variant[1]


@pytest.fixture
def store(kind: str, options: StoreOptions, tmp_path: Path) -> Iterator[StateStore]:
    store = open_store(kind, tmp_path, options=options)
    yield store
    store.close()


def test_a_new_store_is_empty(store: StateStore) -> None:
    assert store.last_seq() == 0
    assert store.get(b"anything") is None
    assert store.stats().key_count == 0


def test_puts_are_read_back_with_their_sequence_number(store: StateStore) -> None:
    assert store.apply([Write(seq=1, puts=[(b"a", b"1"), (b"b", b"2")])]) == [0]
    store.apply([Write(seq=2, puts=[(b"a", b"3")])])
    assert store.get(b"a") == Item(b"3", 2)
    assert store.get(b"b") == Item(b"2", 1)
    assert store.last_seq() == 2
    assert store.stats().key_count == 2


def test_mutations_in_one_apply_take_effect_in_order(store: StateStore) -> None:
    removed = store.apply(
        [
            Write(seq=1, puts=[(b"k", b"first"), (b"k", b"second")]),
            Write(seq=2, deletes=[b"k", b"never-written"]),
            Write(seq=3, puts=[(b"k", b"third")]),
            Write(seq=4, deletes=[b"k", b"k"]),
        ]
    )
    assert removed == [0, 1, 0, 1]
    assert store.get(b"k") is None
    assert store.last_seq() == 4


def test_any_bytes_are_keys_and_values(store: StateStore) -> None:
    odd = [(b"\x00", b""), (b"\xff" * 4096, b"\x00\xff"), ("é".encode(), b"v")]
    store.apply([Write(seq=1, puts=odd)])
    for key, value in odd:
        assert store.get(key) == Item(value, 1)


def model_of(writes: list[Write]) -> dict[bytes, Item]:
    """What applying ``writes`` in order leaves, by the rules of the protocol."""
    model: dict[bytes, Item] = {}
    for write in writes:
        for key, value in write.puts:
            model[key] = Item(value, write.seq, write.timestamp)
        for key in write.deletes:
            model.pop(key, None)
    return model


def test_large_writes_and_small_ones_in_one_apply_take_effect_in_order(
    store: StateStore,
) -> None:
    """Large writes take SQLite's many-rows-a-statement path (ROWS_PER_INSERT),
    small ones executemany; the order of puts and deletes must survive both."""
    big = [(b"k%04d" % (i % 700), b"big-%d" % i) for i in range(1500)]  # repeats keys
    writes = [
        Write(seq=1, puts=[(b"k0001", b"small-before"), (b"other", b"1")], timestamp=10),
        Write(seq=2, puts=big, timestamp=20),
        Write(seq=3, deletes=[b"k0002"]),
        Write(seq=4, puts=[(b"k0003", b"small-after")], timestamp=40),
        Write(seq=5, puts=big[: ROWS_PER_INSERT + 5], timestamp=50),
    ]
    store.apply(writes)
    assert dict(store.scan(b"", None, 10_000)) == model_of(writes)
    # Within write 2, the last put of a key wins, across statements.
    assert store.get(b"k0300") == Item(b"big-1000", 2, 20)
    assert store.get(b"k0001") == Item(b"big-1", 5, 50)
    assert store.get(b"k0002") == Item(b"big-2", 5, 50)  # deleted by 3, put again by 5
    assert store.last_seq() == 5


def test_a_group_commit_of_many_small_writes_takes_effect_in_order(store: StateStore) -> None:
    """Small writes' puts are gathered into statements of many rows
    (GATHERED_ROWS_PER_INSERT) across writes; each keeps its own seq and ts."""
    writes = [
        Write(seq=seq, puts=[(b"k%03d" % (seq % 300), b"v%d" % seq)], timestamp=1000 + seq)
        for seq in range(1, 700)
    ]
    writes[400] = Write(seq=401, deletes=[b"k%03d" % (401 % 300), b"k%03d" % (300 % 300)])
    store.apply(writes)
    assert dict(store.scan(b"", None, 10_000)) == model_of(writes)
    assert store.get(b"k005") == Item(b"v605", 605, 1605)
    assert store.last_seq() == 699
    assert store.last_timestamp() == 1699


def test_replayed_rows_take_effect_in_order(store: StateStore) -> None:
    if not hasattr(store, "apply_puts"):
        pytest.skip(f"{store.kind} stores have no bulk replay path")
    rows = [(b"r%03d" % (i % 200), b"v%d" % i, i + 1, 0 if i % 3 else 50 + i) for i in range(600)]
    store.apply_puts(rows)
    assert dict(store.scan(b"", None, 10_000)) == {
        key: Item(value, seq, ts) for key, value, seq, ts in rows
    }
    assert store.last_seq() == 600
    assert store.last_timestamp() == 50 + 597  # the last row with a timestamp


def test_last_seq_never_goes_back_after_reopening(
    kind: str, options: StoreOptions, tmp_path: Path
) -> None:
    store = open_store(kind, tmp_path, options=options)
    store.apply([Write(seq=41, puts=[(b"k", b"v")]), Write(seq=42, deletes=[b"gone"])])
    store.close()
    reopened = open_store(kind, tmp_path, options=options)
    try:
        assert reopened.last_seq() >= 42
    finally:
        reopened.close()


def test_sqlite_keeps_data_across_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    store.apply([Write(seq=1, puts=[(b"k", b"v")]), Write(seq=2, puts=[(b"j", b"w")])])
    store.close()
    reopened = SqliteStore(tmp_path / "db")
    try:
        assert reopened.get(b"k") == Item(b"v", 1)
        assert reopened.get(b"j") == Item(b"w", 2)
        assert reopened.last_seq() == 2
        assert reopened.stats().size_bytes > 0
    finally:
        reopened.close()


def test_sqlite_applies_all_or_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    try:
        store.apply([Write(seq=1, puts=[(b"k", b"old")])])
        # A NULL value violates the schema halfway through the second mutation.
        bad: Any = [(b"x", b"ok"), (b"y", None)]
        with pytest.raises(StorageError, match="nothing was applied"):
            store.apply([Write(seq=2, puts=[(b"k", b"new")]), Write(seq=3, puts=bad)])
        assert store.get(b"k") == Item(b"old", 1)
        assert store.get(b"x") is None
        assert store.last_seq() == 1
        store.apply([Write(seq=2, puts=[(b"k", b"after")])])
        assert store.get(b"k") == Item(b"after", 2)
        # The same in a write large enough for the many-rows-a-statement path.
        many: Any = [(b"m%d" % i, b"ok") for i in range(3 * ROWS_PER_INSERT)]
        many[ROWS_PER_INSERT + 1] = (b"bad", None)
        with pytest.raises(StorageError, match="nothing was applied"):
            store.apply([Write(seq=3, puts=[(b"k", b"new")]), Write(seq=4, puts=many)])
        assert store.get(b"k") == Item(b"after", 2)
        assert store.get(b"m0") is None
        assert store.last_seq() == 2
    finally:
        store.close()


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a database"):
        SqliteStore(path)


def test_get_many_answers_in_the_order_asked(store: StateStore) -> None:
    store.apply([Write(seq=1, puts=[(b"a", b"1"), (b"c", b"3")])])
    keys = [b"c", b"missing", b"a", b"c"] + [b"k%d" % i for i in range(1200)]
    assert store.get_many(keys)[:4] == [Item(b"3", 1), None, Item(b"1", 1), Item(b"3", 1)]
    assert store.get_many([]) == []


def test_scan_pages_in_byte_order_within_bounds(store: StateStore) -> None:
    keys = [b"", b"\x00", b"a", b"a\x00", b"ab", b"b", b"\xff", b"\xff\xff"]
    store.apply([Write(seq=1, puts=[(k, b"v" + k) for k in reversed(keys)])])
    everything = store.scan(b"", None, 100)
    assert [k for k, _ in everything] == sorted(keys)
    assert everything[2] == (b"a", Item(b"va", 1))
    assert [k for k, _ in store.scan(b"a", b"b", 100)] == [b"a", b"a\x00", b"ab"]
    assert [k for k, _ in store.scan(b"a\x00", None, 2)] == [b"a\x00", b"ab"]
    assert store.scan(b"b", b"b", 10) == []
    assert store.scan(b"a", None, 1, keys_only=True) == [(b"a", Item(b"", 1))]


def test_scan_sees_puts_and_deletes_applied_between_scans(store: StateStore) -> None:
    model: dict[bytes, bytes] = {}
    for seq in range(1, 60):
        puts = [(b"k%03d" % ((seq * 7 + i) % 50), b"%d" % seq) for i in range(3)]
        deletes = [b"k%03d" % ((seq * 11) % 50)]
        store.apply([Write(seq=seq, puts=puts, deletes=deletes)])
        model.update(puts)
        for key in deletes:
            model.pop(key, None)
        if seq % 5 == 0:
            scanned = {k: item.value for k, item in store.scan(b"", None, 1000)}
            assert list(scanned) == sorted(model)
            assert scanned == model


def test_scan_stops_at_the_entry_that_reaches_max_bytes(store: StateStore) -> None:
    store.apply([Write(seq=1, puts=[(b"k%d" % i, b"x" * 100) for i in range(10)])])
    page = store.scan(b"", None, 100, max_bytes=250)
    assert [k for k, _ in page] == [b"k0", b"k1", b"k2"]
    assert len(store.scan(b"", None, 100, keys_only=True, max_bytes=250)) == 10


def test_a_persistent_store_keeps_its_data_across_reopening(
    kind: str, options: StoreOptions, tmp_path: Path
) -> None:
    store = open_store(kind, tmp_path, options=options)
    if not store.persistent:
        store.close()
        pytest.skip(f"{kind} stores are not persistent")
    store.apply(
        [Write(seq=1, puts=[(b"k", b"v"), (b"gone", b"x")]), Write(seq=2, deletes=[b"gone"])]
    )
    store.close()
    reopened = open_store(kind, tmp_path, options=options)
    try:
        assert reopened.get(b"k") == Item(b"v", 1)
        assert reopened.get(b"gone") is None
        assert reopened.get_many([b"gone", b"k"]) == [None, Item(b"v", 1)]
        assert reopened.scan(b"", None, 10) == [(b"k", Item(b"v", 1))]
    finally:
        reopened.close()
