"""What a node must do to match the cluster view: pure decisions, no I/O.

Given the view, this node's id and lease, and the partitions on its disk,
``reconcile`` lists the actions that bring the node in line with etcd. The
membership task carries them out and calls again after every change, so each
action is safe to repeat: a Create that already happened shows up as a local
partition next time, a Campaign that lost finds a leader key.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

import attrs

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.view import ClusterView
from mkv.router import KeyRange

__all__ = [
    "Action",
    "Adopt",
    "Blocked",
    "Campaign",
    "Create",
    "Delete",
    "PublishMerge",
    "PublishSplit",
    "RevokeStale",
    "reconcile",
]


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


Action = Adopt | Create | Campaign | RevokeStale | PublishSplit | PublishMerge | Delete | Blocked


def reconcile(
    view: ClusterView,
    me: str,
    lease: int,
    local: Mapping[str, KeyRange],
    seen: Set[str],
    moving: Set[str] = frozenset(),
    copies: Set[str] = frozenset(),
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
        held = local.get(pid)
        if pid in absorbed:
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
