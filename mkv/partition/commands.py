"""What request handlers ask of a partition (``Partition.submit``), and its answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from mkv.partition.mutations import Condition
from mkv.router import KeyRange
from mkv.store import StateStore

__all__ = [
    "Command",
    "Cutover",
    "Extend",
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
    # Removes keys the partition no longer owns (the purge after a split):
    # exempt from the range check every other mutation passes.
    purge: bool = False


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


@attrs.frozen
class Cutover:
    """Give ``moved`` (the upper part of the partition's range) to ``owner``.

    At admission the partition's range becomes ``keep``: every later
    mutation or read of ``moved`` is refused (``MovedError``), so none is
    numbered by this partition. In its turn at release, once every write
    admitted before it is applied, ``at_release(seq, timestamp)`` is awaited
    with the partition's last applied seq and timestamp; the partition
    applies nothing meanwhile (the pause of a split's cut-over). It returns
    the seq a watcher of ``moved`` resumes from on ``owner`` (None: the seq
    it was given). If it raises, the range is given back and the error is
    the command's answer.
    """

    keep: KeyRange
    moved: KeyRange
    owner: str
    at_release: Callable[[int, int], Awaitable[int | None]]
    # The data address of the node ``owner`` is on, when it is another node
    # (a move): requests refused from here on name it, so clients re-route there.
    address: str = ""


@attrs.frozen
class Extend:
    """Take ``added`` (the range just above the partition's, a merge's right
    partition) into the partition's range, in its own order.

    ``floor`` is the right partition's last seq at its cut-over: the
    partition numbers every write admitted after this one above both that
    and its own last seq (``top``), so a key's seq never goes backwards.

    At admission, ``prepare(store)`` runs on the worker thread (the
    partition admits nothing meanwhile): it puts the right partition's last
    writes into the store, which already holds the rest of its rows (loaded
    before, in ``Read`` jobs); they touch only ``added``, which no write in
    flight touches, so they need not wait for those. Then the range grows, so
    later writes of ``added`` are decided against that state. In its turn at
    release ``finish(store, top)`` runs on the worker thread (the store's
    last seq set to ``top``, made durable), then ``commit(top)`` is awaited
    (the catalog names the merged range). If either raises, the range is
    given back and the partition fails (its store may hold a part of
    ``added``; the registry purges it when it reopens the partition). The
    answer is ``top``.
    """

    added: KeyRange
    floor: int
    # The right partition's last timestamp: the clock never stamps at or below it.
    timestamp: int
    prepare: Callable[[StateStore], None]
    finish: Callable[[StateStore, int], None]
    commit: Callable[[int], Awaitable[None]]


Command = Upsert | Remove | Increment | Get | Read | Cutover | Extend
Mutation = Upsert | Remove | Increment


@attrs.frozen
class WriteResult:
    seq: int
    timestamp: int = 0
    removed: int = 0
    # An increment's new values, one per delta.
    values: Sequence[int] = ()
