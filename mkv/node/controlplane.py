"""The ControlPlane service: partitions (add, restore, remove, list), snapshots,
operations, and the node's status."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.membership import Membership
from mkv.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    MkvError,
    NotFoundError,
    UnavailableError,
)
from mkv.node.catalog import CatalogEntry, check_partition_id
from mkv.node.cluster_local import RegistryPartitions, cluster_pipeline
from mkv.node.moves import Mover
from mkv.node.registry import PartitionRegistry, PartitionReport, Publish, PublishMerge
from mkv.node.snapshot_service import SnapshotService
from mkv.operations import Operation, OperationState
from mkv.partition.task import PartitionState
from mkv.pipeline import check_pipeline
from mkv.router import KeyRange
from mkv.rpc.dial import call_unary
from mkv.rpc.requests import current_metadata
from mkv.rpc.server import Handler
from mkv.snapshots.take import SnapshotResult
from mkv.store import check_store_kind
from mkv.units import format_utc
from mkv.v1 import control_pb2 as pb
from mkv.version import build_info
from mkv.wire import CONTROL_SERVICE, FORWARDED, Address, parse_address

__all__ = ["ControlPlane", "NodeFacts"]


@attrs.frozen(kw_only=True)
class NodeFacts:
    """What NodeStatus reports about the node itself (the node hands them over,
    so this service needs no reference to it)."""

    # time.time() and time.monotonic() when the node started: the first for
    # people, the second for an uptime that a wall-clock step cannot skew.
    started: float
    started_monotonic: float
    data_dir: Path
    snapshot_root: Path
    data_address: Address
    control_address: Address


SPLIT = "split"
MOVE = "move"
DRAIN = "drain"
_SINGLE_NODE = (
    "{call} needs cluster mode: this node runs alone (mkv serve --etcd URL --cluster NAME)."
)
MERGE = "merge"
# How long ListPartitions waits for another node's counts: an owner that does
# not answer by then leaves its partitions without numbers, not the call hung.
OWNER_COUNTS_SECONDS = 2.0


@attrs.frozen
class MoveDone:
    partition: pb.PartitionInfo


@attrs.frozen
class DrainDone:
    partitions: tuple[pb.PartitionInfo, ...]


@attrs.frozen
class MergeDone:
    partition: PartitionReport


@attrs.frozen
class ForwardedDone:
    """A split or merge that ran on the partition's owner: its operation there."""

    remote: pb.Operation


@attrs.frozen
class SplitDone:
    parent: PartitionReport
    partition: PartitionReport


_STATES = {
    PartitionState.STARTING: pb.STARTING,
    PartitionState.ACTIVE: pb.ACTIVE,
    PartitionState.DRAINING: pb.DRAINING,
    PartitionState.STOPPED: pb.STOPPED,
    PartitionState.FAILED: pb.PARTITION_FAILED,
}


_OPERATION_STATES = {
    OperationState.RUNNING: pb.RUNNING,
    OperationState.DONE: pb.DONE,
    OperationState.FAILED: pb.FAILED,
}


class ControlPlane:
    def __init__(
        self,
        registry: PartitionRegistry,
        snapshots: SnapshotService,
        facts: Callable[[], NodeFacts],
        cluster: Membership | None = None,
        local: RegistryPartitions | None = None,
        token: str | None = None,
    ) -> None:
        """Args:
        facts: the node's own facts for NodeStatus, asked for at each call
            (addresses are known only once bound).
        cluster: in cluster mode, the membership placement changes go
            through (each one etcd Txn); None on a single node.
        """
        self._registry = registry
        self._snapshots = snapshots
        self._facts = facts
        self._cluster = cluster
        self._local = local
        # Cluster mode: moves run here or are forwarded under the node's
        # own control token (node to node, as Replication is).
        self._mover = (
            Mover(registry, cluster, local, token)
            if cluster is not None and local is not None
            else None
        )

    def methods(self) -> dict[str, tuple[type, Handler]]:
        return {
            "AddPartition": (pb.AddPartitionRequest, self.add_partition),
            "RemovePartition": (pb.RemovePartitionRequest, self.remove_partition),
            "ReopenPartition": (pb.ReopenPartitionRequest, self.reopen_partition),
            "ListPartitions": (pb.ListPartitionsRequest, self.list_partitions),
            "Snapshot": (pb.SnapshotRequest, self.snapshot),
            "GetOperation": (pb.GetOperationRequest, self.get_operation),
            "SplitPartition": (pb.SplitPartitionRequest, self.split_partition),
            "MergePartitions": (pb.MergePartitionsRequest, self.merge_partitions),
            "NodeStatus": (pb.NodeStatusRequest, self.node_status),
            "MovePartition": (pb.MovePartitionRequest, self.move_partition),
            "DrainNode": (pb.DrainNodeRequest, self.drain_node),
            "ListNodes": (pb.ListNodesRequest, self.list_nodes),
            "TransferLeader": (pb.TransferLeaderRequest, self.transfer_leader),
        }

    # Placement across nodes exists only in cluster mode: a single node has
    # nowhere to move a partition to, so these say so rather than pretend.
    async def move_partition(self, request: pb.MovePartitionRequest) -> pb.MovePartitionResponse:
        mover = self._mover
        if mover is None:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="MovePartition"))
        if not request.id or not request.node:
            raise InvalidArgumentError("MovePartition needs a partition id and a node id.")
        mover.check(request.id, request.node)  # refused at once when it cannot begin
        if (running := self._snapshots.operations.running(MOVE, request.id)) is not None:
            raise FailedPreconditionError(
                f"Partition {request.id} is being moved already (operation {running.id})."
            )

        async def work(operation: Operation) -> MoveDone:
            return MoveDone(await mover.move(operation, request.id, request.node))

        operation = self._snapshots.operations.start(MOVE, request.id, work)
        return pb.MovePartitionResponse(operation_id=operation.id)

    async def drain_node(self, request: pb.DrainNodeRequest) -> pb.DrainNodeResponse:
        mover = self._mover
        if mover is None:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="DrainNode"))
        if not request.node:
            raise InvalidArgumentError("DrainNode needs a node id.")
        mover.check_drain(request.node)

        async def work(operation: Operation) -> DrainDone:
            return DrainDone(tuple(await mover.drain(operation, request.node)))

        operation = self._snapshots.operations.start(DRAIN, "", work)
        return pb.DrainNodeResponse(operation_id=operation.id)

    async def transfer_leader(self, request: pb.TransferLeaderRequest) -> pb.TransferLeaderResponse:
        if self._cluster is None:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="TransferLeader"))
        mover = self._mover
        if mover is None:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="TransferLeader"))
        if not request.id or not request.node:
            raise InvalidArgumentError("TransferLeader needs a partition id and a node id.")
        forwarded = FORWARDED in current_metadata()
        partition = await mover.transfer_leader(request.id, request.node, forwarded=forwarded)
        return pb.TransferLeaderResponse(partition=partition)

    async def list_nodes(self, request: pb.ListNodesRequest) -> pb.ListNodesResponse:
        if self._cluster is None:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="ListNodes"))
        view = self._cluster.view
        known = set(view.nodes)
        # A node that leads a partition but whose key is gone (its lease
        # lapsed a moment ago) is listed too, as not alive.
        known.update(leader.node for leader in view.leaders.values() if leader.node)
        nodes = []
        for node_id in sorted(known):
            entry = view.nodes.get(node_id)
            record = entry.record if entry is not None else None
            nodes.append(
                pb.NodeInfo(
                    id=node_id,
                    data_address=record.data if record else "",
                    control_address=record.control if record else "",
                    replication_address=record.replication if record else "",
                    version=record.version if record else "",
                    alive=entry is not None,
                    partitions=view.led_by(node_id),
                    started=record.started if record else "",
                    drained=record.drained if record else False,
                )
            )
        return pb.ListNodesResponse(nodes=nodes, revision=view.revision)

    async def node_status(self, request: pb.NodeStatusRequest) -> pb.NodeStatusResponse:
        facts = self._facts()
        build = build_info()
        partitions = []
        # Numbers already in memory only: no store is read, so this answers at
        # once and never waits on a busy or failing partition.
        for partition in sorted(self._registry, key=lambda p: p.range.start):
            stats = partition.statistics()
            partitions.append(
                pb.PartitionStatus(
                    id=partition.id,
                    start=partition.range.start,
                    end=partition.range.end or b"",
                    store=partition.store_kind,
                    state=_STATES[stats.state],
                    inbox_depth=stats.inbox_depth,
                    in_flight=stats.in_flight,
                    # Acknowledged, not applied: a client that wrote and then
                    # asks sees its writes (and the log's fsync lag) at once.
                    last_seq=stats.acknowledged_seq,
                    has_wal=stats.wal_synced_seq is not None,
                    wal_synced_seq=stats.wal_synced_seq or 0,
                    watchers=partition.feed.watchers,
                )
            )
        cluster = self._cluster
        return pb.NodeStatusResponse(
            node_id=cluster.node_id if cluster else "",
            cluster=cluster.settings.name if cluster else "",
            lease_valid=cluster.lease_valid() if cluster else False,
            lease_remaining_seconds=cluster.lease_remaining() if cluster else 0.0,
            cluster_revision=cluster.view.revision if cluster else 0,
            version=build["version"],
            python_version=build["python"],
            started=format_utc(facts.started),
            uptime_seconds=max(0.0, time.monotonic() - facts.started_monotonic),
            data_dir=str(facts.data_dir),
            snapshot_root=str(facts.snapshot_root),
            data_address=str(facts.data_address),
            control_address=str(facts.control_address),
            partitions=partitions,
        )

    async def add_partition(self, request: pb.AddPartitionRequest) -> pb.AddPartitionResponse:
        if self._cluster is not None:
            return await self._add_to_cluster(self._cluster, request)
        if request.node:
            raise FailedPreconditionError(_SINGLE_NODE.format(call="AddPartition with a node"))
        if request.replicas:
            raise FailedPreconditionError(
                _SINGLE_NODE.format(call="AddPartition with a replica count")
            )
        key_range = KeyRange.from_wire(request.start, request.end)
        pipeline = list(request.pipeline) if request.pipeline else None
        warnings: tuple[str, ...] = ()
        if request.snapshot:
            restored = await self._snapshots.restore(
                request.snapshot,
                partition_id=request.id or None,
                start=key_range.start,
                end=key_range.end,
                store=request.store or None,
                pipeline=pipeline,
            )
            partition, warnings = restored.partition, restored.warnings
        else:
            store = request.store or self._registry.default_store
            partition = await self._registry.add(request.id or None, key_range, store, pipeline)
        info = await self._registry.info(partition)
        return pb.AddPartitionResponse(partition=_to_proto(info), warnings=warnings)

    async def _add_to_cluster(
        self, cluster: Membership, request: pb.AddPartitionRequest
    ) -> pb.AddPartitionResponse:
        if request.snapshot:
            return await self._restore_in_cluster(cluster, request)
        key_range = KeyRange.from_wire(request.start, request.end)
        if request.id:
            check_partition_id(request.id)
        store = request.store or self._registry.default_store
        check_store_kind(store)
        pipeline = (
            tuple(request.pipeline)
            if request.pipeline
            else cluster_pipeline(self._registry.pipeline_for(store), cluster.settings.replicate)
        )
        check_pipeline(pipeline)
        record, leader, placed = await cluster.add_partition(
            request.id or None, key_range, store, pipeline, request.node or None, request.replicas
        )
        info = pb.PartitionInfo(
            id=record.id,
            start=record.range.start,
            end=record.range.end or b"",
            store=record.store,
            pipeline=record.pipeline,
            state=pb.ACTIVE if leader is not None else pb.STARTING,
            node=leader.node if leader is not None else record.replicas[0],
            epoch=leader.epoch if leader is not None else 0,
            replicas=record.replicas,
            isr=record.isr,
        )
        warnings = placed + (
            ()
            if leader is not None
            else (f"node {record.replicas[0]} has not taken the partition yet; it will",)
        )
        return pb.AddPartitionResponse(partition=info, warnings=warnings)

    async def _restore_in_cluster(
        self, cluster: Membership, request: pb.AddPartitionRequest
    ) -> pb.AddPartitionResponse:
        """A restore in cluster mode: onto the node answering (the snapshot is
        in its snapshot root), then placed in etcd with this node leading it;
        if the cluster refuses (an id or range taken there), the restored copy
        is removed again."""
        if request.node and request.node != cluster.node_id:
            raise FailedPreconditionError(
                f"A restore runs on the node whose snapshot root holds the snapshot: send "
                f"AddPartition to node {request.node} itself, or leave node empty."
            )
        view = cluster.view
        if request.id and (request.id in view.partitions or request.id in view.bad):
            raise AlreadyExistsError(f"A partition with id {request.id} already exists.")
        partition_id = request.id or cluster.free_id(
            lambda pid: self._registry.partition(pid) is not None
        )
        restored = await self._snapshots.restore(
            request.snapshot,
            partition_id=partition_id,
            start=request.start,
            end=request.end or None,
            store=request.store or None,
            pipeline=list(request.pipeline) if request.pipeline else None,
        )
        partition = restored.partition
        record = PartitionRecord(
            partition.id,
            partition.range,
            partition.store_kind,
            tuple(partition.pipeline_specs),
            (cluster.node_id,),
        )
        try:
            leader = await cluster.publish_restored(record)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._registry.remove(partition.id)
            raise
        info = _to_proto(await self._registry.info(partition))
        info.node, info.epoch = leader.node, leader.epoch
        return pb.AddPartitionResponse(partition=info, warnings=restored.warnings)

    async def snapshot(self, request: pb.SnapshotRequest) -> pb.SnapshotResponse:
        if not request.partition_id:
            raise InvalidArgumentError("Snapshot needs the id of a partition.")
        operation = await self._snapshots.snapshot(request.partition_id, request.path)
        return pb.SnapshotResponse(operation_id=operation.id)

    async def get_operation(self, request: pb.GetOperationRequest) -> pb.GetOperationResponse:
        operation = self._snapshots.operations.get(request.id)
        return pb.GetOperationResponse(operation=_operation_to_proto(operation))

    async def split_partition(self, request: pb.SplitPartitionRequest) -> pb.SplitPartitionResponse:
        if not request.id:
            raise NotFoundError("SplitPartition needs the id of a partition.")
        new_id = request.new_id or None
        publish: Publish | None = None
        if self._cluster is not None:
            if (owner := self._owner_elsewhere(self._cluster, request.id)) is not None:
                return pb.SplitPartitionResponse(
                    operation_id=await self._forward(
                        SPLIT,
                        request.id,
                        owner,
                        "SplitPartition",
                        request,
                        pb.SplitPartitionResponse,
                    )
                )
            new_id, publish = self._cluster_split(self._cluster, request)
        # Refused at once when it cannot begin; checked again when it does.
        self._registry.check_split(request.id, request.at, new_id)
        registry = self._registry

        async def work(operation: Operation) -> SplitDone:
            child = await registry.split(request.id, request.at, new_id, operation, publish=publish)
            parent = registry.partition(request.id)
            assert parent is not None
            return SplitDone(await registry.info(parent), await registry.info(child))

        operation = self._snapshots.operations.start(SPLIT, request.id, work)
        return pb.SplitPartitionResponse(operation_id=operation.id)

    def _owner_elsewhere(self, cluster: Membership, *partition_ids: str) -> str | None:
        """The live node, other than this one, that leads every one of
        ``partition_ids``, when the call should be forwarded to it; None when
        it runs (or is refused) here. A call that was forwarded already is
        never forwarded again: a node whose view lags would otherwise send it
        back and forth."""
        if self._mover is None or FORWARDED in current_metadata():
            return None
        view = cluster.view
        owners = set()
        for pid in partition_ids:
            leader = view.leaders.get(pid)
            if pid not in view.partitions or leader is None:
                return None
            owners.add(leader.node)
        if len(owners) != 1:
            return None
        (owner,) = owners
        if owner == cluster.node_id or owner not in view.nodes:
            return None
        return owner

    async def _forward(
        self,
        kind: str,
        partition_id: str,
        node: str,
        method: str,
        request: pb.SplitPartitionRequest | pb.MergePartitionsRequest,
        response_type: type[pb.SplitPartitionResponse] | type[pb.MergePartitionsResponse],
    ) -> str:
        """Start ``method`` on ``node`` (the owner) and an operation here that
        mirrors the owner's; its id. The owner's refusal comes back at once,
        as the call would have answered there."""
        mover = self._mover
        assert mover is not None
        address, started = await mover.start_remote(node, method, request, response_type)

        async def work(operation: Operation) -> ForwardedDone:
            remote = await mover.follow(operation, address, started.operation_id)
            if remote is None:
                raise UnavailableError(
                    f"Node {node} restarted during the {kind} of partition {partition_id}; "
                    "ListPartitions shows how it ended."
                )
            return ForwardedDone(remote)

        return self._snapshots.operations.start(kind, partition_id, work).id

    def _cluster_split(
        self, cluster: Membership, request: pb.SplitPartitionRequest
    ) -> tuple[str, Publish]:
        """Cluster mode: a split runs on the node leading the partition, and
        commits in etcd at its cut-over (both ranges, the new partition's
        leader key under this node's lease, one Txn); the new partition stays
        on this node.

        Raises:
            NotFoundError: no such partition in the cluster.
            FailedPreconditionError: another node leads it (named, with its
                control address), or nobody does now.
            AlreadyExistsError: ``new_id`` is taken in the cluster.
        """
        view = cluster.view
        if request.id not in view.partitions:
            raise NotFoundError(f"No partition with id {request.id!r} in the cluster.")
        if request.id not in cluster.routing.mine or not cluster.lease_valid():
            leader = view.leaders.get(request.id)
            node = view.nodes.get(leader.node) if leader is not None else None
            if leader is None or node is None:
                raise FailedPreconditionError(
                    f"No node leads partition {request.id} now; retry shortly."
                )
            raise FailedPreconditionError(
                f"Partition {request.id} is led by node {leader.node}: send SplitPartition "
                f"to its control plane at {node.record.control}."
            )
        if request.new_id and (request.new_id in view.partitions or request.new_id in view.bad):
            raise AlreadyExistsError(f"A partition with id {request.new_id} already exists.")
        new_id = request.new_id or cluster.free_id(
            lambda pid: self._registry.partition(pid) is not None
        )
        me = cluster.node_id

        async def publish(parent_id: str, keep: KeyRange, entry: CatalogEntry) -> None:
            child = PartitionRecord(entry.id, entry.range, entry.store, entry.pipeline, (me,))
            await cluster.publish_split(parent_id, keep, child)

        return new_id, publish

    def _cluster_merge(
        self, cluster: Membership, request: pb.MergePartitionsRequest
    ) -> PublishMerge:
        """Cluster mode: a merge runs on the node leading both partitions and
        commits in etcd at its cut-over (one Txn).

        Raises:
            NotFoundError: either partition is not in the cluster.
            FailedPreconditionError: this node does not lead both (the owner
                is named; partitions on two nodes must first be on one).
        """
        view = cluster.view
        owners = []
        for pid in (request.left, request.right):
            if pid not in view.partitions:
                raise NotFoundError(f"No partition with id {pid!r} in the cluster.")
            leader = view.leaders.get(pid)
            owners.append(leader.node if leader is not None else "")
        if not cluster.lease_valid() or not all(
            pid in cluster.routing.mine for pid in (request.left, request.right)
        ):
            if owners[0] and owners[0] == owners[1] and (node := view.nodes.get(owners[0])):
                raise FailedPreconditionError(
                    f"Partitions {request.left} and {request.right} are led by node "
                    f"{owners[0]}: send MergePartitions to its control plane at "
                    f"{node.record.control}."
                )
            raise FailedPreconditionError(
                f"Partitions {request.left} and {request.right} are led by "
                f"{owners[0] or 'no node'} and {owners[1] or 'no node'}: a merge needs both "
                "led by one node (move one first)."
            )
        return cluster.publish_merge

    async def merge_partitions(
        self, request: pb.MergePartitionsRequest
    ) -> pb.MergePartitionsResponse:
        if not request.left or not request.right:
            raise NotFoundError("MergePartitions needs the ids of two partitions.")
        publish: PublishMerge | None = None
        if self._cluster is not None:
            if (
                owner := self._owner_elsewhere(self._cluster, request.left, request.right)
            ) is not None:
                return pb.MergePartitionsResponse(
                    operation_id=await self._forward(
                        MERGE,
                        request.left,
                        owner,
                        "MergePartitions",
                        request,
                        pb.MergePartitionsResponse,
                    )
                )
            publish = self._cluster_merge(self._cluster, request)
        self._registry.check_merge(request.left, request.right)
        registry = self._registry

        async def work(operation: Operation) -> MergeDone:
            merged = await registry.merge(request.left, request.right, operation, publish=publish)
            return MergeDone(await registry.info(merged))

        operation = self._snapshots.operations.start(MERGE, request.left, work)
        return pb.MergePartitionsResponse(operation_id=operation.id)

    async def remove_partition(
        self, request: pb.RemovePartitionRequest
    ) -> pb.RemovePartitionResponse:
        if not request.id:
            raise NotFoundError("RemovePartition needs the id of a partition.")
        if self._cluster is not None:
            record, leader = await self._cluster.remove_partition(request.id)
            return pb.RemovePartitionResponse(
                partition=pb.PartitionInfo(
                    id=record.id,
                    start=record.range.start,
                    end=record.range.end or b"",
                    store=record.store,
                    pipeline=record.pipeline,
                    state=pb.STOPPED,
                    node=leader.node if leader is not None else "",
                    epoch=leader.epoch if leader is not None else 0,
                )
            )
        info = await self._registry.remove(request.id)
        return pb.RemovePartitionResponse(partition=_to_proto(info))

    async def reopen_partition(
        self, request: pb.ReopenPartitionRequest
    ) -> pb.ReopenPartitionResponse:
        if not request.id:
            raise NotFoundError("ReopenPartition needs the id of a partition.")
        partition = await self._registry.reopen(request.id)
        info = await self._registry.info(partition)
        return pb.ReopenPartitionResponse(partition=_to_proto(info))

    async def list_partitions(self, request: pb.ListPartitionsRequest) -> pb.ListPartitionsResponse:
        if self._cluster is not None:
            return await self._list_cluster(self._cluster)
        partitions = sorted(self._registry, key=lambda p: p.range.start)
        infos: list[PartitionReport | None] = [None] * len(partitions)

        async def collect(index: int) -> None:
            infos[index] = await self._registry.info(partitions[index])

        # Statistics may scan tables; gather them side by side.
        async with trio.open_nursery() as nursery:
            for index in range(len(partitions)):
                nursery.start_soon(collect, index)
        return pb.ListPartitionsResponse(
            partitions=[_to_proto(info) for info in infos if info is not None]
        )

    async def _list_cluster(self, cluster: Membership) -> pb.ListPartitionsResponse:
        """Every partition of the cluster, with its leader and epoch, and the
        numbers (state, keys, bytes, seq) from the node that leads it: this
        node's own, the others' asked of each owner in parallel (a forwarded
        ListPartitions, which answers with its own partitions only). An owner
        that does not answer within ``OWNER_COUNTS_SECONDS`` leaves its
        partitions at 0 with state PARTITION_STATE_UNSPECIFIED (unknown)."""
        view = cluster.view
        mine = cluster.routing.mine
        forwarded = FORWARDED in current_metadata()
        out = []
        elsewhere: dict[str, list[pb.PartitionInfo]] = {}
        for pid, entry in sorted(view.partitions.items(), key=lambda i: i[1].record.range.start):
            record, leader = entry.record, view.leaders.get(pid)
            info = pb.PartitionInfo(
                id=pid,
                start=record.range.start,
                end=record.range.end or b"",
                store=record.store,
                pipeline=record.pipeline,
                state=pb.ACTIVE if leader is not None else pb.STARTING,
                node=leader.node if leader is not None else "",
                epoch=leader.epoch if leader is not None else 0,
                replicas=record.replicas,
                isr=record.isr,
            )
            local = self._registry.partition(pid)
            if pid in mine and local is not None:
                report = await self._registry.info(local)
                info.state = _STATES[report.state]
                info.key_count = report.stats.key_count
                info.size_bytes = report.stats.size_bytes
                info.last_seq = report.last_seq
                self._fill_replica_states(info, record.isr)
            elif forwarded:
                continue  # the asking node has the rest from etcd, or from their owners
            elif leader is not None and leader.node != cluster.node_id:
                elsewhere.setdefault(leader.node, []).append(info)
            out.append(info)
        if elsewhere:
            async with trio.open_nursery() as nursery:
                for node, infos in elsewhere.items():
                    nursery.start_soon(self._owner_counts, cluster, node, infos)
        return pb.ListPartitionsResponse(partitions=out)

    async def _owner_counts(
        self, cluster: Membership, node: str, infos: list[pb.PartitionInfo]
    ) -> None:
        """Fill ``infos`` (partitions ``node`` leads) with its numbers."""
        mover = self._mover
        entry = cluster.view.nodes.get(node)
        answer: pb.ListPartitionsResponse | None = None
        if mover is not None and entry is not None:
            with trio.move_on_after(OWNER_COUNTS_SECONDS):
                try:
                    answer = await call_unary(
                        parse_address(entry.record.control),
                        CONTROL_SERVICE,
                        "ListPartitions",
                        pb.ListPartitionsRequest(),
                        pb.ListPartitionsResponse,
                        metadata=mover.forwarded_metadata(),
                        silence=OWNER_COUNTS_SECONDS,
                    )
                except MkvError:
                    answer = None
        theirs = {p.id: p for p in answer.partitions} if answer is not None else {}
        for info in infos:
            counted = theirs.get(info.id)
            if counted is None or counted.node != node:
                # Unknown: the owner did not answer, or no longer leads it.
                info.state = pb.PARTITION_STATE_UNSPECIFIED
                continue
            info.state = counted.state
            info.key_count = counted.key_count
            info.size_bytes = counted.size_bytes
            info.last_seq = counted.last_seq
            info.commit_seq = counted.commit_seq
            info.replica_states.extend(counted.replica_states)

    def _fill_replica_states(self, info: pb.PartitionInfo, isr: tuple[str, ...]) -> None:
        """A partition this node leads: its commit seq and each replica's
        progress as the data path sees it (absent without one); ``in_sync``
        as etcd records it, which is what elections go by."""
        states = self._local.replica_states(info.id) if self._local is not None else None
        if states is None:
            return
        info.commit_seq = states.commit_seq
        for replica in states.replicas:
            info.replica_states.append(
                pb.ReplicaInfo(
                    node=replica.node,
                    leader=replica.node == info.node,
                    in_sync=replica.node in isr,
                    durable_seq=replica.durable_seq,
                    lag_records=replica.lag_records,
                    lag_seconds=replica.lag_seconds,
                )
            )


def _to_proto(info: PartitionReport) -> pb.PartitionInfo:
    return pb.PartitionInfo(
        id=info.id,
        start=info.range.start,
        end=info.range.end or b"",
        store=info.store,
        pipeline=info.pipeline,
        state=_STATES[info.state],
        key_count=info.stats.key_count,
        size_bytes=info.stats.size_bytes,
        last_seq=info.last_seq,
    )


def _operation_to_proto(operation: Operation) -> pb.Operation:
    progress = operation.progress
    message = pb.Operation(
        id=operation.id,
        kind=operation.kind,
        partition_id=operation.partition_id,
        state=_OPERATION_STATES[operation.state],
        phase=progress.phase,
        progress_done=progress.done,
        progress_total=progress.total,
        progress_unit=progress.unit,
        started=operation.started,
        finished=operation.finished or 0.0,
    )
    if operation.error is not None:
        message.error_code = operation.error.code.value
        message.error_message = operation.error.message
    if isinstance(operation.result, SplitDone):
        message.split.CopyFrom(
            pb.SplitResult(
                parent=_to_proto(operation.result.parent),
                partition=_to_proto(operation.result.partition),
            )
        )
    if isinstance(operation.result, MoveDone):
        message.moved.CopyFrom(operation.result.partition)
    if isinstance(operation.result, DrainDone):
        message.drained.extend(operation.result.partitions)
    if isinstance(operation.result, ForwardedDone):
        remote = operation.result.remote
        if remote.HasField("split"):
            message.split.CopyFrom(remote.split)
        if remote.HasField("merged"):
            message.merged.CopyFrom(remote.merged)
    if isinstance(operation.result, MergeDone):
        message.merged.CopyFrom(_to_proto(operation.result.partition))
    if isinstance(operation.result, SnapshotResult):
        result, manifest = operation.result, operation.result.manifest
        message.snapshot.CopyFrom(
            pb.SnapshotResult(
                data_path=result.data_path,
                manifest_path=result.manifest_path,
                partition_id=manifest.partition_id,
                start=manifest.start,
                end=manifest.end or b"",
                store_kind=manifest.store_kind,
                seq=manifest.seq,
                timestamp=manifest.timestamp,
                size=manifest.size,
                sha256=manifest.sha256,
                created=manifest.created,
                pipeline=manifest.pipeline or (),
            )
        )
    return message
