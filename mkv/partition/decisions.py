"""Read-then-write decisions for one partition: conditions and counters
decided against the state every earlier write leaves.

The partition task calls ``decide`` for each write it admits, in order. The
state a decision sees is the store plus the writes numbered but not yet
applied (``mkv.partition.pending``); the rules themselves are sans-I/O
(``mkv.partition.mutations``). A decision that read an in-flight write depends on it:
if that write fails, the decision is void (``aborted``), so the dependent
write must not reach the log or the store either.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mkv.errors import (
    AbortedError,
    ConditionFailedError,
    FailedPreconditionError,
    MkvError,
    shown,
)
from mkv.partition.commands import Increment, Mutation, Remove, Upsert
from mkv.partition.mutations import Failure, add_deltas, first_failure
from mkv.partition.pending import PendingWrites
from mkv.pipeline import Write
from mkv.store import Item, StateStore
from mkv.worker import SerialWorker

__all__ = ["Decided", "Decisions"]

# Reads for a decision beyond this many keys go to the worker thread as one
# batch rather than point reads on the event loop.
INLINE_DECISION_KEYS = 16


@attrs.frozen
class Decided:
    """What a decision came to: a write to number, or a refusal to answer in
    its turn (either way, the in-flight writes it depends on)."""

    write: Write | None
    # ConditionFailedError or FailedPreconditionError, when ``write`` is None.
    refusal: MkvError | None = None
    # Sequence numbers of in-flight writes the decision read.
    depends: tuple[int, ...] = ()
    # An increment's new values, one per delta.
    values: Sequence[int] = ()


class Decisions:
    """One partition's in-flight writes and failed writes, for its decisions.

    Args:
        horizon: how many requests may be in flight at once (the partition's
            window): a failed write is remembered until that many later ones
            are released, since only those can depend on it.
    """

    def __init__(self, partition_id: str, horizon: int) -> None:
        self._partition_id = partition_id
        self._horizon = horizon
        self._pending = PendingWrites()
        self._failed: set[int] = set()

    async def decide(self, command: Mutation, store: StateStore, worker: SerialWorker) -> Decided:
        """The write ``command`` makes, or why it makes none (a condition that
        does not hold, an increment of a non-counter or past 64 bits)."""
        if isinstance(command, Upsert | Remove) and not command.conditions:
            return Decided(_plain_write(command))  # the hot path: nothing to read
        if isinstance(command, Increment):
            keys = [key for key, _ in command.deltas]
        else:
            keys = [key for key, _ in command.conditions]
        states, depends = await self._states(keys, store, worker)
        if isinstance(command, Increment):
            try:
                puts, values = add_deltas(command.deltas, states.__getitem__)
            except FailedPreconditionError as exc:
                return Decided(None, exc, depends)
            return Decided(Write(puts=puts), None, depends, values)
        failure = first_failure(command.conditions, states.__getitem__)
        if failure is not None:
            return Decided(None, _condition_failed(failure), depends)
        return Decided(_plain_write(command), None, depends)

    def numbered(self, write: Write) -> None:
        """``write`` got its sequence number (they come in order)."""
        self._pending.numbered(write)

    def failed(self, seq: int) -> None:
        """The numbered write ``seq`` failed (it may still be in flight)."""
        self._failed.add(seq)

    def released(self, seq: int, *, applied: bool) -> None:
        """The oldest numbered write, ``seq``, was applied or has failed."""
        self._pending.released(seq)
        if not applied:
            self._failed.add(seq)
        # Only a write admitted while a failed one was in flight can depend
        # on it, and at most ``horizon`` requests are in flight at once.
        if self._failed and min(self._failed) + self._horizon < seq:
            self._failed = {s for s in self._failed if s >= seq - self._horizon}

    def aborted(self, depends: tuple[int, ...]) -> AbortedError | None:
        """An error when a write a decision read from has failed."""
        if depends and not self._failed.isdisjoint(depends):
            return AbortedError(
                f"A write this one depended on failed, so partition {self._partition_id} "
                "did not apply it either; retry."
            )
        return None

    async def _states(
        self, keys: Sequence[bytes], store: StateStore, worker: SerialWorker
    ) -> tuple[dict[bytes, Item | None], tuple[int, ...]]:
        """Each key's state after every write admitted so far, and the writes
        still in flight that it came from."""
        states: dict[bytes, Item | None] = {}
        depends: set[int] = set()
        unwritten: list[bytes] = []
        for key in dict.fromkeys(keys):
            found = self._pending.lookup(key)
            if found is None:
                unwritten.append(key)
            else:
                states[key], seq = found
                depends.add(seq)
        # No write in flight touches these keys, and none is admitted while
        # the partition task waits here, so the store's answer cannot go stale.
        if len(unwritten) <= INLINE_DECISION_KEYS:
            states.update((key, store.get(key)) for key in unwritten)
        else:
            items = await worker.run_sync(lambda: store.get_many(unwritten))
            states.update(zip(unwritten, items, strict=True))
        return states, tuple(sorted(depends))


def _plain_write(command: Upsert | Remove) -> Write:
    if isinstance(command, Upsert):
        return Write(puts=command.puts, payload=command.payload)
    return Write(deletes=command.keys)


def _condition_failed(failure: Failure) -> ConditionFailedError:
    seq = 0 if failure.item is None else failure.item.seq
    state = "does not exist" if failure.item is None else f"is at seq {seq}"
    return ConditionFailedError(
        f"The condition on key '{shown(failure.key)}' does not hold: the key {state}.",
        key=failure.key,
        current_seq=seq,
    )
