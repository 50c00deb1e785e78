"""Health and reflection on both ports, checked with grpcio's own clients:
load balancers and grpcurl-style tools must work without mkv's protos."""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any

import grpc
import trio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import mkv
from mkv.node.follower import REPLICATION_SERVICE
from mkv.rpc.health import HEALTH_SERVICE
from mkv.std import reflection_v1_pb2
from mkv.testing import running_node
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE
from tests.grpcio_stubs import CALL_TIMEOUT, call, call_error, grpcio_channel
from tests.processes import ServerProcess

REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def both_ports(node: mkv.Node) -> list[tuple[str, str]]:
    return [(str(node.data_address), DATA_SERVICE), (str(node.control_address), CONTROL_SERVICE)]


async def test_health_check_reports_every_plane_serving_on_both_ports(mkv_node: mkv.Node) -> None:
    with trio.fail_after(20):
        for address, _ in both_ports(mkv_node):
            with grpcio_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", DATA_SERVICE, CONTROL_SERVICE):
                    response = await call(
                        health.Check, health_pb2.HealthCheckRequest(service=service)
                    )
                    assert response.status == SERVING, (address, service)
                listed = await call(health.List, health_pb2.HealthListRequest())
                assert dict(listed.statuses) == {
                    name: health_pb2.HealthCheckResponse(status=SERVING)
                    for name in ("", DATA_SERVICE, CONTROL_SERVICE)
                }
                unknown = await call_error(
                    health.Check, health_pb2.HealthCheckRequest(service="no.Such")
                )
                assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_health_needs_no_token_on_a_guarded_control_plane(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    async with running_node(tmp_path / "data", token_file=tmp_path / "token") as node:
        with trio.fail_after(20), grpcio_channel(node.control_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            response = await call(health.Check, health_pb2.HealthCheckRequest(service=""))
            assert response.status == SERVING


async def test_health_watch_sees_not_serving_when_the_node_drains(tmp_path: Path) -> None:
    """In process: Watch streams SERVING, then NOT_SERVING once stop() begins
    (with a grace period, the ports still answer meanwhile)."""
    async with running_node(tmp_path / "data", shutdown_grace=2.0) as node:
        with trio.fail_after(20), grpcio_channel(node.data_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=DATA_SERVICE))
            try:
                first = await trio.to_thread.run_sync(next, watch)
                assert first.status == SERVING
                node.stop()
                second = await trio.to_thread.run_sync(next, watch)
                assert second.status == NOT_SERVING
                # Still serving other calls during the grace period.
                again = await call(health.Check, health_pb2.HealthCheckRequest(service=""))
                assert again.status == NOT_SERVING
            finally:
                watch.cancel()


async def test_health_is_not_serving_during_drain_after_sigterm(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "mkv-data", "--shutdown-grace", "3")
    await process.start()
    try:
        with trio.fail_after(30), grpcio_channel(process.data_addr) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            assert (await call(health.Check, request)).status == SERVING
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            status = SERVING
            while status == SERVING:
                await trio.sleep(0.05)
                status = (await call(health.Check, request)).status
            assert status == NOT_SERVING
            assert process.process is not None
            assert await process.process.wait() == 0
            process.process = None
    finally:
        if process.process is not None:
            await process.kill()


def _reflect(address: str) -> tuple[list[str], descriptor_pool.DescriptorPool]:
    """grpcio-reflection's client (v1alpha): the services, and a pool built
    from the descriptors the server sent."""
    with grpcio_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        for service in services:
            pool.FindServiceByName(service)
        return services, pool


async def test_reflection_lists_services_and_gives_usable_descriptors(mkv_node: mkv.Node) -> None:
    with trio.fail_after(30):
        for address, plane in both_ports(mkv_node):
            services, pool = await trio.to_thread.run_sync(_reflect, address)
            # The control port also serves node-to-node replication.
            extra = [REPLICATION_SERVICE] if plane == CONTROL_SERVICE else []
            assert sorted(services) == sorted([plane, *extra, HEALTH_SERVICE, *REFLECTION])
            # A descriptor built from reflection alone describes the real
            # service: same methods, same request types, field for field.
            ours = descriptor_pool.Default().FindServiceByName(plane)
            theirs = pool.FindServiceByName(plane)
            assert [m.name for m in theirs.methods] == [m.name for m in ours.methods]
            for mine, reflected in zip(ours.methods, theirs.methods, strict=True):
                expected = descriptor_pb2.DescriptorProto()
                got = descriptor_pb2.DescriptorProto()
                mine.input_type.CopyToProto(expected)
                reflected.input_type.CopyToProto(got)
                assert got == expected


def _reflect_v1(address: str, requests: list[Any]) -> list[Any]:
    with grpcio_channel(address) as channel:
        method = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_v1_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_v1_pb2.ServerReflectionResponse.FromString,
        )
        return list(method(iter(requests), timeout=CALL_TIMEOUT))


async def test_reflection_v1_answers_each_request_of_a_stream(mkv_node: mkv.Node) -> None:
    pb = reflection_v1_pb2
    requests = [
        pb.ServerReflectionRequest(list_services=""),
        pb.ServerReflectionRequest(file_containing_symbol="mkv.v1.GetRequest"),
        pb.ServerReflectionRequest(file_by_filename="mkv/v1/data.proto"),
        pb.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
        # The control plane's files are not the data port's to give.
        pb.ServerReflectionRequest(file_by_filename="mkv/v1/control.proto"),
    ]
    with trio.fail_after(20):
        responses = await trio.to_thread.run_sync(
            functools.partial(_reflect_v1, str(mkv_node.data_address), requests)
        )
    assert [r.original_request for r in responses] == requests
    listed = {s.name for s in responses[0].list_services_response.service}
    assert listed == {DATA_SERVICE, HEALTH_SERVICE, *REFLECTION}
    for answer in responses[1:3]:
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        assert files[0].name == "mkv/v1/data.proto"
        # Its imports come with it, so a client can build the file.
        names = {f.name for f in files}
        assert set(files[0].dependency) <= names
    for answer in responses[3:]:
        assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert answer.error_response.error_message
