"""The Trio side of cluster mode: register under a lease, keep it, watch the
cluster's prefix, carry out what ``reconcile`` decides, and change placement
for the control plane, each change one etcd Txn.

The data plane reads ``routing`` (an immutable table, replaced on every
change) and ``lease_valid()`` for every request; nothing here blocks it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs
import trio

from mkv.cluster.elections import campaign, change_isr, election_isr
from mkv.cluster.keyspace import (
    PLACEMENT_VALUE,
    Keys,
    LeaderRecord,
    NodeRecord,
    PartitionRecord,
)
from mkv.cluster.placement import check_free, choose_replicas
from mkv.cluster.reconcile import (
    Adopt,
    Campaign,
    Create,
    Delete,
    Lead,
    Leaderless,
    LeaderRef,
    LeaveIsr,
    OpenFollower,
    PublishMerge,
    PublishSplit,
    ReplicaFacts,
    RevokeStale,
    Role,
    SetIsr,
    SetLeader,
    StepDown,
    defers_to_preferred,
    reconcile,
)
from mkv.cluster.repair import GoneNodes, plan_repair, repairer
from mkv.cluster.serving import ServingIntervals
from mkv.cluster.view import ClusterView, Leader, Routing
from mkv.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    MkvError,
    NotFoundError,
    UnavailableError,
)
from mkv.etcd import (
    Compare,
    Etcd,
    EtcdCompacted,
    EtcdError,
    LeaseClock,
    LeaseNotFound,
    Op,
    keep_lease,
    open_etcd,
)
from mkv.observe.metrics import ClusterNumbers
from mkv.router import KeyRange

__all__ = [
    "ClusterSettings",
    "IsrWriter",
    "LocalPartition",
    "LocalPartitions",
    "Membership",
    "MoveTicket",
    "ReplicaProgress",
    "ReplicaStates",
]

log = logging.getLogger("mkv.cluster")

DEFAULT_LEASE_TTL = 5
# How often the node reconciles without a change, to retry what failed.
RECONCILE_INTERVAL = 1.0
# How long AddPartition waits for the new partition's owner to lead it.
ADD_WAIT = 10.0
# How often the files of removed partitions are checked for deletion.
PURGE_INTERVAL = 60.0
# How long they are kept (see ClusterSettings.removed_grace).
REMOVED_GRACE = 3600.0
# Placement Txns retried when another change came in between.
PLACEMENT_ATTEMPTS = 5
# How long an in-sync replica that is not a leaderless partition's preferred
# leader waits for that (live, in-sync) node to campaign first: the head
# start a leadership transfer relies on.
PREFER_GRACE = 1.5


@attrs.frozen
class ClusterSettings:
    etcd: tuple[str, ...]
    name: str
    node_id: str
    lease_ttl: int = DEFAULT_LEASE_TTL
    # Seconds a partition removed in etcd keeps its files on this node
    # (set aside under DATA_DIR/.removed), in case the removal was a mistake.
    removed_grace: float = REMOVED_GRACE
    # Replicas of a partition added without a count (capped at the live nodes).
    replicas: int = 3
    # In-sync replicas below which a leader refuses writes.
    min_isr: int = 2
    # Handed to the data path: when a lagging follower leaves the ISR.
    replica_lag_timeout: float = 10.0
    # When a gone node's replicas are re-created elsewhere (repair).
    node_dead_timeout: float = 60.0
    # "sync" or "async": the replicate stage of the cluster's default pipeline.
    replicate: str = "sync"

    @property
    def margin(self) -> float:
        """Taken off every lease deadline: the time to stop serving and the
        clock-rate drift between this node and etcd (docs/cluster.md)."""
        return max(0.2, self.lease_ttl * 0.1)


@attrs.define
class _ObservedLeaseClock(LeaseClock):
    """A ``LeaseClock`` that calls ``changed`` before and after each change,
    so the serving intervals see a deadline that passed before a renewal."""

    changed: Callable[[], None] = attrs.field(default=lambda: None, kw_only=True)

    def renewed(self, sent_at: float, ttl: float) -> None:
        self.changed()
        super().renewed(sent_at, ttl)
        self.changed()

    def expire(self) -> None:
        self.changed()
        super().expire()
        self.changed()


@attrs.frozen
class LocalPartition:
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]


class IsrWriter(Protocol):
    """What the data path's leader calls to change its partition's in-sync set
    in etcd before it acts on the change (``Membership.change_isr``)."""

    async def change_isr(self, partition_id: str, epoch: int, isr: frozenset[str]) -> bool:
        """One etcd Txn: ``partitions/<id>.isr = isr``, guarded by the leader
        key's create revision == ``epoch`` and the record's mod_revision as
        read. True when committed; False when the guard failed (deposed)."""
        ...


class ReplicaProgress(Protocol):
    """One replica's progress as its leader sees it (the data path's type)."""

    @property
    def node(self) -> str: ...
    @property
    def durable_seq(self) -> int: ...
    @property
    def lag_records(self) -> int: ...
    @property
    def lag_seconds(self) -> float: ...
    @property
    def in_sync(self) -> bool: ...


class ReplicaStates(Protocol):
    """A led partition's commit point and its replicas' progress."""

    @property
    def commit_seq(self) -> int: ...
    @property
    def replicas(self) -> Sequence[ReplicaProgress]: ...


class LocalPartitions(Protocol):
    """What membership needs of the node's registry (which it may not import)."""

    def replicated(self) -> bool:
        """Whether the registry has the replica data path (followers, ``lead``):
        without it a record is served by its first replica alone."""
        ...

    async def open_follower(self, record: PartitionRecord, leader: LeaderRef | None) -> None:
        """Create or open this node's replica of ``record`` as a follower of
        ``leader``; idempotent."""
        ...

    def set_leader(self, partition_id: str, leader: LeaderRef | None) -> None:
        """A follower's leader changed (node or epoch), or is gone (None)."""
        ...

    async def lead(
        self,
        partition_id: str,
        epoch: int,
        *,
        replicas: tuple[str, ...],
        isr: frozenset[str],
        isr_writer: IsrWriter,
        min_isr: int,
    ) -> None:
        """Promote the local replica at ``epoch``; returns once it serves
        (its epoch-start record durable on every ISR member)."""
        ...

    def set_isr(self, partition_id: str, replicas: tuple[str, ...], isr: frozenset[str]) -> None:
        """etcd's replicas or in-sync set of the partition changed."""
        ...

    async def step_down(self, partition_id: str, leader: LeaderRef | None) -> None:
        """Stop leading: unanswered writes fail ("outcome unknown"); follow ``leader``."""
        ...

    def role(self, partition_id: str) -> Role | None:
        """ "leader" once serving, "follower", or None (no such replica)."""
        ...

    def replica_states(self, partition_id: str) -> ReplicaStates | None:
        """A partition this node leads: its commit seq and replicas' progress."""
        ...

    def held(self) -> Mapping[str, LocalPartition]: ...

    async def create(self, record: PartitionRecord) -> None: ...

    async def delete(self, partition_id: str) -> None: ...

    def changing(self) -> bool:
        """Whether a change of partitions (a split, a merge) runs now."""
        ...

    def moving(self) -> set[str]:
        """Partitions a running move hands in or out (reconcile's ``moving``)."""
        ...

    def copies(self) -> set[str]:
        """Copies installed by a move and not served yet (reconcile's ``copies``)."""
        ...

    def dormant(self) -> set[str]:
        """Replicas found on this disk at start and not opened yet."""
        ...

    async def adopt(self, partition_id: str) -> None:
        """Serve a copy a move installed here (etcd names this node)."""
        ...

    async def purge_removed(self, older_than: float) -> list[str]:
        """Delete the files of partitions removed more than ``older_than``
        seconds ago (they are set aside, not deleted, on removal)."""
        ...


@attrs.frozen
class MoveTicket:
    """What a move read from etcd before it fenced the source; its Txn
    changes ownership only if these still hold."""

    record: PartitionRecord
    # The partition record's mod_revision: a fenced source that gave up
    # rewrites the record (``settle_fence``), so the move's Txn fails.
    mod_revision: int
    # The source's leadership: its leader key's create revision.
    epoch: int
    source: str


class _MoveMembership:
    """Placement Txns of a move between nodes (mixed into ``Membership``)."""

    keys: Keys
    node_id: str
    lease: int
    view: ClusterView
    _changed: trio.Event

    def _client(self) -> Etcd:
        raise NotImplementedError

    async def _fresh_view(self) -> ClusterView:
        raise NotImplementedError

    async def _placement_txn(
        self, view: ClusterView, compare: Sequence[Compare], ops: Sequence[Op]
    ) -> bool:
        raise NotImplementedError

    def lease_valid(self) -> bool:
        raise NotImplementedError

    async def move_ticket(self, partition_id: str) -> MoveTicket:
        """Read, before the fence, what the move's Txn will require.

        Raises:
            NotFoundError: no such partition.
            FailedPreconditionError: nobody leads it now, or this node does.
        """
        view = await self._fresh_view()
        entry, leader = view.partitions.get(partition_id), view.leaders.get(partition_id)
        if entry is None:
            raise NotFoundError(f"No partition with id {partition_id!r} in the cluster.")
        if leader is None:
            raise FailedPreconditionError(
                f"Nobody leads partition {partition_id} now; retry the move once a node does."
            )
        if leader.node == self.node_id:
            raise FailedPreconditionError(f"This node leads partition {partition_id} already.")
        return MoveTicket(entry.record, entry.mod_revision, leader.epoch, leader.node)

    async def commit_move(self, ticket: MoveTicket) -> None:
        """The move's one Txn: ``partitions/<id>`` names this node alone and
        ``leaders/<id>`` is deleted (this node then campaigns: a new epoch),
        on condition that the source still leads under the epoch read, the
        record is unchanged since the ticket, and placement is as read (a
        placement change elsewhere is read again and the Txn retried).

        Raises:
            FailedPreconditionError: the source lost its leadership or gave up
                the fence (the record changed): nothing switched.
            UnavailableError: etcd cannot be reached and did not say.
        """
        pid = ticket.record.id
        moved = attrs.evolve(
            ticket.record, replicas=(self.node_id,), isr=(self.node_id,), state="active"
        )
        for _ in range(PLACEMENT_ATTEMPTS):
            try:
                view = await self._fresh_view()
            except UnavailableError:
                await trio.sleep(0.2)
                continue
            if _moved_here(view, pid, self.node_id):
                return  # an earlier attempt committed (its answer was lost)
            entry, leader = view.partitions.get(pid), view.leaders.get(pid)
            if (
                entry is None
                or entry.mod_revision != ticket.mod_revision
                or leader is None
                or leader.epoch != ticket.epoch
            ):
                raise FailedPreconditionError(
                    f"Partition {pid} changed in etcd during the move (its leader or record); "
                    "the move is abandoned and the source serves it."
                )
            try:
                result = await self._client().txn(
                    [
                        Compare.mod_revision(self.keys.placement, "=", view.placement_revision),
                        Compare.mod_revision(self.keys.partition(pid), "=", ticket.mod_revision),
                        Compare.create_revision(self.keys.leader(pid), "=", ticket.epoch),
                    ],
                    [
                        Op.put(self.keys.placement, PLACEMENT_VALUE),
                        Op.put(self.keys.partition(pid), moved.encode()),
                        Op.delete(self.keys.leader(pid)),
                    ],
                )
            except EtcdError as exc:
                log.warning("the move's Txn for %s got no answer (%s); asking again", pid, exc)
                await trio.sleep(0.2)
                continue
            if result.succeeded:
                log.info(
                    "partition %s moved from %s to %s in etcd at revision %d",
                    pid,
                    ticket.source,
                    self.node_id,
                    result.revision,
                    extra={"event": "cluster_moved", "partition": pid},
                )
                return
        raise UnavailableError(
            f"etcd did not take the move of {pid} in {PLACEMENT_ATTEMPTS} attempts; "
            "the move is abandoned."
        )

    async def lead_now(self, partition_id: str, within: float) -> int:
        """Campaign for ``partition_id`` (just moved here) and return the new
        epoch; reconcile campaigns too, and whichever Txn is first wins.

        Raises:
            UnavailableError: no leadership within ``within`` seconds.
        """
        with trio.move_on_after(within):
            while True:
                view = await self._fresh_view()
                leader, entry = view.leaders.get(partition_id), view.partitions.get(partition_id)
                if (
                    leader is not None
                    and leader.node == self.node_id
                    and leader.lease == self.lease
                ):
                    # Served once the watched view (and so routing) has it.
                    while self.view.leaders.get(partition_id) != leader:
                        await self._changed.wait()
                    return leader.epoch
                if leader is None and entry is not None and self.lease and self.lease_valid():
                    with contextlib.suppress(EtcdError):
                        await self._client().txn(
                            [
                                Compare.create_revision(self.keys.leader(partition_id), "=", 0),
                                Compare.mod_revision(
                                    self.keys.partition(partition_id), "=", entry.mod_revision
                                ),
                            ],
                            [
                                Op.put(
                                    self.keys.leader(partition_id),
                                    LeaderRecord(self.node_id).encode(),
                                    lease=self.lease,
                                )
                            ],
                        )
                        continue
                await trio.sleep(0.1)
        raise UnavailableError(f"This node did not become leader of {partition_id} in time.")

    async def change_replicas(
        self, partition_id: str, *, add: str | None = None, remove: str | None = None
    ) -> PartitionRecord:
        """Add a replica on ``add`` (last, out of the ISR: it starts empty and
        joins through the leader once caught up) or remove the one on
        ``remove`` (from replicas and ISR; never the leader's, nor the last
        in-sync one): one placement Txn guarded by the record's mod revision
        and its leader key as read. Returns the record written (or as it is,
        when there was nothing to change).

        Raises:
            NotFoundError: no such partition, or ``add`` is not a live node.
            FailedPreconditionError: ``remove`` leads it, or is its only
                in-sync replica.
        """
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            entry, leader = view.partitions.get(partition_id), view.leaders.get(partition_id)
            if entry is None:
                raise NotFoundError(f"No partition with id {partition_id!r} in the cluster.")
            record = entry.record
            if add is not None:
                if add not in view.nodes:
                    raise NotFoundError(f"No live node with id {add!r}.")
                if add in record.replicas:
                    return record
                changed = attrs.evolve(record, replicas=(*record.replicas, add), isr=record.isr)
            else:
                assert remove is not None
                if remove not in record.replicas:
                    return record
                if leader is not None and leader.node == remove:
                    raise FailedPreconditionError(
                        f"Node {remove} leads partition {partition_id}: transfer its leadership "
                        "before removing its replica."
                    )
                kept = tuple(n for n in record.replicas if n != remove)
                isr = tuple(n for n in record.isr if n != remove)
                if not isr:
                    raise FailedPreconditionError(
                        f"Node {remove} is the only in-sync replica of {partition_id}."
                    )
                changed = attrs.evolve(record, replicas=kept, isr=isr)
            if await self._placement_txn(
                view,
                [
                    Compare.mod_revision(
                        self.keys.partition(partition_id), "=", entry.mod_revision
                    ),
                    Compare.create_revision(
                        self.keys.leader(partition_id),
                        "=",
                        leader.epoch if leader is not None else 0,
                    ),
                ],
                [Op.put(self.keys.partition(partition_id), changed.encode())],
            ):
                log.info(
                    "partition %s: replicas %s, in sync %s",
                    partition_id,
                    ",".join(changed.replicas),
                    ",".join(changed.isr),
                    extra={"event": "cluster_replicas", "partition": partition_id},
                )
                return changed
        raise AbortedError(f"The record of {partition_id} kept changing; replicas not changed.")

    async def hand_leadership(self, partition_id: str, epoch: int, target: str) -> PartitionRecord:
        """A leadership transfer's one Txn: ``leaders/<id>`` is deleted and the
        record put with ``target`` first (its preferred leader, which the
        other replicas give a head start: ``defers_to_preferred``), on
        condition that the leader key is still of ``epoch`` and the record is
        as read. A record changed in between (an ISR change) is read again
        while ``target`` is still in sync. Returns the record written.

        Raises:
            FailedPreconditionError: this leadership is gone, or ``target``
                left the ISR: nothing written.
            UnavailableError: etcd cannot be reached.
        """
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            entry, leader = view.partitions.get(partition_id), view.leaders.get(partition_id)
            if entry is None or leader is None or leader.epoch != epoch:
                raise FailedPreconditionError(
                    f"This node no longer leads partition {partition_id} at epoch {epoch}."
                )
            record = entry.record
            if target not in record.isr:
                raise FailedPreconditionError(
                    f"Node {target} is not in the in-sync set of {partition_id} "
                    f"({', '.join(record.isr)}); it may lack acknowledged writes."
                )
            first = (target, *(n for n in record.replicas if n != target))
            handed = attrs.evolve(
                record, replicas=first, isr=tuple(n for n in first if n in record.isr)
            )
            try:
                result = await self._client().txn(
                    [
                        Compare.create_revision(self.keys.leader(partition_id), "=", epoch),
                        Compare.mod_revision(
                            self.keys.partition(partition_id), "=", entry.mod_revision
                        ),
                    ],
                    [
                        Op.delete(self.keys.leader(partition_id)),
                        Op.put(self.keys.partition(partition_id), handed.encode()),
                    ],
                )
            except EtcdError as exc:
                raise UnavailableError(f"etcd cannot be reached: {exc}") from None
            if result.succeeded:
                log.info(
                    "partition %s: gave up its leadership at epoch %d for %s (revision %d)",
                    partition_id,
                    epoch,
                    target,
                    result.revision,
                    extra={"event": "cluster_transfer", "partition": partition_id},
                )
                return handed
        raise AbortedError(f"The record of {partition_id} kept changing; transfer not made.")

    async def settle_fence(self, partition_id: str, epoch: int) -> bool:
        """A fenced partition heard no decision from its move: settle it in
        etcd. True: the move committed (the record names another node).
        False: it did not, and now cannot (the record is rewritten under this
        node's leadership, so the move's Txn, which compares the record's
        revision, fails; or this leadership is gone, which fails it too).

        Raises:
            UnavailableError: etcd cannot be reached (ask again later).
        """
        while True:
            view = await self._fresh_view()
            entry, leader = view.partitions.get(partition_id), view.leaders.get(partition_id)
            if entry is None:
                return False  # removed: nothing to hand over
            if self.node_id not in entry.record.replicas:
                return True
            if leader is None or leader.epoch != epoch:
                return False
            try:
                result = await self._client().txn(
                    [
                        Compare.mod_revision(
                            self.keys.partition(partition_id), "=", entry.mod_revision
                        ),
                        Compare.create_revision(self.keys.leader(partition_id), "=", epoch),
                    ],
                    [Op.put(self.keys.partition(partition_id), entry.record.encode())],
                )
            except EtcdError as exc:
                raise UnavailableError(f"etcd cannot be reached: {exc}") from None
            if result.succeeded:
                return False


class Membership(_MoveMembership):
    """One node's membership of a cluster."""

    def __init__(
        self,
        settings: ClusterSettings,
        local: LocalPartitions,
        *,
        default_store: str,
        default_pipeline: tuple[str, ...],
    ) -> None:
        """Args:
        default_store, default_pipeline: those of ``default``, when this node
            creates the cluster with no partition on its disk.
        """
        self.settings = settings
        self.keys = Keys(settings.name)
        self.node_id = settings.node_id
        self._local = local
        self._record: NodeRecord | None = None
        self._default = (default_store, default_pipeline)
        self.view = ClusterView(self.keys)
        self.routing = Routing.empty()
        self.clock = _ObservedLeaseClock(settings.margin, changed=self._lease_changed)
        self.lease = 0
        self._serving = ServingIntervals()
        self._deadline_moved = trio.Event()
        self._seen: set[str] = set()
        self._blocked: set[tuple[str, str]] = set()
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._etcd: Etcd | None = None
        # Replicas (with the data path): promotions running now, by partition
        # (cancelled by a step-down), and what each replica was last told.
        self._leading: dict[str, trio.CancelScope] = {}
        self._told_leader: dict[str, LeaderRef | None] = {}
        self._told_isr: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._nursery: trio.Nursery | None = None
        # Elections this node won since it started (a metric).
        self.elections = 0
        # Repair (run by the lowest live node): since when each named node has
        # been gone, and the last repair made here (partition, new replica,
        # when), which the next one waits for (one partition at a time).
        self._gone = GoneNodes()
        self._repairing: tuple[str, str, float] | None = None
        # Since when each partition has been seen leaderless (the preferred
        # leader's head start is counted from there).
        self._leaderless = Leaderless()

    # -- what the data plane asks -----------------------------------------------

    def lease_valid(self) -> bool:
        return self.clock.valid(trio.current_time())

    def serving_check(self, partition_id: str) -> Callable[[], None]:
        """What an answer for ``partition_id`` admitted now must still pass
        when it leaves the node: call it then (with nothing awaited between
        the call and handing the answer on).

        The check is "still the leader at the same epoch under the same
        lease, and that lease's deadline not passed", not merely "a lease is
        valid": after a pause past the deadline the node registers a new
        lease (valid at once) well before it leads anything again, and an
        answer admitted under the old one and finished in between would
        otherwise leave (the paused-node break, docs/cluster.md, rule 5).

        Raises:
            UnavailableError: (now) this node does not serve it now.
        """
        lease, epoch = self.lease, self.routing.mine.get(partition_id)

        def check() -> None:
            if (
                epoch is None
                or self.lease != lease
                or self.routing.mine.get(partition_id) != epoch
                or not self.clock.valid(trio.current_time())
            ):
                raise UnavailableError(
                    f"This node stopped serving partition {partition_id} (its lease in etcd "
                    "passed its deadline, or it lost the lead) while the request ran; the "
                    "outcome of a write is unknown. Retry, or read to find out."
                )

        check()
        return check

    def metric_numbers(self) -> ClusterNumbers:
        """For a metrics scrape: the partitions this node leads, with their
        replica and ISR counts in etcd, and the elections it has won."""
        led = {}
        for pid in self.routing.mine:
            entry = self.view.partitions.get(pid)
            if entry is not None:
                led[pid] = (len(entry.record.replicas), len(entry.record.isr))
        return ClusterNumbers(led, self.elections)

    def lease_remaining(self) -> float:
        remaining = self.clock.remaining(trio.current_time())
        return max(0.0, remaining) if math.isfinite(remaining) else 0.0

    # -- serving intervals, for the log ---------------------------------------------

    def _lease_changed(self) -> None:
        self._observe_serving()
        self._deadline_moved.set()

    def _observe_serving(self) -> None:
        """Log when this node starts or stops serving a partition (the gate's
        rule: led here under the current lease, deadline not passed), with
        wall-clock times, so tests can check from the logs of all nodes that
        no two served one partition at once (tests/serving.py)."""
        now = trio.current_time()
        mine = self.routing.mine if self.lease else {}
        changes = self._serving.observe(mine, self.clock.deadline, now)
        if not changes:
            return
        wall = time.time()
        for change in changes:
            at = wall - (now - change.at)
            if change.started:
                log.info(
                    "serving partition %s at epoch %d",
                    change.partition,
                    change.epoch,
                    extra={
                        "event": "serving_start",
                        "node": self.node_id,
                        "partition": change.partition,
                        "epoch": change.epoch,
                        "at": round(at, 6),
                    },
                )
            else:
                log.info(
                    "stopped serving partition %s at epoch %d, %.3f s ago: %s",
                    change.partition,
                    change.epoch,
                    now - change.at,
                    change.why,
                    extra={
                        "event": "serving_stop",
                        "node": self.node_id,
                        "partition": change.partition,
                        "epoch": change.epoch,
                        "at": round(at, 6),
                        "why": change.why,
                    },
                )

    async def _watch_deadline(self) -> None:
        """Log the stop of what was served when the lease deadline passes,
        rather than at the next change (which may be long after)."""
        while True:
            deadline = self.clock.deadline
            with trio.move_on_at(deadline if math.isfinite(deadline) else math.inf):
                await self._deadline_moved.wait()
            self._deadline_moved = trio.Event()
            self._observe_serving()

    # -- running ------------------------------------------------------------------

    async def run(
        self, record: NodeRecord, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Join the cluster (creating it if it is new), then keep the lease,
        watch and reconcile until cancelled. Reports started once the node is
        registered and has reconciled once.

        Args:
            record: this node's entry (its advertised addresses).
        """
        self._record = record
        timeout = max(1.0, self.settings.lease_ttl / 2)
        async with open_etcd(self.settings.etcd, timeout=timeout) as etcd:
            self._etcd = etcd
            try:
                await self._member(etcd, task_status)
            finally:
                self._etcd = None
                await self._leave(etcd)

    async def _leave(self, etcd: Etcd) -> None:
        """Revoke the lease on the way out, so that what this node led is free
        at once rather than when the lease would have run out."""
        lease, self.lease = self.lease, 0
        self.clock.expire()
        self._publish_quietly()
        if not lease:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(1.0), contextlib.suppress(EtcdError):
            await etcd.revoke(lease)

    async def _member(self, etcd: Etcd, task_status: trio.TaskStatus[None]) -> None:
        while True:
            try:
                await self._join(etcd)
                break
            except EtcdError as exc:
                log.warning(
                    "cannot join cluster %s through etcd %s: %s; retrying",
                    self.settings.name,
                    ", ".join(self.settings.etcd),
                    exc,
                    extra={"event": "cluster_join_retry"},
                )
                await trio.sleep(1.0)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_deadline)
            nursery.start_soon(self._keep_lease, etcd)
            nursery.start_soon(self._watch, etcd)
            # Twice: the first opens what is assigned here, the second campaigns.
            await self._reconcile(etcd)
            await self._reconcile(etcd)
            log.info(
                "joined cluster %s as node %s at revision %d",
                self.settings.name,
                self.node_id,
                self.view.revision,
                extra={"event": "cluster_joined", "node": self.node_id},
            )
            task_status.started()
            await self._reconcile_forever(etcd)

    async def _join(self, etcd: Etcd) -> None:
        """Revoke the lease of an earlier run, register under a new one,
        create the cluster if it is new, and read the whole view."""
        previous, _ = await etcd.get(self.keys.node(self.node_id))
        if previous is not None and previous.lease:
            # Its leader keys hang on that lease: while it lives this run could
            # not campaign, and an earlier run must never keep leading.
            await self._revoke(etcd, previous.lease)
        await self._register(etcd)
        await self._read_view(etcd)
        if self.view.placement_revision == 0:
            await self._create_cluster(etcd)
            await self._read_view(etcd)

    async def _register(self, etcd: Etcd) -> None:
        assert self._record is not None, "set by run()"
        sent = trio.current_time()
        lease = await etcd.grant(self.settings.lease_ttl)
        self.clock.expire()
        self.clock.renewed(sent, lease.ttl)
        await etcd.put(self.keys.node(self.node_id), self._record.encode(), lease=lease.id)
        self.lease = lease.id
        log.info(
            "registered node %s under lease %x (ttl %d s)",
            self.node_id,
            lease.id,
            lease.ttl,
            extra={"event": "cluster_registered", "node": self.node_id},
        )

    async def _revoke(self, etcd: Etcd, lease: int) -> None:
        try:
            await etcd.revoke(lease)
            log.info(
                "revoked lease %x of an earlier run of node %s",
                lease,
                self.node_id,
                extra={"event": "cluster_revoked", "node": self.node_id},
            )
        except LeaseNotFound:
            pass

    async def _create_cluster(self, etcd: Etcd) -> None:
        """The first node of a new cluster places what its disk holds (a
        single node turned cluster), or ``default`` owning every key, on itself."""
        held = self._local.held()
        records = [
            PartitionRecord(pid, part.range, part.store, part.pipeline, (self.node_id,))
            for pid, part in sorted(held.items())
        ] or [
            PartitionRecord(
                "default",
                KeyRange(b"", None),
                self._default[0],
                self._default[1],
                (self.node_id,),
                "new",
            )
        ]
        result = await etcd.txn(
            [Compare.create_revision(self.keys.placement, "=", 0)],
            [
                Op.put(self.keys.placement, PLACEMENT_VALUE),
                *(Op.put(self.keys.partition(r.id), r.encode()) for r in records),
            ],
        )
        if result.succeeded:
            log.info(
                "created cluster %s with partitions %s on node %s",
                self.settings.name,
                ", ".join(r.id for r in records),
                self.node_id,
                extra={"event": "cluster_created", "node": self.node_id},
            )

    async def _read_view(self, etcd: Etcd) -> None:
        entries, revision = await etcd.get_prefix(self.keys.prefix)
        self.view.load(entries, revision)
        self._publish()

    def _publish(self) -> None:
        mine = self.view.nodes.get(self.node_id)
        if mine is not None and mine.record.drained and self._record is not None:
            # Kept when the node registers again under a new lease: a drain
            # lasts until the process restarts.
            self._record = attrs.evolve(self._record, drained=True)
        self.routing = self.view.routing(self.node_id, self.lease)
        self._observe_serving()
        self._wake.set()
        self._changed.set()
        self._changed = trio.Event()

    async def _keep_lease(self, etcd: Etcd) -> None:
        """Keep the lease; when etcd says it is gone, register a new one (the
        old leader keys went with it, so the node campaigns again)."""
        while True:
            try:
                await keep_lease(etcd, self.lease, self.settings.lease_ttl, self.clock)
            except LeaseNotFound:
                await self._lease_lost(etcd)
            except EtcdError as exc:
                # Not a lost lease: keep renewing it (the clock runs out alone).
                log.warning("renewing lease %x failed: %s; retrying", self.lease, exc)
                await trio.sleep(0.5)

    async def _lease_lost(self, etcd: Etcd) -> None:
        """Register under a new lease: the old leader keys went with the old one,
        so the node campaigns again."""
        log.warning(
            "lease %x of node %s is gone; registering again",
            self.lease,
            self.node_id,
            extra={"event": "cluster_lease_lost", "node": self.node_id},
        )
        self.lease = 0
        self._publish()  # serve nothing under the lost lease
        while True:
            try:
                await self._register(etcd)
                break
            except EtcdError as exc:
                log.warning("cannot register again: %s", exc)
                await trio.sleep(0.5)
        self._publish()

    async def _watch(self, etcd: Etcd) -> None:
        """Keep the view current: events from the revision after the view's;
        a compacted or lost watch reads the whole prefix again."""
        while True:
            try:
                async with etcd.watch(
                    self.keys.prefix, start_revision=self.view.revision + 1
                ) as batches:
                    async for batch in batches:
                        for event in batch.events:
                            if event.kind == "put":
                                self.view.put(event.kv)
                            else:
                                self.view.delete(event.kv.key)
                        # Resumed from here: an event batch's header may be
                        # ahead of events still to come (a watch catching
                        # up); a progress notice's is not.
                        seen = (
                            max(event.kv.mod_revision for event in batch.events)
                            if batch.events
                            else batch.revision
                        )
                        self.view.revision = max(self.view.revision, seen)
                        self._publish()
            except EtcdCompacted:
                await self._reread(etcd)
            except EtcdError as exc:
                # Unavailable, or any refusal: watch again from a fresh read.
                log.warning("the cluster watch was lost: %s; watching again", exc)
                await trio.sleep(0.5)
                await self._reread(etcd)

    async def _reread(self, etcd: Etcd) -> None:
        # On failure the watch tries again, from where the view is.
        with contextlib.suppress(EtcdError):
            await self._read_view(etcd)

    async def _reconcile_forever(self, etcd: Etcd) -> None:
        next_purge = trio.current_time()
        while True:
            with trio.move_on_after(RECONCILE_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()
            await self._reconcile(etcd)
            if trio.current_time() >= next_purge:
                next_purge = trio.current_time() + PURGE_INTERVAL
                try:
                    purged = await self._local.purge_removed(self.settings.removed_grace)
                except OSError as exc:
                    log.warning("cannot delete removed partitions' files: %s", exc)
                    continue
                for name in purged:
                    log.info(
                        "deleted the files of removed partition %s (removed over %.0f s ago)",
                        name,
                        self.settings.removed_grace,
                        extra={"event": "cluster_purged"},
                    )

    async def _reconcile(self, etcd: Etcd) -> None:
        self._seen.update(
            pid
            for pid, entry in self.view.partitions.items()
            if self.node_id in entry.record.replicas
        )
        lease = self.lease if self.lease_valid() else 0
        held = {pid: part.range for pid, part in self._local.held().items()}
        moving, copies = self._local.moving(), self._local.copies()
        facts = (
            ReplicaFacts(
                self.lease,
                {pid: role for pid in held if (role := self._local.role(pid)) is not None},
                set(self._leading),
                dict(self._told_leader),
                dict(self._told_isr),
                self._local.dormant(),
            )
            if self._local.replicated()
            else None
        )
        # Every pass, not only when campaigning: a leader seen between two
        # leaderless periods ends the first, though this node never
        # campaigned in between (a failover it lost, then a transfer).
        self._leaderless.led(self.view.leaders.keys())
        for action in reconcile(
            self.view, self.node_id, lease, held, self._seen, moving, copies, facts
        ):
            try:
                if isinstance(action, OpenFollower | SetLeader | SetIsr | Lead | StepDown):
                    await self._replica_action(action)
                elif isinstance(action, LeaveIsr):
                    await self._leave_isr(etcd, action)
                elif isinstance(action, Adopt):
                    log.info(
                        "serving partition %s: a move's copy, switched to this node in etcd",
                        action.partition_id,
                        extra={"event": "cluster_adopt", "partition": action.partition_id},
                    )
                    await self._local.adopt(action.partition_id)
                    self._wake.set()  # campaign for it next
                elif isinstance(action, Create):
                    log.info(
                        "opening partition %s %s, assigned to this node",
                        action.record.id,
                        action.record.range,
                        extra={"event": "cluster_create", "partition": action.record.id},
                    )
                    await self._local.create(action.record)
                    self._wake.set()  # campaign for it next
                elif isinstance(action, Campaign):
                    await self._campaign(etcd, action)
                elif isinstance(action, RevokeStale):
                    await self._revoke(etcd, action.lease)
                elif isinstance(action, PublishSplit):
                    local = self._local.held().get(action.child)
                    # Not while a split or merge runs here: it publishes its
                    # own change once its catalog holds it, not before.
                    if local is not None and not self._local.changing():
                        await self.publish_split(
                            action.partition_id,
                            action.keep,
                            PartitionRecord(
                                action.child,
                                action.moved,
                                local.store,
                                local.pipeline,
                                (self.node_id,),
                            ),
                        )
                elif isinstance(action, PublishMerge):
                    if not self._local.changing():
                        await self.publish_merge(
                            action.partition_id, action.merged, action.absorbed
                        )
                elif isinstance(action, Delete):
                    log.info(
                        "deleting partition %s: %s",
                        action.partition_id,
                        action.reason,
                        extra={"event": "cluster_delete", "partition": action.partition_id},
                    )
                    await self._local.delete(action.partition_id)
                    self._told_leader.pop(action.partition_id, None)
                    self._told_isr.pop(action.partition_id, None)
                elif (action.partition_id, action.reason) not in self._blocked:
                    self._blocked.add((action.partition_id, action.reason))
                    log.error(
                        "partition %s: %s",
                        action.partition_id,
                        action.reason,
                        extra={"event": "cluster_blocked", "partition": action.partition_id},
                    )
            except (EtcdError, MkvError) as exc:
                log.warning("cluster action %s failed: %s; retrying", type(action).__name__, exc)
            except Exception:
                # Whatever one partition's files do (a full disk ...), the node
                # and its other partitions go on; the action is retried.
                log.exception("cluster action %s failed; retrying", type(action).__name__)
        # A partition opened or deleted changes what this node serves.
        self._publish_quietly()
        try:
            await self._repair(lease)
        except (EtcdError, MkvError) as exc:
            log.warning("repair failed: %s; retrying", exc)

    async def _leave_isr(self, etcd: Etcd, action: LeaveIsr) -> None:
        """Take this node out of a record's ISR (it has no copy of the
        partition): one Txn on the record's mod_revision as read."""
        pid = action.partition_id
        result = await etcd.txn(
            [Compare.mod_revision(self.keys.partition(pid), "=", action.mod_revision)],
            [Op.put(self.keys.partition(pid), action.record.encode())],
        )
        if result.succeeded:
            log.warning(
                "partition %s: this node is named in sync but has no copy of it; it left the "
                "in-sync set (now %s) and follows to get one",
                pid,
                ",".join(action.record.isr),
                extra={"event": "cluster_leave_isr", "partition": pid},
            )

    async def _repair(self, lease: int) -> None:
        """Replace one dead node's replica in one record, if this node is the
        repairer (the lowest live id) and has a valid lease; at most one
        partition at a time: with the data path, the last repair's new
        replica must join the ISR (or ``node_dead_timeout`` pass) first."""
        now = trio.current_time()
        self._gone.observe(self.view, now)
        if not lease or repairer(self.view.nodes) != self.node_id:
            return
        timeout = self.settings.node_dead_timeout
        if self._repairing is not None:
            pid, replacement, since = self._repairing
            entry = self.view.partitions.get(pid)
            if (
                self._local.replicated()
                and entry is not None
                and replacement in entry.record.replicas
                and replacement not in entry.record.isr
                and replacement in self.view.nodes
                and now - since < timeout
            ):
                return
            self._repairing = None
        plan = plan_repair(self.view, self._gone.dead(now, timeout))
        if plan is None:
            return
        if await self._placement_txn(
            self.view,
            [Compare.mod_revision(self.keys.partition(plan.partition_id), "=", plan.mod_revision)],
            [Op.put(self.keys.partition(plan.partition_id), plan.record.encode())],
        ):
            self._repairing = (plan.partition_id, plan.replacement, now)
            log.warning(
                "repair: partition %s had a replica on node %s, gone over %.0f s; its new "
                "replica is on %s (replicas %s, in sync %s)",
                plan.partition_id,
                plan.dead,
                timeout,
                plan.replacement,
                ",".join(plan.record.replicas),
                ",".join(plan.record.isr),
                extra={"event": "cluster_repair", "partition": plan.partition_id},
            )

    def _publish_quietly(self) -> None:
        self.routing = self.view.routing(self.node_id, self.lease)
        self._observe_serving()

    async def _replica_action(
        self, action: OpenFollower | SetLeader | SetIsr | Lead | StepDown
    ) -> None:
        """Carry out a replica action of reconcile's."""
        if isinstance(action, OpenFollower):
            pid = action.record.id
            log.info(
                "opening partition %s %s as a follower of %s",
                pid,
                action.record.range,
                action.leader.node if action.leader else "nobody yet",
                extra={"event": "cluster_follow", "partition": pid},
            )
            await self._local.open_follower(action.record, action.leader)
            self._told_leader[pid] = action.leader
            self._wake.set()  # its ISR, and maybe a campaign, next
        elif isinstance(action, SetLeader):
            self._local.set_leader(action.partition_id, action.leader)
            self._told_leader[action.partition_id] = action.leader
        elif isinstance(action, SetIsr):
            self._local.set_isr(action.partition_id, action.replicas, frozenset(action.isr))
            self._told_isr[action.partition_id] = (action.replicas, action.isr)
        elif isinstance(action, Lead):
            self._start_lead(action.partition_id, action.epoch, action.replicas, action.isr)
        else:
            pid = action.partition_id
            scope = self._leading.pop(pid, None)
            if scope is not None:
                scope.cancel()
            log.warning(
                "partition %s: this node no longer holds its leader key; stepping down to "
                "follow %s",
                pid,
                action.leader.node if action.leader else "nobody yet",
                extra={"event": "cluster_step_down", "partition": pid},
            )
            await self._local.step_down(pid, action.leader)
            self._told_leader[pid] = action.leader

    def _start_lead(
        self, partition_id: str, epoch: int, replicas: tuple[str, ...], isr: tuple[str, ...]
    ) -> None:
        """Promote the local replica in a task of its own: ``lead`` returns
        only once the ISR has the epoch-start record durable, and reconcile
        must go on meanwhile (a step-down cancels it)."""
        if partition_id in self._leading or self._nursery is None:
            return
        scope = trio.CancelScope()
        self._leading[partition_id] = scope

        async def promote() -> None:
            try:
                with scope:
                    await self._local.lead(
                        partition_id,
                        epoch,
                        replicas=replicas,
                        isr=frozenset(isr),
                        isr_writer=self,
                        min_isr=min(self.settings.min_isr, len(replicas)),
                    )
                    log.info(
                        "partition %s: serving as leader from epoch %d",
                        partition_id,
                        epoch,
                        extra={"event": "cluster_serving", "partition": partition_id},
                    )
            except (EtcdError, MkvError) as exc:
                log.warning("promoting %s at epoch %d failed: %s", partition_id, epoch, exc)
            except Exception:
                # One partition's failure is not the node's: reconcile retries.
                log.exception("promoting %s at epoch %d failed", partition_id, epoch)
            finally:
                if self._leading.get(partition_id) is scope:
                    del self._leading[partition_id]
                self._wake.set()

        self._nursery.start_soon(promote)

    async def _campaign(self, etcd: Etcd, action: Campaign) -> None:
        pid = action.partition_id
        entry = self.view.partitions.get(pid)
        if entry is None or entry.mod_revision != action.mod_revision:
            return  # changed since reconcile decided: it decides again
        now = trio.current_time()
        since = self._leaderless.since(pid, now)
        if (
            self._local.replicated()
            and defers_to_preferred(self.view, self.node_id, entry.record)
            and now - since < PREFER_GRACE
        ):
            return  # the preferred leader first; reconcile runs again within 1 s
        # With the data path, dead ISR members leave the ISR with the
        # election (else the new leader waits for them to time out).
        alive = set(self.view.nodes) if self._local.replicated() else None
        epoch = await campaign(etcd, self.keys, self.node_id, self.lease, entry, alive)
        if epoch is not None:
            self.elections += 1
            log.info(
                "node %s leads partition %s from epoch %d",
                self.node_id,
                pid,
                epoch,
                extra={"event": "cluster_leader", "partition": pid, "epoch": epoch},
            )
            if self._local.replicated():
                # At once, not at the next reconcile: a failover's clock runs.
                record = entry.record
                isr = election_isr(record, self.node_id, alive)
                self._start_lead(pid, epoch, record.replicas, isr)

    async def change_isr(self, partition_id: str, epoch: int, isr: frozenset[str]) -> bool:
        """``IsrWriter`` for the data path: the in-sync set of a partition this
        node leads at ``epoch``, written in etcd before the leader acts on it
        (one Txn guarded by its leader key's create revision and the record's
        mod revision; ``mkv.cluster.elections.change_isr``). False: deposed.

        Raises:
            UnavailableError: etcd cannot be reached (nothing known written).
            AbortedError: the record kept changing under it.
        """
        return await change_isr(self._client(), self.keys, partition_id, epoch, isr)

    # -- the control plane ----------------------------------------------------------

    def _client(self) -> Etcd:
        if self._etcd is None:
            raise UnavailableError("This node has not joined its cluster yet.")
        return self._etcd

    async def mark_drained(self, node: str) -> None:
        """Mark ``node`` drained in its registration (``nodes/<id>``, kept
        under its own lease by a Txn on the key's mod revision): placement
        and repair put no new replica on it until it registers again (a
        restart). A node that is gone has nothing to mark.

        Raises:
            UnavailableError: etcd cannot be reached.
            AbortedError: the node's key kept changing under it.
        """
        key = self.keys.node(node)
        for _ in range(PLACEMENT_ATTEMPTS):
            entry = (await self._fresh_view()).nodes.get(node)
            if entry is None or entry.record.drained:
                return
            marked = attrs.evolve(entry.record, drained=True)
            try:
                result = await self._client().txn(
                    [Compare.mod_revision(key, "=", entry.mod_revision)],
                    [Op.put(key, marked.encode(), lease=entry.lease)],
                )
            except EtcdError as exc:
                raise UnavailableError(f"etcd cannot be reached: {exc}") from None
            if result.succeeded:
                log.info(
                    "node %s is marked drained: no new replicas go to it until it restarts",
                    node,
                    extra={"event": "node_drained", "node": node},
                )
                return
        raise AbortedError(f"Node {node}'s registration kept changing; drain it again.")

    async def fresh_view(self) -> ClusterView:
        """The cluster as etcd has it now (the watched view may lag).

        Raises:
            UnavailableError: etcd cannot be reached.
        """
        return await self._fresh_view()

    async def _fresh_view(self) -> ClusterView:
        """The cluster as etcd has it now (the watched view may lag)."""
        view = ClusterView(self.keys)
        try:
            entries, revision = await self._client().get_prefix(self.keys.prefix)
        except EtcdError as exc:
            raise UnavailableError(f"etcd cannot be reached: {exc}") from None
        view.load(entries, revision)
        return view

    async def _placement_txn(
        self, view: ClusterView, compare: Sequence[Compare], ops: Sequence[Op]
    ) -> bool:
        try:
            result = await self._client().txn(
                [Compare.mod_revision(self.keys.placement, "=", view.placement_revision), *compare],
                [Op.put(self.keys.placement, PLACEMENT_VALUE), *ops],
            )
        except EtcdError as exc:
            raise UnavailableError(f"etcd cannot be reached: {exc}") from None
        return result.succeeded

    async def add_partition(
        self,
        partition_id: str | None,
        key_range: KeyRange,
        store: str,
        pipeline: tuple[str, ...],
        node: str | None,
        replicas: int = 0,
    ) -> tuple[PartitionRecord, Leader | None, tuple[str, ...]]:
        """Place a new partition on ``replicas`` distinct live nodes (0: the
        cluster's default; capped at the live nodes, with a warning), ``node``
        first if named: one Txn, then wait (bounded) for a leader. Returns the
        record, its leader (None if none yet) and the warnings.

        Raises:
            AlreadyExistsError: the id is taken or the range overlaps.
            NotFoundError: ``node`` is not a live node.
            AbortedError: placement kept changing under it.
        """
        count = replicas or self.settings.replicas
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            pid = partition_id or _free_id(view)
            if pid in view.partitions or pid in view.bad:
                raise AlreadyExistsError(f"A partition with id {pid} already exists.")
            check_free(key_range, ((e.record.range, p) for p, e in view.partitions.items()))
            leading: dict[str, int] = {}
            holding: dict[str, int] = {}
            for entry in view.partitions.values():
                first = entry.record.replicas[0]
                leading[first] = leading.get(first, 0) + 1
                for replica in entry.record.replicas:
                    holding[replica] = holding.get(replica, 0) + 1
            # Drained nodes take no new replica, unless named: the operator's choice.
            alive = view.placeable | ({node} & set(view.nodes) if node else set())
            chosen, warnings = choose_replicas(alive, leading, holding, count, node)
            # All in sync: every replica of a new partition is empty.
            record = PartitionRecord(pid, key_range, store, pipeline, chosen, "new")
            if await self._placement_txn(
                view,
                [Compare.create_revision(self.keys.partition(pid), "=", 0)],
                [Op.put(self.keys.partition(pid), record.encode())],
            ):
                break
        else:
            raise AbortedError("Placement changed under AddPartition too often; retry.")
        with trio.move_on_after(ADD_WAIT):
            while self.view.leaders.get(pid) is None:
                await self._changed.wait()
        return record, self.view.leaders.get(pid), warnings

    async def remove_partition(self, partition_id: str) -> tuple[PartitionRecord, Leader | None]:
        """Delete a partition's record and leader key in one Txn; its owner
        stops serving it and deletes its files when it sees that.

        Raises:
            NotFoundError: no such partition.
        """
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            entry = view.partitions.get(partition_id)
            if entry is None:
                raise NotFoundError(f"No partition with id {partition_id!r}.")
            if await self._placement_txn(
                view,
                [Compare.mod_revision(self.keys.partition(partition_id), "=", entry.mod_revision)],
                [
                    Op.delete(self.keys.partition(partition_id)),
                    Op.delete(self.keys.leader(partition_id)),
                ],
            ):
                return entry.record, view.leaders.get(partition_id)
        raise AbortedError("Placement changed under RemovePartition too often; retry.")

    def free_id(self, taken: Callable[[str], bool]) -> str:
        """A partition id neither the view nor ``taken`` has."""
        n = 1
        while (pid := f"p{n}") in self.view.partitions or pid in self.view.bad or taken(pid):
            n += 1
        return pid

    async def publish_split(self, parent_id: str, keep: KeyRange, child: PartitionRecord) -> None:
        """Commit a split in etcd, in one Txn: the parent's record with the
        range it keeps, the child's record, and the child's leader key under
        this node's lease; on condition that placement, the parent's record
        and this node's leadership of it are as read.

        Returns normally when the Txn committed, and also when etcd did not
        answer: the split is committed on this node's disk, and reconcile
        makes the Txn again once etcd answers (``PublishSplit``).

        Raises:
            FailedPreconditionError: the parent changed, or this node no
                longer leads it: the split must be rolled back.
            AlreadyExistsError: the child's id is taken in the cluster.
        """
        whole = KeyRange(keep.start, child.range.end)
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            entry, leader = view.partitions.get(parent_id), view.leaders.get(parent_id)
            done = view.partitions.get(child.id)
            if (
                entry is not None
                and entry.record.range == keep
                and done is not None
                and done.record.range == child.range
            ):
                return  # published already (by reconcile, or an earlier attempt)
            if entry is None or entry.record.range != whole:
                raise FailedPreconditionError(
                    f"Partition {parent_id} changed in the cluster during the split."
                )
            if leader is None or leader.node != self.node_id or leader.lease != self.lease:
                raise FailedPreconditionError(
                    f"This node no longer leads partition {parent_id}; the split is undone."
                )
            if child.id in view.partitions or child.id in view.bad:
                raise AlreadyExistsError(f"A partition with id {child.id} already exists.")
            parent = attrs.evolve(entry.record, range=keep)
            try:
                result = await self._client().txn(
                    [
                        Compare.mod_revision(self.keys.placement, "=", view.placement_revision),
                        Compare.mod_revision(
                            self.keys.partition(parent_id), "=", entry.mod_revision
                        ),
                        Compare.create_revision(self.keys.leader(parent_id), "=", leader.epoch),
                        Compare.create_revision(self.keys.partition(child.id), "=", 0),
                    ],
                    [
                        Op.put(self.keys.placement, PLACEMENT_VALUE),
                        Op.put(self.keys.partition(parent_id), parent.encode()),
                        Op.put(self.keys.partition(child.id), child.encode()),
                        Op.put(
                            self.keys.leader(child.id),
                            LeaderRecord(self.node_id).encode(),
                            lease=self.lease,
                        ),
                    ],
                )
            except EtcdError as exc:
                log.warning(
                    "the split of %s into %s is committed here but etcd did not answer (%s); "
                    "it is published when etcd answers",
                    parent_id,
                    child.id,
                    exc,
                    extra={"event": "cluster_split_unpublished", "partition": parent_id},
                )
                return
            if result.succeeded:
                log.info(
                    "published the split of %s into %s (%s) at revision %d",
                    parent_id,
                    child.id,
                    child.range,
                    result.revision,
                    extra={"event": "cluster_split", "partition": parent_id},
                )
                return
        raise AbortedError("Placement changed under the split too often; it is undone.")

    async def publish_merge(self, left_id: str, merged: KeyRange, right_id: str) -> None:
        """Commit a merge in etcd, in one Txn: ``left_id``'s record with the
        merged range; ``right_id``'s record and leader key deleted; on
        condition that placement and both records are as read, that this node
        leads ``left_id``, and that ``right_id``'s leader key is this node's
        (or gone with an earlier run's lease).

        Returns normally when the Txn committed and when etcd did not answer
        (reconcile makes it again: ``PublishMerge``).

        Raises:
            FailedPreconditionError: either partition changed, or this node
                does not lead them: the merge must be rolled back.
        """
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            left, right = view.partitions.get(left_id), view.partitions.get(right_id)
            if left is not None and left.record.range == merged and right is None:
                return  # published already (by reconcile, or an earlier attempt)
            if (
                left is None
                or right is None
                or left.record.range.start != merged.start
                or left.record.range.end != right.record.range.start
                or right.record.range.end != merged.end
            ):
                raise FailedPreconditionError(
                    f"Partitions {left_id} and {right_id} changed in the cluster during the merge."
                )
            lead, absorbed = view.leaders.get(left_id), view.leaders.get(right_id)
            if lead is None or lead.node != self.node_id or lead.lease != self.lease:
                raise FailedPreconditionError(
                    f"This node no longer leads partition {left_id}; the merge is undone."
                )
            if absorbed is not None and absorbed.node != self.node_id:
                raise FailedPreconditionError(
                    f"Node {absorbed.node} leads partition {right_id}; the merge is undone."
                )
            survivor = attrs.evolve(left.record, range=merged)
            try:
                result = await self._client().txn(
                    [
                        Compare.mod_revision(self.keys.placement, "=", view.placement_revision),
                        Compare.mod_revision(self.keys.partition(left_id), "=", left.mod_revision),
                        Compare.mod_revision(
                            self.keys.partition(right_id), "=", right.mod_revision
                        ),
                        Compare.create_revision(self.keys.leader(left_id), "=", lead.epoch),
                        Compare.create_revision(
                            self.keys.leader(right_id),
                            "=",
                            absorbed.epoch if absorbed is not None else 0,
                        ),
                    ],
                    [
                        Op.put(self.keys.placement, PLACEMENT_VALUE),
                        Op.put(self.keys.partition(left_id), survivor.encode()),
                        Op.delete(self.keys.partition(right_id)),
                        Op.delete(self.keys.leader(right_id)),
                    ],
                )
            except EtcdError as exc:
                log.warning(
                    "the merge of %s into %s is committed here but etcd did not answer (%s); "
                    "it is published when etcd answers",
                    right_id,
                    left_id,
                    exc,
                    extra={"event": "cluster_merge_unpublished", "partition": left_id},
                )
                return
            if result.succeeded:
                log.info(
                    "published the merge of %s into %s (%s) at revision %d",
                    right_id,
                    left_id,
                    merged,
                    result.revision,
                    extra={"event": "cluster_merge", "partition": left_id},
                )
                return
        raise AbortedError("Placement changed under the merge too often; it is undone.")

    async def publish_restored(self, record: PartitionRecord) -> Leader:
        """Place a partition this node has just restored from a snapshot: its
        record ("active": it has data) and its leader key under this node's
        lease, in one Txn. Returns the leadership (its epoch).

        Raises:
            AlreadyExistsError: the id is taken or the range overlaps, in the
                cluster: the caller removes the restored copy.
            UnavailableError: etcd cannot be reached, or did not say whether
                it took the Txn and cannot be asked.
        """
        key, leader_key = self.keys.partition(record.id), self.keys.leader(record.id)
        for _ in range(PLACEMENT_ATTEMPTS):
            view = await self._fresh_view()
            if record.id in view.partitions or record.id in view.bad:
                raise AlreadyExistsError(f"A partition with id {record.id} already exists.")
            check_free(record.range, ((e.record.range, p) for p, e in view.partitions.items()))
            if not self.lease or not self.lease_valid():
                raise UnavailableError("This node has no valid lease in etcd now; retry.")
            try:
                result = await self._client().txn(
                    [
                        Compare.mod_revision(self.keys.placement, "=", view.placement_revision),
                        Compare.create_revision(key, "=", 0),
                        Compare.create_revision(leader_key, "=", 0),
                    ],
                    [
                        Op.put(self.keys.placement, PLACEMENT_VALUE),
                        Op.put(key, record.encode()),
                        Op.put(leader_key, LeaderRecord(self.node_id).encode(), lease=self.lease),
                    ],
                )
            except EtcdError as exc:
                # Did it commit? Ask once; a leader key of ours says it did.
                try:
                    kv, _ = await self._client().get(leader_key)
                except EtcdError:
                    raise UnavailableError(f"etcd cannot be reached: {exc}") from None
                if kv is not None and kv.lease == self.lease:
                    return Leader(self.node_id, kv.create_revision, kv.lease)
                raise UnavailableError(f"etcd cannot be reached: {exc}") from None
            if result.succeeded:
                return Leader(self.node_id, result.revision, self.lease)
        raise AbortedError("Placement changed under AddPartition too often; retry.")


def _moved_here(view: ClusterView, partition_id: str, me: str) -> bool:
    entry = view.partitions.get(partition_id)
    return (
        entry is not None
        and entry.record.replicas == (me,)
        and ((leader := view.leaders.get(partition_id)) is None or leader.node == me)
    )


def _free_id(view: ClusterView) -> str:
    n = 1
    while f"p{n}" in view.partitions or f"p{n}" in view.bad:
        n += 1
    return f"p{n}"
