"""State stores, by kind: ``sqlite`` (the durable default), ``memory``, and
``caching`` (a bounded memory cache in front of SQLite kept on another path).

Applications register their own kinds with ``register_store``.

A partition restored from a snapshot (``mkv.snapshots.stores``) finds its
data in its directory: a SQLite partition as its database, ``SQLITE_FILE``;
a memory partition as ``MEMORY_BASE_FILE``, loaded at every start (the log,
if any, then replays what came after it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mkv.errors import InvalidArgumentError, shown
from mkv.store.base import DEFAULT_CACHE_BYTES, Item, StateStore, StoreOptions, StoreStats
from mkv.store.caching import CachingStore, open_caching_store
from mkv.store.memory import MemoryStore
from mkv.store.sqlite import LayoutReader, SqliteStore, StoreDamagedError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "MEMORY_BASE_FILE",
    "SQLITE_FILE",
    "CachingStore",
    "Item",
    "MemoryStore",
    "SqliteStore",
    "StateStore",
    "StoreDamagedError",
    "StoreOptions",
    "StoreStats",
    "open_store",
    "register_store",
    "store_kinds",
]

# A factory gets the partition's own directory, already created; whether a
# write-ahead log in the partition's pipeline makes writes durable first; and
# the node's settings for stores (StoreOptions).
StoreFactory = Callable[[Path, bool, StoreOptions], StateStore]

SQLITE_FILE = "store.sqlite3"
MEMORY_BASE_FILE = "base.sqlite3"


def _open_memory(directory: Path, logged: bool, options: StoreOptions) -> MemoryStore:
    # With a log, the log keeps the sequence numbers (and the data).
    store = MemoryStore(None if logged else directory)
    base = directory / MEMORY_BASE_FILE
    if base.exists():
        with LayoutReader(base) as reader:
            store.load(reader.batches(), reader.last_seq, reader.last_ts)
    return store


_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda directory, logged, _: SqliteStore(directory / SQLITE_FILE, logged=logged),
    "memory": _open_memory,
    "caching": lambda directory, logged, options: open_caching_store(
        directory, logged=logged, options=options
    ),
}


def register_store(kind: str, factory: StoreFactory) -> None:
    """Make ``kind`` available to ``AddPartition``."""
    _FACTORIES[kind] = factory


def store_kinds() -> list[str]:
    return sorted(_FACTORIES)


def check_store_kind(kind: str) -> None:
    """Raises:
    InvalidArgumentError: no store of that kind is registered.
    """
    if kind not in _FACTORIES:
        raise InvalidArgumentError(
            f"Unknown store kind '{shown(kind)}'; known kinds are {', '.join(store_kinds())}."
        )


def open_store(
    kind: str, directory: Path, *, logged: bool = False, options: StoreOptions | None = None
) -> StateStore:
    """Open the store of ``kind`` in ``directory``; blocking (call from the worker thread).

    Args:
        logged: a write-ahead log in the partition's pipeline makes writes durable.
        options: the node's settings for stores (default: their defaults).

    Raises:
        InvalidArgumentError: no store of that kind is registered.
        StorageError: the store cannot be opened.
    """
    check_store_kind(kind)
    return _FACTORIES[kind](directory, logged, options or StoreOptions())
