"""The StateStore protocol every store implements, and the records it speaks in.

A store is driven by exactly one partition task. Its ``apply`` may block (disk,
fsync) and is always called from the partition's worker thread; its ``get``
must be cheap enough to call inline on the event loop (a dict lookup, or a
point read on SQLite's read connection in WAL mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

__all__ = ["Item", "Mutation", "StateStore", "StoreStats"]


@attrs.frozen
class Item:
    """A stored value and the sequence number of the write that produced it."""

    value: bytes
    seq: int


@attrs.frozen
class Mutation:
    """One atomic request, numbered by the partition: puts then deletes."""

    seq: int
    puts: Sequence[tuple[bytes, bytes]] = ()
    deletes: Sequence[bytes] = ()


@attrs.frozen
class StoreStats:
    key_count: int
    size_bytes: int


class StateStore(Protocol):
    """What a partition needs from its storage."""

    kind: str

    def last_seq(self) -> int:
        """The highest sequence number durably applied (0 for a new store).

        The partition numbers new mutations after it, so it must never go
        backwards, across restarts too.
        """
        ...

    def get(self, key: bytes) -> Item | None:
        """Point read; called inline on the event loop, so it must be fast."""
        ...

    def apply(self, mutations: Sequence[Mutation]) -> list[int]:
        """Apply mutations in order, all or none, durably; blocking.

        Returns, per mutation, how many of its deletes removed an existing key.

        Raises:
            StorageError: nothing was applied.
        """
        ...

    def stats(self) -> StoreStats:
        """Key count and bytes on disk; may block, and may run in any thread."""
        ...

    def close(self) -> None:
        """Release files and connections; called from the worker thread."""
        ...
