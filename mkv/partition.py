"""A partition: one Trio task applying one bounded inbox of requests in order.

Every request for the partition's range goes through its inbox and is handled
by this one task, so a read that starts after a write was acknowledged sees it,
and read-then-write logic needs no locks (invariants 1 and 3 of the design).

Throughput comes from group commit: when several writes are waiting, the task
takes them all (up to ``MAX_GROUP_BYTES``) and applies them as one transaction
in one hand-off to its worker thread. Each write keeps its own sequence number
and is atomic, because the transaction that holds it is; reads that were queued
behind those writes are answered after the commit, in arrival order.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from mkv.errors import MkvError, StorageError, UnavailableError
from mkv.router import KeyRange
from mkv.store import Item, Mutation, StateStore, StoreStats, open_store
from mkv.worker import WorkerThread

__all__ = ["Get", "Partition", "PartitionState", "Remove", "Upsert", "WriteResult"]

log = logging.getLogger(__name__)

# Requests waiting in one partition's inbox before senders wait (and then fail).
INBOX_SIZE = 1024
# How long a request may wait for room in a full inbox before UNAVAILABLE.
ENQUEUE_TIMEOUT = 5.0
# Upper bound on the payload of writes committed in one transaction.
MAX_GROUP_BYTES = 8 * 1024 * 1024


class PartitionState(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"


@attrs.frozen
class Upsert:
    puts: Sequence[tuple[bytes, bytes]]
    size: int


@attrs.frozen
class Remove:
    keys: Sequence[bytes]
    size: int


@attrs.frozen
class Get:
    key: bytes


Command = Upsert | Remove | Get


@attrs.frozen
class WriteResult:
    seq: int
    removed: int = 0


class _Pending:
    """A command waiting for its answer, which the partition task fills in."""

    __slots__ = ("command", "done", "error", "result")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.result: WriteResult | Item | None = None
        self.error: MkvError | None = None

    def resolve(self, result: WriteResult | Item | None) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: MkvError) -> None:
        self.error = error
        self.done.set()


class Partition:
    """One key range, its store, and the task that serialises access to it."""

    def __init__(self, partition_id: str, key_range: KeyRange, store_kind: str, directory: Path):
        self.id = partition_id
        self.range = key_range
        self.store_kind = store_kind
        self.directory = directory
        self.state = PartitionState.STARTING
        self._send, self._inbox = trio.open_memory_channel[_Pending](INBOX_SIZE)
        self._worker: WorkerThread | None = None
        self._store: StateStore | None = None
        self._next_seq = 1
        self._stopped = trio.Event()

    # -- the outside: called by request handlers and the registry ---------------

    async def submit(self, command: Command) -> WriteResult | Item | None:
        """Queue ``command`` and wait for its answer.

        Raises:
            UnavailableError: the inbox stayed full, or the partition is stopping.
            StorageError: the store failed; nothing was applied.
        """
        pending = _Pending(command)
        try:
            with trio.move_on_after(ENQUEUE_TIMEOUT) as scope:
                await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise UnavailableError(f"Partition {self.id} is shutting down; retry.") from None
        if scope.cancelled_caught:
            raise UnavailableError(f"Partition {self.id} is overloaded; retry later.")
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def last_seq(self) -> int:
        return self._next_seq - 1

    async def stats(self) -> StoreStats:
        store = self._store
        if store is None or self.state is PartitionState.STOPPED:
            return StoreStats(key_count=0, size_bytes=0)
        # Counting may scan the whole table: off the event loop, and not in the
        # worker thread either, so writes are not held up by the control plane.
        return await trio.to_thread.run_sync(store.stats)

    def close(self) -> None:
        """Accept nothing more; the task drains what is queued, then stops."""
        if self.state is not PartitionState.STOPPED:
            self.state = PartitionState.DRAINING
        self._send.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- the inside: the partition task -----------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, report started, then apply requests until closed."""
        worker = self._worker = WorkerThread(f"mkv-partition-{self.id}")
        try:
            self._store = await worker.run_sync(lambda: open_store(self.store_kind, self.directory))
            self._next_seq = self._store.last_seq() + 1
            if self.state is PartitionState.STARTING:
                self.state = PartitionState.ACTIVE
            log.info("partition %s serving %s from seq %d", self.id, self.range, self._next_seq)
            task_status.started()
            async with self._inbox:
                async for first in self._inbox:
                    await self._handle(self._take_group(first))
        finally:
            self.state = PartitionState.STOPPED
            with trio.CancelScope(shield=True):
                if self._store is not None:
                    await worker.run_sync(self._store.close)
                await worker.stop()
            self._stopped.set()
            log.info("partition %s stopped", self.id)

    def _take_group(self, first: _Pending) -> list[_Pending]:
        """``first`` and whatever else is already queued, up to the group bound."""
        group = [first]
        size = _size(first.command)
        while size < MAX_GROUP_BYTES:
            try:
                pending = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            group.append(pending)
            size += _size(pending.command)
        return group

    async def _handle(self, group: list[_Pending]) -> None:
        """Answer ``group`` in order: runs of writes are committed together."""
        writes: list[_Pending] = []
        for pending in group:
            if isinstance(pending.command, Get):
                if writes:
                    await self._commit(writes)
                    writes = []
                self._read(pending)
            else:
                writes.append(pending)
        if writes:
            await self._commit(writes)

    def _read(self, pending: _Pending) -> None:
        assert self._store is not None
        assert isinstance(pending.command, Get)
        try:
            pending.resolve(self._store.get(pending.command.key))
        except StorageError as exc:
            log.error("partition %s: read failed", self.id, exc_info=exc)
            pending.fail(exc)

    async def _commit(self, writes: list[_Pending]) -> None:
        assert self._store is not None
        assert self._worker is not None
        mutations = []
        seq = self._next_seq
        for pending in writes:
            command = pending.command
            if isinstance(command, Upsert):
                mutations.append(Mutation(seq, puts=command.puts))
            else:
                assert isinstance(command, Remove)
                mutations.append(Mutation(seq, deletes=command.keys))
            seq += 1
        store = self._store
        try:
            removed = await self._worker.run_sync(lambda: store.apply(mutations))
        except StorageError as exc:
            log.error(
                "partition %s: commit of %d writes failed", self.id, len(writes), exc_info=exc
            )
            # Nothing was applied: the numbers are free to be given again.
            self._next_seq = store.last_seq() + 1
            for pending in writes:
                pending.fail(exc)
            return
        self._next_seq = seq
        for pending, mutation, count in zip(writes, mutations, removed, strict=True):
            pending.resolve(WriteResult(mutation.seq, count))


def _size(command: Command) -> int:
    return command.size if isinstance(command, Upsert | Remove) else 0
