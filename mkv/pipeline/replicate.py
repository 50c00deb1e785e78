"""The replicate stage: a leader's write is done once every in-sync replica has it durable.

``replicate:sync`` (the default) or ``replicate:async``, after ``wal`` (issue
16, ../shared/docs/cluster.md rule 3). The partition submits a write here
once its own log has made it durable (the turnstile order guarantees that),
so the leader's synced seq is the seq of the last write submitted. A write
completes when every ISR member's reported durable seq reaches it
(``mkv.pipeline.isr``); since a partition answers and applies a write only
when it leaves the reorder window, the leader's store never holds a write
the ISR does not have, and nothing is acknowledged that a failover can lose.
``async`` completes at once (after the local log): a failover may lose the
writes the followers had not fetched yet.

With no followers (a single node, or before the cluster layer calls
``lead``) a write completes at once: R = 1 commits at the local fsync.

The stage also keeps what a leader's Fetch streams serve above the applied
seq: the writes logged here and not yet applied (the *tail*, trimmed once
the store has them and so the change feed too; bounded by the partition's
window and apply backlog), the partition's epoch history (the epoch file,
``mkv.wal.epochs``: which leadership logged which seqs, written before the
first write of a new epoch completes), and the in-sync set. Changing the ISR
in etcd is the caller's (``lead``'s ``change_isr``): a laggard is removed
there first and only then left out of the commit; ``False`` means deposed.

Writes a partition had logged before it started (a promoted follower's
uncommitted tail, adopted by the partition) always wait for the ISR, in
either mode, and complete only once ``lead`` has set one: they must not
reach the store before the new leader commits them (a store cannot be
truncated). The bookkeeping is ``InSyncSet`` (sans-I/O); this is the Trio
plumbing around it.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from mkv.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MkvError,
    UnavailableError,
)
from mkv.pipeline.base import Recovered, StageContext
from mkv.pipeline.isr import InSyncSet
from mkv.records import Write
from mkv.wal.epochs import EpochHistory, read_epoch_file, write_epoch_file

__all__ = [
    "EPOCH_FILE",
    "ReplicaProgressInfo",
    "ReplicaStatesInfo",
    "ReplicateMode",
    "ReplicateStage",
]

log = logging.getLogger("mkv.replication")

# The partition's epoch file, next to its log (the follower's side names it
# the same: a directory holding one is a replica's).
EPOCH_FILE = "epochs"
# How often the ISR is checked for laggards with nothing else happening.
ISR_CHECK_SECONDS = 0.25


class ReplicateMode(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"

    @classmethod
    def parse(cls, argument: str) -> ReplicateMode:
        """``sync`` (also the default, for an empty argument) or ``async``.

        Raises:
            InvalidArgumentError: anything else.
        """
        text = argument.strip() or "sync"
        try:
            return cls(text)
        except ValueError:
            raise InvalidArgumentError(
                "The replicate stage takes 'sync' or 'async', for example 'replicate:sync'."
            ) from None


@attrs.frozen
class ReplicaProgressInfo:
    """One replica's progress as its leader sees it (``ReplicaProgress``)."""

    node: str
    durable_seq: int
    lag_records: int
    lag_seconds: float
    in_sync: bool


@attrs.frozen
class ReplicaStatesInfo:
    """A led partition's commit point and its replicas (``ReplicaStates``)."""

    commit_seq: int
    replicas: tuple[ReplicaProgressInfo, ...]


# Changes the ISR in etcd: True once committed, False when deposed.
IsrChange = Callable[[frozenset[str]], Awaitable[bool]]


class _Waiter:
    __slots__ = ("done", "error", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.done = trio.Event()
        self.error: MkvError | None = None

    def finish(self, error: MkvError | None = None) -> None:
        self.error = error
        self.done.set()


class ReplicateStage:
    name = "replicate"

    def __init__(
        self,
        mode: ReplicateMode,
        directory: Path,
        applied_seq: Callable[[], int] = lambda: 0,
    ) -> None:
        self.mode = mode
        self.epoch_path = directory / EPOCH_FILE
        self._applied_seq = applied_seq
        self.history = EpochHistory()
        # The leadership this node holds (0: none; a single node).
        self.epoch = 0
        # Whether writes wait for an ISR: the partition has an epoch history
        # (it was replicated) or leads with followers.
        self.replicated = False
        self._isr: InSyncSet | None = None
        self._change_isr: IsrChange | None = None
        self._deposed: Callable[[], None] | None = None
        # Seqs up to this were logged before the partition started.
        self._adopted_through = 0
        # The last seq submitted here: durable in the leader's log.
        self._logged = 0
        self._tail: deque[Write] = deque()
        self._waiters: deque[_Waiter] = deque()
        # Waiting for the commit to reach a seq, apart from the writes (in
        # async mode a write does not wait, but a new leader still must).
        self._commit_waiters: list[_Waiter] = []
        self._refusal: MkvError | None = None
        self._closed = False
        self._logged_lot = trio.lowlevel.ParkingLot()
        self._wakeup = trio.Event()
        self._history_lock = trio.Lock()
        # Counters for metrics: Truncate answers sent (by the Fetch server),
        # and ISR changes made.
        self.truncations = 0
        self.isr_shrinks = 0
        self.isr_expands = 0

    @classmethod
    def from_spec(cls, argument: str, context: StageContext) -> ReplicateStage:
        return cls(ReplicateMode.parse(argument), context.directory, context.applied_seq)

    def restore(self, recovered: Recovered) -> None:
        """Numbering resumes after ``recovered``: what is logged up to it is
        adopted, never the first record of a new epoch."""
        self._adopted_through = recovered.last_seq
        self._logged = max(self._logged, recovered.last_seq)

    # -- the partition's side ----------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        history = await trio.to_thread.run_sync(read_epoch_file, self.epoch_path)
        self.history = history
        if history.entries:
            self.replicated = True
            self.epoch = max(self.epoch, history.last_epoch)
        task_status.started()
        while not self._closed:
            with trio.move_on_after(ISR_CHECK_SECONDS):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if not self._closed:
                await self._check_isr()

    def submit(self, write: Write) -> Awaitable[None]:
        if self._refusal is not None:
            raise self._refusal
        if self._closed:
            raise UnavailableError("The partition is shutting down; retry.")
        seq = write.seq
        adopted = seq <= self._adopted_through
        self._logged = max(self._logged, seq)
        self._tail.append(write)
        self._trim()
        new_epoch = not adopted and self.epoch > self.history.last_epoch
        if new_epoch:
            # The first write of this leadership: the epoch file must say so
            # before it completes, or a restart would take it for an older one's.
            self.history = self.history.started(self.epoch, seq)
        if self._isr is not None:
            self._isr.synced(seq)
        self._logged_lot.unpark_all()
        waiter: _Waiter | None = None
        waits = adopted or (self.replicated and self.mode is ReplicateMode.SYNC)
        if waits and (self._isr is None or self._isr.commit_seq < seq):
            waiter = _Waiter(seq)
            self._waiters.append(waiter)
        return self._finish(waiter, new_epoch)

    async def _finish(self, waiter: _Waiter | None, write_history: bool) -> None:
        if write_history:
            async with self._history_lock:
                history = self.history
                await trio.to_thread.run_sync(write_epoch_file, self.epoch_path, history)
        if waiter is not None:
            await waiter.done.wait()
            if waiter.error is not None:
                raise waiter.error

    def admission(self) -> MkvError | None:
        """Why a write must be refused before it is numbered (nothing logged), if it must."""
        if self._refusal is not None:
            return self._refusal
        isr = self._isr
        if isr is None and self.replicated:
            # A replica's log (it has an epoch history) that leads nothing now:
            # its writes could never commit.
            return UnavailableError("This node does not lead the partition now; retry.")
        if isr is not None and not isr.admits_writes():
            return UnavailableError(
                f"Only {len(isr.isr)} of the partition's replicas are in sync, fewer than "
                f"min_isr {isr.min_isr}: writes are refused until a replica catches up; "
                "reads go on."
            )
        return None

    def abandon(self, error: MkvError) -> None:
        """Admit nothing more; fail every write still waiting for the ISR with
        ``error`` (its outcome is unknown: a follower may have it)."""
        self._refusal = error
        self._isr = None
        self._change_isr = self._deposed = None
        waiters, self._waiters = self._waiters, deque()
        for waiter in [*waiters, *self._commit_waiters]:
            waiter.finish(error)
        self._commit_waiters = []
        self._logged_lot.unpark_all()
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self.abandon(
            self._refusal or UnavailableError("The partition is shutting down; outcome unknown.")
        )

    # -- the leadership's side ---------------------------------------------------

    def lead(
        self,
        epoch: int,
        isr: InSyncSet,
        change_isr: IsrChange,
        deposed: Callable[[], None],
    ) -> None:
        """Lead at ``epoch``: writes from here on wait for ``isr``'s commit."""
        if epoch < self.history.last_epoch:
            raise FailedPreconditionError(
                f"Epoch {epoch} is older than epoch {self.history.last_epoch} this log holds."
            )
        self.epoch = epoch
        self.replicated = True
        self._refusal = None
        isr.synced(self._logged)
        self._isr = isr
        self._change_isr = change_isr
        self._deposed = deposed
        self._advance()
        self._wakeup.set()

    @property
    def isr(self) -> InSyncSet | None:
        return self._isr

    def reported(self, node: str, durable_seq: int) -> None:
        """A follower holds ``durable_seq`` durable, matching this log."""
        isr = self._isr
        if isr is None:
            return
        isr.reported(node, durable_seq, trio.current_time())
        self._advance()
        if node not in isr.isr and node in isr.rejoiners():
            self._wakeup.set()

    def set_isr(self, replicas: tuple[str, ...], isr: frozenset[str]) -> None:
        """What etcd now holds (the cluster layer saw the record change)."""
        if (in_sync := self._isr) is None:
            return
        now = trio.current_time()
        in_sync.set_replicas(replicas, now)
        in_sync.set_isr(isr, now)
        self._advance()

    @property
    def commit_seq(self) -> int:
        """Acknowledgeable: durable on every ISR member (here only: all logged)."""
        if self._isr is not None:
            return self._isr.commit_seq
        if self.replicated:
            return self._applied_seq()
        return max(self._logged, self._applied_seq())

    @property
    def log_end(self) -> int:
        return max(self._logged, self._applied_seq())

    def epoch_of(self, seq: int) -> int:
        """The epoch of the leadership that logged ``seq`` (0: before any)."""
        epoch = 0
        for entry_epoch, first_seq in self.history.entries:
            if first_seq > seq:
                break
            epoch = entry_epoch
        return epoch

    def tail_after(self, seq: int, max_bytes: int) -> list[Write]:
        """Logged writes above ``seq`` not yet trimmed, about ``max_bytes`` of them."""
        self._trim()
        writes: list[Write] = []
        size = 0
        for write in self._tail:
            if write.seq <= seq:
                continue
            if writes and size >= max_bytes:
                break
            writes.append(write)
            size += write.size + 16
        return writes

    async def wait_committed(self, seq: int) -> None:
        """Wait until every ISR member has ``seq`` durable (whatever the mode).

        Raises:
            UnavailableError: the stage stopped leading first.
        """
        if self._isr is None:
            raise self._refusal or UnavailableError("This node does not lead the partition.")
        if self._isr.commit_seq >= seq:
            return
        waiter = _Waiter(seq)
        self._commit_waiters.append(waiter)
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    async def wait_logged(self, after: int) -> None:
        """Wait until a write above ``after`` is logged (or the stage stops)."""
        while self.log_end <= after and self._refusal is None:
            await self._logged_lot.park()

    def states(self) -> ReplicaStatesInfo | None:
        isr = self._isr
        if isr is None:
            return None
        now = trio.current_time()
        replicas = []
        for node in isr.replicas:
            if node == isr.leader:
                continue
            records, seconds = isr.lag(node, now)
            replicas.append(
                ReplicaProgressInfo(node, isr.durable_seq(node), records, seconds, node in isr.isr)
            )
        return ReplicaStatesInfo(isr.commit_seq, tuple(replicas))

    # -- inside ----------------------------------------------------------------

    def _trim(self) -> None:
        applied = self._applied_seq()
        tail = self._tail
        while tail and tail[0].seq <= applied:
            tail.popleft()

    def _advance(self) -> None:
        """Complete, in order, the waiting writes the commit seq now covers."""
        if self._isr is None:
            return
        commit = self._isr.commit_seq
        waiters = self._waiters
        while waiters and waiters[0].seq <= commit:
            waiters.popleft().finish()
        if self._commit_waiters:
            for waiter in self._commit_waiters:
                if waiter.seq <= commit:
                    waiter.finish()
            self._commit_waiters = [w for w in self._commit_waiters if not w.done.is_set()]

    async def _check_isr(self) -> None:
        """Remove laggards and add back caught-up replicas, in etcd first."""
        isr, change = self._isr, self._change_isr
        if isr is None or change is None:
            return
        now = trio.current_time()
        out, back = isr.laggards(now), isr.rejoiners()
        if not out and not back:
            return
        wanted = (isr.isr - out) | back
        try:
            committed = await change(wanted)
        except Exception as exc:
            # etcd unreachable or slow: the laggard stays counted (writes
            # wait), and the next check tries again.
            log.warning("changing the ISR to %s failed (%s); retrying", sorted(wanted), exc)
            return
        if self._isr is not isr:
            return  # stepped down meanwhile
        if not committed:
            log.warning(
                "the ISR change to %s was refused: another leader holds the partition",
                sorted(wanted),
            )
            if self._deposed is not None:
                self._deposed()
            return
        if out:
            self.isr_shrinks += 1
            log.warning("replicas %s lagged past the timeout: left the ISR", sorted(out))
        if back:
            self.isr_expands += 1
            log.info("replicas %s caught up: back in the ISR", sorted(back))
        isr.set_isr(wanted, trio.current_time())
        self._advance()
