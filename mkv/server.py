"""A node: the partition registry and the two gRPC services in front of it.

Each port also serves the standard health and reflection services (no token
needed). The control plane requires a token and is rate limited; without a
token it may listen on loopback only.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping

import trio

from mkv.auth import CONTROL_TOKEN_ENV, DATA_TOKEN_ENV, TokenCheck, is_loopback, load_token
from mkv.config import Config, ConfigError
from mkv.controlplane import ControlPlane
from mkv.dataplane import DataPlane
from mkv.errors import ResourceExhaustedError
from mkv.health import HEALTH_SERVICE, HealthService
from mkv.ratelimit import TokenBucket
from mkv.reflection import REFLECTION_VERSIONS, ReflectionService
from mkv.registry import PartitionRegistry
from mkv.rpc import CallInfo, Guard, RpcServer
from mkv.tls import server_context
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE, Address

__all__ = ["Node"]

log = logging.getLogger(__name__)


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
        control_token = load_token(config.token_file, CONTROL_TOKEN_ENV, environ)
        data_token = load_token(config.data_token_file, DATA_TOKEN_ENV, environ)
        if control_token is None and not is_loopback(config.control_addr.host):
            raise ConfigError(
                f"the control plane has no token, so it may only listen on loopback, "
                f"not {config.control_addr}: set token_file or {CONTROL_TOKEN_ENV}"
            )
        self.control_authenticated = control_token is not None
        tls: ssl.SSLContext | None = None
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            tls = server_context(
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
        )
        self._data = DataPlane(self.registry)
        self._data_server = RpcServer(
            DATA_SERVICE,
            self._data.methods(),
            config.data_addr,
            max_request_bytes=config.max_request_bytes,
            drain_timeout=config.drain_timeout,
            stream_stall_timeout=config.stream_stall_timeout,
            guard=TokenCheck(data_token, "data plane") if data_token is not None else None,
            deadline_cap=config.data_deadline_cap,
            max_concurrent_streams=config.max_concurrent_streams,
            max_connections_per_address=config.max_connections_per_address,
            ssl_context=tls,
        )
        bucket = TokenBucket(config.control_rate, config.control_burst)
        control_guards: list[Guard] = [_rate_limit(bucket)]
        if control_token is not None:
            control_guards.insert(0, TokenCheck(control_token, "control plane"))
        self._control_server = RpcServer(
            CONTROL_SERVICE,
            ControlPlane(self.registry).methods(),
            config.control_addr,
            max_request_bytes=config.max_request_bytes,
            drain_timeout=config.drain_timeout,
            guard=_all_of(control_guards),
            deadline_cap=config.control_deadline_cap,
            max_concurrent_streams=config.max_concurrent_streams,
            max_connections_per_address=config.max_connections_per_address,
            ssl_context=tls,
        )
        for server in (self._data_server, self._control_server):
            server.add_service(HEALTH_SERVICE, self.health.methods())
            names = [*server.service_names, *REFLECTION_VERSIONS]
            for version in REFLECTION_VERSIONS:
                server.add_service(version, ReflectionService(version, names).methods())
        self._stopping = trio.Event()

    @property
    def data_address(self) -> Address:
        return self._data_server.address

    @property
    def control_address(self) -> Address:
        return self._control_server.address

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; then stop accepting, answer what is in flight,
        drain the partitions and close their stores.

        Raises:
            OSError: a port cannot be bound (for example, it is in use).
            StorageError: the data directory or a store cannot be opened.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.registry.run)
            try:
                async with trio.open_nursery() as servers:
                    await servers.start(self._data_server.run)
                    self._data.advertised_address = str(self.data_address)
                    await servers.start(self._control_server.run)
                    log.info(
                        "serving data plane on %s, control plane on %s, data in %s",
                        self.data_address,
                        self.control_address,
                        self.config.data_dir,
                    )
                    if not self.control_authenticated:
                        # Like Redis's protected mode: safe only because
                        # nothing beyond this machine can reach the port.
                        log.warning(
                            "the control plane runs WITHOUT a token, on loopback only (%s); "
                            "set token_file or %s to require one",
                            self.control_address,
                            CONTROL_TOKEN_ENV,
                        )
                    self.health.set_serving(True)
                    task_status.started(self)
                    await self._stopping.wait()
                    self.health.set_serving(False)
                    if self.config.shutdown_grace > 0:
                        log.info(
                            "shutting down: health is NOT_SERVING; serving %.1f s more",
                            self.config.shutdown_grace,
                        )
                        await trio.sleep(self.config.shutdown_grace)
                    log.info("shutting down: draining in-flight requests")
                    self._data_server.stop()
                    self._control_server.stop()
            finally:
                # Only after the servers have answered what they took in.
                self.registry.close()

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
