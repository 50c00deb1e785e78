"""Helpers for cluster tests: real etcd, real ``mkv serve`` subprocesses in
cluster mode, and grpcio calls to them (tests/grpcio_stubs.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import trio

from mkv.v1 import control_pb2, data_pb2
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call, grpcio_channel
from tests.processes import ServerProcess

LEASE_TTL = 2
# Log lines of each node printed when a cluster test fails.
LOG_TAIL_LINES = 40
WAIT = 20.0


def cluster_node(
    tmp_path: Path, name: str, etcd: EtcdProcess, *extra: str, lease_ttl: int = LEASE_TTL
) -> ServerProcess:
    return ServerProcess(
        tmp_path / name,
        "--etcd",
        etcd.endpoint,
        "--cluster",
        "test",
        "--lease-ttl",
        str(lease_ttl),
        *extra,
    )


@contextlib.asynccontextmanager
async def running(*nodes: ServerProcess) -> AsyncIterator[tuple[ServerProcess, ...]]:
    """Start ``nodes`` in order (the first creates the cluster); kill them
    after. A test that fails prints each node's last log lines (pytest shows
    them with the failure): a failure in CI is then read from its report."""
    try:
        for node in nodes:
            await node.start()
        yield nodes
    except BaseException:
        for node in nodes:
            # Clients' failed calls (many, in a failover) left out.
            lines = [
                line
                for line in node.stderr().splitlines()
                if not ("mkv.requests" in line and "DataPlane/" in line)
            ]
            tail = lines[-LOG_TAIL_LINES:]
            print(f"--- the last {len(tail)} log lines of {node.data_dir.name} ---")
            print("\n".join(tail))
        raise
    finally:
        for node in nodes:
            await node.kill()


class _Details(
    NamedTuple(
        "_Details",
        [
            ("method", str),
            ("timeout", float | None),
            ("metadata", Any),
            ("credentials", Any),
            ("wait_for_ready", bool | None),
            ("compression", Any),
        ],
    ),
    grpc.ClientCallDetails,
):
    """A unary call's details with other metadata (grpcio's own are read-only)."""


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every unary call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return continuation(
            _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            request,
        )


class Stubs:
    """grpcio stubs on a node's two ports, opened per call (addresses change on restart).

    Args:
        token: the nodes' control token, sent on every control call (a
            control plane beyond loopback requires one).
    """

    def __init__(self, stubs: GrpcioStubs, *, token: str | None = None) -> None:
        self.stubs = stubs
        self.token = token

    @contextlib.contextmanager
    def data(self, node: ServerProcess) -> Iterator[Any]:
        with grpcio_channel(node.data_addr) as channel:
            yield self.stubs.data_stub(channel)

    @contextlib.contextmanager
    def control(self, node: ServerProcess) -> Iterator[Any]:
        with grpcio_channel(node.control_addr) as channel:
            if self.token is None:
                yield self.stubs.control_stub(channel)
            else:
                yield self.stubs.control_stub(grpc.intercept_channel(channel, _Bearer(self.token)))

    async def status(self, node: ServerProcess) -> control_pb2.NodeStatusResponse:
        with self.control(node) as control:
            response: control_pb2.NodeStatusResponse = await call(
                control.NodeStatus, control_pb2.NodeStatusRequest()
            )
            return response

    async def map(self, node: ServerProcess) -> data_pb2.PartitionMapResponse:
        with self.data(node) as data:
            response: data_pb2.PartitionMapResponse = await call(
                data.PartitionMap, data_pb2.PartitionMapRequest()
            )
            return response

    async def partitions(self, node: ServerProcess) -> list[control_pb2.PartitionInfo]:
        with self.control(node) as control:
            response = await call(control.ListPartitions, control_pb2.ListPartitionsRequest())
            return list(response.partitions)

    async def nodes(self, node: ServerProcess) -> control_pb2.ListNodesResponse:
        with self.control(node) as control:
            response: control_pb2.ListNodesResponse = await call(
                control.ListNodes, control_pb2.ListNodesRequest()
            )
            return response

    async def put(self, node: ServerProcess, key: bytes, value: bytes) -> data_pb2.UpsertResponse:
        with self.data(node) as data:
            response: data_pb2.UpsertResponse = await call(
                data.Upsert,
                data_pb2.UpsertRequest(entries=[data_pb2.Entry(key=key, value=value)]),
            )
            return response

    async def get(self, node: ServerProcess, key: bytes) -> data_pb2.GetResponse:
        with self.data(node) as data:
            response: data_pb2.GetResponse = await call(data.Get, data_pb2.GetRequest(key=key))
            return response

    async def get_code(self, node: ServerProcess, key: bytes) -> str:
        """ "OK", "BAD_NODE" or the gRPC status code's name of a Get."""
        try:
            response = await self.get(node, key)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return str(data_pb2.Status.Name(response.status))


async def eventually(
    check: Callable[[], Any], *, within: float = WAIT, what: str = "condition"
) -> Any:
    """Await ``check()`` until it returns something true; that value."""
    last: Any = None
    with trio.move_on_after(within):
        while True:
            try:
                last = await check()
            except grpc.RpcError as exc:
                last = exc
            else:
                if last:
                    return last
            await trio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {within} s; last: {last!r}")


async def leader_of(stubs: Stubs, node: ServerProcess, partition_id: str) -> str:
    """Wait until ``node``'s view shows a leader for ``partition_id``; its id."""

    async def check() -> str:
        for info in await stubs.partitions(node):
            if info.id == partition_id and info.node and info.epoch:
                return str(info.node)
        return ""

    result: str = await eventually(check, what=f"a leader of {partition_id}")
    return result
