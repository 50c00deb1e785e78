"""A node: the partition registry and the two gRPC services in front of it.

Each port also serves the standard health and reflection services (no token
needed). The control plane requires a token and is rate limited; without a
token it may listen on loopback only.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from mkv.cluster.identity import load_node_id
from mkv.cluster.keyspace import NodeRecord
from mkv.cluster.membership import ClusterSettings, Membership
from mkv.errors import ResourceExhaustedError
from mkv.node.cluster_local import RegistryPartitions, cluster_pipeline
from mkv.node.config import Config, ConfigError
from mkv.node.controlplane import ControlPlane, NodeFacts
from mkv.node.dataplane import DataPlane
from mkv.node.follower import REPLICATION_SERVICE
from mkv.node.registry import PartitionRegistry
from mkv.node.replication import OUTGOING_DIR, ReplicationService
from mkv.node.snapshot_service import SnapshotService
from mkv.node.statistics import RegistryStatistics
from mkv.observe.logs import RequestLog, fields
from mkv.observe.metrics import HISTOGRAMS, NodeMetrics, RequestMetrics
from mkv.observe.metrics_http import MetricsServer
from mkv.operations import OperationRegistry
from mkv.rpc.auth import CONTROL_TOKEN_ENV, DATA_TOKEN_ENV, TokenCheck, is_loopback, load_token
from mkv.rpc.connection_limits import RequestMemory
from mkv.rpc.health import HEALTH_SERVICE, HealthService
from mkv.rpc.ratelimit import TokenBucket
from mkv.rpc.reflection import REFLECTION_VERSIONS, ReflectionService
from mkv.rpc.server import (
    AnyHandler,
    BidiStream,
    CallInfo,
    Guard,
    RpcObserver,
    RpcServer,
    ServerStream,
)
from mkv.rpc.tls import server_context
from mkv.snapshots.paths import SnapshotRoot
from mkv.units import format_utc
from mkv.version import build_info
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE, Address
from mkv.worker import WorkerPool

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["Node"]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.server")


class Node:
    """One mkv server process's worth of serving.

    ``run`` reports started once both ports are bound and every partition is
    serving; ``data_address`` and ``control_address`` then hold the bound
    addresses (useful with port 0).

    Args:
        config: the settings.
        environ: where MKV_TOKEN and MKV_DATA_TOKEN are looked up when no
            token file is configured (default: the process environment).

    Raises:
        ConfigError: a token or TLS file cannot be read, or the control plane
            has no token and would listen beyond loopback.
    """

    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        environ = os.environ if environ is None else environ
        self._control_token = load_token(config.token_file, CONTROL_TOKEN_ENV, environ)
        data_token = load_token(config.data_token_file, DATA_TOKEN_ENV, environ)
        if self._control_token is None and not is_loopback(config.control_addr.host):
            raise ConfigError(
                f"the control plane has no token, so it may only listen on loopback, "
                f"not {config.control_addr}: set token_file or {CONTROL_TOKEN_ENV}"
            )
        self.control_authenticated = self._control_token is not None
        self._tls: ssl.SSLContext | None = None
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            self._tls = server_context(
                config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
            )
        self.health = HealthService([DATA_SERVICE, CONTROL_SERVICE])
        self.registry = PartitionRegistry(
            config.data_dir,
            config.default_store,
            config.default_pipeline,
            watch_retention_bytes=config.watch_retention_bytes,
            durable_dir=config.durable_dir,
            cache_bytes=config.cache_bytes,
            # Process-wide histograms, recorded with or without a /metrics endpoint.
            stage_observer=HISTOGRAMS,
            # In cluster mode etcd says what this node holds (docs/cluster.md).
            create_default=not config.clustered,
            replica_grace=config.replica_grace,
        )
        # Its replicas fetch from other nodes' control ports under this token.
        self.registry.control_token = self._control_token
        # Cluster mode's membership; made in run() (the node id is on disk).
        self.cluster: Membership | None = None
        self._local: RegistryPartitions | None = None
        self.operations = OperationRegistry()
        # Served on the control port: node to node, under the control token.
        self.replication = ReplicationService(
            self.registry,
            config.data_dir / OUTGOING_DIR,
            max_answer_bytes=config.max_request_bytes,
        )
        # Set in run(): creating the root is disk work, not for the constructor.
        self.snapshots: SnapshotService | None = None
        # time.time() and time.monotonic() when run() began (NodeStatus).
        self._started = (time.time(), time.monotonic())
        self._request_log = RequestLog(config.slow_request_seconds)
        # Without a metrics endpoint nothing is counted: the request log alone.
        self._observer: RpcObserver = self._request_log
        self.metrics: NodeMetrics | None = None
        self._metrics_server: MetricsServer | None = None
        if config.metrics_addr is not None:
            requests = self._observer = RequestMetrics(request_log=self._request_log)
            self.metrics = NodeMetrics(RegistryStatistics(self.registry), requests)
            self._metrics_server = MetricsServer(config.metrics_addr, self.metrics.render)
        self._data = DataPlane(self.registry)
        # One budget for the request bytes buffered on both ports.
        limits = config.connection_limits
        self._request_memory = RequestMemory(limits.request_buffer_bytes)
        self._data_server = RpcServer(
            DATA_SERVICE,
            self._observed(DATA_SERVICE, self._data.methods()),
            config.data_addr,
            max_request_bytes=config.max_request_bytes,
            drain_timeout=config.drain_timeout,
            stream_stall_timeout=config.stream_stall_timeout,
            session_max_in_flight=config.session_max_in_flight,
            observer=self._observer,
            guard=TokenCheck(data_token, "data plane") if data_token is not None else None,
            deadline_cap=config.data_deadline_cap,
            max_concurrent_streams=config.max_concurrent_streams,
            max_connections_per_address=config.max_connections_per_address,
            ssl_context=self._tls,
            connection_limits=limits,
            request_memory=self._request_memory,
        )
        self._add_standard_services(self._data_server)
        self._control_server: RpcServer | None = None
        self._stopping = trio.Event()

    @property
    def data_address(self) -> Address:
        return self._data_server.address

    @property
    def control_address(self) -> Address:
        assert self._control_server is not None, "not running"
        return self._control_server.address

    @property
    def metrics_address(self) -> Address | None:
        """Where ``/metrics`` is served; None when metrics are off."""
        return None if self._metrics_server is None else self._metrics_server.address

    def _observed(
        self, service: str, methods: Mapping[str, tuple[type[Message], AnyHandler]]
    ) -> Mapping[str, tuple[type[Message], AnyHandler]]:
        """``methods``, after telling the request log and metrics which they are."""
        for name, (_, handler) in methods.items():
            streaming = isinstance(handler, ServerStream | BidiStream)
            self._request_log.declare(service, name, streaming=streaming)
            if isinstance(self._observer, RequestMetrics):
                self._observer.declare(service, name, streaming=streaming)
        return methods

    def _add_standard_services(self, server: RpcServer) -> None:
        """Health and reflection (both versions) on ``server``'s port."""
        server.add_service(HEALTH_SERVICE, self._observed(HEALTH_SERVICE, self.health.methods()))
        names = [*server.service_names, *REFLECTION_VERSIONS]
        for version in REFLECTION_VERSIONS:
            methods = ReflectionService(version, names).methods()
            server.add_service(version, self._observed(version, methods))

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; then stop accepting, answer what is in flight,
        drain the partitions and close their stores.

        Raises:
            OSError: a port cannot be bound (for example, it is in use).
            StorageError: the data directory or a store cannot be opened.
        """
        self._started = (time.time(), time.monotonic())
        root = await trio.to_thread.run_sync(SnapshotRoot, self.config.snapshot_dir)
        self.snapshots = SnapshotService(self.registry, self.operations, root)
        if self.config.clustered:
            # Before either port opens: from the first request on, the data
            # plane admits only what this node leads under a valid lease.
            self.cluster = self._data.cluster = await self._membership()
            if self.metrics is not None:
                self.metrics.cluster = self.cluster.metric_numbers
        bucket = TokenBucket(self.config.control_rate, self.config.control_burst)
        control_guards: list[Guard] = [_rate_limit(bucket)]
        if self._control_token is not None:
            control_guards.insert(0, TokenCheck(self._control_token, "control plane"))
        control_server = self._control_server = RpcServer(
            CONTROL_SERVICE,
            self._observed(
                CONTROL_SERVICE,
                ControlPlane(
                    self.registry,
                    self.snapshots,
                    self._facts,
                    cluster=self.cluster,
                    local=self._local,
                    token=self._control_token,
                ).methods(),
            ),
            self.config.control_addr,
            max_request_bytes=self.config.max_request_bytes,
            drain_timeout=self.config.drain_timeout,
            observer=self._observer,
            guard=_all_of(control_guards),
            deadline_cap=self.config.control_deadline_cap,
            max_concurrent_streams=self.config.max_concurrent_streams,
            max_connections_per_address=self.config.max_connections_per_address,
            ssl_context=self._tls,
            connection_limits=self.config.connection_limits,
            request_memory=self._request_memory,
        )
        control_server.add_service(
            REPLICATION_SERVICE,
            self._observed(REPLICATION_SERVICE, self.replication.methods()),
            guard=_all_of(control_guards),
        )
        self._add_standard_services(control_server)
        # Snapshots a leader was streaming when the node stopped.
        await trio.to_thread.run_sync(
            lambda: shutil.rmtree(self.config.data_dir / OUTGOING_DIR, ignore_errors=True)
        )
        log.info(
            "starting: data in %s",
            self.config.data_dir,
            extra=fields(event="node_starting", data_dir=str(self.config.data_dir)),
        )
        # Started here, not in the constructor: a Node that never runs leaves
        # no threads behind. Closed once every partition has stopped.
        workers = self.registry.workers = WorkerPool(self.config.worker_threads)
        try:
            await self._serve(control_server, task_status)
        finally:
            self.registry.workers = None
            with trio.CancelScope(shield=True):
                await workers.aclose()
        log.info("stopped", extra=fields(event="node_stopped"))

    async def _serve(self, control_server: RpcServer, task_status: trio.TaskStatus[Node]) -> None:
        """The servers, partitions and operations of ``run``, until ``stop()``."""
        metrics_scope = trio.CancelScope()
        cluster_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.registry.run)
            await nursery.start(self.operations.run)
            try:
                async with trio.open_nursery() as servers:
                    await servers.start(self._data_server.run)
                    self._data.advertised_address = str(self.data_address)
                    await servers.start(control_server.run)
                    if self.cluster is not None:
                        await nursery.start(self._run_cluster, self.cluster, cluster_scope)
                    await nursery.start(self._serve_metrics, metrics_scope)
                    log.info(
                        "serving data plane on %s, control plane on %s, data in %s",
                        self.data_address,
                        self.control_address,
                        self.config.data_dir,
                        extra=fields(
                            event="listening",
                            data_addr=str(self.data_address),
                            control_addr=str(self.control_address),
                        ),
                    )
                    if not self.control_authenticated:
                        # Like Redis's protected mode: safe only because
                        # nothing beyond this machine can reach the port.
                        log.warning(
                            "the control plane runs WITHOUT a token, on loopback only (%s); "
                            "set token_file or %s to require one",
                            self.control_address,
                            CONTROL_TOKEN_ENV,
                            extra=fields(event="unauthenticated_control_plane"),
                        )
                    self.health.set_serving(True)
                    task_status.started(self)
                    await self._stopping.wait()
                    self.health.set_serving(False)
                    if self.config.shutdown_grace > 0:
                        log.info(
                            "shutting down: health is NOT_SERVING; serving %.1f s more",
                            self.config.shutdown_grace,
                            extra=fields(event="shutdown_grace"),
                        )
                        await trio.sleep(self.config.shutdown_grace)
                    log.info(
                        "shutting down: draining in-flight requests", extra=fields(event="drain")
                    )
                    self._data_server.stop()
                    control_server.stop()
            finally:
                # Only after the servers have answered what they took in; the
                # operations first, as they read from partitions.
                self.operations.close()
                # Leaves the cluster (revoking the lease) before the partitions close.
                cluster_scope.cancel()
                self.registry.close()
                metrics_scope.cancel()

    async def _membership(self) -> Membership:
        config = self.config
        node_id = await trio.to_thread.run_sync(load_node_id, config.data_dir, config.node_id)
        self.registry.node_id = node_id  # its replicas' name on their Fetch streams
        settings = ClusterSettings(
            config.etcd,
            config.cluster,
            node_id,
            config.lease_ttl,
            replicas=config.replicas,
            min_isr=config.effective_min_isr,
            replica_lag_timeout=config.replica_lag_timeout,
            node_dead_timeout=config.node_dead_timeout,
            replicate=config.replicate,
        )
        # The data path's leaders drop a follower lagging this long (issue 16).
        self.registry.replica_lag_timeout = config.replica_lag_timeout
        self._local = RegistryPartitions(self.registry)
        return Membership(
            settings,
            self._local,
            default_store=config.default_store,
            default_pipeline=cluster_pipeline(
                self.registry.pipeline_for(config.default_store), config.replicate
            ),
        )

    async def _run_cluster(
        self,
        cluster: Membership,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Join the cluster with this node's advertised addresses, then stay
        a member until ``scope`` is cancelled."""
        data = self._advertised(self.data_address)
        control = self._advertised(self.control_address)
        record = NodeRecord(
            cluster.node_id,
            data=data,
            control=control,
            # mkv.v1.Replication is served on the control port (node to node).
            replication=control,
            version=build_info()["version"],
            started=format_utc(self._started[0]),
        )
        with scope:
            # Handover's fence watchdogs live as long as the membership.
            async with trio.open_nursery() as nursery:
                self.replication.cluster = cluster
                self.replication.nursery = nursery
                await nursery.start(functools.partial(cluster.run, record))
                task_status.started()
                await trio.sleep_forever()

    def _advertised(self, bound: Address) -> str:
        """``bound`` as other nodes and clients are told it.

        Raises:
            ConfigError: bound to a wildcard address and no advertise_addr.
        """
        host = self.config.advertise_addr or bound.host
        if host in ("0.0.0.0", "::", "[::]", ""):
            raise ConfigError(
                f"{bound} is a wildcard address: set advertise_addr (--advertise-addr) to "
                "the host other nodes and clients reach this node by"
            )
        return str(Address(host, bound.port))

    def _facts(self) -> NodeFacts:
        assert self.snapshots is not None, "asked for by the control plane, which run() starts"
        return NodeFacts(
            started=self._started[0],
            started_monotonic=self._started[1],
            # Resolved when the node started (SnapshotRoot), and the data
            # directory made absolute without touching the disk here.
            data_dir=self.config.data_dir.absolute(),
            snapshot_root=self.snapshots.root.path,
            data_address=self.data_address,
            control_address=self.control_address,
        )

    async def _serve_metrics(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Serve /metrics (when configured) until ``scope`` is cancelled."""
        if self._metrics_server is None or self.metrics is None:
            task_status.started()
            return
        with scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._metrics_server.run)
                nursery.start_soon(self.metrics.refresh_store_stats)
                task_status.started()

    def stop(self) -> None:
        """Begin a graceful shutdown; ``run`` returns when it is complete."""
        self._stopping.set()


def _rate_limit(bucket: TokenBucket) -> Guard:
    def admit(call: CallInfo) -> None:
        wait = bucket.take(trio.current_time())
        if wait > 0:
            raise ResourceExhaustedError(
                f"Too many control-plane requests; retry after {max(wait, 0.01):.2f} seconds.",
                retry_after=wait,
            )

    return admit


def _all_of(guards: list[Guard]) -> Guard:
    """One guard running ``guards`` in order; the first refusal is the answer."""

    def admit(call: CallInfo) -> None:
        for guard in guards:
            guard(call)

    return admit
