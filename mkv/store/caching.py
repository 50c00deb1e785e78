"""A write-through caching store: a bounded memory cache in front of SQLite.

The durable copy is a ``SqliteStore`` in its own directory, which may sit on
another disk (the "managed disk": network-attached, replicated, slower). The
cache is a ``BoundedLru`` of recently written and read keys, bounded in bytes.

Writes go to the durable store first, then to the cache, all before
``apply`` returns, so a partition acknowledges only what both hold; when the
durable write fails nothing changes. Point reads try the cache, and a miss
reads the durable store and fills the cache with what it found, including
"no such key": a negative entry. Absent keys are looked up as often as
present ones (existence checks, read-before-create), each negative entry is
charged against the same byte bound, and every write updates the entries it
touches, so they cost nothing in correctness. Scans read the durable store
and leave the cache alone: a scan's pages are not point reads, and copying
them in would flush the hot keys.

Concurrency. A partition calls ``get`` on the event loop while ``apply``,
``get_many`` and ``scan`` run on its worker thread. One invariant keeps this
simple: at every instant, whatever the cache holds for a key is what the
durable store's last commit holds for it. So a hit answers exactly what a
SQLite read would, and multi-key writes stay atomic to readers. Keeping it:

- ``apply`` first drops the keys it writes from the cache, then commits to
  the durable store, then caches the new values. Between the commit and the
  refill those keys miss and are read from SQLite, which shows the whole
  commit or none of it.
- A miss reads SQLite outside the lock (so an apply is never held up by a
  read) and fills the cache only if no apply was running at the miss nor
  began since: a version counter, bumped by ``apply`` on entry and on exit
  (odd while one is running), is read at the miss and checked at the fill.
  A fill that lost the race is dropped, at the price of one more miss later.

The lock is held for cache operations only, never across SQLite, and in
chunks of ``LOCK_CHUNK`` keys for big batches, so a ``get`` on the event
loop waits well under a millisecond.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs

from mkv.errors import StorageError
from mkv.records import Write
from mkv.store.base import Item, StoreOptions, StoreStats
from mkv.store.files import make_directory, write_atomically
from mkv.store.lru import BoundedLru
from mkv.store.sqlite import SqliteStore

__all__ = ["CacheStatistics", "CachingStore", "durable_directory", "open_caching_store"]

# Cache updates take the lock for at most this many keys at a time.
LOCK_CHUNK = 512
# In the partition's directory: where its durable store was created.
LOCATION_FILE = "durable-location"
DURABLE_FILE = "store.sqlite3"


@attrs.frozen
class CacheStatistics:
    entries: int
    # Charged bytes (see mkv.store.lru); never above max_bytes.
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    # Fills dropped because an apply overlapped the read that missed.
    stale_fills: int


class CachingStore:
    """A ``SqliteStore`` (``durable``) behind a bounded LRU cache in memory."""

    kind = "caching"
    persistent = True

    def __init__(self, durable: SqliteStore, cache_bytes: int) -> None:
        """Args:
        durable: the store that holds everything; snapshots read it directly.
        cache_bytes: the cache's bound (0: no caching).
        """
        self.durable = durable
        self._cache = BoundedLru(cache_bytes)
        self._lock = threading.Lock()
        # Odd while an apply is running; see the module docstring.
        self._version = 0
        self._hits = 0
        self._misses = 0
        self._stale_fills = 0

    def last_seq(self) -> int:
        return self.durable.last_seq()

    def last_timestamp(self) -> int:
        return self.durable.last_timestamp()

    def get(self, key: bytes) -> Item | None:
        with self._lock:
            cached, item = self._cache.lookup(key)
            if cached:
                self._hits += 1
                return item
            self._misses += 1
            version = self._version
        item = self.durable.get(key)
        self._fill(version, [(key, item)])
        return item

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        results: list[Item | None] = [None] * len(keys)
        missing: list[int] = []
        with self._lock:
            version = self._version
        for start in range(0, len(keys), LOCK_CHUNK):
            with self._lock:
                for i in range(start, min(start + LOCK_CHUNK, len(keys))):
                    cached, item = self._cache.lookup(keys[i])
                    if cached:
                        results[i] = item
                    else:
                        missing.append(i)
        with self._lock:
            self._hits += len(keys) - len(missing)
            self._misses += len(missing)
        if missing:
            found = self.durable.get_many([keys[i] for i in missing])
            for i, item in zip(missing, found, strict=True):
                results[i] = item
            self._fill(version, [(keys[i], item) for i, item in zip(missing, found, strict=True)])
        return results

    def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int,
        *,
        keys_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, Item]]:
        return self.durable.scan(start, end, limit, keys_only=keys_only, max_bytes=max_bytes)

    def apply(self, writes: Sequence[Write]) -> list[int]:
        if not writes:
            return []
        final = _final_state(writes)
        with self._lock:
            self._version += 1
        try:
            # Each step leaves every cached entry equal to SQLite's last
            # commit, even if it stops halfway: dropping an entry is always
            # safe, and the refill only caches what was just committed.
            self._update(final, drop=True)
            removed = self.durable.apply(writes)
            self._update(final, drop=False)
        finally:
            with self._lock:
                self._version += 1
        return removed

    def sync(self) -> int:
        return self.durable.sync()

    def stats(self) -> StoreStats:
        return self.durable.stats()

    def statistics(self) -> CacheStatistics:
        with self._lock:
            lru = self._cache.statistics()
            return CacheStatistics(
                entries=lru.entries,
                bytes=lru.bytes,
                max_bytes=lru.max_bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=lru.evictions,
                stale_fills=self._stale_fills,
            )

    def cached(self, key: bytes) -> tuple[bool, Item | None]:
        """Whether ``key`` is cached and what the cache holds, without
        counting or reordering (for tests and debugging)."""
        with self._lock:
            return self._cache.peek(key)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        self.durable.close()

    def _fill(self, version: int, found: Sequence[tuple[bytes, Item | None]]) -> None:
        """Cache what a miss read, unless an apply was running at ``version``
        or began since."""
        for start in range(0, len(found), LOCK_CHUNK):
            with self._lock:
                # An odd version: the miss may have read SQLite before the
                # running apply's commit, and the fill land after its refill.
                if version % 2 or self._version != version:
                    self._stale_fills += len(found) - start
                    return
                for key, item in found[start : start + LOCK_CHUNK]:
                    self._cache.put(key, item)

    def _update(self, final: dict[bytes, Item | None], *, drop: bool) -> None:
        """Drop the keys of ``final`` from the cache, or cache their final state."""
        entries = list(final.items())
        cache = self._cache
        for start in range(0, len(entries), LOCK_CHUNK):
            with self._lock:
                for key, item in entries[start : start + LOCK_CHUNK]:
                    if drop:
                        cache.discard(key)
                    else:
                        cache.put(key, item)


def _final_state(writes: Sequence[Write]) -> dict[bytes, Item | None]:
    """Each key the writes touch, as it is after all of them (None: deleted)."""
    final: dict[bytes, Item | None] = {}
    for write in writes:
        for key, value in write.puts:
            final[key] = Item(value, write.seq, write.timestamp)
        for key in write.deletes:
            final[key] = None
    return final


def durable_directory(directory: Path, options: StoreOptions) -> Path:
    """Where a caching partition whose own directory is ``directory`` keeps
    its durable store (restore puts a snapshot there)."""
    if options.durable_directory is not None:
        return options.durable_directory
    return directory / "durable"


def open_caching_store(directory: Path, *, logged: bool, options: StoreOptions) -> CachingStore:
    """Open (creating if new) a caching partition's store; blocking.

    The partition's directory records where the durable store was created, so
    that a node restarted with another ``durable_dir``, or with the managed
    disk not mounted, refuses to start rather than serve an empty store and
    let its log's checkpointed writes go missing.

    Raises:
        StorageError: the durable store is not where it was created, or
            cannot be opened.
    """
    durable_dir = durable_directory(directory, options)
    location = durable_dir.resolve()
    record = directory / LOCATION_FILE
    database = durable_dir / DURABLE_FILE
    try:
        recorded = Path(os.fsdecode(record.read_bytes())) if record.exists() else None
        if recorded is not None and recorded != location:
            raise StorageError(
                f"The durable store of the partition in {directory} was created in "
                f"{recorded}, but the node now keeps durable stores in {location}; "
                "set durable_dir back, or move the files and edit "
                f"{record} to match."
            )
        if recorded is not None and not database.exists():
            raise StorageError(
                f"The durable store of the partition in {directory} is missing from "
                f"{location}; is its disk mounted?"
            )
        make_directory(durable_dir)
    except OSError as exc:
        raise StorageError(f"Could not reach the durable store directory {location}.") from exc
    durable = SqliteStore(database, logged=logged)
    if recorded is None:
        try:
            write_atomically(record, os.fsencode(str(location)))
        except OSError as exc:
            durable.close()
            raise StorageError(f"Could not record the durable store's place in {record}.") from exc
    return CachingStore(durable, options.cache_bytes)
