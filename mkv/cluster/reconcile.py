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

__all__ = ["Action", "Blocked", "Campaign", "Create", "Delete", "RevokeStale", "reconcile"]


@attrs.frozen
class Create:
    """Open an empty local partition for a record that names this node."""

    record: PartitionRecord


@attrs.frozen
class Campaign:
    """Take the leadership of a partition nobody leads: a Txn on
    ``create_revision(leaders/<id>) == 0`` and ``mod_revision(partitions/<id>)
    == mod_revision``, putting the leader key under this node's lease."""

    partition_id: str
    mod_revision: int


@attrs.frozen
class RevokeStale:
    """A leader key names this node under a lease it no longer keeps (an
    earlier run of the process): revoke that lease, so the key goes and the
    node can campaign under the lease it keeps."""

    lease: int


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


Action = Create | Campaign | RevokeStale | Delete | Blocked


def reconcile(
    view: ClusterView,
    me: str,
    lease: int,
    local: Mapping[str, KeyRange],
    seen: Set[str],
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
    """
    actions: list[Action] = []
    stale: set[int] = set()
    for pid, entry in sorted(view.partitions.items()):
        record = entry.record
        if me not in record.replicas:
            continue
        held = local.get(pid)
        if held is None:
            overlapping = sorted(
                other for other, rng in local.items() if rng.overlaps(record.range)
            )
            if overlapping:
                actions.append(
                    Blocked(pid, f"its range {record.range} overlaps local {overlapping}")
                )
            else:
                actions.append(Create(record))
            continue
        if held != record.range:
            actions.append(
                Blocked(pid, f"etcd gives it range {record.range}, its local copy has {held}")
            )
            continue
        leader = view.leaders.get(pid)
        if lease == 0:
            continue
        if leader is None:
            actions.append(Campaign(pid, entry.mod_revision))
        elif leader.node == me and leader.lease != lease and leader.lease not in stale:
            stale.add(leader.lease)
            actions.append(RevokeStale(leader.lease))
    for pid in sorted(local):
        entry_or_none = view.partitions.get(pid)
        if pid in view.bad:
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
