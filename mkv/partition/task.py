"""A partition: one Trio task applying one bounded inbox of requests in order.

Every request for the partition's range goes through its inbox, in arrival
order, into the partition's pipeline (see ``mkv.pipeline``):

1. conditional writes and increments are decided here, against the state
   every earlier write leaves (``mkv.partition.decisions``); then synchronous stages
   (timestamp, filters) run in this task, one write at a time; a write they
   let through gets the next sequence number;
2. every request then takes a place in the reorder window (a full window makes
   this task wait: backpressure on the inbox, never unbounded buffering);
3. asynchronous stages (the write-ahead log) finish writes in any order;
4. the releaser takes finished requests out of the window strictly in order.
   A write that is now committed (durable in the log, every write before it
   committed too) is answered at once when its answer needs nothing of the
   store (no deletes, whose answer counts the keys removed), and the pipeline
   has a log (without one the store is the only durable copy);
5. the applier takes what the releaser let through, in the same order,
   applies each run of writes to the store in one transaction on the
   partition's worker thread, answers reads against the store after the
   writes before them, appends what it applied to the watch feed
   (``mkv.partition.feed``), and answers the writes not answered yet.

Answering on commit takes the SQLite transaction off a put's latency (issue
17: a put held its group's fsync *and* its apply). The price is that the
store may lag what was acknowledged, so every read first waits until the
store has applied every write acknowledged before the read began (``_acked``,
``wait_applied``): queued reads do by their place in the applier's order, a
point read on the fast path and a Watch by waiting for it. So a read that
starts after a write was acknowledged sees it, no read sees a write that is
not yet durable under the pipeline's policy (the store only ever holds what
the log has made durable), and read-then-write logic needs no locks
(invariants 1 to 3 of the design). A crash loses nothing acknowledged: the
log has it, and replay applies it.

A point read that arrives while no write or ``Read`` is unanswered and the
store holds every acknowledged write skips the inbox and the window: it is
answered at once from the store, which then holds exactly what every earlier
request left, so the answer and its order are the ones the queue would have
given, for a fraction of the work (no task hand-offs: a fifth of the
server's CPU per Get).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import itertools
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from mkv.errors import (
    CompactedError,
    InternalError,
    MkvError,
    MovedError,
    StorageError,
    UnavailableError,
)
from mkv.limits import MAX_LOADED, check_loaded
from mkv.observe.logs import fields
from mkv.partition.commands import (
    Command,
    Cutover,
    Extend,
    Get,
    Increment,
    Mutation,
    Read,
    Remove,
    Upsert,
    WriteResult,
)
from mkv.partition.decisions import Decisions
from mkv.partition.feed import WATCH_RETENTION_BYTES, ChangeFeed, FeedEntry, entry_cost
from mkv.partition.recovery import replay_log, set_aside_for_rebuild
from mkv.pipeline import (
    UNOBSERVED,
    AsyncStage,
    Gating,
    Notifying,
    Pipeline,
    Recovered,
    ReplicateStage,
    StageContext,
    StageObserver,
    WalStage,
    Write,
    build_pipeline,
    restore,
)
from mkv.pipeline.reorder import OrderedWindow
from mkv.router import KeyRange, format_key
from mkv.store import Item, StateStore, StoreDamagedError, StoreOptions, StoreStats, open_store
from mkv.worker import SerialWorker, WorkerPool, WorkerThread

__all__ = [
    "Cutover",
    "Extend",
    "Get",
    "Increment",
    "LogHold",
    "Move",
    "Partition",
    "PartitionState",
    "PartitionStatistics",
    "Read",
    "Remove",
    "Upsert",
    "WriteResult",
]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.partition")

# Requests waiting in one partition's inbox before senders wait (and then fail).
INBOX_SIZE = 1024
# Requests in the pipeline at once (admitted, not yet answered).
WINDOW_SIZE = 1024
# How long a request may wait for room in a full inbox before UNAVAILABLE.
ENQUEUE_TIMEOUT = 5.0
# Upper bound on the payload of writes applied to the store in one transaction.
MAX_APPLY_BYTES = 8 * 1024 * 1024
# Released requests (answered or not) waiting for the applier, beyond which
# the releaser waits: a store slower than the log holds up the window, and so
# admission, instead of queueing without bound.
APPLY_BACKLOG = WINDOW_SIZE
APPLY_BACKLOG_BYTES = 2 * MAX_APPLY_BYTES
# Synchronous stages run on a thread for writes larger than this, so a
# sanitizer parsing a megabyte of JSON does not hold up the event loop.
INLINE_STAGE_BYTES = 64 * 1024
# The log on disk a partition keeps for followers catching up (``LogHold``)
# at most; past it checkpoints go on regardless, and a follower that far
# behind installs a snapshot instead.
LOG_HOLD_BYTES = 1024 * 1024 * 1024


class PartitionState(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    STOPPED = "stopped"
    # The log or store failed, or the task itself: writes are refused until
    # the registry reopens the partition (a new Partition on the same files).
    FAILED = "failed"


@attrs.frozen
class Move:
    """Part of the partition's range that another partition owns since a cut-over."""

    range: KeyRange
    owner: str
    # The partition's last applied seq at the cut-over: every change of the
    # range up to it is in this partition's feed, every later one in the owner's.
    seq: int
    # The data address of the owner's node, when it is another node (a move).
    address: str = ""

    def moved_error(self, message: str) -> MovedError:
        return MovedError(
            message,
            owner=self.owner,
            seq=self.seq,
            address=self.address,
            start=self.range.start,
            end=self.range.end,
        )


def _mutated_keys(command: Upsert | Remove | Increment) -> list[bytes]:
    if isinstance(command, Upsert):
        keys = [key for key, _ in command.puts]
    elif isinstance(command, Remove):
        keys = list(command.keys)
    else:
        keys = [key for key, _ in command.deltas]
    if not isinstance(command, Increment) and command.conditions:
        keys += [key for key, _ in command.conditions]
    return keys


@attrs.frozen
class PartitionStatistics:
    state: PartitionState
    # The last write applied to the store.
    last_seq: int
    inbox_depth: int
    # Admitted into the pipeline, not yet answered.
    in_flight: int
    # The last sequence number the log has fsynced; None without a log.
    wal_synced_seq: int | None
    wal_segments: int
    wal_bytes: int = 0
    # The last write acknowledged: answered on commit, it may be ahead of
    # ``last_seq`` for a moment, until the applier catches up.
    acknowledged_seq: int = 0


@attrs.define(eq=False)
class LogHold:
    """A follower's claim on the partition's log on disk: checkpoints keep
    every record after ``seq`` (None: nothing yet), up to ``LOG_HOLD_BYTES``
    of log. Held by the stream serving it (``Partition.holding_log``)."""

    seq: int | None = None


class _Tally:
    """How many commands other than point reads are queued or in flight."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Pending:
    """A command waiting for its answer, which the partition task fills in."""

    __slots__ = ("command", "depends", "done", "error", "result", "tally", "values", "write")

    def __init__(self, command: Command, tally: _Tally | None) -> None:
        self.command = command
        # Counted in until answered (None: a point read, not counted).
        self.tally = tally
        if tally is not None:
            tally.count += 1
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
        self._answered()

    def fail(self, error: MkvError) -> None:
        self.error = error
        self._answered()

    def _answered(self) -> None:
        if self.tally is not None:
            self.tally.count -= 1
            self.tally = None
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
        on_failure: Callable[[Partition], None] | None = None,
        stage_observer: StageObserver = UNOBSERVED,
        workers: WorkerPool | None = None,
        history_floor: int = 0,
        replay_through: int | None = None,
    ):
        """Args:
        on_failure: called once, in the partition's task, when the partition
            fails (see :meth:`probe` and ``PartitionRegistry.reopen``).
        stage_observer: told what the pipeline's stages measure (metrics).
        workers: the node's thread pool: the store's jobs and the log's run
            on a lane of it each; None: on threads of the partition's own.
        history_floor: watch positions below this are refused (a merge's
            survivor: see ``CatalogEntry.history_floor``).
        replay_through: the commit seq a replica's log is known to hold
            (its epoch file's): at start the log is replayed into the store
            only up to it (or the store's own seq, if higher); the records
            after it are adopted as writes in flight, logged already, that
            the pipeline's later stages (the replicate stage) must finish
            before they are applied. None: replay the whole log.
        """
        self.id = partition_id
        self.range = key_range
        # The range reads are answered for: ``range`` as of the last request
        # released (see check_owned).
        self.read_range = key_range
        self.store_kind = store_kind
        self.pipeline_specs = tuple(pipeline)
        self.directory = directory
        self.store_options = store_options
        self._stage_observer = stage_observer
        self._workers = workers
        self.state = PartitionState.STARTING
        self._send, self._inbox = trio.open_memory_channel[_Pending](INBOX_SIZE)
        self._worker: SerialWorker | None = None
        self._store: StateStore | None = None
        self._next_seq = 1
        self._last_applied = 0
        # The highest seq answered before the store applied it: reads wait
        # until ``_last_applied`` reaches it (see the module's notes).
        self._acked = 0
        # Requests the releaser let through and the applier has not taken, in
        # order, with the error each is answered with (None: applied or read)
        # and ``_acked`` when it was released (what a read must see).
        self._backlog: deque[tuple[_Pending, MkvError | None, int]] = deque()
        self._backlog_bytes = 0
        self._backlog_closed = False
        self._backlog_filled = trio.lowlevel.ParkingLot()  # the applier waits
        self._backlog_taken = trio.lowlevel.ParkingLot()  # the releaser waits
        # Readers waiting for the store to reach ``_acked``.
        self._applied = trio.lowlevel.ParkingLot()
        # Set when the store or log failed: nothing more is safe to apply.
        self._broken: StorageError | None = None
        self._on_failure = on_failure
        # Every queued command, so a task that dies can still answer each.
        self._outstanding: set[_Pending] = set()
        # The task has finished (or is closing its store): nothing is served.
        self._ended = False
        self._pipeline: Pipeline | None = None
        self._window: OrderedWindow[_Pending, None] | None = None
        # One per asynchronous stage after the first: writes enter in seq order.
        self._turnstiles: list[_Turnstile] = []
        # The pipeline's only asynchronous stage, when it is ``Notifying``.
        self._notifying: Notifying | None = None
        self._decisions = Decisions(partition_id, horizon=WINDOW_SIZE)
        # Writes and Reads submitted and not yet answered: point reads queue
        # behind them, and skip the queue when there are none.
        self._unanswered = _Tally()
        self._watch_retention_bytes = watch_retention_bytes
        self.history_floor = history_floor
        self._replay_through = replay_through
        # Asynchronous stages that may refuse writes before numbering (min_isr).
        self._gates: list[Gating] = []
        self.feed = ChangeFeed(watch_retention_bytes, retained_after=0)
        self._feed_changed = trio.Event()
        self._log_holds: set[LogHold] = set()
        self._stopped = trio.Event()
        # Why the partition could not start (set by the registry): every
        # request gets it.
        self.refusal: UnavailableError | None = None
        # Ranges cut over to other partitions while this one runs (splits).
        self.moves: list[Move] = []
        # Whether the range shrank while the partition runs: until it does,
        # the router sends it only keys it owns, and writes skip the check.
        self._shrunk = False
        # The seq an ``Extend`` admitted and not yet released numbers above.
        self._extend_top: int | None = None
        # A ``Cutover`` admitted and not yet released.
        self._handing_over: Cutover | None = None

    # -- the outside: called by request handlers and the registry ---------------

    async def submit(self, command: Command) -> Any:
        """Queue ``command`` and wait for its answer.

        Raises:
            UnavailableError: the inbox stayed full, or the partition is stopping.
            InvalidArgumentError, PermissionDeniedError: a pipeline stage refused it.
            StorageError: the store or log failed; the write was not acknowledged.
        """
        tally: _Tally | None = self._unanswered
        if isinstance(command, Get):
            if (
                self._unanswered.count == 0
                and self.state is PartitionState.ACTIVE
                and self._last_applied < self._acked
            ):
                # Writes answered on commit are still on their way into the
                # store: this read must see them.
                await self.wait_applied()
            if self.can_read_now():
                # Read before yielding, so nothing can come between.
                try:
                    item = self.read_now(command.key)
                finally:
                    await trio.lowlevel.checkpoint()
                return item
            tally = None  # point reads are not counted
        pending = _Pending(command, tally)
        self._outstanding.add(pending)
        try:
            try:
                with trio.move_on_after(ENQUEUE_TIMEOUT) as scope:
                    await self._send.send(pending)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pending.fail(
                    self._broken
                    or self.refusal
                    or UnavailableError(f"Partition {self.id} is shutting down; retry.")
                )
            if scope.cancelled_caught:
                pending.fail(UnavailableError(f"Partition {self.id} is overloaded; retry later."))
            await pending.done.wait()
        finally:
            self._outstanding.discard(pending)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def can_read_now(self) -> bool:
        """Whether a point read may be answered from the store at once: no
        request is queued or in flight ahead of it, so the store holds what
        the queue would show it (and no apply is running: every write
        released is answered and applied, or still counted)."""
        return (
            self._unanswered.count == 0
            and self.state is PartitionState.ACTIVE
            and self._last_applied >= self._acked
        )

    def read_now(self, key: bytes) -> Item | None:
        """A point read from the store, at once: only when ``can_read_now()``,
        with nothing awaited since.

        Raises:
            MovedError: the key is no longer the partition's.
            StorageError: the store failed.
        """
        self.check_owned(key, reading=True)
        return self._get(key)

    def check_owned(self, *keys: bytes, reading: bool = False) -> None:
        """Check that the partition owns ``keys``: for a mutation, as of its
        admission (``range``); for a read, in release order (``read_range``,
        which a cut-over changes only once every request admitted before it
        is answered, so a read ordered before it is answered here).

        Raises:
            MovedError: a key is outside the range (a split or merge gave it
                away): the caller re-routes.
        """
        if not self._shrunk:
            return  # routed by a map where it owns its whole range
        rng = self.read_range if reading else self.range
        low, high = min(keys), max(keys)
        if low >= rng.start and (rng.end is None or high < rng.end):
            return
        moves = self.moves
        if (handing := self._handing_over) is not None:
            # Admitted while a cut-over waits for its turn: the new owner is known.
            moves = [*moves, Move(handing.moved, handing.owner, 0, handing.address)]
        for move in moves:
            if low in move.range or high in move.range:
                raise move.moved_error(
                    f"Keys from {format_key(move.range.start)} moved to partition "
                    f"{move.owner}{f' on {move.address}' if move.address else ''}; re-route."
                )
        raise MovedError(f"Partition {self.id} no longer owns the key; re-route.")

    def moved_from(self, start: bytes, end: bytes | None) -> Move | None:
        """The first cut-over that gave away part of ``[start, end)``, if any."""
        watched = KeyRange(start, end)
        for move in self.moves:
            if move.range.overlaps(watched):
                return move
        return None

    def replicate_stage(self) -> ReplicateStage | None:
        """The pipeline's replicate stage (what a leader's Fetch serves from), if any."""
        return None if self._pipeline is None else self._pipeline.replicate

    @contextlib.contextmanager
    def holding_log(self) -> Iterator[LogHold]:
        """A hold on the log on disk for one follower's stream: set its
        ``seq`` to where the follower stands, and checkpoints keep the log
        after it (see ``LogHold``)."""
        hold = LogHold()
        self._log_holds.add(hold)
        try:
            yield hold
        finally:
            self._log_holds.discard(hold)

    async def logged_after(self, position: int, max_bytes: int) -> list[Write]:
        """The writes after ``position`` that the change feed no longer holds
        (up to where it starts), about ``max_bytes`` of them, read from the
        log on disk off the event loop: a follower behind the feed catches
        up from the log, as long as the log holds it, instead of taking a
        snapshot of the whole partition.

        Raises:
            CompactedError: the log does not hold them either (or there is
                no log): the follower needs a snapshot.
            StorageError: the log could not be read.
        """
        wal = None if self._pipeline is None else self._pipeline.wal
        through = self.feed.retained_after
        if wal is None:
            raise CompactedError(
                f"Partition {self.id} keeps no log: the changes after {position} are gone."
            )
        if position >= through:
            return []
        return await wal.read_after(position, through, max_bytes)

    def last_seq(self) -> int:
        """The last sequence number applied to the store (acknowledged writes
        may be ahead of it for a moment: see ``wait_applied``)."""
        return self._last_applied

    async def wait_applied(self) -> None:
        """Wait until the store has applied every write acknowledged so far,
        so that a read started now sees each of them (a Watch's start, a
        point read; queued reads wait by their place in the order).

        Raises:
            StorageError: the store failed before it got there.
            UnavailableError: the partition stopped.
        """
        target = self._acked
        while self._last_applied < target:
            if self._broken is not None:
                raise self._broken
            if self._ended:
                raise UnavailableError(f"Partition {self.id} stopped; retry.")
            await self._applied.park()

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
            acknowledged_seq=max(self._acked, self._last_applied),
        )

    async def store_stats(self) -> StoreStats:
        store = self._store
        if store is None or self._ended:
            return StoreStats(key_count=0, size_bytes=0)
        # Counting may scan the whole table: off the event loop, and not in the
        # worker thread either, so writes are not held up by the control plane.
        return await trio.to_thread.run_sync(store.stats)

    def close(self) -> None:
        """Accept nothing more; the task drains what is queued, then stops.

        Writes a stage holds for others (the replicate stage: waiting for
        followers that may never answer) fail UNAVAILABLE, their outcome
        unknown, so the drain ends."""
        if self.state not in (PartitionState.STOPPED, PartitionState.FAILED):
            self.state = PartitionState.DRAINING
        self._send.close()
        for gate in self._gates:
            gate.abandon(
                UnavailableError(
                    f"Partition {self.id} stopped before the write was replicated: "
                    "its outcome is unknown; retry and check."
                )
            )

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def probe(self) -> bool:
        """Whether every directory the partition writes takes a new file now:
        a cheap sign that what made it fail (a full, read-only or replaced
        file system) is gone, before a reopen is tried. Blocking (a thread)."""
        directories = [self.directory]
        if self._pipeline is not None and self._pipeline.wal is not None:
            directories.append(self._pipeline.wal.directory)
        if self.store_options is not None and self.store_options.durable_directory is not None:
            directories.append(self.store_options.durable_directory)
        for directory in directories:
            # Not a segment or store name: recovery never mistakes it for one.
            path = directory / ".mkv-probe"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, bytes(4096))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                    path.unlink(missing_ok=True)
            except OSError:
                return False
        return True

    def refuse(self) -> None:
        """The partition failed to start: refuse every request. Why is in the
        server's log, not on the wire (it names files)."""
        self.refusal = UnavailableError(
            f"Partition {self.id} did not start: its files failed the checks on start; "
            "the server's log says why."
        )
        self.close()
        # Its task has ended (or never began): nothing will drain or stop it.
        # FAILED, so that a reopen (by hand, once the cause is fixed) can
        # start it again; nothing retries by itself, as damage does not heal.
        self.state = PartitionState.FAILED
        self._ended = True
        self._stopped.set()

    # -- the inside: the partition task -----------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, recover from the log, report started, then serve until closed."""
        # Every store job in order, one at a time: on a lane of the node's
        # pool, so a partition whose store is slow holds one thread, not all.
        name = f"mkv-partition-{self.id}"
        worker: SerialWorker = (
            WorkerThread(name) if self._workers is None else self._workers.lane(name)
        )
        self._worker = worker
        pipeline = self._pipeline = build_pipeline(
            self.pipeline_specs,
            StageContext(
                self.id,
                self.directory,
                self._stage_observer,
                self._workers,
                applied_seq=lambda: self._last_applied,
            ),
        )
        self._gates = [stage for stage in pipeline.async_ if isinstance(stage, Gating)]
        wal = pipeline.wal
        started = False

        def open_it() -> StateStore:
            return open_store(
                self.store_kind, self.directory, logged=wal is not None, options=self.store_options
            )

        adopted: list[Write] = []
        try:
            logged: Recovered | None = None
            try:
                store = self._store = await worker.run_sync(open_it)
            except StoreDamagedError as damaged:
                if wal is None:
                    raise
                # The log may still hold every write: then the store is
                # rebuilt from it, and the damaged file kept for a look.
                logged = await wal.open()
                aside = await worker.run_sync(
                    functools.partial(set_aside_for_rebuild, damaged, wal)
                )
                log.warning(
                    "partition %s: %s Moved it to %s; rebuilding it from the log.",
                    self.id,
                    damaged,
                    aside,
                    extra=fields(event="store_rebuilt", partition=self.id),
                )
                store = self._store = await worker.run_sync(open_it)
            recovered = Recovered(store.last_seq(), store.last_timestamp())
            feed = self.feed = ChangeFeed(self._watch_retention_bytes, store.last_seq())
            if wal is not None:
                in_log = logged or await wal.open()
                recovered = recovered.later(in_log)
                check_loaded(
                    f"The write-ahead log of partition {self.id}",
                    last_seq=recovered.last_seq,
                    last_ts=recovered.last_timestamp,
                )
                # An empty log over a store that starts above 0 (a split's new
                # partition, a restore) holds none of the changes up to the
                # store's seq: a watch from before it must hear so.
                base = wal.base_seq if in_log.last_seq > 0 else store.last_seq()
                feed = self.feed = ChangeFeed(self._watch_retention_bytes, base)
                through = None
                if self._replay_through is not None:
                    through = max(self._replay_through, store.last_seq())
                replayed = await worker.run_sync(
                    lambda: replay_log(store, wal, feed, through=through)
                )
                if through is not None and through < in_log.last_seq:
                    # Never applied: finished by the stages after the log.
                    adopted = await worker.run_sync(lambda: list(wal.replay(through)))
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
            first = adopted[0].seq if adopted else self._next_seq
            self._turnstiles = [_Turnstile(first) for _ in pipeline.async_[1:]]
            only = pipeline.async_[0] if len(pipeline.async_) == 1 else None
            self._notifying = only if isinstance(only, Notifying) else None
            for turnstile in self._turnstiles:
                for before, after in itertools.pairwise(adopted):
                    if after.seq != before.seq + 1:
                        turnstile.jump(before.seq + 1, after.seq)
            self._last_applied = store.last_seq()
            window = self._window = OrderedWindow[_Pending, None](WINDOW_SIZE)
            async with trio.open_nursery() as nursery:
                for stage in pipeline.async_:
                    await nursery.start(stage.run)
                applier_done = trio.Event()
                nursery.start_soon(self._release, window, pipeline)
                nursery.start_soon(self._apply_backlog, pipeline, applier_done)
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
                started = True
                await self._adopt(adopted, window, pipeline, nursery)
                async with self._inbox:
                    async for pending in self._inbox:
                        await self._admit(pending, window, pipeline, nursery)
                # Closed: what was admitted is answered and applied, then the
                # stages stop.
                window.close()
                await applier_done.wait()
                for stage in pipeline.async_:
                    stage.close()
        except Exception as exc:
            if not started:
                raise  # whoever started it says why it cannot open
            # A bug or a failure nobody caught: it ends this partition, never
            # the node. Everyone waiting gets an answer.
            self._fail(f"its task failed ({type(exc).__name__})", exc)
            self._send.close()
            assert self._broken is not None
            for pending in list(self._outstanding):
                if not pending.done.is_set():
                    pending.fail(self._broken)
        finally:
            self._ended = True
            if self.state is not PartitionState.FAILED:
                self.state = PartitionState.STOPPED
            self._feed_changed.set()  # watchers see the partition stopped
            self._applied.unpark_all()  # so do readers waiting for the store
            with trio.CancelScope(shield=True):
                await self._close_files(worker, wal)
            self._stopped.set()
            log.info(
                "partition %s stopped",
                self.id,
                extra=fields(event="partition_stopped", partition=self.id, seq=self._last_applied),
            )

    async def _close_files(self, worker: SerialWorker, wal: WalStage | None) -> None:
        """Close the log and the store; a failure here is logged, not raised:
        there is nothing left to refuse, and the node must go on."""
        store = self._store
        for what, close in (
            ("log", None if wal is None else wal.aclose),
            ("store", None if store is None else lambda: worker.run_sync(store.close)),
        ):
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("partition %s: closing its %s failed", self.id, what)
        await worker.stop()

    def _fail(self, cause: str, exc: BaseException | None) -> None:
        """From here on refuse every write: the log or store is in a state
        nothing can vouch for. Reads go on from the store while the task
        runs (it only ever holds what the log made durable)."""
        if self._broken is not None:
            return
        self._broken = StorageError(
            f"Partition {self.id} failed ({cause}) and refuses writes until it is "
            "reopened; see the server log."
        )
        self.state = PartitionState.FAILED
        # Readers waiting for acknowledged writes the store will not apply now.
        self._applied.unpark_all()
        log.error(
            "partition %s failed: %s; it refuses writes until reopened",
            self.id,
            cause,
            exc_info=exc,
            extra=fields(event="partition_failed", partition=self.id),
        )
        if self._on_failure is not None:
            self._on_failure(self)

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
        if isinstance(command, Cutover):
            # From here on nothing of the moved range is numbered here: the
            # writes before this one are all the new owner must catch up on.
            self.range = command.keep
            self._shrunk = True
            self._handing_over = command
            window.complete(ticket, None)
            return
        if isinstance(command, Extend):
            await self._admit_extend(command, window, ticket, pipeline)
            return
        if self._gates and not (isinstance(command, Upsert) and not command.puts):
            # (An upsert of nothing is a new leader's epoch-start record, never
            # a client's: it is how the ISR gets to commit, so never refused.)
            for gate in self._gates:
                if (refusal := gate.admission()) is not None:
                    window.fail(ticket, refusal)
                    return
        if self._shrunk and not (isinstance(command, Remove) and command.purge):
            # Only after a cut-over: the list of keys costs a write ~1 µs a key.
            try:
                self.check_owned(*_mutated_keys(command))
            except MovedError as exc:
                window.fail(ticket, exc)
                return
        if self._broken is not None:
            window.fail(ticket, self._broken)
            return
        assert self._store is not None
        assert self._worker is not None
        try:
            decided = await self._decisions.decide(command, self._store, self._worker)
            pending.depends, pending.values = decided.depends, decided.values
            if decided.write is None:
                assert decided.refusal is not None
                # Answered in its turn, after the writes it was decided on.
                window.fail(ticket, decided.refusal)
                return
            write = decided.write
            if pipeline.sync:
                staged = await self._through_sync_stages(pipeline, write, command.size)
                # Encoded bytes describe the puts as they came: not a changed copy.
                write = staged if staged.puts is write.puts else attrs.evolve(staged, payload=None)
        except MkvError as exc:
            window.fail(ticket, exc)
            return
        if self._next_seq > MAX_LOADED or write.timestamp > MAX_LOADED:
            # Never written, so that every file still loads (mkv.limits).
            window.fail(ticket, StorageError(f"Partition {self.id} has used up its numbers."))
            return
        write = pending.write = attrs.evolve(write, seq=self._next_seq)
        self._next_seq += 1
        self._decisions.numbered(write)
        if not pipeline.async_:
            window.complete(ticket, None)
            return
        # Submitted here, so the first asynchronous stage takes writes in order.
        first: Awaitable[None] | MkvError
        if (aborted := self._decisions.aborted(pending.depends)) is not None:
            first = aborted
        elif (notifying := self._notifying) is not None:
            # The only asynchronous stage says when it is done: no task, no event.
            done = functools.partial(self._finish_async, window, ticket, write.seq)
            try:
                notifying.submit_notify(write, done)
            except MkvError as exc:
                done(exc)
            return
        else:
            try:
                first = pipeline.async_[0].submit(write)
            except MkvError as exc:
                first = exc
        nursery.start_soon(
            self._through_async_stages, window, ticket, pipeline, write, first, pending.depends
        )

    async def _adopt(
        self,
        adopted: list[Write],
        window: OrderedWindow[_Pending, None],
        pipeline: Pipeline,
        nursery: trio.Nursery,
    ) -> None:
        """Take the writes logged past the replay point into the window, as
        if just logged: the stages after the log finish them (a new leader's
        ISR commits them), and only then are they applied, in order."""
        for write in adopted:
            pending = _Pending(Upsert(puts=write.puts, size=write.size), self._unanswered)
            pending.write = write
            ticket = await window.admit(pending)
            self._decisions.numbered(write)
            nursery.start_soon(
                self._through_async_stages, window, ticket, pipeline, write, _logged(), ()
            )

    async def _admit_extend(
        self,
        command: Extend,
        window: OrderedWindow[_Pending, None],
        ticket: int,
        pipeline: Pipeline,
    ) -> None:
        """A merge's cut-over on the surviving side: take the right partition's
        last writes now, then own its range and number above both."""
        store, worker = self._store, self._worker
        assert store is not None
        assert worker is not None
        if self._broken is not None:
            window.fail(ticket, self._broken)
            return
        if self.range.end != command.added.start or self._extend_top is not None:
            window.fail(ticket, InternalError(f"Partition {self.id} cannot take {command.added}."))
            return
        try:
            await worker.run_sync(lambda: command.prepare(store))
        except MkvError as exc:
            window.fail(ticket, exc)
            return
        except Exception:
            log.exception("partition %s: taking a merged range failed", self.id)
            window.fail(ticket, InternalError(f"The merge into partition {self.id} failed."))
            return
        self.range = KeyRange(self.range.start, command.added.end)
        top = max(self._next_seq - 1, command.floor)
        # Keys that came with the range keep their timestamps: later writes stamp above them.
        restore(pipeline, Recovered(top, command.timestamp))
        if top >= self._next_seq:
            for turnstile in self._turnstiles:
                turnstile.jump(self._next_seq, top + 1)
            self._next_seq = top + 1
        self._extend_top = top
        window.complete(ticket, None)

    async def _extend(self, pending: _Pending, command: Extend) -> None:
        """Every write admitted before the ``Extend`` is applied: commit the merge."""
        store, worker, top = self._store, self._worker, self._extend_top
        assert store is not None
        assert worker is not None
        assert top is not None
        self._extend_top = None
        floor = self.history_floor
        # The catalog the commit writes keeps it: positions below ``top`` are
        # refused, since this partition's feed lacks the right one's history.
        self.history_floor = max(floor, top)
        try:
            await worker.run_sync(lambda: command.finish(store, top))
            await command.commit(top)
        except BaseException as exc:
            self.history_floor = floor
            self.range = KeyRange(self.range.start, command.added.start)
            # Writes of the added range admitted after it may be in the log
            # (never acknowledged): nothing after this is applied, and the
            # registry reopens the partition on its old range and purges.
            self._fail("a merge's cut-over failed", exc)
            assert self._broken is not None
            pending.fail(exc if isinstance(exc, MkvError) else self._broken)
            if not isinstance(exc, Exception):
                raise
            return
        self._last_applied = max(self._last_applied, top)
        self._applied.unpark_all()
        self.feed.skip_to(top)
        self.read_range = self.range
        # Earlier splits' moves of the added range are void: it is owned here again.
        self.moves = [move for move in self.moves if not move.range.overlaps(command.added)]
        pending.resolve(top)

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
            self._decisions.failed(write.seq)
            self._stage_failed(error)
        for stage, turnstile in zip(pipeline.async_[1:], self._turnstiles, strict=True):

            def enter(
                stage: AsyncStage = stage, failed: MkvError | None = error
            ) -> tuple[Awaitable[None] | None, MkvError | None]:
                if failed is None:
                    failed = self._decisions.aborted(depends)
                if failed is not None:
                    return None, failed
                try:
                    return stage.submit(write), None
                except MkvError as exc:
                    return None, exc
                except Exception as exc:
                    # Entered perhaps by another write's task (the turnstile's
                    # drain): an application's stage bug costs this write only.
                    log.exception("partition %s: stage %s refused a write", self.id, stage.name)
                    return None, InternalError(
                        f"Pipeline stage {stage.name} failed ({type(exc).__name__})."
                    )

            pending_stage, error = await turnstile.in_turn(write.seq, enter)
            if pending_stage is not None:
                error = await _outcome(pending_stage)
                self._stage_failed(error)
            if error is not None:
                self._decisions.failed(write.seq)
        if error is None:
            window.complete(ticket, None)
        else:
            window.fail(ticket, error)

    def _finish_async(
        self, window: OrderedWindow[_Pending, None], ticket: int, seq: int, error: MkvError | None
    ) -> None:
        """A write's only asynchronous stage is done with it (``Notifying``):
        what ``_through_async_stages`` does for a pipeline of one such stage."""
        if error is None:
            window.complete(ticket, None)
            return
        self._decisions.failed(seq)
        self._stage_failed(error)
        window.fail(ticket, error)

    def _stage_failed(self, error: MkvError | None) -> None:
        """A stage's storage failure (the log's) leaves its files in a state
        nothing can vouch for: the partition fails, as for the store's."""
        if isinstance(error, StorageError):
            self._fail("its write-ahead log failed", error)

    async def _release(self, window: OrderedWindow[_Pending, None], pipeline: Pipeline) -> None:
        """Take finished requests out of the window in order; answer the writes
        that are committed and need nothing of the store; hand everything,
        in order, to the applier."""
        # Without a log the store is the only durable copy: answer after it.
        early = pipeline.wal is not None
        try:
            async for released in window:
                for item in released:
                    pending = item.item
                    error = item.error
                    if (
                        pending.depends
                        and (aborted := self._decisions.aborted(pending.depends)) is not None
                    ):
                        # Decided on a write that failed after this one was admitted.
                        error = aborted
                    write = pending.write
                    if error is not None:
                        assert isinstance(error, MkvError)
                        if write is not None:
                            # Now, not when applied: a later write decided on
                            # this one must not be answered before it knows.
                            self._decisions.failed(write.seq)
                    elif early and write is not None and not write.deletes and self._broken is None:
                        # Committed: durable in the log, and every write before
                        # it is too. A read waits for its apply (``_acked``).
                        pending.resolve(WriteResult(write.seq, write.timestamp, 0, pending.values))
                        self._acked = write.seq
                    self._backlog.append((pending, error, self._acked))
                    if isinstance(pending.command, Mutation):
                        self._backlog_bytes += pending.command.size
                self._backlog_filled.unpark_all()
                while (
                    len(self._backlog) >= APPLY_BACKLOG
                    or self._backlog_bytes >= APPLY_BACKLOG_BYTES
                ):
                    await self._backlog_taken.park()
        finally:
            self._backlog_closed = True
            self._backlog_filled.unpark_all()

    async def _apply_backlog(self, pipeline: Pipeline, done: trio.Event) -> None:
        """Apply and answer what the releaser let through, in its order: each
        time, everything that came meanwhile (so the store's transactions
        group as many writes as the log's fsyncs did, or more)."""
        try:
            while True:
                while not self._backlog:
                    if self._backlog_closed:
                        return
                    await self._backlog_filled.park()
                taken = list(self._backlog)
                self._backlog.clear()
                self._backlog_bytes = 0
                self._backlog_taken.unpark_all()
                await self._apply_in_order(taken)
                if pipeline.wal is not None and self._broken is None:
                    try:
                        await self._checkpoint(pipeline.wal)
                    except StorageError as exc:
                        self._fail("a checkpoint failed", exc)
        finally:
            done.set()

    async def _apply_in_order(self, released: list[tuple[_Pending, MkvError | None, int]]) -> None:
        """Apply and answer ``released`` in order; runs of writes are applied together."""
        run: list[_Pending] = []
        size = 0
        for pending, error, acked in released:
            command = pending.command
            if error is None and isinstance(command, Mutation):
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
                if pending.write is not None:
                    self._unapplied(pending.write.seq)
                pending.fail(error)
            elif isinstance(command, Get | Read) and self._last_applied < acked:
                # The store failed short of writes acknowledged before this
                # read: what it holds is not what the read must see.
                assert self._broken is not None
                pending.fail(self._broken)
            elif isinstance(command, Read):
                await self._run_read(pending, command)
            elif isinstance(command, Cutover):
                await self._cut_over(pending, command)
            elif isinstance(command, Extend):
                await self._extend(pending, command)
            else:
                self._read(pending)
        await self._apply(run)

    async def _cut_over(self, pending: _Pending, command: Cutover) -> None:
        """Every write admitted before the cut-over is applied: hand over."""
        assert self._store is not None
        seq = self._last_applied
        try:
            resume = await command.at_release(seq, self._store.last_timestamp())
        except BaseException as exc:
            self._handing_over = None
            # Not handed over: the range is this partition's again.
            self.range = KeyRange(command.keep.start, command.moved.end)
            if isinstance(exc, MkvError):
                pending.fail(exc)
                return
            if isinstance(exc, Exception):
                log.exception("partition %s: a cut-over failed", self.id)
                pending.fail(InternalError(f"The cut-over of partition {self.id} failed."))
                return
            raise
        self._handing_over = None
        self.read_range = command.keep
        self.moves.append(
            Move(
                command.moved,
                command.owner,
                seq if resume is None else resume,
                command.address,
            )
        )
        # Watchers of the moved range end now, even with no write to wake them.
        self._feed_changed.set()
        self._feed_changed = trio.Event()
        pending.resolve(seq)

    def _read(self, pending: _Pending) -> None:
        assert isinstance(pending.command, Get)
        try:
            self.check_owned(pending.command.key, reading=True)
            pending.resolve(self._get(pending.command.key))
        except (StorageError, MovedError) as exc:
            pending.fail(exc)

    def _get(self, key: bytes) -> Item | None:
        """A point read from the store, inline (a store's ``get`` is cheap).

        Raises:
            StorageError: the store failed (and it is logged).
        """
        assert self._store is not None
        try:
            return self._store.get(key)
        except StorageError as exc:
            log.error("partition %s: read failed", self.id, exc_info=exc)
            raise

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
                self._fail(f"applying {len(writes)} writes to its store failed", exc)
        if self._broken is not None:
            for pending, write in zip(run, writes, strict=True):
                if pending.done.is_set():
                    # Acknowledged, so in the log, which the reopened
                    # partition replays: watchers must not skip it.
                    self._decisions.released(write.seq, applied=False)
                else:
                    self._unapplied(write.seq)
                    pending.fail(self._broken)
            return
        self._last_applied = writes[-1].seq
        feed = self.feed
        for pending, write, count in zip(run, writes, removed, strict=True):
            self._decisions.released(write.seq, applied=True)
            command = pending.command
            assert isinstance(command, Mutation)
            keys = len(write.puts) + len(write.deletes)
            cost = entry_cost(write, write.payload, command.size, keys)
            feed.append(FeedEntry(write.seq, write.timestamp, cost, write=write))
            if not pending.done.is_set():  # else answered on commit (``_release``)
                pending.resolve(WriteResult(write.seq, write.timestamp, count, pending.values))
        self._applied.unpark_all()
        self._feed_changed.set()
        self._feed_changed = trio.Event()

    def _unapplied(self, seq: int) -> None:
        """The numbered write ``seq`` failed: it leaves the in-flight state,
        and the feed is complete past it."""
        self._decisions.released(seq, applied=False)
        self.feed.skip_to(seq)

    async def wait_for_changes(self, after_seq: int) -> None:
        """Wait until the feed holds a write numbered above ``after_seq``.

        Raises:
            UnavailableError: the partition stopped (removed, or shutting down).
        """
        while self.feed.last_seq <= after_seq:
            if self._ended:
                raise UnavailableError(f"Partition {self.id} stopped; reconnect and resume.")
            moves = len(self.moves)
            await self._feed_changed.wait()
            if len(self.moves) != moves:
                return  # a cut-over: the watcher checks whether its range moved

    async def _checkpoint(self, wal: WalStage) -> None:
        """Once the log has rolled to a new segment, make the store durable and
        let the log drop what the store now holds, so the log stays bounded."""
        store, stats = self._store, wal.statistics()
        if store is None or not store.persistent or stats is None or stats.segments <= 1:
            return
        # The log also keeps what watchers may still ask for, so a restart
        # brings back the same retention. Until that and the store are past
        # the oldest segment, a checkpoint would fsync the store for nothing,
        # on every write.
        # And what followers catching up from disk still read, within bounds.
        keep = self.feed.retained_after
        held = [hold.seq for hold in self._log_holds if hold.seq is not None]
        if held and min(held) < keep:
            if stats.bytes <= LOG_HOLD_BYTES:
                keep = min(held)
            else:
                log.warning(
                    "partition %s: a follower at seq %d is more than %d MiB of log behind; "
                    "the log is checkpointed past it (it will need a snapshot)",
                    self.id,
                    min(held),
                    LOG_HOLD_BYTES // (1024 * 1024),
                    extra=fields(event="log_hold_dropped", partition=self.id),
                )
        keep_after = min(self._last_applied, keep)
        if keep_after < stats.oldest_segment_end_seq:
            return
        assert self._worker is not None
        durable = await self._worker.run_sync(store.sync)
        dropped = await wal.checkpoint(min(durable, keep))
        log.info(
            "partition %s: checkpoint at seq %d dropped %d log segments",
            self.id,
            durable,
            dropped,
            extra=fields(
                event="checkpoint", partition=self.id, seq=durable, segments_dropped=dropped
            ),
        )


_Entered = tuple[Awaitable[None] | None, MkvError | None]


class _Parked:
    __slots__ = ("done", "enter", "result")

    def __init__(self, enter: Callable[[], _Entered]) -> None:
        self.enter = enter
        self.done = trio.Event()
        self.result: _Entered = (None, None)


class _Turnstile:
    """Lets writes into a stage one at a time, in sequence order.

    A write whose turn has not come parks the (synchronous) call that
    enters it; whoever advances the turnstile enters every parked write that
    is next, in order, at once. (Each waiting its own turn instead would
    cost one scheduler round per write of a group the stage before finished
    together, as Trio may wake them in reverse order; and a write cancelled
    while waiting would hold up every later one.)"""

    def __init__(self, first_seq: int) -> None:
        self._next = first_seq
        self._parked: dict[int, _Parked] = {}
        # Numbering that skips ahead (a merge): the seq after which comes which.
        self._jumps: dict[int, int] = {}

    def jump(self, skipped: int, to: int) -> None:
        """Seqs from ``skipped`` up to ``to`` are never given out."""
        if self._next == skipped:
            self._next = to
            self._drain()
        else:
            self._jumps[skipped] = to

    async def in_turn(self, seq: int, enter: Callable[[], _Entered]) -> _Entered:
        """Call ``enter`` (which must not raise) in ``seq``'s turn; its result."""
        if seq != self._next:
            parked = self._parked[seq] = _Parked(enter)
            await parked.done.wait()
            return parked.result
        result = enter()
        self._advance()
        self._drain()
        return result

    def _advance(self) -> None:
        self._next += 1
        self._next = self._jumps.pop(self._next, self._next)

    def _drain(self) -> None:
        while (parked := self._parked.pop(self._next, None)) is not None:
            parked.result = parked.enter()
            self._advance()
            parked.done.set()


async def _logged() -> None:
    """An adopted write's log stage: done before the partition started."""


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
