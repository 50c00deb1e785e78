"""A partition: one Trio task applying one bounded inbox of requests in order.

Every request for the partition's range goes through its inbox, in arrival
order, into the partition's pipeline (see ``mkv.pipeline``):

1. synchronous stages (timestamp, filters) run in this task, one write at a
   time; a write they let through gets the next sequence number;
2. every request then takes a place in the reorder window (a full window makes
   this task wait: backpressure on the inbox, never unbounded buffering);
3. asynchronous stages (the write-ahead log) finish writes in any order;
4. the releaser takes finished requests out of the window strictly in order,
   applies each run of writes to the store in one transaction on the
   partition's worker thread, answers reads against the store after the
   writes before them, and answers every client in arrival order.

So a read that starts after a write was acknowledged sees it, no read sees a
write that is not yet durable under the pipeline's policy (the store only
ever holds what the log has made durable), and read-then-write logic needs no
locks (invariants 1 to 3 of the design).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from mkv.errors import (
    AbortedError,
    ConditionFailedError,
    InternalError,
    MkvError,
    StorageError,
    UnavailableError,
    shown,
)
from mkv.feed import WATCH_RETENTION_BYTES, ChangeFeed, FeedEntry, entry_cost
from mkv.logs import fields
from mkv.mutations import Condition, Failure, add_deltas, first_failure
from mkv.pending import PendingWrites
from mkv.pipeline import (
    Pipeline,
    Recovered,
    Released,
    StageContext,
    WalStage,
    Write,
    build_pipeline,
    restore,
)
from mkv.pipeline.payload import decode_write
from mkv.pipeline.reorder import OrderedWindow
from mkv.router import KeyRange
from mkv.store import Item, StateStore, StoreOptions, StoreStats, open_store
from mkv.worker import WorkerThread

__all__ = [
    "Get",
    "Increment",
    "Partition",
    "PartitionState",
    "PartitionStatistics",
    "Read",
    "Remove",
    "Upsert",
    "WriteResult",
]

log = logging.getLogger(__name__)

# Requests waiting in one partition's inbox before senders wait (and then fail).
INBOX_SIZE = 1024
# Requests in the pipeline at once (admitted, not yet answered).
WINDOW_SIZE = 1024
# How long a request may wait for room in a full inbox before UNAVAILABLE.
ENQUEUE_TIMEOUT = 5.0
# Upper bound on the payload of writes applied to the store in one transaction.
MAX_APPLY_BYTES = 8 * 1024 * 1024
# Synchronous stages run on a thread for writes larger than this, so a
# sanitizer parsing a megabyte of JSON does not hold up the event loop.
INLINE_STAGE_BYTES = 64 * 1024
# Reads for a decision (conditions, counters) beyond this many keys go to the
# worker thread as one batch rather than point reads on the event loop.
INLINE_DECISION_KEYS = 16


class PartitionState(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"


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
    """Add signed deltas to counters (mkv.mutations), atomically."""

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
_Mutation = Upsert | Remove | Increment


@attrs.frozen
class PartitionStatistics:
    state: PartitionState
    last_seq: int
    inbox_depth: int
    # Admitted into the pipeline, not yet answered.
    in_flight: int
    # The last sequence number the log has fsynced; None without a log.
    wal_synced_seq: int | None
    wal_segments: int
    wal_bytes: int = 0


@attrs.frozen
class WriteResult:
    seq: int
    timestamp: int = 0
    removed: int = 0
    # An increment's new values, one per delta.
    values: Sequence[int] = ()


class _Pending:
    """A command waiting for its answer, which the partition task fills in."""

    __slots__ = ("command", "depends", "done", "error", "result", "values", "write")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.result: Any = None
        self.error: MkvError | None = None
        # The write as the pipeline made it, once numbered (None for a read).
        self.write: Write | None = None
        # Sequence numbers of in-flight writes whose effects a decision read:
        # if one of them fails, so must this.
        self.depends: tuple[int, ...] = ()
        self.values: Sequence[int] = ()

    def resolve(self, result: Any) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: MkvError) -> None:
        self.error = error
        self.done.set()


class Partition:
    """One key range, its store and pipeline, and the task that serialises access."""

    def __init__(
        self,
        partition_id: str,
        key_range: KeyRange,
        store_kind: str,
        pipeline: Sequence[str],
        directory: Path,
        *,
        watch_retention_bytes: int = WATCH_RETENTION_BYTES,
        store_options: StoreOptions | None = None,
    ):
        self.id = partition_id
        self.range = key_range
        self.store_kind = store_kind
        self.pipeline_specs = tuple(pipeline)
        self.directory = directory
        self.store_options = store_options
        self.state = PartitionState.STARTING
        self._send, self._inbox = trio.open_memory_channel[_Pending](INBOX_SIZE)
        self._worker: WorkerThread | None = None
        self._store: StateStore | None = None
        self._next_seq = 1
        self._last_applied = 0
        # Set when the store or log failed: nothing more is safe to apply.
        self._broken: StorageError | None = None
        self._pipeline: Pipeline | None = None
        self._window: OrderedWindow[_Pending, None] | None = None
        # One per asynchronous stage after the first: writes enter in seq order.
        self._turnstiles: list[_Turnstile] = []
        self._pending_writes = PendingWrites()
        # Numbered writes that failed, while a write admitted with them in
        # flight may still depend on them (pruned after WINDOW_SIZE more).
        self._failed_seqs: set[int] = set()
        self._watch_retention_bytes = watch_retention_bytes
        self.feed = ChangeFeed(watch_retention_bytes, retained_after=0)
        self._feed_changed = trio.Event()
        self._stopped = trio.Event()

    # -- the outside: called by request handlers and the registry ---------------

    async def submit(self, command: Command) -> Any:
        """Queue ``command`` and wait for its answer.

        Raises:
            UnavailableError: the inbox stayed full, or the partition is stopping.
            InvalidArgumentError, PermissionDeniedError: a pipeline stage refused it.
            StorageError: the store or log failed; the write was not acknowledged.
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
        """The last sequence number applied (and so acknowledged or about to be)."""
        return self._last_applied

    def statistics(self) -> PartitionStatistics:
        wal = self._pipeline.wal if self._pipeline is not None else None
        wal_stats = wal.statistics() if wal is not None else None
        return PartitionStatistics(
            state=self.state,
            last_seq=self._last_applied,
            inbox_depth=self._inbox.statistics().current_buffer_used,
            in_flight=0 if self._window is None else self._window.statistics().in_flight,
            wal_synced_seq=None if wal_stats is None else wal_stats.synced_seq,
            wal_segments=0 if wal_stats is None else wal_stats.segments,
            wal_bytes=0 if wal_stats is None else wal_stats.bytes,
        )

    async def store_stats(self) -> StoreStats:
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
        """Open the store, recover from the log, report started, then serve until closed."""
        worker = self._worker = WorkerThread(f"mkv-partition-{self.id}")
        pipeline = self._pipeline = build_pipeline(
            self.pipeline_specs, StageContext(self.id, self.directory)
        )
        wal = pipeline.wal
        try:
            store = self._store = await worker.run_sync(
                lambda: open_store(
                    self.store_kind,
                    self.directory,
                    logged=wal is not None,
                    options=self.store_options,
                )
            )
            recovered = Recovered(store.last_seq(), store.last_timestamp())
            feed = self.feed = ChangeFeed(self._watch_retention_bytes, store.last_seq())
            if wal is not None:
                recovered = recovered.later(await wal.open())
                feed = self.feed = ChangeFeed(self._watch_retention_bytes, wal.base_seq)
                replayed = await worker.run_sync(lambda: _replay(store, wal, feed))
                if replayed:
                    log.info(
                        "partition %s: replayed %d writes from its log",
                        self.id,
                        replayed,
                        extra=fields(event="replayed", partition=self.id, writes=replayed),
                    )
            feed.skip_to(store.last_seq())
            restore(pipeline, recovered)
            self._next_seq = recovered.last_seq + 1
            self._turnstiles = [_Turnstile(self._next_seq) for _ in pipeline.async_[1:]]
            self._last_applied = store.last_seq()
            window = self._window = OrderedWindow[_Pending, None](WINDOW_SIZE)
            async with trio.open_nursery() as nursery:
                for stage in pipeline.async_:
                    await nursery.start(stage.run)
                releaser_done = trio.Event()
                nursery.start_soon(self._release, window, pipeline, releaser_done)
                if self.state is PartitionState.STARTING:
                    self.state = PartitionState.ACTIVE
                log.info(
                    "partition %s serving %s from seq %d through %s",
                    self.id,
                    self.range,
                    self._next_seq,
                    " ".join(pipeline.specs) or "no stages",
                    extra=fields(event="partition_started", partition=self.id, seq=self._next_seq),
                )
                task_status.started()
                async with self._inbox:
                    async for pending in self._inbox:
                        await self._admit(pending, window, pipeline, nursery)
                # Closed: what was admitted is answered, then the stages stop.
                window.close()
                await releaser_done.wait()
                for stage in pipeline.async_:
                    stage.close()
        finally:
            self.state = PartitionState.STOPPED
            self._feed_changed.set()  # watchers see the partition stopped
            with trio.CancelScope(shield=True):
                if wal is not None:
                    await wal.aclose()
                if self._store is not None:
                    await worker.run_sync(self._store.close)
                await worker.stop()
            self._stopped.set()
            log.info(
                "partition %s stopped",
                self.id,
                extra=fields(event="partition_stopped", partition=self.id, seq=self._last_applied),
            )

    async def _admit(
        self,
        pending: _Pending,
        window: OrderedWindow[_Pending, None],
        pipeline: Pipeline,
        nursery: trio.Nursery,
    ) -> None:
        """Run the synchronous stages, number the write, start the asynchronous ones."""
        ticket = await window.admit(pending)
        command = pending.command
        if isinstance(command, Get | Read):
            window.complete(ticket, None)  # read at release, after the writes before it
            return
        if self._broken is not None:
            window.fail(ticket, self._broken)
            return
        try:
            write = await self._decide(pending, command)
            if pipeline.sync:
                staged = await self._through_sync_stages(pipeline, write, command.size)
                # Encoded bytes describe the puts as they came: not a changed copy.
                write = staged if staged.puts is write.puts else attrs.evolve(staged, payload=None)
        except MkvError as exc:
            # Answered in its turn, like every outcome decided on in-flight writes.
            window.fail(ticket, exc)
            return
        write = pending.write = attrs.evolve(write, seq=self._next_seq)
        self._next_seq += 1
        self._pending_writes.numbered(write)
        if not pipeline.async_:
            window.complete(ticket, None)
            return
        # Submitted here, so the first asynchronous stage takes writes in order.
        first: Awaitable[None] | MkvError
        if (aborted := self._aborted(pending.depends)) is not None:
            first = aborted
        else:
            try:
                first = pipeline.async_[0].submit(write)
            except MkvError as exc:
                first = exc
        nursery.start_soon(
            self._through_async_stages, window, ticket, pipeline, write, first, pending.depends
        )

    async def _decide(self, pending: _Pending, command: _Mutation) -> Write:
        """The write ``command`` makes, decided against the state every earlier
        write leaves: conditions checked, counters added.

        Raises:
            ConditionFailedError: a condition does not hold.
            FailedPreconditionError: an increment meets a non-counter or overflows.
        """
        if isinstance(command, Upsert | Remove) and not command.conditions:
            return self._plain_write(command)  # the hot path: nothing to read
        if isinstance(command, Increment):
            keys = [key for key, _ in command.deltas]
        else:
            keys = [key for key, _ in command.conditions]
        states, pending.depends = await self._states(keys)
        if isinstance(command, Increment):
            puts, pending.values = add_deltas(command.deltas, states.__getitem__)
            return Write(puts=puts)
        failure = first_failure(command.conditions, states.__getitem__)
        if failure is not None:
            raise _condition_failed(failure)
        return self._plain_write(command)

    @staticmethod
    def _plain_write(command: Upsert | Remove) -> Write:
        if isinstance(command, Upsert):
            return Write(puts=command.puts, payload=command.payload)
        return Write(deletes=command.keys)

    async def _states(
        self, keys: Sequence[bytes]
    ) -> tuple[dict[bytes, Item | None], tuple[int, ...]]:
        """Each key's state after every write admitted so far, and the writes
        still in flight that it came from."""
        states: dict[bytes, Item | None] = {}
        depends: set[int] = set()
        unwritten: list[bytes] = []
        for key in dict.fromkeys(keys):
            found = self._pending_writes.lookup(key)
            if found is None:
                unwritten.append(key)
            else:
                states[key], seq = found
                depends.add(seq)
        store, worker = self._store, self._worker
        assert store is not None
        assert worker is not None
        # No write in flight touches these keys, and none is admitted while
        # this task waits, so the store's answer for them cannot go stale.
        if len(unwritten) <= INLINE_DECISION_KEYS:
            states.update((key, store.get(key)) for key in unwritten)
        else:
            items = await worker.run_sync(lambda: store.get_many(unwritten))
            states.update(zip(unwritten, items, strict=True))
        return states, tuple(sorted(depends))

    def _aborted(self, depends: tuple[int, ...]) -> AbortedError | None:
        """An error when a write this one's decision read from has failed."""
        if depends and not self._failed_seqs.isdisjoint(depends):
            return AbortedError(
                f"A write this one depended on failed, so partition {self.id} did not "
                "apply it either; retry."
            )
        return None

    async def _through_sync_stages(self, pipeline: Pipeline, write: Write, size: int) -> Write:
        def run_stages() -> Write:
            result = write
            for stage in pipeline.sync:
                try:
                    result = stage.process(result)
                except MkvError:
                    raise
                except Exception as exc:
                    # An application's stage with a bug costs the write, not the partition.
                    log.exception("partition %s: stage %s failed", self.id, stage.name)
                    raise InternalError(f"Pipeline stage {stage.name} failed.") from exc
            return result

        if size <= INLINE_STAGE_BYTES:
            return run_stages()
        # Still one write at a time, in order: this task waits for it.
        return await trio.to_thread.run_sync(run_stages)

    async def _through_async_stages(
        self,
        window: OrderedWindow[_Pending, None],
        ticket: int,
        pipeline: Pipeline,
        write: Write,
        first: Awaitable[None] | MkvError,
        depends: tuple[int, ...],
    ) -> None:
        """Finish ``write`` in every asynchronous stage; the stages after the first
        take it in its turn (a write that failed still passes, so later ones
        are not held up), and may finish it in any order.

        A write whose decision read from a write that has failed by its turn
        goes no further (so never into the log after it)."""
        error = first if isinstance(first, MkvError) else await _outcome(first)
        if error is not None:
            self._failed_seqs.add(write.seq)
        for stage, turnstile in zip(pipeline.async_[1:], self._turnstiles, strict=True):
            await turnstile.wait_turn(write.seq)
            pending_stage: Awaitable[None] | None = None
            if error is None and (error := self._aborted(depends)) is None:
                try:
                    pending_stage = stage.submit(write)
                except MkvError as exc:
                    error = exc
            turnstile.advance(write.seq)
            if pending_stage is not None:
                error = await _outcome(pending_stage)
            if error is not None:
                self._failed_seqs.add(write.seq)
        if error is None:
            window.complete(ticket, None)
        else:
            window.fail(ticket, error)

    async def _release(
        self,
        window: OrderedWindow[_Pending, None],
        pipeline: Pipeline,
        done: trio.Event,
    ) -> None:
        """Take finished requests out of the window in order; apply, answer."""
        try:
            async for released in window:
                await self._apply_in_order(released)
                if pipeline.wal is not None:
                    await self._checkpoint(pipeline.wal)
        finally:
            done.set()

    async def _apply_in_order(self, released: list[Released[_Pending, None]]) -> None:
        """Answer ``released`` in order; runs of writes are applied together."""
        run: list[_Pending] = []
        size = 0
        for item in released:
            pending = item.item
            command = pending.command
            error = item.error
            if pending.depends and (aborted := self._aborted(pending.depends)) is not None:
                # Decided on a write that failed after this one was admitted.
                error = aborted
            if error is None and isinstance(command, _Mutation):
                run.append(pending)
                size += command.size
                if size >= MAX_APPLY_BYTES:
                    await self._apply(run)
                    run, size = [], 0
                continue
            # A read or a refusal: the writes before it are applied first.
            await self._apply(run)
            run, size = [], 0
            if error is not None:
                assert isinstance(error, MkvError)
                if pending.write is not None:
                    self._unapplied(pending.write.seq)
                pending.fail(error)
            elif isinstance(command, Read):
                await self._run_read(pending, command)
            else:
                self._read(pending)
        await self._apply(run)

    def _read(self, pending: _Pending) -> None:
        assert self._store is not None
        assert isinstance(pending.command, Get)
        try:
            pending.resolve(self._store.get(pending.command.key))
        except StorageError as exc:
            log.error("partition %s: read failed", self.id, exc_info=exc)
            pending.fail(exc)

    async def _run_read(self, pending: _Pending, command: Read) -> None:
        store, worker = self._store, self._worker
        assert store is not None
        assert worker is not None
        try:
            pending.resolve(await worker.run_sync(lambda: command.fn(store)))
        except MkvError as exc:
            pending.fail(exc)
        except Exception:
            log.exception("partition %s: a read failed", self.id)
            pending.fail(InternalError(f"A read of partition {self.id} failed."))

    async def _apply(self, run: list[_Pending]) -> None:
        if not run:
            return
        assert self._store is not None
        assert self._worker is not None
        writes = [pending.write for pending in run if pending.write is not None]
        if self._broken is None:
            store = self._store
            try:
                removed = await self._worker.run_sync(lambda: store.apply(writes))
            except StorageError as exc:
                # The writes may be in the log but are not in the store: applying
                # anything after them would break the order, so stop writing.
                log.error(
                    "partition %s: applying %d writes failed", self.id, len(writes), exc_info=exc
                )
                self._broken = StorageError(f"Partition {self.id} failed writing to its store.")
        if self._broken is not None:
            for write in writes:
                self._unapplied(write.seq)
            for pending in run:
                pending.fail(self._broken)
            return
        self._last_applied = writes[-1].seq
        feed = self.feed
        for pending, write, count in zip(run, writes, removed, strict=True):
            self._pending_writes.released(write.seq)
            command = pending.command
            assert isinstance(command, _Mutation)
            keys = len(write.puts) + len(write.deletes)
            cost = entry_cost(write, write.payload, command.size, keys)
            feed.append(FeedEntry(write.seq, write.timestamp, cost, write=write))
            pending.resolve(WriteResult(write.seq, write.timestamp, count, pending.values))
        self._prune_failed(self._last_applied)
        self._feed_changed.set()
        self._feed_changed = trio.Event()

    def _unapplied(self, seq: int) -> None:
        """The numbered write ``seq`` failed: it leaves the in-flight state."""
        self._pending_writes.released(seq)
        self.feed.skip_to(seq)
        self._failed_seqs.add(seq)
        self._prune_failed(seq)

    def _prune_failed(self, released_seq: int) -> None:
        # Only a write admitted while a failed one was in flight can depend on
        # it, and at most WINDOW_SIZE requests are in flight at once.
        if self._failed_seqs and min(self._failed_seqs) + WINDOW_SIZE < released_seq:
            horizon = released_seq - WINDOW_SIZE
            self._failed_seqs = {seq for seq in self._failed_seqs if seq >= horizon}

    async def wait_for_changes(self, after_seq: int) -> None:
        """Wait until the feed holds a write numbered above ``after_seq``.

        Raises:
            UnavailableError: the partition stopped (removed, or shutting down).
        """
        while self.feed.last_seq <= after_seq:
            if self.state is PartitionState.STOPPED:
                raise UnavailableError(f"Partition {self.id} stopped; reconnect and resume.")
            await self._feed_changed.wait()

    async def _checkpoint(self, wal: WalStage) -> None:
        """Once the log has rolled to a new segment, make the store durable and
        let the log drop what the store now holds, so the log stays bounded."""
        store, stats = self._store, wal.statistics()
        if store is None or not store.persistent or stats is None or stats.segments <= 1:
            return
        assert self._worker is not None
        durable = await self._worker.run_sync(store.sync)
        # The log also keeps what watchers may still ask for, so a restart
        # brings back the same retention.
        dropped = await wal.checkpoint(min(durable, self.feed.retained_after))
        log.info(
            "partition %s: checkpoint at seq %d dropped %d log segments",
            self.id,
            durable,
            dropped,
            extra=fields(
                event="checkpoint", partition=self.id, seq=durable, segments_dropped=dropped
            ),
        )


class _Turnstile:
    """Lets writes into a stage one at a time, in sequence order."""

    def __init__(self, first_seq: int) -> None:
        self._next = first_seq
        self._waiting: dict[int, trio.Event] = {}

    async def wait_turn(self, seq: int) -> None:
        if seq != self._next:
            await self._waiting.setdefault(seq, trio.Event()).wait()

    def advance(self, seq: int) -> None:
        assert seq == self._next, "writes pass a turnstile in order"
        self._next += 1
        if (waiting := self._waiting.pop(self._next, None)) is not None:
            waiting.set()


async def _outcome(stage_work: Awaitable[None]) -> MkvError | None:
    try:
        await stage_work
    except MkvError as exc:
        return exc
    except Exception as exc:
        # An application's stage with a bug costs the write, not the partition.
        log.exception("an asynchronous pipeline stage failed")
        return InternalError(f"A pipeline stage failed ({type(exc).__name__}).")
    return None


def _replay(store: StateStore, wal: WalStage, feed: ChangeFeed) -> int:
    """Apply the logged writes the store has not seen, and load every logged
    write into the watch feed; blocking (worker thread). Returns how many
    were applied."""
    count = 0
    batch: list[Write] = []
    size = 0
    applied = store.last_seq()
    for record in wal.records(wal.base_seq):
        payload = record.payload
        feed.append(
            FeedEntry(
                record.seq, record.timestamp, entry_cost(None, payload, 0, 0), payload=payload
            )
        )
        if record.seq <= applied:
            continue
        batch.append(decode_write(payload, record.seq, record.timestamp))
        # Summing key and value lengths per write was a sixth of replay time.
        size += len(payload)
        if size >= MAX_APPLY_BYTES:
            store.apply(batch)
            count += len(batch)
            batch, size = [], 0
    if batch:
        store.apply(batch)
        count += len(batch)
    return count


def _condition_failed(failure: Failure) -> ConditionFailedError:
    seq = 0 if failure.item is None else failure.item.seq
    state = "does not exist" if failure.item is None else f"is at seq {seq}"
    return ConditionFailedError(
        f"The condition on key '{shown(failure.key)}' does not hold: the key {state}.",
        key=failure.key,
        current_seq=seq,
    )
