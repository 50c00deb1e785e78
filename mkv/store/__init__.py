"""State stores, by kind: ``sqlite`` (the durable default) and ``memory``.

Applications register their own kinds with ``register_store``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mkv.errors import InvalidArgumentError, shown
from mkv.store.base import Item, StateStore, StoreStats
from mkv.store.memory import MemoryStore
from mkv.store.sqlite import SqliteStore

__all__ = [
    "Item",
    "MemoryStore",
    "SqliteStore",
    "StateStore",
    "StoreStats",
    "open_store",
    "register_store",
    "store_kinds",
]

# A factory gets the partition's own directory, already created, and whether
# a write-ahead log in the partition's pipeline makes writes durable first.
StoreFactory = Callable[[Path, bool], StateStore]

_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda directory, logged: SqliteStore(directory / "store.sqlite3", logged=logged),
    # With a log, the log keeps the sequence numbers (and the data).
    "memory": lambda directory, logged: MemoryStore(None if logged else directory),
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


def open_store(kind: str, directory: Path, *, logged: bool = False) -> StateStore:
    """Open the store of ``kind`` in ``directory``; blocking (call from the worker thread)."""
    check_store_kind(kind)
    return _FACTORIES[kind](directory, logged)
