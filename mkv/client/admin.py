"""The async client for the control plane: partitions, snapshots and restores.

async with mkv.AdminClient.connect("127.0.0.1:7071") as admin:
    await admin.add_partition(start=b"m", end=None, partition_id="upper")
    for p in await admin.list_partitions():
        print(p.id, p.range, p.key_count)
    operation_id = await admin.snapshot("upper", "nightly")
    done = await admin.wait_operation(operation_id)
    await admin.add_partition(partition_id="copy", snapshot=done.snapshot.manifest_path)
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import attrs
from google.protobuf.message import Message
from purerpc.grpclib.status import StatusCode

from mkv.client.channel import Channel, open_channel
from mkv.client.credentials import client_credentials
from mkv.errors import MkvError, ResourceExhaustedError, error_for_status
from mkv.records import Manifest
from mkv.router import KeyRange
from mkv.rpc.auth import CONTROL_TOKEN_ENV
from mkv.v1 import control_pb2 as pb
from mkv.wire import CONTROL_SERVICE as SERVICE
from mkv.wire import DEFAULT_CONTROL_ADDR, Address

__all__ = [
    "AdminClient",
    "NodeInfo",
    "NodeStatus",
    "OperationInfo",
    "PartitionInfo",
    "PartitionStatus",
    "SnapshotInfo",
]

# How often wait_operation asks for news.
POLL_INTERVAL = 0.2
# How long one call may wait out the node's control-plane rate limit, in all.
RATE_LIMIT_WAIT = 60.0

M = TypeVar("M", bound=Message)


@attrs.frozen
class ReplicaState:
    """One replica's progress as its partition's leader sees it."""

    node: str
    leader: bool
    # In the partition's in-sync set in etcd.
    in_sync: bool
    durable_seq: int
    lag_records: int
    lag_seconds: float


@attrs.frozen
class PartitionInfo:
    """What the control plane reports about one partition."""

    id: str
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]
    # "starting", "active", "draining", "stopped" or "failed"
    state: str
    key_count: int
    size_bytes: int
    last_seq: int
    # Set by add_partition only: what the node could not do as the caller may
    # expect (a restore from a snapshot that does not record its pipeline).
    warnings: tuple[str, ...] = ()
    # Cluster mode: the id of the node leading it and the epoch of that
    # leadership; None on a single node, or while no node leads it.
    node: str | None = None
    epoch: int | None = None
    # Cluster mode: the nodes holding a replica (the preferred leader first)
    # and the in-sync set, as etcd records them; empty on a single node.
    replicas: tuple[str, ...] = ()
    isr: tuple[str, ...] = ()
    # Replicated and led by a node with the replica data path: the commit
    # seq (acknowledged writes) and each replica's progress; else 0 and ().
    commit_seq: int = 0
    replica_states: tuple[ReplicaState, ...] = ()

    @classmethod
    def from_proto(cls, info: pb.PartitionInfo) -> PartitionInfo:
        return cls(
            id=info.id,
            range=KeyRange(info.start, info.end or None),
            store=info.store,
            pipeline=tuple(info.pipeline),
            # PARTITION_FAILED is prefixed only to keep proto enum names unique.
            state=pb.PartitionState.Name(info.state).lower().removeprefix("partition_"),
            key_count=info.key_count,
            size_bytes=info.size_bytes,
            last_seq=info.last_seq,
            node=info.node or None,
            epoch=info.epoch or None,
            replicas=tuple(info.replicas),
            isr=tuple(info.isr),
            commit_seq=info.commit_seq,
            replica_states=tuple(
                ReplicaState(
                    node=r.node,
                    leader=r.leader,
                    in_sync=r.in_sync,
                    durable_seq=r.durable_seq,
                    lag_records=r.lag_records,
                    lag_seconds=r.lag_seconds,
                )
                for r in info.replica_states
            ),
        )


@attrs.frozen
class NodeInfo:
    """One member of a cluster, as ``AdminClient.list_nodes`` reports it."""

    id: str
    # As the node advertises them (HOST:PORT), for clients and other nodes.
    data_address: str
    control_address: str
    replication_address: str
    version: str
    # Registered under a live lease in etcd.
    alive: bool
    # The partitions it leads, in key order.
    partitions: tuple[str, ...]
    # When it registered, UTC, ISO 8601.
    started: str
    # Drained (DrainNode): no new replicas go to it until it restarts.
    drained: bool = False

    @classmethod
    def from_proto(cls, info: pb.NodeInfo) -> NodeInfo:
        return cls(
            id=info.id,
            data_address=info.data_address,
            control_address=info.control_address,
            replication_address=info.replication_address,
            version=info.version,
            alive=info.alive,
            partitions=tuple(info.partitions),
            started=info.started,
            drained=info.drained,
        )


@attrs.frozen
class SnapshotInfo:
    """A finished snapshot: its manifest, and where its files are."""

    manifest: Manifest
    # Both relative to the server's snapshot root; restore takes manifest_path.
    data_path: str
    manifest_path: str

    @classmethod
    def from_proto(cls, result: pb.SnapshotResult) -> SnapshotInfo:
        manifest = Manifest(
            partition_id=result.partition_id,
            start=result.start,
            end=result.end or None,
            store_kind=result.store_kind,
            seq=result.seq,
            timestamp=result.timestamp,
            file=result.data_path.rpartition("/")[2],
            size=result.size,
            sha256=result.sha256,
            created=result.created,
            pipeline=tuple(result.pipeline),
        )
        return cls(manifest, result.data_path, result.manifest_path)


@attrs.frozen
class OperationInfo:
    """What the control plane reports about a long-running operation."""

    id: str
    kind: str
    partition_id: str
    # "running", "done" or "failed"
    state: str
    # What it is doing, and how far: done of total (0 while unknown), in unit.
    phase: str
    done: int
    total: int
    unit: str
    # Set when done (a snapshot operation).
    snapshot: SnapshotInfo | None
    # Set when failed: the error the operation ended with.
    error: MkvError | None
    # Seconds since the epoch; finished is None while running.
    started: float
    finished: float | None
    # Set when done (a split): the parent and the new partition at the cut-over.
    split: tuple[PartitionInfo, PartitionInfo] | None = None
    # Set when done (a merge): the surviving partition.
    merged: PartitionInfo | None = None
    # Set when done (a move): the partition on its new node.
    moved: PartitionInfo | None = None
    # Set when done (a drain): the partitions moved off the node.
    drained: tuple[PartitionInfo, ...] = ()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_proto(cls, op: pb.Operation) -> OperationInfo:
        error = None
        if op.state == pb.FAILED:
            error = error_for_status(StatusCode(op.error_code), op.error_message)
        return cls(
            id=op.id,
            kind=op.kind,
            partition_id=op.partition_id,
            state=pb.OperationState.Name(op.state).lower(),
            phase=op.phase,
            done=op.progress_done,
            total=op.progress_total,
            unit=op.progress_unit,
            snapshot=SnapshotInfo.from_proto(op.snapshot) if op.HasField("snapshot") else None,
            error=error,
            started=op.started,
            finished=op.finished or None,
            split=(
                (
                    PartitionInfo.from_proto(op.split.parent),
                    PartitionInfo.from_proto(op.split.partition),
                )
                if op.HasField("split")
                else None
            ),
            merged=PartitionInfo.from_proto(op.merged) if op.HasField("merged") else None,
            moved=PartitionInfo.from_proto(op.moved) if op.HasField("moved") else None,
            drained=tuple(PartitionInfo.from_proto(p) for p in op.drained),
        )


@attrs.frozen
class PartitionStatus:
    """One partition in ``NodeStatus``: its state and queues, read from memory."""

    id: str
    range: KeyRange
    store: str
    # "starting", "active", "draining", "stopped" or "failed"
    state: str
    # Requests waiting in its inbox, and admitted but not yet answered.
    inbox_depth: int
    in_flight: int
    # The last write acknowledged (the store applies it a moment later).
    last_seq: int
    # The last write its log has fsynced; None without a write-ahead log.
    wal_synced_seq: int | None
    watchers: int

    @property
    def wal_sync_lag(self) -> int | None:
        """Writes acknowledged but not yet fsynced by the log (None without one)."""
        if self.wal_synced_seq is None:
            return None
        return max(0, self.last_seq - self.wal_synced_seq)

    @classmethod
    def from_proto(cls, status: pb.PartitionStatus) -> PartitionStatus:
        return cls(
            id=status.id,
            range=KeyRange(status.start, status.end or None),
            store=status.store,
            state=pb.PartitionState.Name(status.state).lower().removeprefix("partition_"),
            inbox_depth=status.inbox_depth,
            in_flight=status.in_flight,
            last_seq=status.last_seq,
            wal_synced_seq=status.wal_synced_seq if status.has_wal else None,
            watchers=status.watchers,
        )


@attrs.frozen
class NodeStatus:
    """What ``AdminClient.node_status`` reports: the node's build, age and place."""

    version: str
    python_version: str
    # UTC, ISO 8601.
    started: str
    uptime_seconds: float
    data_dir: str
    snapshot_root: str
    data_address: str
    control_address: str
    partitions: tuple[PartitionStatus, ...]
    # Cluster mode: the node's id and its cluster's name (None on a single
    # node); whether its lease is valid by its own clock (it serves nothing
    # when not) and the seconds left until its deadline; the etcd revision
    # its view of the cluster is at.
    node_id: str | None = None
    cluster: str | None = None
    lease_valid: bool = False
    lease_remaining_seconds: float = 0.0
    cluster_revision: int = 0

    @property
    def clustered(self) -> bool:
        """Whether the node runs in cluster mode (else it is a single node)."""
        return self.cluster is not None

    @classmethod
    def from_proto(cls, response: pb.NodeStatusResponse) -> NodeStatus:
        return cls(
            version=response.version,
            python_version=response.python_version,
            started=response.started,
            uptime_seconds=response.uptime_seconds,
            data_dir=response.data_dir,
            snapshot_root=response.snapshot_root,
            data_address=response.data_address,
            control_address=response.control_address,
            partitions=tuple(PartitionStatus.from_proto(p) for p in response.partitions),
            node_id=response.node_id or None,
            cluster=response.cluster or None,
            lease_valid=response.lease_valid,
            lease_remaining_seconds=response.lease_remaining_seconds,
            cluster_revision=response.cluster_revision,
        )


class AdminClient:
    """A connection to one node's control plane. Use ``AdminClient.connect``."""

    def __init__(self, channel: Channel, *, rate_limit_wait: float = RATE_LIMIT_WAIT) -> None:
        self._channel = channel
        self.rate_limit_wait = rate_limit_wait

    async def _unary(
        self, service: str, method: str, request: Message, response_type: type[M]
    ) -> M:
        """One call; refused by the node's rate limit, it is made again after
        the wait the node asks for (nothing was applied), for up to
        ``rate_limit_wait`` seconds in all.

        Raises:
            ResourceExhaustedError: still refused after that.
        """
        waited = 0.0
        while True:
            try:
                return await self._channel.unary(service, method, request, response_type)
            except ResourceExhaustedError as exc:
                wait = exc.retry_after
                if wait is None or waited + wait > self.rate_limit_wait:
                    raise
            await anyio.sleep(wait)
            waited += wait

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: str | Address = DEFAULT_CONTROL_ADDR,
        *,
        token: str | None = None,
        token_file: Path | str | None = None,
        tls: bool = False,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rate_limit_wait: float = RATE_LIMIT_WAIT,
    ) -> AsyncIterator[AdminClient]:
        """Connect to the control plane at ``address`` (``HOST:PORT``).

        Args:
            token, token_file: the control plane's token (default:
                ``$MKV_TOKEN`` when set; a node without one serves only loopback).
            tls, ca, cert, key, ssl_context: TLS, as ``mkv.client.credentials.client_credentials``.
            rate_limit_wait: how long, in all, one call may wait out the
                node's rate limit before ResourceExhaustedError (0: never waits).

        Raises:
            UnavailableError: nothing answers there, or the TLS handshake failed.
            ConfigError: a token or certificate file cannot be read.
        """
        credentials = await client_credentials(
            env_var=CONTROL_TOKEN_ENV,
            token=token,
            token_file=token_file,
            tls=tls,
            ca=ca,
            cert=cert,
            key=key,
            ssl_context=ssl_context,
        )
        async with open_channel(
            address, metadata=credentials.metadata, ssl_context=credentials.ssl_context
        ) as channel:
            yield cls(channel, rate_limit_wait=rate_limit_wait)

    async def add_partition(
        self,
        *,
        start: bytes = b"",
        end: bytes | None = None,
        partition_id: str | None = None,
        store: str | None = None,
        pipeline: Sequence[str] | None = None,
        snapshot: str | None = None,
        node: str | None = None,
        replicas: int = 0,
    ) -> PartitionInfo:
        """Create a partition owning ``[start, end)`` (``end=None``: unbounded).

        ``pipeline`` lists stage specs in order (see ``mkv.pipeline``); None
        gives the store kind's default.

        With ``snapshot`` (a manifest's path in the server's snapshot root),
        the partition starts from that snapshot: its range is the snapshot's
        (leave ``start`` and ``end`` out, or give exactly that range), its
        store kind and pipeline the snapshot's unless ``store`` and
        ``pipeline`` say otherwise. What the node could not honour (a
        snapshot that does not record its pipeline) is in the result's
        ``warnings``.

        In cluster mode the partition goes to ``node`` (a node id), or to
        the live node leading the fewest partitions when None, and gets
        ``replicas`` replicas on distinct nodes (0: the cluster's default;
        more than the live nodes are capped, with a warning).

        Raises:
            AlreadyExistsError: the id is taken or the range overlaps another.
            FailedPreconditionError: ``node`` given to a single node.
            InvalidArgumentError: a malformed id, range or store kind; or a
                bad snapshot path, a corrupt snapshot, or another range.
        """
        request = pb.AddPartitionRequest(
            id=partition_id or "",
            start=start,
            end=end or b"",
            store=store or "",
            pipeline=pipeline or (),
            snapshot=snapshot or "",
            node=node or "",
            replicas=replicas,
        )
        response = await self._unary(SERVICE, "AddPartition", request, pb.AddPartitionResponse)
        info = PartitionInfo.from_proto(response.partition)
        return attrs.evolve(info, warnings=tuple(response.warnings))

    async def remove_partition(self, partition_id: str) -> PartitionInfo:
        """Drain and delete a partition, its data included.

        Raises:
            NotFoundError: no such partition.
        """
        request = pb.RemovePartitionRequest(id=partition_id)
        response = await self._unary(
            SERVICE, "RemovePartition", request, pb.RemovePartitionResponse
        )
        return PartitionInfo.from_proto(response.partition)

    async def reopen_partition(self, partition_id: str) -> PartitionInfo:
        """Reopen a failed partition on its files, as a restart would.

        Raises:
            NotFoundError: no such partition.
            FailedPreconditionError: the partition has not failed.
            InternalError: it cannot be opened yet (the message says why).
        """
        request = pb.ReopenPartitionRequest(id=partition_id)
        response = await self._unary(
            SERVICE, "ReopenPartition", request, pb.ReopenPartitionResponse
        )
        return PartitionInfo.from_proto(response.partition)

    async def list_partitions(self) -> list[PartitionInfo]:
        response = await self._unary(
            SERVICE, "ListPartitions", pb.ListPartitionsRequest(), pb.ListPartitionsResponse
        )
        return [PartitionInfo.from_proto(p) for p in response.partitions]

    async def list_nodes(self) -> list[NodeInfo]:
        """The cluster's nodes, in the order the node answering lists them.

        Raises:
            FailedPreconditionError: the node is not in cluster mode.
        """
        response = await self._unary(
            SERVICE, "ListNodes", pb.ListNodesRequest(), pb.ListNodesResponse
        )
        return [NodeInfo.from_proto(n) for n in response.nodes]

    async def move_partition(self, partition_id: str, node: str) -> str:
        """Start moving a partition to ``node`` (a node id), online; returns
        the operation id (``wait_operation`` gives the partition on its new
        node in its ``moved``).

        Raises:
            NotFoundError: no such partition or node.
            FailedPreconditionError: not in cluster mode; the target is not
                alive; the partition is not active or already moving.
        """
        request = pb.MovePartitionRequest(id=partition_id, node=node)
        response = await self._unary(SERVICE, "MovePartition", request, pb.MovePartitionResponse)
        return response.operation_id

    async def transfer_leader(self, partition_id: str, node: str) -> PartitionInfo:
        """Make ``node`` (an in-sync replica) the partition's leader; returns
        the partition once ``node`` leads it.

        Raises:
            NotFoundError: no such partition or live node.
            FailedPreconditionError: not in cluster mode; ``node`` holds no
                replica, is not in sync, or did not catch up in time.
        """
        request = pb.TransferLeaderRequest(id=partition_id, node=node)
        response = await self._unary(SERVICE, "TransferLeader", request, pb.TransferLeaderResponse)
        return PartitionInfo.from_proto(response.partition)

    async def drain_node(self, node: str) -> str:
        """Start moving every partition off ``node``, one at a time; returns
        the operation id (``wait_operation`` gives the moved partitions in its
        ``drained``). The node stays a member, leading nothing.

        Raises:
            NotFoundError: no such node.
            FailedPreconditionError: not in cluster mode, or no other live node.
        """
        request = pb.DrainNodeRequest(node=node)
        response = await self._unary(SERVICE, "DrainNode", request, pb.DrainNodeResponse)
        return response.operation_id

    async def node_status(self) -> NodeStatus:
        """The node's version, uptime, directories and addresses, and each
        partition's state, queues and log sync lag. Cheap: it reads no store.

        Raises:
            UnimplementedError: the node is older than this call.
        """
        response = await self._unary(
            SERVICE, "NodeStatus", pb.NodeStatusRequest(), pb.NodeStatusResponse
        )
        return NodeStatus.from_proto(response)

    async def snapshot(self, partition_id: str, path: str = "") -> str:
        """Start a snapshot of a partition into ``path`` (a directory in the
        server's snapshot root; "" for the root); returns the operation id.

        Raises:
            NotFoundError: no such partition.
            InvalidArgumentError: the path is malformed or leaves the root.
            AlreadyExistsError: a snapshot of the partition is already running.
        """
        request = pb.SnapshotRequest(partition_id=partition_id, path=path)
        response = await self._unary(SERVICE, "Snapshot", request, pb.SnapshotResponse)
        return response.operation_id

    async def split_partition(
        self, partition_id: str, at: bytes | str, *, new_id: str | None = None
    ) -> str:
        """Start splitting a partition at ``at``: it keeps the keys below, a
        new partition (``new_id``, or one the server picks) takes ``at`` and
        above; returns the operation id (``wait_operation`` gives the new
        partition in its ``split``).

        Raises:
            NotFoundError: no such partition.
            InvalidArgumentError: ``at`` is not strictly inside its range, or a bad id.
            AlreadyExistsError: ``new_id`` is taken.
            FailedPreconditionError: the partition is not active.
        """
        key = at.encode() if isinstance(at, str) else at
        request = pb.SplitPartitionRequest(id=partition_id, at=key, new_id=new_id or "")
        response = await self._unary(SERVICE, "SplitPartition", request, pb.SplitPartitionResponse)
        return response.operation_id

    async def merge_partitions(self, left: str, right: str) -> str:
        """Start merging the adjacent partitions ``left`` (the lower range) and
        ``right`` into ``left``; returns the operation id (``wait_operation``
        gives the survivor in its ``merged``).

        Raises:
            NotFoundError: no such partition.
            InvalidArgumentError: not adjacent in that order, different store
                kinds, or memory partitions.
            FailedPreconditionError: one is not active, or ``left`` is still
                purging keys of ``right``'s range.
        """
        request = pb.MergePartitionsRequest(left=left, right=right)
        response = await self._unary(
            SERVICE, "MergePartitions", request, pb.MergePartitionsResponse
        )
        return response.operation_id

    async def get_operation(self, operation_id: str) -> OperationInfo:
        """Raises:
        NotFoundError: the server knows no such operation (or no longer).
        """
        response = await self._unary(
            SERVICE,
            "GetOperation",
            pb.GetOperationRequest(id=operation_id),
            pb.GetOperationResponse,
        )
        return OperationInfo.from_proto(response.operation)

    async def wait_operation(
        self,
        operation_id: str,
        *,
        on_progress: Callable[[OperationInfo], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> OperationInfo:
        """Poll until the operation finishes; ``on_progress`` sees every answer.

        Returns:
            The finished operation (``snapshot`` holds a snapshot's result).

        Raises:
            MkvError: the operation failed, as the error it failed with.
            NotFoundError: the server knows no such operation.
        """
        while True:
            info = await self.get_operation(operation_id)
            if on_progress is not None:
                on_progress(info)
            if not info.running:
                if info.error is not None:
                    raise info.error
                return info
            await anyio.sleep(poll_interval)
