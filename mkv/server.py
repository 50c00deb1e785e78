"""A node: the partition registry and the two gRPC services in front of it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from mkv.config import Config
from mkv.controlplane import ControlPlane
from mkv.dataplane import DataPlane
from mkv.logs import RequestLog, fields
from mkv.metrics import NodeMetrics, RequestMetrics
from mkv.metrics_http import MetricsServer
from mkv.operations import OperationRegistry
from mkv.registry import PartitionRegistry
from mkv.rpc import Handler, RpcObserver, RpcServer, ServerStream
from mkv.snapshots.paths import SnapshotRoot
from mkv.snapshots.service import SnapshotService
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE, Address

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["Node"]

log = logging.getLogger(__name__)


class Node:
    """One mkv server process's worth of serving.

    ``run`` reports started once both ports are bound and every partition is
    serving; ``data_address`` and ``control_address`` then hold the bound
    addresses (useful with port 0).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = PartitionRegistry(
            config.data_dir,
            config.default_store,
            config.default_pipeline,
            watch_retention_bytes=config.watch_retention_bytes,
            durable_dir=config.durable_dir,
            cache_bytes=config.cache_bytes,
        )
        self.operations = OperationRegistry()
        # Set in run(): creating the root is disk work, not for the constructor.
        self.snapshots: SnapshotService | None = None
        self._request_log = RequestLog(config.slow_request_seconds)
        # Without a metrics endpoint nothing is counted: the request log alone.
        self._observer: RpcObserver = self._request_log
        self.metrics: NodeMetrics | None = None
        self._metrics_server: MetricsServer | None = None
        if config.metrics_addr is not None:
            requests = self._observer = RequestMetrics(request_log=self._request_log)
            self.metrics = NodeMetrics(self.registry, requests)
            self._metrics_server = MetricsServer(config.metrics_addr, self.metrics.render)
        self._data = DataPlane(self.registry)
        self._data_server = RpcServer(
            DATA_SERVICE,
            self._observed(DATA_SERVICE, self._data.methods()),
            config.data_addr,
            max_request_bytes=config.max_request_bytes,
            drain_timeout=config.drain_timeout,
            stream_stall_timeout=config.stream_stall_timeout,
            observer=self._observer,
        )
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
        self, service: str, methods: Mapping[str, tuple[type[Message], Handler | ServerStream]]
    ) -> Mapping[str, tuple[type[Message], Handler | ServerStream]]:
        """``methods``, after telling the request log and metrics which they are."""
        for name, (_, handler) in methods.items():
            streaming = isinstance(handler, ServerStream)
            self._request_log.declare(service, name, streaming=streaming)
            if isinstance(self._observer, RequestMetrics):
                self._observer.declare(service, name, streaming=streaming)
        return methods

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; then stop accepting, answer what is in flight,
        drain the partitions and close their stores.

        Raises:
            OSError: a port cannot be bound (for example, it is in use).
            StorageError: the data directory or a store cannot be opened.
        """
        root = await trio.to_thread.run_sync(SnapshotRoot, self.config.snapshot_dir)
        self.snapshots = SnapshotService(self.registry, self.operations, root)
        control_server = self._control_server = RpcServer(
            CONTROL_SERVICE,
            self._observed(CONTROL_SERVICE, ControlPlane(self.registry, self.snapshots).methods()),
            self.config.control_addr,
            max_request_bytes=self.config.max_request_bytes,
            drain_timeout=self.config.drain_timeout,
            observer=self._observer,
        )
        log.info(
            "starting: data in %s",
            self.config.data_dir,
            extra=fields(event="node_starting", data_dir=str(self.config.data_dir)),
        )
        metrics_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.registry.run)
            await nursery.start(self.operations.run)
            try:
                async with trio.open_nursery() as servers:
                    await servers.start(self._data_server.run)
                    self._data.advertised_address = str(self.data_address)
                    await servers.start(control_server.run)
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
                    task_status.started(self)
                    await self._stopping.wait()
                    log.info(
                        "shutting down: draining in-flight requests", extra=fields(event="drain")
                    )
                    self._data_server.stop()
                    control_server.stop()
            finally:
                # Only after the servers have answered what they took in; the
                # operations first, as they read from partitions.
                self.operations.close()
                self.registry.close()
                metrics_scope.cancel()
        log.info("stopped", extra=fields(event="node_stopped"))

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
