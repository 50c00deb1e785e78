"""The StateStore protocol every store implements, and the records it speaks in.

``Item`` and ``Write`` are defined in ``mkv.records`` (the client shares
``Item``) and re-exported here for the stores.

A store is driven by exactly one partition task. Its ``apply``, ``get_many``
and ``scan`` may block (disk, fsync) and are always called from the
partition's worker thread, one at a time; its ``get`` must be cheap enough to
call inline on the event loop (a dict lookup, or a point read on SQLite's read
connection in WAL mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import attrs

from mkv.records import Item, Write

__all__ = ["DEFAULT_CACHE_BYTES", "Item", "StateStore", "StoreOptions", "StoreStats", "Write"]

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


@attrs.frozen
class StoreStats:
    key_count: int
    size_bytes: int


@attrs.frozen(kw_only=True)
class StoreOptions:
    """Settings of one partition's store that come from the node's configuration.

    The registry fills them in per partition; kinds that have no use for one
    ignore it.
    """

    # Where a store that keeps its durable copy apart from the partition's
    # directory (``caching``: the "managed disk") puts it; None: a
    # subdirectory of the partition's directory.
    durable_directory: Path | None = None
    # The byte bound of an in-memory cache (``caching``).
    cache_bytes: int = DEFAULT_CACHE_BYTES


class StateStore(Protocol):
    """What a partition needs from its storage."""

    kind: str
    # True when what ``sync`` returns is on disk: a write-ahead log may then
    # drop its records up to that sequence number.
    persistent: bool

    def last_seq(self) -> int:
        """The highest sequence number applied (0 for a new store).

        A partition replays its log after it, and numbers new writes after it
        (and after the log's last), so it must never go backwards.
        """
        ...

    def last_timestamp(self) -> int:
        """The timestamp of the last applied write that had one (0 if none)."""
        ...

    def get(self, key: bytes) -> Item | None:
        """Point read; called inline on the event loop, so it must be fast."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        """Point reads of ``keys``, in order; blocking (the worker thread), so
        they see exactly the writes applied before them."""
        ...

    def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int,
        *,
        keys_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, Item]]:
        """Up to ``limit`` keys in ``[start, end)`` (``end`` None: unbounded),
        in byte order, with their items (values empty when ``keys_only``);
        it stops after the entry that brings keys and values to ``max_bytes``.

        Blocking: called from the worker thread, between applies, so the page
        is one consistent view at ``last_seq()``.
        """
        ...

    def apply(self, writes: Sequence[Write]) -> list[int]:
        """Apply writes in order, all or none; blocking.

        Returns, per write, how many of its deletes removed an existing key.

        Raises:
            StorageError: nothing was applied.
        """
        ...

    def sync(self) -> int:
        """Make everything applied so far durable; return the last sequence
        number that now is. Blocking: the worker thread."""
        ...

    def stats(self) -> StoreStats:
        """Key count and bytes on disk; may block, and may run in any thread."""
        ...

    def close(self) -> None:
        """Release files and connections; called from the worker thread."""
        ...
