"""What a node must do to match the cluster view: pure decisions, no I/O.

Given the view, this node's id and lease, and the partitions on its disk,
``reconcile`` lists the actions that bring the node in line with etcd. The
membership task carries them out and calls again after every change, so each
action is safe to repeat: a Create that already happened shows up as a local
partition next time, a Campaign that lost finds a leader key.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Literal

import attrs

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.view import ClusterView
from mkv.router import KeyRange
from mkv.wire import Address, parse_address

__all__ = [
    "Action",
    "Adopt",
    "Blocked",
    "Campaign",
    "Create",
    "Delete",
    "Lead",
    "LeaderRef",
    "Leaderless",
    "LeaveIsr",
    "OpenFollower",
    "PublishMerge",
    "PublishSplit",
    "ReplicaFacts",
    "RevokeStale",
    "SetIsr",
    "SetLeader",
    "StepDown",
    "defers_to_preferred",
    "leader_ref",
    "reconcile",
]

Role = Literal["leader", "follower"]


@attrs.frozen
class LeaderRef:
    """Whom a follower fetches from: the leader's node id, its control
    (replication) address from ``nodes/<node>``, and its epoch."""

    node: str
    address: Address
    epoch: int


@attrs.frozen
class ReplicaFacts:
    """What reconcile needs to know of this node's replicas (cluster mode with
    the replica data path), besides what is on its disk."""

    # The lease this node holds, valid or not (``reconcile``'s ``lease`` is 0
    # past its deadline): a leader key under it is still this node's, and a
    # deadline passing is no reason to step down (the data path stops
    # serving on its own; the key may well survive the etcd hiccup).
    held_lease: int
    # The registry's role of each local partition (absent: neither yet).
    roles: Mapping[str, Role] = attrs.field(factory=dict)
    # Partitions whose ``lead`` runs now (promotion: not serving yet).
    leading: Set[str] = frozenset()
    # The leader each local replica was last told (``open_follower``,
    # ``set_leader``, ``step_down``), and the (replicas, isr) last told.
    told_leader: Mapping[str, LeaderRef | None] = attrs.field(factory=dict)
    told_isr: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = attrs.field(factory=dict)
    # Replicas found on this disk at start and not opened yet (dormant): not
    # "held", yet their data is here, so they are no lost copy.
    dormant: Set[str] = frozenset()


@attrs.frozen
class OpenFollower:
    """Open (create, or reopen) this node's replica of ``record`` as a
    follower of ``leader`` (None: nobody leads now)."""

    record: PartitionRecord
    leader: LeaderRef | None


@attrs.frozen
class SetLeader:
    """A follower's leader changed (a new node or epoch), or is gone (None)."""

    partition_id: str
    leader: LeaderRef | None


@attrs.frozen
class SetIsr:
    """etcd's replicas or in-sync set of a local replica changed."""

    partition_id: str
    replicas: tuple[str, ...]
    isr: tuple[str, ...]


@attrs.frozen
class Lead:
    """The leader key is this node's (under its lease) and its replica does
    not lead: promote it at ``epoch`` (after an election won here, or again
    after a promotion that failed)."""

    partition_id: str
    epoch: int
    replicas: tuple[str, ...]
    isr: tuple[str, ...]


@attrs.frozen
class LeaveIsr:
    """This node is in a record's ISR but holds no copy of it (a lost disk, a
    new data directory under an old node id): before it follows, and so
    before it could campaign with an empty store, it takes itself out of the
    ISR: ``record`` put only if the partition is still at ``mod_revision``."""

    partition_id: str
    mod_revision: int
    record: PartitionRecord


@attrs.frozen
class StepDown:
    """This node's replica leads (or is being promoted) but the leader key is
    not its own any more (gone, another node's, or under a lease it lost):
    stop, fail what is unanswered, and follow ``leader``."""

    partition_id: str
    leader: LeaderRef | None


def leader_ref(view: ClusterView, partition_id: str) -> LeaderRef | None:
    """The partition's leader as a follower needs it: None while nobody leads
    it, its node is not registered, or its address does not parse (a value
    in etcd is input from outside)."""
    leader = view.leaders.get(partition_id)
    if leader is None or not leader.node:
        return None
    node = view.nodes.get(leader.node)
    if node is None:
        return None
    try:
        address = parse_address(node.record.control)
    except ValueError:
        return None
    return LeaderRef(leader.node, address, leader.epoch)


@attrs.frozen
class Create:
    """Open an empty local partition for a record that names this node and
    has never been led (state "new")."""

    record: PartitionRecord


@attrs.frozen
class Campaign:
    """Take the leadership of a partition nobody leads: a Txn on
    ``create_revision(leaders/<id>) == 0`` and ``mod_revision(partitions/<id>)
    == mod_revision``, putting the leader key under this node's lease (and
    marking a "new" record "active": it has been led, and holds data)."""

    partition_id: str
    mod_revision: int


@attrs.frozen
class RevokeStale:
    """A leader key names this node under a lease it no longer keeps (an
    earlier run of the process): revoke that lease, so the key goes and the
    node can campaign under the lease it keeps."""

    lease: int


@attrs.frozen
class PublishSplit:
    """A split this node committed on its disk but not (yet) in etcd (etcd
    did not answer, or the node stopped in between): its local copy of
    ``partition_id`` keeps ``keep`` and a local ``child`` holds the rest, which
    etcd does not name. The Txn that commits the split is made again."""

    partition_id: str
    keep: KeyRange
    child: str
    moved: KeyRange


@attrs.frozen
class PublishMerge:
    """A merge this node committed on its disk but not (yet) in etcd: its
    local ``partition_id`` holds ``merged``, its etcd range and that of
    ``absorbed`` (adjacent, assigned here, gone from this disk) together."""

    partition_id: str
    merged: KeyRange
    absorbed: str


@attrs.frozen
class Adopt:
    """A copy a move installed here (held, not served) whose move switched
    ownership to this node in etcd, and whose mover stopped before serving it
    (the node restarted): serve it; it campaigns next."""

    partition_id: str


@attrs.frozen
class Delete:
    """Stop and delete a local partition etcd no longer assigns here."""

    partition_id: str
    reason: str


@attrs.frozen
class Blocked:
    """A partition this node should hold but cannot: logged, not acted on."""

    partition_id: str
    reason: str


Action = (
    Adopt
    | Create
    | Campaign
    | RevokeStale
    | PublishSplit
    | PublishMerge
    | Delete
    | Blocked
    | OpenFollower
    | LeaveIsr
    | SetLeader
    | SetIsr
    | Lead
    | StepDown
)


def reconcile(
    view: ClusterView,
    me: str,
    lease: int,
    local: Mapping[str, KeyRange],
    seen: Set[str],
    moving: Set[str] = frozenset(),
    copies: Set[str] = frozenset(),
    replicas: ReplicaFacts | None = None,
) -> list[Action]:
    """The actions that bring this node in line with ``view``.

    Args:
        lease: the lease this node keeps now; 0 while it has none (it then
            neither campaigns nor revokes).
        local: the partitions on this node's disk and their ranges.
        seen: the partitions this process has seen assigned to it in etcd: a
            local partition etcd does not name is deleted only if it was once
            seen there (else it is left alone and reported: the node may have
            been pointed at the wrong cluster, and its data is not garbage).
        moving: partitions a move running on this node is handing in or
            out (copying, fenced, moved away in its grace period): the move
            decides what becomes of them, so reconcile leaves them alone.
        copies: copies a move installed here and never served, whose move
            no longer runs (the node restarted): adopted if etcd names this
            node, else deleted (the move did not switch; the source serves).
        replicas: this node's replicas, when its registry has the replica data
            path: every record naming this node is opened as a follower
            (``OpenFollower``), told its leader and ISR, promoted (``Lead``)
            once this node holds the leader key and stepped down once it does
            not. None (no data path): a record is acted on by its first
            replica alone, as a partition of one replica, and the others
            leave it be.

    Whoever acts, campaigns only for a partition whose record names it in
    ``isr`` (rule 1; the election Txn then requires that very record), and
    for a "new" partition only its preferred leader (the first replica)
    campaigns while that node is alive, so placement's choice leads.
    """
    actions: list[Action] = []
    for pid in sorted(copies - moving):
        entry = view.partitions.get(pid)
        if entry is not None and entry.record.replicas == (me,):
            actions.append(Adopt(pid))
        else:
            actions.append(Delete(pid, "a move's copy the cluster did not switch to"))
    local = {p: r for p, r in local.items() if p not in moving and p not in copies}
    stale: set[int] = set()
    publishing: set[str] = set()
    # Partitions in etcd that a local merge absorbed (their range is part of
    # a local partition's): neither created here nor reported.
    absorbed = {
        right: left
        for left, rng in local.items()
        if (right := _merge_absorbed(view, me, local, left, rng)) is not None
    }
    for pid, entry in sorted(view.partitions.items()):
        record = entry.record
        if me not in record.replicas or pid in moving or pid in copies:
            continue
        if replicas is None and record.replicas[0] != me:
            continue  # no data path to follow with: the first replica serves it
        held = local.get(pid)
        if pid in absorbed:
            continue
        if replicas is not None and (held is None or held == record.range):
            actions.extend(
                _replica_actions(view, me, lease, entry.mod_revision, record, held, local, replicas)
            )
            continue
        if held is None:
            overlapping = sorted(
                other for other, rng in local.items() if rng.overlaps(record.range)
            )
            if overlapping:
                actions.append(
                    Blocked(pid, f"its range {record.range} overlaps local {overlapping}")
                )
            elif record.state != "new":
                # Led before, so it holds data that is not on this disk (a lost
                # or different data directory): starting it empty would answer
                # "not found" for every key it had.
                actions.append(
                    Blocked(
                        pid,
                        "assigned to this node and led before, but its data is not on this "
                        "disk; not starting it empty",
                    )
                )
            else:
                actions.append(Create(record))
            continue
        leader = view.leaders.get(pid)
        if held != record.range:
            child = _split_child(view, local, held, record.range)
            right = _merge_absorbed(view, me, local, pid, held)
            if child is not None or right is not None:
                if child is not None:
                    publishing.add(child)
                # It holds every key of the record (more, or with the part it
                # absorbed), so it may lead it, and then publish the change.
                if not lease:
                    pass
                elif leader is None:
                    if _may_campaign(view, me, record):
                        actions.append(Campaign(pid, entry.mod_revision))
                elif leader.node == me and leader.lease == lease:
                    if child is not None:
                        actions.append(PublishSplit(pid, held, child, local[child]))
                    elif right is not None:
                        actions.append(PublishMerge(pid, held, right))
                continue
            actions.append(
                Blocked(pid, f"etcd gives it range {record.range}, its local copy has {held}")
            )
            continue
        if lease == 0:
            continue
        if leader is None:
            if _may_campaign(view, me, record):
                actions.append(Campaign(pid, entry.mod_revision))
        elif leader.node == me and leader.lease != lease and leader.lease not in stale:
            stale.add(leader.lease)
            actions.append(RevokeStale(leader.lease))
    for pid in sorted(local):
        entry_or_none = view.partitions.get(pid)
        if pid in view.bad or pid in publishing:
            continue
        if entry_or_none is None:
            if pid in seen:
                actions.append(Delete(pid, "removed from the cluster"))
            else:
                actions.append(
                    Blocked(pid, "on this disk but not in the cluster; left alone, not served")
                )
        elif me not in entry_or_none.record.replicas and pid in seen:
            actions.append(Delete(pid, "assigned to other nodes"))
    return actions


def _may_campaign(view: ClusterView, me: str, record: PartitionRecord) -> bool:
    """Only an in-sync replica may lead (rule 1); of a partition never led,
    the preferred leader while it is alive (all are empty, so any would be
    safe: this only keeps placement's choice)."""
    if me not in record.isr:
        return False
    preferred = record.replicas[0]
    return record.state != "new" or preferred == me or preferred not in view.nodes


class Leaderless:
    """Since when each partition has been leaderless, as this node saw it:
    the preferred leader's head start (``defers_to_preferred``) is counted
    from there. A period ends as soon as a leader is seen, so the next one
    counts from its own start: kept from an earlier failover (which this
    node campaigned in and lost), the head start of a later leadership
    transfer would already be over, and this node would campaign at once
    and could beat the transfer's target."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def led(self, leaders: Set[str]) -> None:
        """The partitions in ``leaders`` have a leader now: their periods end."""
        for pid in [p for p in self._since if p in leaders]:
            del self._since[pid]

    def since(self, partition_id: str, now: float) -> float:
        """When ``partition_id``'s current leaderless period began (``now``
        if it begins now)."""
        return self._since.setdefault(partition_id, now)


def defers_to_preferred(view: ClusterView, me: str, record: PartitionRecord) -> bool:
    """Whether this node, campaigning for a leaderless partition, should give
    its preferred leader (the first replica) a head start: it is not that
    node, and that node is alive and in sync, so it campaigns itself. This is
    how a leadership transfer picks its successor (the Txn that gives up the
    key puts the target first), and it costs a failover nothing when the
    preferred leader is the one that died (its node key went with its lease).
    Any in-sync replica may still win after the head start (the election Txn
    is what is safe; this only picks among the safe)."""
    preferred = record.replicas[0]
    return (
        preferred != me
        and record.state == "active"
        and preferred in view.nodes
        and preferred in record.isr
    )


def _replica_actions(
    view: ClusterView,
    me: str,
    lease: int,
    mod_revision: int,
    record: PartitionRecord,
    held: KeyRange | None,
    local: Mapping[str, KeyRange],
    facts: ReplicaFacts,
) -> list[Action]:
    """One record naming this node, with the replica data path: its copy is
    absent (``held`` None) or holds exactly the record's range."""
    pid = record.id
    ref = leader_ref(view, pid)
    if held is None and (pid in facts.leading or facts.roles.get(pid) == "leader"):
        # Being promoted: its follower is closed and its files reopened as
        # the leader's, so for a moment the registry holds neither. It has
        # its data: neither "no copy here" (LeaveIsr) nor a new follower.
        return []
    if held is None and pid in facts.dormant:
        # Its files are here from an earlier run: open them as a follower
        # (which replays only to the commit it knew); leading comes after.
        return [OpenFollower(record, ref)]
    if held is None:
        overlapping = sorted(other for other, rng in local.items() if rng.overlaps(record.range))
        if overlapping:
            return [Blocked(pid, f"its range {record.range} overlaps local {overlapping}")]
        if record.state != "new" and len(record.replicas) == 1:
            # Its only copy was here: starting it empty would answer "not
            # found" for every key it had. (With other replicas, a new empty
            # follower catches up from the leader, by snapshot if need be.)
            return [
                Blocked(
                    pid,
                    "assigned to this node and led before, but its data is not on this "
                    "disk; not starting it empty",
                )
            ]
        if record.state != "new" and me in record.isr:
            # It was in sync, so it may be elected, yet it has nothing: it
            # leaves the ISR first (the others have every acknowledged write).
            rest = [n for n in record.isr if n != me]
            if not rest:
                return [
                    Blocked(
                        pid,
                        "this node is its only in-sync replica but its data is not on this "
                        "disk; not starting it empty",
                    )
                ]
            return [LeaveIsr(pid, mod_revision, record.with_isr(rest))]
        return [OpenFollower(record, ref)]
    actions: list[Action] = []
    key = view.leaders.get(pid)
    held_lease = facts.held_lease
    ours = key is not None and key.node == me and held_lease != 0 and key.lease == held_lease
    leading = facts.roles.get(pid) == "leader" or pid in facts.leading
    told = (record.replicas, record.isr)
    if facts.told_isr.get(pid) != told:
        actions.append(SetIsr(pid, *told))
    if key is None and pid in facts.leading:
        # A promotion running with no key in the view yet: the campaign this
        # node just won, not read back yet. Neither step down nor campaign.
        return actions
    if leading and not ours:
        actions.append(StepDown(pid, ref))
    elif key is None:
        if lease and _may_campaign(view, me, record):
            actions.append(Campaign(pid, mod_revision))
        if facts.told_leader.get(pid) is not None:
            actions.append(SetLeader(pid, None))
    elif ours:
        if not leading and lease:
            actions.append(Lead(pid, key.epoch, record.replicas, record.isr))
    elif key.node == me:
        # Under a lease of an earlier run: revoked, so that it can be led again.
        actions.append(RevokeStale(key.lease))
    elif pid not in facts.told_leader or facts.told_leader[pid] != ref:
        actions.append(SetLeader(pid, ref))
    return actions


def _split_child(
    view: ClusterView, local: Mapping[str, KeyRange], held: KeyRange, whole: KeyRange
) -> str | None:
    """The local partition holding the upper part of ``whole`` when the local
    copy ``held`` is its lower part and etcd does not name that partition:
    a split committed here and not in etcd."""
    if held.start != whole.start or held.end is None:
        return None
    if whole.end is not None and held.end >= whole.end:
        return None
    rest = KeyRange(held.end, whole.end)
    for pid, rng in sorted(local.items()):
        if rng == rest and pid not in view.partitions and pid not in view.bad:
            return pid
    return None


def _merge_absorbed(
    view: ClusterView, me: str, local: Mapping[str, KeyRange], pid: str, held: KeyRange
) -> str | None:
    """The partition a local merge absorbed into ``pid``: etcd still names it,
    assigned here, adjacent above ``pid``'s etcd range, which together with it
    is exactly ``held``; and it is gone from this disk."""
    entry = view.partitions.get(pid)
    if entry is None or entry.record.range == held or entry.record.range.start != held.start:
        return None
    end = entry.record.range.end
    if end is None:
        return None
    for other, other_entry in sorted(view.partitions.items()):
        rng = other_entry.record.range
        if (
            rng.start == end
            and rng.end == held.end
            and other not in local
            and me in other_entry.record.replicas
        ):
            return other
    return None
