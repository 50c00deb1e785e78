"""The cluster as one node sees it: nodes, partitions and leaders at an etcd
revision, built from a prefix read and kept current by watch events.

Sans-I/O. A key or value that does not parse is logged and left out, but
remembered (``bad``): a partition whose record is unreadable is not treated
as removed, so no node deletes its data over a value it cannot read.
``Routing`` is the immutable part the data plane reads on every request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs

from mkv.cluster.keyspace import BadValue, Keys, LeaderRecord, NodeRecord, PartitionRecord
from mkv.router import KeyRange, Router

__all__ = ["ClusterView", "Entry", "Leader", "NodeEntry", "PartitionEntry", "Routing"]

log = logging.getLogger("mkv.cluster")


class Entry(Protocol):
    """What the view needs of an etcd key-value (``mkv.etcd.KeyValue``)."""

    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def create_revision(self) -> int: ...
    @property
    def mod_revision(self) -> int: ...
    @property
    def lease(self) -> int: ...


@attrs.frozen
class NodeEntry:
    record: NodeRecord
    lease: int
    # Compared by the Txn that marks the node drained.
    mod_revision: int = 0


@attrs.frozen
class PartitionEntry:
    record: PartitionRecord
    # Compared by every Txn that changes the record or campaigns for it.
    mod_revision: int


@attrs.frozen
class Leader:
    node: str
    # The create revision of the leader key: grows with every new leadership.
    epoch: int
    lease: int


@attrs.frozen
class Routing:
    """Where each range of the cluster is served, as of ``version``."""

    version: int
    router: Router
    # Partition id -> the range and the leader's advertised data address
    # ("" while no live node leads it).
    owners: Mapping[str, tuple[KeyRange, str]]
    # The partitions this node leads now (id -> epoch), under its current lease.
    mine: Mapping[str, int]

    @classmethod
    def empty(cls) -> Routing:
        return cls(0, Router.build([], version=0), {}, {})


class ClusterView:
    """Mutable: ``load`` a prefix read, then ``apply`` each watch event."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.revision = 0
        self.nodes: dict[str, NodeEntry] = {}
        self.partitions: dict[str, PartitionEntry] = {}
        self.leaders: dict[str, Leader] = {}
        # The placement key's mod revision (0: no cluster yet).
        self.placement_revision = 0
        # Partition ids whose record is unreadable: neither served nor removed.
        self.bad: set[str] = set()

    @property
    def placeable(self) -> set[str]:
        """The live nodes a new replica may go to: not drained."""
        return {node for node, entry in self.nodes.items() if not entry.record.drained}

    def load(self, entries: Iterable[Entry], revision: int) -> None:
        """Replace everything by a prefix read made at ``revision``."""
        self.nodes.clear()
        self.partitions.clear()
        self.leaders.clear()
        self.bad.clear()
        self.placement_revision = 0
        for entry in entries:
            self.put(entry)
        self.revision = revision

    def put(self, entry: Entry) -> None:
        try:
            kind, name = self.keys.parse(entry.key)
            if kind == "nodes":
                registration = NodeRecord.decode(name, entry.value)
                self.nodes[name] = NodeEntry(registration, entry.lease, entry.mod_revision)
            elif kind == "partitions":
                record = PartitionRecord.decode(name, entry.value)
                self.partitions[name] = PartitionEntry(record, entry.mod_revision)
                self.bad.discard(name)
            elif kind == "leaders":
                node = LeaderRecord.decode(name, entry.value).node
                self.leaders[name] = Leader(node, entry.create_revision, entry.lease)
            else:
                self.placement_revision = entry.mod_revision
        except BadValue as exc:
            log.error("ignoring a value in etcd: %s", exc, extra={"event": "cluster_bad_value"})
            try:
                kind, name = self.keys.parse(entry.key)
            except BadValue:
                return
            if kind == "partitions":
                self.partitions.pop(name, None)
                self.bad.add(name)
            elif kind == "leaders":
                # A leader key nobody can read still holds the leadership:
                # nobody may campaign, and nobody serves it.
                self.leaders[name] = Leader("", entry.create_revision, entry.lease)

    def delete(self, key: bytes) -> None:
        try:
            kind, name = self.keys.parse(key)
        except BadValue:
            return
        if kind == "nodes":
            self.nodes.pop(name, None)
        elif kind == "partitions":
            self.partitions.pop(name, None)
            self.bad.discard(name)
        elif kind == "leaders":
            self.leaders.pop(name, None)
        else:
            self.placement_revision = 0

    def routing(self, me: str, lease: int) -> Routing:
        """The routing table at this revision; ``mine`` holds the partitions
        whose leader key is this node's under ``lease`` (0: none)."""
        router = Router.build(self._disjoint(), version=self.revision)
        owners: dict[str, tuple[KeyRange, str]] = {}
        mine: dict[str, int] = {}
        for pid, entry in self.partitions.items():
            leader = self.leaders.get(pid)
            address = ""
            if (
                leader is not None
                and (node := self.nodes.get(leader.node)) is not None
                # This node under a lease it no longer keeps is nobody to send
                # clients to (its key is gone with that lease, or soon is).
                and not (leader.node == me and leader.lease != lease)
            ):
                address = node.record.data
            owners[pid] = (entry.record.range, address)
            if leader is not None and lease and leader.node == me and leader.lease == lease:
                mine[pid] = leader.epoch
        return Routing(self.revision, router, owners, mine)

    def _disjoint(self) -> list[tuple[KeyRange, str]]:
        """Every partition's range, leaving out (and logging) any that overlaps
        one before it: placement Txns keep them apart, so an overlap is a value
        someone else wrote, not one to route by."""
        ranges = sorted(
            ((entry.record.range, pid) for pid, entry in self.partitions.items()),
            key=lambda item: (item[0].start, item[1]),
        )
        kept: list[tuple[KeyRange, str]] = []
        for rng, pid in ranges:
            if kept and kept[-1][0].overlaps(rng):
                log.error(
                    "partitions/%s overlaps partitions/%s in etcd; not routing to it",
                    pid,
                    kept[-1][1],
                    extra={"event": "cluster_overlap"},
                )
                continue
            kept.append((rng, pid))
        return kept

    def led_by(self, node_id: str) -> list[str]:
        """The partitions ``node_id`` leads, in key order."""
        return sorted(
            (pid for pid, leader in self.leaders.items() if leader.node == node_id),
            key=lambda pid: self._start(pid),
        )

    def _start(self, pid: str) -> bytes:
        entry = self.partitions.get(pid)
        return b"" if entry is None else entry.record.range.start
