"""The caching store beyond the contract: its byte bound, LRU order, negative
entries, failure atomicity, races between ``get`` and ``apply``, and where its
durable files live."""

from __future__ import annotations

import gc
import random
import tempfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mkv.errors import StorageError
from mkv.records import Write
from mkv.store import CachingStore, Item, SqliteStore, StoreOptions, open_store
from mkv.store.caching import LOCK_CHUNK, open_caching_store
from mkv.store.lru import ENTRY_OVERHEAD, BoundedLru, entry_size

# Long enough for a thread to reach a hook on a loaded machine; a test that
# times out here failed, it never hangs.
HOOK_TIMEOUT = 10.0


def caching(tmp_path: Path, cache_bytes: int = 1 << 20) -> CachingStore:
    # logged: no fsync per commit, which these tests do not need.
    return CachingStore(SqliteStore(tmp_path / "durable.sqlite3", logged=True), cache_bytes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CachingStore]:
    store = caching(tmp_path)
    yield store
    store.close()


# -- the byte bound and LRU order ------------------------------------------------


def test_the_least_recently_used_entry_is_evicted_first() -> None:
    lru = BoundedLru(3 * entry_size(b"a", Item(b"1", 1)))
    for key in (b"a", b"b", b"c"):
        lru.put(key, Item(b"1", 1))
    assert lru.lookup(b"a") == (True, Item(b"1", 1))  # now the most recent
    lru.put(b"d", Item(b"1", 1))
    assert lru.keys() == [b"c", b"a", b"d"]
    assert lru.statistics().evictions == 1


def test_an_entry_bigger_than_the_bound_is_not_cached_and_drops_the_old_one() -> None:
    lru = BoundedLru(ENTRY_OVERHEAD + 100)
    lru.put(b"k", Item(b"small", 1))
    lru.put(b"k", Item(b"x" * 200, 2))
    assert lru.lookup(b"k") == (False, None)
    assert lru.statistics().bytes == 0


def test_a_cached_absence_is_told_from_a_miss() -> None:
    lru = BoundedLru(10_000)
    lru.put(b"absent", None)
    assert lru.lookup(b"absent") == (True, None)
    assert lru.lookup(b"never-seen") == (False, None)


class CacheBoundMachine(RuleBasedStateMachine):
    """Random writes and reads against a dict model; after every step the
    cache is within its bound, its accounting is exact, every cached entry is
    what the durable store holds, and every read answers what the model does."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.bound = 4 * ENTRY_OVERHEAD + 600
        self.store = caching(Path(self._tmp.name), self.bound)
        self.model: dict[bytes, Item] = {}
        self.seq = 0

    keys = st.binary(min_size=1, max_size=6).map(lambda k: b"k" + k) | st.sampled_from(
        [b"hot", b"cold", b"k"]
    )
    values = st.binary(max_size=300)

    @rule(puts=st.lists(st.tuples(keys, values), max_size=6), deletes=st.lists(keys, max_size=3))
    def write(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes]) -> None:
        self.seq += 1
        self.store.apply([Write(seq=self.seq, puts=puts, deletes=deletes)])
        for key, value in puts:
            self.model[key] = Item(value, self.seq)
        for key in deletes:
            self.model.pop(key, None)

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.store.get(key) == self.model.get(key)

    @rule(keys=st.lists(keys, max_size=8))
    def get_many(self, keys: list[bytes]) -> None:
        assert self.store.get_many(keys) == [self.model.get(k) for k in keys]

    @precondition(lambda self: self.seq % 3 == 0)
    @rule()
    def scan(self) -> None:
        assert self.store.scan(b"", None, 1000) == sorted(self.model.items())

    @invariant()
    def within_bound_and_true_to_the_durable_store(self) -> None:
        stats = self.store.statistics()
        assert stats.bytes <= self.bound
        cached = self.store._cache.keys()
        charged = 0
        for key in cached:
            found, item = self.store.cached(key)
            assert found
            assert item == self.store.durable.get(key)
            charged += entry_size(key, item)
        assert stats.bytes == charged
        assert stats.entries == len(cached)

    def teardown(self) -> None:
        self.store.close()
        self._tmp.cleanup()


CacheBoundMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_the_cache_never_exceeds_its_bound = CacheBoundMachine.TestCase


def test_a_long_random_run_stays_within_the_bound(tmp_path: Path) -> None:
    rng = random.Random(5)
    bound = 64 * 1024
    store = caching(tmp_path, bound)
    peak = 0
    try:
        for seq in range(1, 3000):
            key = b"k%d" % rng.randrange(2000)
            if rng.random() < 0.3:
                store.apply([Write(seq=seq, puts=[(key, rng.randbytes(rng.randrange(2000)))])])
            elif rng.random() < 0.1:
                store.apply([Write(seq=seq, deletes=[key])])
            else:
                store.get(key)
            stats = store.statistics()
            assert stats.bytes <= bound
            peak = max(peak, stats.bytes)
        assert store.statistics().evictions > 0
        assert peak > bound * 0.9  # the run did press against the bound
    finally:
        store.close()


def test_the_charged_size_covers_the_memory_really_used(tmp_path: Path) -> None:
    """ENTRY_OVERHEAD is an estimate: check it against tracemalloc."""
    bound = 2 * 1024 * 1024
    store = caching(tmp_path, bound)
    try:
        store.get(b"warm-up")  # SQLite statements prepared before measuring
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for seq in range(1, 200):
                puts = [(b"key-%d-%d" % (seq, i), b"v" * (i % 64)) for i in range(100)]
                store.apply([Write(seq=seq, puts=puts)])
            del puts
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        stats = store.statistics()
        assert stats.evictions > 0
        assert stats.bytes > bound * 0.95
        assert used <= bound
    finally:
        store.close()


# -- reads, writes and failures --------------------------------------------------


def test_a_miss_warms_the_cache_and_a_hit_does_not_read_sqlite(store: CachingStore) -> None:
    store.apply([Write(seq=1, puts=[(b"k", b"v")])])
    store._cache.clear()  # as after a restart
    assert store.get(b"k") == Item(b"v", 1)
    assert store.get(b"k") == Item(b"v", 1)
    stats = store.statistics()
    assert (stats.hits, stats.misses) == (1, 1)


def test_absent_keys_are_cached_until_a_write_creates_them(store: CachingStore) -> None:
    assert store.get(b"new") is None
    assert store.cached(b"new") == (True, None)
    assert store.get(b"new") is None
    assert store.statistics().hits == 1
    store.apply([Write(seq=1, puts=[(b"new", b"here")])])
    assert store.get(b"new") == Item(b"here", 1)


def test_writes_leave_the_cache_holding_what_they_wrote(store: CachingStore) -> None:
    store.apply(
        [
            Write(seq=1, puts=[(b"a", b"1"), (b"b", b"1")], timestamp=7),
            Write(seq=2, puts=[(b"a", b"2")], deletes=[b"b"], timestamp=8),
        ]
    )
    assert store.cached(b"a") == (True, Item(b"2", 2, 8))
    assert store.cached(b"b") == (True, None)


def test_get_many_serves_hits_and_reads_only_misses(store: CachingStore) -> None:
    store.apply([Write(seq=1, puts=[(b"a", b"1"), (b"b", b"2")])])
    store._cache.discard(b"b")
    keys = [b"a", b"b", b"missing", b"a"] + [b"x%d" % i for i in range(2 * LOCK_CHUNK + 3)]
    assert store.get_many(keys)[:4] == [Item(b"1", 1), Item(b"2", 1), None, Item(b"1", 1)]
    assert store.cached(b"b") == (True, Item(b"2", 1))
    assert store.cached(b"x%d" % (2 * LOCK_CHUNK)) == (True, None)
    stats = store.statistics()
    assert (stats.hits, stats.misses) == (2, len(keys) - 2)


def test_a_failed_durable_write_changes_nothing(store: CachingStore) -> None:
    store.apply([Write(seq=1, puts=[(b"k", b"old")])])
    assert store.get(b"k") == Item(b"old", 1)
    bad: Any = [(b"x", b"ok"), (b"y", None)]  # NULL violates the schema
    with pytest.raises(StorageError, match="nothing was applied"):
        store.apply([Write(seq=2, puts=[(b"k", b"new")]), Write(seq=3, puts=bad)])
    assert store.cached(b"k") in [(False, None), (True, Item(b"old", 1))]
    assert store.cached(b"x") == (False, None)
    assert store.get(b"k") == Item(b"old", 1)
    assert store.get(b"x") is None
    assert store.last_seq() == 1
    store.apply([Write(seq=2, puts=[(b"k", b"after")])])
    assert store.get(b"k") == Item(b"after", 2)


def test_big_batches_update_the_cache_in_chunks(store: CachingStore) -> None:
    puts = [(b"k%05d" % i, b"v") for i in range(3 * LOCK_CHUNK + 1)]
    store.apply([Write(seq=1, puts=puts)])
    assert all(store.cached(k) == (True, Item(b"v", 1)) for k, _ in puts)
    store.apply([Write(seq=2, deletes=[k for k, _ in puts])])
    assert all(store.cached(k) == (True, None) for k, _ in puts)


# -- races between get (event loop) and apply (worker thread) ---------------------


class HookedSqlite(SqliteStore):
    """A SqliteStore that can pause a thread inside ``get`` (after reading)
    or inside ``apply`` (after committing), so a test can interleave the
    caching store's steps exactly."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pause_get_after_read: Pause | None = None
        self.pause_apply_before_commit: Pause | None = None
        self.pause_apply_after_commit: Pause | None = None

    def get(self, key: bytes) -> Item | None:
        item = super().get(key)
        if (pause := self.pause_get_after_read) is not None:
            self.pause_get_after_read = None
            pause.here()
        return item

    def apply(self, writes: Any) -> list[int]:
        if (pause := self.pause_apply_before_commit) is not None:
            self.pause_apply_before_commit = None
            pause.here()
        removed = super().apply(writes)
        if (pause := self.pause_apply_after_commit) is not None:
            self.pause_apply_after_commit = None
            pause.here()
        return removed


class Pause:
    def __init__(self) -> None:
        self.reached = threading.Event()
        self.resume = threading.Event()

    def here(self) -> None:
        self.reached.set()
        assert self.resume.wait(HOOK_TIMEOUT), "the test never resumed this thread"


class InThread:
    """Runs ``fn`` on a thread; ``result()`` joins it and returns or raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: list[Any] = []
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._result.append(fn())
            except BaseException as exc:
                self._error.append(exc)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join(HOOK_TIMEOUT)
        assert not self._thread.is_alive(), "the thread did not finish"
        if self._error:
            raise self._error[0]
        return self._result[0]


@pytest.fixture
def worker() -> Iterator[ThreadPoolExecutor]:
    """One thread that owns the store's write connection, as a partition's does."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        yield worker


@pytest.fixture
def hooked(
    tmp_path: Path, worker: ThreadPoolExecutor
) -> Iterator[tuple[CachingStore, HookedSqlite]]:
    durable = worker.submit(HookedSqlite, tmp_path / "durable.sqlite3").result()
    store = CachingStore(durable, 1 << 20)
    yield store, durable
    worker.submit(store.close).result()


def on(worker: ThreadPoolExecutor, fn: Callable[[], Any]) -> Any:
    return worker.submit(fn).result(HOOK_TIMEOUT)


def test_a_miss_that_read_before_a_write_does_not_cache_the_old_value(
    hooked: tuple[CachingStore, HookedSqlite], worker: ThreadPoolExecutor
) -> None:
    store, durable = hooked
    on(worker, lambda: store.apply([Write(seq=1, puts=[(b"k", b"old")])]))
    store._cache.clear()
    # get: misses, reads "old" from SQLite, pauses before filling the cache;
    # meanwhile a whole apply writes "new"; then the get fills.
    durable.pause_get_after_read = pause = Pause()
    reader = InThread(lambda: store.get(b"k"))
    assert pause.reached.wait(HOOK_TIMEOUT)
    on(worker, lambda: store.apply([Write(seq=2, puts=[(b"k", b"new")])]))
    pause.resume.set()
    assert reader.result() == Item(b"old", 1)  # it did start before the write
    assert store.cached(b"k") == (True, Item(b"new", 2))
    assert store.get(b"k") == Item(b"new", 2)
    assert store.statistics().stale_fills == 1


def test_a_miss_that_fills_during_a_write_does_not_cache_the_old_value(
    hooked: tuple[CachingStore, HookedSqlite], worker: ThreadPoolExecutor
) -> None:
    store, durable = hooked
    on(worker, lambda: store.apply([Write(seq=1, puts=[(b"k", b"old")])]))
    store._cache.clear()
    # get reads "old"; an apply commits "new" and pauses before refilling the
    # cache; the get then tries to fill, while the apply is still running.
    durable.pause_get_after_read = read = Pause()
    reader = InThread(lambda: store.get(b"k"))
    assert read.reached.wait(HOOK_TIMEOUT)
    durable.pause_apply_after_commit = commit = Pause()
    writer = worker.submit(store.apply, [Write(seq=2, puts=[(b"k", b"new")])])
    assert commit.reached.wait(HOOK_TIMEOUT)
    read.resume.set()
    assert reader.result() == Item(b"old", 1)
    # The write is committed but not yet acknowledged: a read may see either
    # value, but once one read has seen "new" none may see "old" again.
    assert store.get(b"k") == Item(b"new", 2)
    assert store.get(b"k") == Item(b"new", 2)
    commit.resume.set()
    assert writer.result(HOOK_TIMEOUT) == [0]
    assert store.get(b"k") == Item(b"new", 2)


def test_a_miss_during_a_write_does_not_cache_what_it_read_before_the_commit(
    hooked: tuple[CachingStore, HookedSqlite], worker: ThreadPoolExecutor
) -> None:
    store, durable = hooked
    on(worker, lambda: store.apply([Write(seq=1, puts=[(b"k", b"old")])]))
    # The apply has begun (k dropped from the cache) but not committed when
    # the get misses and reads "old"; the get fills after the commit.
    durable.pause_apply_before_commit = begun = Pause()
    durable.pause_apply_after_commit = commit = Pause()
    writer = worker.submit(store.apply, [Write(seq=2, puts=[(b"k", b"new")])])
    assert begun.reached.wait(HOOK_TIMEOUT)
    durable.pause_get_after_read = read = Pause()
    reader = InThread(lambda: store.get(b"k"))
    assert read.reached.wait(HOOK_TIMEOUT)
    begun.resume.set()
    assert commit.reached.wait(HOOK_TIMEOUT)
    read.resume.set()
    assert reader.result() == Item(b"old", 1)
    assert store.get(b"k") == Item(b"new", 2)
    commit.resume.set()
    writer.result(HOOK_TIMEOUT)
    assert store.get(b"k") == Item(b"new", 2)
    # Both misses during the apply (the reader's and the one above) were not cached.
    assert store.statistics().stale_fills == 2


def test_readers_see_a_multi_key_write_whole_while_it_is_applied(
    hooked: tuple[CachingStore, HookedSqlite], worker: ThreadPoolExecutor
) -> None:
    store, durable = hooked
    on(worker, lambda: store.apply([Write(seq=1, puts=[(b"a", b"old"), (b"b", b"old")])]))
    store._cache.discard(b"a")  # a misses, b hits
    durable.pause_apply_after_commit = commit = Pause()
    writer = worker.submit(store.apply, [Write(seq=2, puts=[(b"a", b"new"), (b"b", b"new")])])
    assert commit.reached.wait(HOOK_TIMEOUT)
    # SQLite has committed both keys. A read of a sees the commit, so a read
    # of b after it must too: a cached "old" for b would tear the write.
    assert store.get(b"a") == Item(b"new", 2)
    assert store.get(b"b") == Item(b"new", 2)
    commit.resume.set()
    writer.result(HOOK_TIMEOUT)
    assert on(worker, lambda: store.get_many([b"a", b"b"])) == [Item(b"new", 2)] * 2


def test_gets_racing_applies_on_threads_never_go_back(
    tmp_path: Path, worker: ThreadPoolExecutor
) -> None:
    """Free-running: the worker writes increasing values while this thread
    reads and checks that what it sees never decreases, with a cache small
    enough that keys keep missing and refilling."""
    store = on(worker, lambda: caching(tmp_path, cache_bytes=3 * (ENTRY_OVERHEAD + 20)))
    keys = [b"k%d" % i for i in range(5)]
    on(worker, lambda: store.apply([Write(seq=1, puts=[(k, b"%08d" % 0) for k in keys])]))
    done = threading.Event()

    def write() -> None:
        try:
            for n in range(2, 1500):
                store.apply([Write(seq=n, puts=[(keys[n % 5], b"%08d" % n)])])
        finally:
            done.set()

    writer = worker.submit(write)
    seen = dict.fromkeys(keys, 0)
    reads = 0
    while not done.is_set() or reads < 1000:
        key = keys[reads % 5]
        item = store.get(key)
        assert item is not None
        assert int(item.value) >= seen[key], f"{key!r} went back"
        seen[key] = int(item.value)
        reads += 1
    writer.result(HOOK_TIMEOUT)
    for key in keys:
        assert store.get(key) == store.durable.get(key)
    assert store.statistics().misses > 100  # the cache did keep missing
    on(worker, store.close)


# -- where the durable store lives -------------------------------------------------


def test_the_durable_store_lives_in_the_configured_directory(tmp_path: Path) -> None:
    partition_dir, durable_dir = tmp_path / "local" / "p1", tmp_path / "managed" / "p1"
    partition_dir.mkdir(parents=True)
    options = StoreOptions(durable_directory=durable_dir, cache_bytes=4096)
    store = open_store("caching", partition_dir, options=options)
    try:
        assert isinstance(store, CachingStore)
        assert store.durable.path == durable_dir / "store.sqlite3"
        store.apply([Write(seq=1, puts=[(b"k", b"v")])])
        assert store.statistics().max_bytes == 4096
    finally:
        store.close()
    assert (durable_dir / "store.sqlite3").exists()
    assert not list(partition_dir.glob("*.sqlite3*"))


def test_a_moved_durable_directory_is_refused(tmp_path: Path) -> None:
    partition_dir = tmp_path / "p1"
    partition_dir.mkdir()
    first = StoreOptions(durable_directory=tmp_path / "disk-a" / "p1")
    open_caching_store(partition_dir, logged=False, options=first).close()
    other = StoreOptions(durable_directory=tmp_path / "disk-b" / "p1")
    with pytest.raises(StorageError, match=r"was created in .*disk-a"):
        open_caching_store(partition_dir, logged=False, options=other)
    assert not (tmp_path / "disk-b").exists()


def test_a_missing_durable_store_is_refused_not_recreated_empty(tmp_path: Path) -> None:
    partition_dir, durable_dir = tmp_path / "p1", tmp_path / "disk" / "p1"
    partition_dir.mkdir()
    options = StoreOptions(durable_directory=durable_dir)
    store = open_caching_store(partition_dir, logged=False, options=options)
    store.apply([Write(seq=1, puts=[(b"k", b"v")])])
    store.close()
    for path in durable_dir.iterdir():  # as if the disk were not mounted
        path.unlink()
    with pytest.raises(StorageError, match=r"missing .*is its disk mounted"):
        open_caching_store(partition_dir, logged=False, options=options)
    assert not (durable_dir / "store.sqlite3").exists()
