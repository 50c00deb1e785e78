"""Interoperability: grpcio, a client we did not write, using stubs built from protos/ alone.

api.md promises that any gRPC client can use both services from the ``.proto``
files. grpcio's C core is stricter than purerpc about HTTP/2 and about status
trailers, so these tests would catch a server that only works with our own
client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import trio

import mkv
from mkv.v1 import control_pb2 as cpb
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import (
    GrpcioClient,
    GrpcioStubs,
    assert_clear_message,
    call,
    call_error,
    connect,
    raw_method,
)


@pytest.fixture
async def grpcio(stubs: GrpcioStubs, mkv_node: mkv.Node) -> AsyncIterator[GrpcioClient]:
    with connect(stubs, mkv_node.data_address, mkv_node.control_address) as client:
        yield client


def upsert_request(items: dict[bytes, bytes]) -> pb.UpsertRequest:
    return pb.UpsertRequest(entries=[pb.Entry(key=k, value=v) for k, v in items.items()])


async def split_at_m(grpcio: GrpcioClient) -> None:
    """Replace the default partition by "low" [, m) and "high" [m, ∞), through grpcio."""
    await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
    await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
    await call(
        grpcio.control.AddPartition,
        cpb.AddPartitionRequest(id="high", start=b"m", store="memory"),
    )


async def test_upsert_get_remove_round_trip(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        first = await call(grpcio.data.Upsert, upsert_request({b"a": b"1", b"b": b"2"}))
        assert (first.status, first.partition_id) == (pb.OK, "default")
        assert first.seq >= 1

        got = await call(grpcio.data.Get, pb.GetRequest(key=b"a"))
        assert (got.status, got.found, got.value, got.seq) == (pb.OK, True, b"1", first.seq)

        # A later write gets a larger seq, and a read reports the seq of the
        # write that produced the value it returns, not the latest seq overall.
        second = await call(grpcio.data.Upsert, upsert_request({b"a": b"3"}))
        assert second.seq > first.seq
        assert (await call(grpcio.data.Get, pb.GetRequest(key=b"a"))).seq == second.seq
        assert (await call(grpcio.data.Get, pb.GetRequest(key=b"b"))).seq == first.seq

        removed = await call(grpcio.data.Remove, pb.RemoveRequest(keys=[b"a", b"never-written"]))
        assert (removed.status, removed.removed) == (pb.OK, 1)
        assert removed.seq > second.seq

        gone = await call(grpcio.data.Get, pb.GetRequest(key=b"a"))
        assert (gone.status, gone.found, gone.value) == (pb.OK, False, b"")


async def test_any_bytes_and_an_empty_value_round_trip(grpcio: GrpcioClient) -> None:
    """Keys and values are bytes, not text; an empty value is a value, not an absence."""
    with trio.fail_after(20):
        key, value = bytes(range(1, 256)), bytes(range(256)) * 4
        await call(grpcio.data.Upsert, upsert_request({key: value, b"empty": b""}))
        got = await call(grpcio.data.Get, pb.GetRequest(key=key))
        assert (got.found, got.value) == (True, value)
        empty = await call(grpcio.data.Get, pb.GetRequest(key=b"empty"))
        assert (empty.found, empty.value) == (True, b"")


async def test_partition_map(grpcio: GrpcioClient, mkv_node: mkv.Node) -> None:
    with trio.fail_after(20):
        before = await call(grpcio.data.PartitionMap, pb.PartitionMapRequest())
        assert [(p.id, p.start, p.end, p.address) for p in before.partitions] == [
            ("default", b"", b"", str(mkv_node.data_address))
        ]
        await split_at_m(grpcio)
        after = await call(grpcio.data.PartitionMap, pb.PartitionMapRequest())
        # One step per change (one remove, two adds): a client compares versions
        # to tell that its cached map is stale.
        assert after.version == before.version + 3
        assert [(p.id, p.start, p.end) for p in after.partitions] == [
            ("low", b"", b"m"),
            ("high", b"m", b""),
        ]


async def test_control_plane_round_trip(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        removed = await call(
            grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default")
        )
        assert (removed.partition.id, removed.partition.state) == ("default", cpb.STOPPED)

        low = await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
        # No store named: the server's default kind, reported back.
        assert (low.partition.id, low.partition.store, low.partition.state) == (
            "low",
            "sqlite",
            cpb.ACTIVE,
        )
        await call(
            grpcio.control.AddPartition,
            cpb.AddPartitionRequest(id="high", start=b"m", store="memory"),
        )

        for key in (b"apple", b"lemon", b"m", b"zebra"):
            written = await call(grpcio.data.Upsert, upsert_request({key: b"v"}))
            # "m" is the first key of [m, ∞), not the last of [, m).
            assert written.partition_id == ("low" if key < b"m" else "high"), key

        listed = await call(grpcio.control.ListPartitions, cpb.ListPartitionsRequest())
        assert [
            (p.id, p.start, p.end, p.store, p.state, p.key_count, p.last_seq)
            for p in listed.partitions
        ] == [
            ("low", b"", b"m", "sqlite", cpb.ACTIVE, 2, 2),
            ("high", b"m", b"", "memory", cpb.ACTIVE, 2, 2),
        ]


async def test_a_key_nobody_owns_is_bad_node_with_a_hint(
    grpcio: GrpcioClient, mkv_node: mkv.Node
) -> None:
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await call(
            grpcio.control.AddPartition, cpb.AddPartitionRequest(id="middle", start=b"a", end=b"m")
        )
        version = (await call(grpcio.data.PartitionMap, pb.PartitionMapRequest())).version

        # BAD_NODE is a routing outcome in the response, not a gRPC error.
        responses = [
            await call(grpcio.data.Get, pb.GetRequest(key=b"zzz")),
            await call(grpcio.data.Upsert, upsert_request({b"zzz": b"lost?"})),
            await call(grpcio.data.Remove, pb.RemoveRequest(keys=[b"zzz"])),
        ]
        for response in responses:
            assert response.status == pb.BAD_NODE
            assert [(r.id, r.start, r.end, r.address) for r in response.hint.owned] == [
                ("middle", b"a", b"m", str(mkv_node.data_address))
            ]
            assert response.hint.map_version == version
            assert_clear_message(response.hint.message)

        # The refused upsert went nowhere: a partition that later takes the key
        # starts without it.
        await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="top", start=b"m"))
        assert not (await call(grpcio.data.Get, pb.GetRequest(key=b"zzz"))).found


async def test_grpcio_and_mkv_client_read_each_others_writes(
    grpcio: GrpcioClient, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        by_grpcio = await call(grpcio.data.Upsert, upsert_request({b"from-grpcio": b"\x00g"}))
        item = await mkv_client.get_item(b"from-grpcio")
        assert item == mkv.Item(b"\x00g", by_grpcio.seq, by_grpcio.timestamp)

        [ack] = await mkv_client.upsert({b"from-mkv": b"\x00m"})
        got = await call(grpcio.data.Get, pb.GetRequest(key=b"from-mkv"))
        assert (got.found, got.value, got.seq) == (True, b"\x00m", ack.seq)

        await mkv_client.remove(b"from-grpcio")
        assert not (await call(grpcio.data.Get, pb.GetRequest(key=b"from-grpcio"))).found
        removed = await call(grpcio.data.Remove, pb.RemoveRequest(keys=[b"from-mkv"]))
        assert removed.removed == 1
        assert await mkv_client.get(b"from-mkv") is None

        # The control plane too: each client sees what the other changed.
        await mkv_admin.remove_partition("default")
        await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
        await mkv_admin.add_partition(start=b"m", partition_id="high", store="memory")
        assert [p.id for p in await mkv_admin.list_partitions()] == ["low", "high"]
        listed = await call(grpcio.control.ListPartitions, cpb.ListPartitionsRequest())
        assert [(p.id, p.store) for p in listed.partitions] == [
            ("low", "sqlite"),
            ("high", "memory"),
        ]


async def test_an_unknown_method_is_unimplemented_and_harms_no_other_call(
    grpcio: GrpcioClient,
) -> None:
    """grpcio multiplexes every call of a channel on one HTTP/2 connection, so a
    call to a method this server does not have (an older server, a typo) must
    cost only that call, never the connection the other calls share."""
    nope = raw_method(grpcio.data_channel, "/mkv.v1.DataPlane/Nope")
    partition_map = raw_method(grpcio.data_channel, "/mkv.v1.DataPlane/PartitionMap")
    unknown_codes: list[grpc.StatusCode] = []
    other_failures: list[grpc.StatusCode] = []

    async def call_unknown_method() -> None:
        for _ in range(20):
            error = await call_error(nope, b"\x0a\x01k")
            unknown_codes.append(error.code())
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                assert_clear_message(error.details())

    async def call_partition_map() -> None:
        for _ in range(30):
            try:
                await call(partition_map, b"")
            except grpc.RpcError as exc:
                other_failures.append(exc.code())

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_unknown_method)
            nursery.start_soon(call_partition_map)
            nursery.start_soon(call_partition_map)
    # Both counts in one assertion, so a failure shows the harm to the others too.
    assert (Counter(unknown_codes), Counter(other_failures)) == (
        Counter({grpc.StatusCode.UNIMPLEMENTED: 20}),
        Counter(),
    )


@pytest.mark.parametrize("port", ["data", "control"])
async def test_a_method_of_the_other_plane_is_unimplemented(
    grpcio: GrpcioClient, stubs: GrpcioStubs, port: str
) -> None:
    """Each port serves one service: the data port must not take privileged calls."""
    with trio.fail_after(20):
        if port == "data":
            wrong = stubs.control_stub(grpcio.data_channel).ListPartitions
            request: object = cpb.ListPartitionsRequest()
        else:
            wrong = stubs.data_stub(grpcio.control_channel).PartitionMap
            request = pb.PartitionMapRequest()
        error = await call_error(wrong, request)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert_clear_message(error.details())
        # The right port still answers, on the same channels.
        assert (await call(grpcio.data.PartitionMap, pb.PartitionMapRequest())).partitions
        listed = await call(grpcio.control.ListPartitions, cpb.ListPartitionsRequest())
        assert listed.partitions


async def test_split_partition_from_the_protos_alone(grpcio: GrpcioClient) -> None:
    with trio.fail_after(30):
        for key in (b"apple", b"zebra"):
            await call(grpcio.data.Upsert, upsert_request({key: b"v"}))
        started = await call(
            grpcio.control.SplitPartition,
            cpb.SplitPartitionRequest(id="default", at=b"m", new_id="high"),
        )
        while True:
            got = await call(
                grpcio.control.GetOperation, cpb.GetOperationRequest(id=started.operation_id)
            )
            if got.operation.state != cpb.RUNNING:
                break
            await trio.sleep(0.02)
        assert got.operation.state == cpb.DONE, got.operation.error_message
        assert got.operation.kind == "split"
        assert (got.operation.split.partition.id, got.operation.split.partition.start) == (
            "high",
            b"m",
        )
        written = await call(grpcio.data.Upsert, upsert_request({b"zebra": b"w"}))
        assert written.partition_id == "high"
        refused = await call_error(
            grpcio.control.SplitPartition, cpb.SplitPartitionRequest(id="default", at=b"q")
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_merge_partitions_from_the_protos_alone(grpcio: GrpcioClient) -> None:
    with trio.fail_after(30):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
        await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="high", start=b"m"))
        for key in (b"apple", b"zebra"):
            await call(grpcio.data.Upsert, upsert_request({key: b"v"}))
        started = await call(
            grpcio.control.MergePartitions, cpb.MergePartitionsRequest(left="low", right="high")
        )
        while True:
            got = await call(
                grpcio.control.GetOperation, cpb.GetOperationRequest(id=started.operation_id)
            )
            if got.operation.state != cpb.RUNNING:
                break
            await trio.sleep(0.02)
        assert got.operation.state == cpb.DONE, got.operation.error_message
        merged = got.operation.merged
        assert (merged.id, merged.start, merged.end, merged.key_count) == ("low", b"", b"", 2)
        refused = await call_error(
            grpcio.control.MergePartitions, cpb.MergePartitionsRequest(left="low", right="low")
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
