"""State stores, by kind: ``sqlite`` (the durable default) and ``memory``.

Applications register their own kinds with ``register_store``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mkv.errors import InvalidArgumentError, shown
from mkv.store.base import Item, Mutation, StateStore, StoreStats
from mkv.store.memory import MemoryStore
from mkv.store.sqlite import SqliteStore

__all__ = [
    "Item",
    "MemoryStore",
    "Mutation",
    "SqliteStore",
    "StateStore",
    "StoreStats",
    "open_store",
    "register_store",
    "store_kinds",
]

# A factory gets the partition's own directory, already created.
StoreFactory = Callable[[Path], StateStore]

_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": lambda directory: SqliteStore(directory / "store.sqlite3"),
    "memory": MemoryStore,
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


def open_store(kind: str, directory: Path) -> StateStore:
    """Open the store of ``kind`` in ``directory``; blocking (call from the worker thread)."""
    check_store_kind(kind)
    return _FACTORIES[kind](directory)
