"""What request handlers ask of a partition (``Partition.submit``), and its answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from mkv.partition.mutations import Condition
from mkv.store import StateStore

__all__ = [
    "Command",
    "Get",
    "Increment",
    "Mutation",
    "Read",
    "Remove",
    "Upsert",
    "WriteResult",
]


@attrs.frozen
class Upsert:
    puts: Sequence[tuple[bytes, bytes]]
    size: int
    # The request's bytes, which are also its log payload (mkv.pipeline.payload).
    payload: bytes | None = None
    # Applied only if every condition holds against the state before it.
    conditions: Sequence[tuple[bytes, Condition]] = ()


@attrs.frozen
class Remove:
    keys: Sequence[bytes]
    size: int
    conditions: Sequence[tuple[bytes, Condition]] = ()


@attrs.frozen
class Increment:
    """Add signed deltas to counters (mkv.partition.mutations), atomically."""

    deltas: Sequence[tuple[bytes, int]]
    size: int


@attrs.frozen
class Get:
    key: bytes


@attrs.frozen
class Read:
    """Run ``fn(store)`` on the worker thread after every write admitted
    before it is applied, and before any admitted after: a consistent view at
    one sequence number (scans, batch reads, snapshots). Writes wait while it
    runs, so it should be short."""

    fn: Callable[[StateStore], Any]


Command = Upsert | Remove | Increment | Get | Read
Mutation = Upsert | Remove | Increment


@attrs.frozen
class WriteResult:
    seq: int
    timestamp: int = 0
    removed: int = 0
    # An increment's new values, one per delta.
    values: Sequence[int] = ()
