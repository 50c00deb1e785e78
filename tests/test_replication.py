"""mkv.v1.Replication and a partition's move between two real nodes (docs/replication.md).

Two nodes run in this process on port 0 and talk real gRPC: the target's
follower fetches over the source's control port. Clients re-route by the
BAD_NODE hint's owner address in the tests' own loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from google.protobuf.message import Message

import mkv
from mkv.client.channel import Channel, open_channel
from mkv.node.catalog import Catalog
from mkv.node.replication import move_partition
from mkv.node.server import Node
from mkv.testing import running_node
from mkv.v1 import data_pb2
from mkv.wire import DATA_SERVICE

REPLICATION = "mkv.v1.Replication"


@asynccontextmanager
async def two_nodes(tmp_path: Path, **settings: object) -> AsyncIterator[tuple[Node, Node]]:
    settings.setdefault("replica_grace", 0.5)
    async with (
        running_node(tmp_path / "source", **settings) as source,
        running_node(tmp_path / "target", **settings) as target,
    ):
        # The target owns nothing yet: the move brings "default" to it.
        await target.registry.remove("default")
        yield source, target


async def move(source: Node, target: Node, pid: str = "default", **kwargs: object) -> object:
    return await move_partition(
        source.registry,
        target.registry,
        pid,
        source_address=source.control_address,
        target_data_address=target.data_address,
        **kwargs,  # type: ignore[arg-type]
    )


async def gone(node: Node, pid: str) -> None:
    """Wait until ``node`` has forgotten ``pid`` (its grace period over)."""
    with trio.fail_after(10):
        while node.registry.partition(pid) is not None:  # noqa: ASYNC110  # no event to wait on
            await trio.sleep(0.05)


class Router:
    """Sends each call to the node it believes owns the key; follows BAD_NODE hints."""

    def __init__(self, channels: dict[str, Channel], first: str) -> None:
        self.channels = channels
        self.current = first
        self.bad_nodes = 0

    async def call(self, method: str, request: Message, response_type: type[Message]) -> Any:
        for _ in range(200):
            response: Any = await self.channels[self.current].unary(
                DATA_SERVICE, method, request, response_type
            )
            if response.status != data_pb2.BAD_NODE:
                return response
            self.bad_nodes += 1
            hint = response.hint
            if hint.HasField("owner") and hint.owner.address:
                self.current = hint.owner.address
            else:
                # Nobody here owns it (a held or retired copy): try the other node.
                others = [a for a in self.channels if a != self.current]
                self.current = others[0]
                await trio.sleep(0.005)
        raise AssertionError("BAD_NODE 200 times in a row")

    async def upsert(self, key: bytes, value: bytes) -> data_pb2.UpsertResponse:
        request = data_pb2.UpsertRequest(entries=[data_pb2.Entry(key=key, value=value)])
        response = await self.call("Upsert", request, data_pb2.UpsertResponse)
        assert isinstance(response, data_pb2.UpsertResponse)
        assert response.status == data_pb2.OK, response
        return response

    async def get(self, key: bytes) -> bytes | None:
        response = await self.call("Get", data_pb2.GetRequest(key=key), data_pb2.GetResponse)
        assert isinstance(response, data_pb2.GetResponse)
        assert response.status == data_pb2.OK, response
        return response.value if response.found else None


async def test_a_partition_moves_with_its_keys_and_seqs_go_on(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with two_nodes(tmp_path) as (source, target):
            async with mkv.Client.connect(source.data_address) as client:
                await client.upsert({f"k{i:04d}".encode(): f"v{i}".encode() for i in range(1000)})
                await client.remove(b"k0005")
                before = await client.get_item(b"k0007")
            result = await move(source, target)
            assert target.registry.partition("default") is not None
            async with mkv.Client.connect(target.data_address) as client:
                assert await client.get(b"k0001") == b"v1"
                assert await client.get(b"k0005") is None
                assert await client.get_item(b"k0007") == before
                [ack] = await client.upsert({b"new": b"x"})
                assert ack.seq == result.final_seq + 1  # type: ignore[attr-defined]
            # The source answers BAD_NODE naming the target's address and range.
            async with open_channel(source.data_address) as channel:
                response = await channel.unary(
                    DATA_SERVICE, "Get", data_pb2.GetRequest(key=b"k0001"), data_pb2.GetResponse
                )
            assert response.status == data_pb2.BAD_NODE
            assert response.hint.owner.address == str(target.data_address)
            assert response.hint.owner.id == "default"
            # After the grace period the source's copy is gone, files and all.
            await gone(source, "default")
            assert not (tmp_path / "source" / "partitions" / "default").exists()
            catalog = Catalog.load(tmp_path / "source" / "catalog.json")
            assert catalog is not None
            assert catalog.partitions == []
            assert catalog.retired == ()
        # The target keeps it across a restart, served (not held).
        async with (
            running_node(tmp_path / "target") as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            assert await client.get(b"k0001") == b"v1"
            assert await client.get(b"new") == b"x"
