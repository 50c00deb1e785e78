"""Partitions through the real server: routing, BAD_NODE, add/remove/list, restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from google.protobuf.message import Message

import mkv
from mkv.client.channel import open_channel
from mkv.testing import running_node
from mkv.v1 import control_pb2, data_pb2
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE


async def split_at_m(admin: mkv.AdminClient) -> None:
    """Replace the default partition by two adjacent ones: [, m) and [m, ∞)."""
    await admin.remove_partition("default")
    await admin.add_partition(start=b"", end=b"m", partition_id="low")
    await admin.add_partition(start=b"m", end=None, partition_id="high")


async def test_keys_land_in_the_partition_owning_them(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        await split_at_m(mkv_admin)
        acks = await mkv_client.upsert({b"apple": b"1", b"lemon": b"2", b"m": b"3", b"zed": b"4"})
        assert sorted((a.partition_id, a.count) for a in acks) == [("high", 0), ("low", 0)]
        counts = {p.id: p.key_count for p in await mkv_admin.list_partitions()}
        assert counts == {"low": 2, "high": 2}
        assert await mkv_client.get(b"lemon") == b"2"
        assert await mkv_client.get(b"m") == b"3"
        [removed] = await mkv_client.remove(b"zed", b"m", b"missing")
        assert (removed.partition_id, removed.count) == ("high", 2)


async def test_a_key_nobody_owns_is_bad_node_with_a_hint(
    mkv_node: mkv.Node, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        await mkv_admin.remove_partition("default")
        await mkv_admin.add_partition(start=b"a", end=b"m", partition_id="middle")
        async with open_channel(mkv_node.data_address) as channel:
            response = await channel.unary(
                DATA_SERVICE, "Get", data_pb2.GetRequest(key=b"zzz"), data_pb2.GetResponse
            )
        assert response.status == data_pb2.BAD_NODE
        assert [(r.id, r.start, r.end) for r in response.hint.owned] == [("middle", b"a", b"m")]
        assert response.hint.owned[0].address == str(mkv_node.data_address)
        with pytest.raises(mkv.BadNodeError):
            await mkv_client.get(b"zzz")
        with pytest.raises(mkv.BadNodeError):
            await mkv_client.upsert({b"0-before-a": b"v"})
        # A key that is owned still works on the same connection.
        await mkv_client.upsert({b"banana": b"yellow"})
        assert await mkv_client.get(b"banana") == b"yellow"


async def test_the_client_follows_a_partition_map_that_changed(
    mkv_node: mkv.Node, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        async with mkv.Client.connect(mkv_node.data_address) as client:
            await client.upsert({b"a": b"1"})  # caches the map: one partition
            await split_at_m(mkv_admin)
            # One call, two partitions the client has not seen: it is told
            # BAD_NODE or re-splits, refreshes its map and gets both written.
            acks = await client.upsert({b"b": b"2", b"x": b"3"})
            assert {a.partition_id for a in acks} == {"low", "high"}
            assert await client.get(b"x") == b"3"


async def test_add_list_remove(mkv_node: mkv.Node, mkv_admin: mkv.AdminClient) -> None:
    with trio.fail_after(20):
        [default] = await mkv_admin.list_partitions()
        assert (default.id, default.range, default.store, default.state) == (
            "default",
            mkv.KeyRange(b"", None),
            "sqlite",
            "active",
        )
        await mkv_admin.remove_partition("default")
        picked = await mkv_admin.add_partition(start=b"k", end=b"n", store="memory")
        assert picked.id  # the server chose one
        assert picked.store == "memory"
        with pytest.raises(mkv.AlreadyExistsError, match="overlaps"):
            await mkv_admin.add_partition(start=b"m", end=b"p")
        with pytest.raises(mkv.AlreadyExistsError, match="already exists"):
            await mkv_admin.add_partition(start=b"x", partition_id=picked.id)
        removed = await mkv_admin.remove_partition(picked.id)
        assert (removed.id, removed.state) == (picked.id, "stopped")
        assert await mkv_admin.list_partitions() == []
        with pytest.raises(mkv.NotFoundError):
            await mkv_admin.remove_partition(picked.id)
        directory = mkv_node.config.data_dir / "partitions" / "default"
        assert not directory.exists(), "a removed partition's files are deleted"


async def test_removal_drains_in_flight_writes(mkv_node: mkv.Node) -> None:
    """Every write racing a RemovePartition is either acknowledged or refused cleanly."""
    outcomes: list[str] = []
    async with (
        mkv.Client.connect(mkv_node.data_address) as client,
        mkv.AdminClient.connect(mkv_node.control_address) as admin,
    ):

        async def writer(n: int) -> None:
            for i in range(20):
                try:
                    await client.upsert({f"w{n}-{i}".encode(): b"v"})
                    outcomes.append("ok")
                except (mkv.UnavailableError, mkv.BadNodeError):
                    outcomes.append("refused")
                    return

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(16):
                    nursery.start_soon(writer, n)
                await trio.sleep(0.05)
                info = await admin.remove_partition("default")
    assert "ok" in outcomes
    assert "refused" in outcomes
    # Every acknowledged write was in the partition when it was removed.
    assert info.last_seq >= outcomes.count("ok")


async def test_partitions_and_data_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(30):
        async with running_node(data_dir) as node:
            async with mkv.AdminClient.connect(node.control_address) as admin:
                await split_at_m(admin)
            async with mkv.Client.connect(node.data_address) as client:
                await client.upsert({b"a": b"1", b"z": b"2"})
                [ack] = await client.upsert({b"z": b"3"})
        async with running_node(data_dir) as node:
            async with mkv.AdminClient.connect(node.control_address) as admin:
                listed = {p.id: (p.range, p.key_count) for p in await admin.list_partitions()}
            assert listed == {
                "low": (mkv.KeyRange(b"", b"m"), 1),
                "high": (mkv.KeyRange(b"m", None), 1),
            }
            async with mkv.Client.connect(node.data_address) as client:
                assert await client.get_item(b"z") == mkv.Item(b"3", ack.seq, ack.timestamp)
                [again] = await client.upsert({b"z": b"4"})
                assert again.seq == ack.seq + 1, "sequence numbers continue after a restart"


@pytest.mark.parametrize(
    ("method", "message", "answer"),
    [
        (
            "MovePartition",
            control_pb2.MovePartitionRequest(id="default", node="n2"),
            control_pb2.MovePartitionResponse,
        ),
        ("DrainNode", control_pb2.DrainNodeRequest(node="n1"), control_pb2.DrainNodeResponse),
        ("ListNodes", control_pb2.ListNodesRequest(), control_pb2.ListNodesResponse),
        (
            "AddPartition",
            control_pb2.AddPartitionRequest(id="x", start=b"x", node="n2"),
            control_pb2.AddPartitionResponse,
        ),
    ],
)
async def test_cluster_calls_on_a_single_node_are_failed_precondition(
    mkv_admin: mkv.AdminClient, method: str, message: Message, answer: type[Message]
) -> None:
    # A single node has no other node to place on: it says so and changes nothing.
    with trio.fail_after(10), pytest.raises(mkv.FailedPreconditionError, match="cluster mode"):
        await mkv_admin._unary(CONTROL_SERVICE, method, message, answer)
    assert [p.id for p in await mkv_admin.list_partitions()] == ["default"]
