"""Repair: a partition whose replica is on a node gone for good gets a new
replica on a live node. Sans-I/O; ``Membership`` makes the Txn.

Who repairs: the live node with the lowest id (by the node's view), not
each partition's leader. A partition whose leader died has no leader until
an ISR member is elected, and one whose only in-sync replicas died has none
at all; the lowest live node needs no election of its own (every node
computes the same from its view), and a second repairer during a moment when
views disagree is harmless: each change is one Txn guarded by the placement
key's and the record's revisions, so two repairers cannot both change a
record, and the loser reads again. The leader still decides when the new
replica joins the ISR (only it knows the follower's durable seq).

When a node counts as gone: its ``nodes/<id>`` key (under its lease) has
been absent for ``node_dead_timeout`` as this node saw it (``GoneNodes``;
a node restarting after that finds itself replaced, and its copy deleted).
"""

from __future__ import annotations

from collections.abc import Iterable, Set

import attrs

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.view import ClusterView

__all__ = ["GoneNodes", "Repair", "plan_repair", "repairer", "replacement_for"]


@attrs.frozen
class Repair:
    """Replace ``dead`` by ``replacement`` in one record: ``record`` is the
    new value, to be put only if the record is still at ``mod_revision``."""

    partition_id: str
    mod_revision: int
    dead: str
    replacement: str
    record: PartitionRecord


class GoneNodes:
    """Since when each node some record names has been missing from
    ``nodes/`` (by this node's clock, from when it first saw it missing)."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def observe(self, view: ClusterView, now: float) -> None:
        named = {n for entry in view.partitions.values() for n in entry.record.replicas}
        gone = named - set(view.nodes)
        for node in list(self._since):
            if node not in gone:
                del self._since[node]
        for node in gone:
            self._since.setdefault(node, now)

    def dead(self, now: float, timeout: float) -> frozenset[str]:
        """The nodes missing for ``timeout`` seconds or more."""
        return frozenset(n for n, since in self._since.items() if now - since >= timeout)


def repairer(alive: Iterable[str]) -> str | None:
    """The node that runs repair: the live node with the lowest id."""
    return min(alive, default=None)


def plan_repair(view: ClusterView, dead: Set[str]) -> Repair | None:
    """The next repair to make (one partition at a time), or None.

    A record naming a dead node gets, in its place, the live node (not
    drained) holding the fewest replicas (ties: the lowest id) among those that hold none of
    it; the dead node leaves the ISR in the same change. The new replica is
    put last, out of the ISR: it starts empty and joins the ISR through the
    leader once it has caught up, and it is not the preferred leader. A
    record whose in-sync replicas are all dead is left alone: no live node
    has all its acknowledged writes, and a replacement could only start
    empty (the dead node may come back with them).
    """
    alive = view.placeable - set(dead)
    for pid, entry in sorted(view.partitions.items()):
        record = entry.record
        gone = [n for n in record.replicas if n in dead]
        if not gone:
            continue
        isr = [n for n in record.isr if n not in dead]
        if not isr:
            continue
        replacement = replacement_for(view, record, alive)
        if replacement is None:
            continue
        dead_node = gone[0]
        replicas = (*(n for n in record.replicas if n != dead_node), replacement)
        new = attrs.evolve(record, replicas=replicas, isr=tuple(n for n in replicas if n in isr))
        return Repair(pid, entry.mod_revision, dead_node, replacement, new)
    return None


def replacement_for(view: ClusterView, record: PartitionRecord, alive: Set[str]) -> str | None:
    """Where a new replica of ``record`` goes (repair, a drain): the node of
    ``alive`` holding the fewest replicas (ties: the lowest id) among those
    holding none of it; None when every one of them holds one."""
    holding: dict[str, int] = {}
    for entry in view.partitions.values():
        for node in entry.record.replicas:
            holding[node] = holding.get(node, 0) + 1
    candidates = alive - set(record.replicas)
    return min(candidates, key=lambda n: (holding.get(n, 0), n), default=None)
