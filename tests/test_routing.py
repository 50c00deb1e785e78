"""The client across nodes, against real nodes: several seeds, one connection
per node, the seed's own address, and what a lost connection retries (reads,
and writes never sent) and what it surfaces (a write sent on it).

A TCP relay in front of a node stands for what a client meets across a
network: the node reachable at another address than the one it advertises,
a connection cut after the request went through, a node gone. The routing
core's decisions are unit-tested in tests/test_client_routing.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

import mkv
from mkv.testing import node_in_thread, running_node
from mkv.wire import Address
from tests.test_split import split


class Relay:
    """A TCP relay to ``target``, on a free loopback port.

    Attributes:
        connections: how many connections it has accepted.
        cut_next_answer: when set, the first bytes the node sends back
            after the client's next request are dropped and the connection
            closed: the request reached the node, its answer never reaches
            the client.
    """

    def __init__(self, target: Address) -> None:
        self.target = target
        self.address = Address("127.0.0.1", 0)
        self.connections = 0
        self.cuts = 0
        self.cut_next_answer = False
        # Armed by cut_next_answer once the client has sent something: bytes
        # the node sends before that (late frames of an earlier call) pass.
        self._request_seen = False
        self._scope = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
            task_status.started()
            await trio.serve_listeners(self._relay, listeners)

    def stop(self) -> None:
        """Close the listener and every connection: the node looks gone."""
        self._scope.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        self.connections += 1
        upstream = await trio.open_tcp_stream(self.target.host, self.target.port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream, False, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, client, True, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        answers: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if not answers and self.cut_next_answer:
                    self._request_seen = True
                elif answers and self._request_seen:
                    self.cut_next_answer = self._request_seen = False
                    self.cuts += 1
                    break
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


# What a write whose answer was lost says, on a unary call or a session.
UNKNOWN = "the outcome of this (call|request) is unknown"


def dead_address() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_a_dead_first_seed_is_passed_over(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_node(tmp_path / "data", default_store="memory") as node:
            dead = dead_address()
            async with mkv.Client.connect(dead, node.data_address) as db:
                await db.upsert({b"k": b"v"})
                assert await db.get(b"k") == b"v"
            # One string, as a command line gives it.
            async with mkv.Client.connect(f"{dead},{node.data_address}") as db:
                assert await db.get(b"k") == b"v"
            with pytest.raises(mkv.UnavailableError, match="any seed") as raised:
                async with mkv.Client.connect(dead, dead_address()):
                    pass
            assert dead in str(raised.value)


def test_the_blocking_client_takes_seeds_too(tmp_path: Path) -> None:
    with (
        node_in_thread(tmp_path / "data") as node,
        mkv.connect(dead_address(), str(node.data_address)) as db,
    ):
        db.upsert({b"k": b"v"})
        assert db.get(b"k") == b"v"


async def test_one_connection_per_node_at_the_address_the_client_dialled(tmp_path: Path) -> None:
    """The node advertises its own address; the client reached it through
    another (the relay): it keeps the one that works, and all its calls,
    side by side, share one connection."""
    with trio.fail_after(30):
        async with (
            running_node(tmp_path / "data", default_store="memory") as node,
            trio.open_nursery() as nursery,
        ):
            relay = Relay(node.data_address)
            await nursery.start(relay.run)
            async with (
                mkv.Client.connect(relay.address) as db,
                mkv.AdminClient.connect(node.control_address) as admin,
            ):
                await split(admin, "default", b"m", "upper")
                async with trio.open_nursery() as calls:
                    for i in range(20):
                        calls.start_soon(
                            db.upsert, {f"a{i}".encode(): b"1", f"z{i}".encode(): b"2"}
                        )
                assert [p.address for p in await db.partition_map()] == [str(relay.address)] * 2
                assert len([item async for item in db.scan()]) == 40
                assert relay.connections == 1
            relay.stop()


@pytest.mark.parametrize("session", [True, False], ids=["session", "unary"])
async def test_a_lost_connection_retries_reads_and_surfaces_writes(
    tmp_path: Path, session: bool
) -> None:
    """The answer is cut off after the request reached the node: a read is
    sent again and answers; a write is not (it may have been applied): it
    raises UnavailableError saying its outcome is unknown, and the counter
    it incremented moved once at most. Small calls on the node's session
    and calls of their own alike."""
    with trio.fail_after(30):
        async with (
            running_node(tmp_path / "data", default_store="memory") as node,
            trio.open_nursery() as nursery,
        ):
            relay = Relay(node.data_address)
            await nursery.start(relay.run)
            async with mkv.Client.connect(relay.address, session=session) as db:
                await db.upsert({b"k": b"v"})
                await db.increment(b"counter")

                relay.cut_next_answer = True
                assert await db.get(b"k") == b"v"
                relay.cut_next_answer = True
                assert [i and i.value for i in await db.batch_get([b"k", b"x"])] == [b"v", None]
                relay.cut_next_answer = True
                assert [key async for key, _ in db.scan()] == [b"counter", b"k"]
                assert relay.cuts == 3

                relay.cut_next_answer = True
                with pytest.raises(mkv.UnavailableError, match=UNKNOWN):
                    await db.increment(b"counter")
                # The client goes on: the next call dials again (and first
                # fetches the map again, the node having broken).
                assert await db.get(b"counter") in (b"1", b"2")
                relay.cut_next_answer = True
                with pytest.raises(mkv.UnavailableError, match=UNKNOWN):
                    await db.upsert({b"k": b"w"})
                assert relay.cuts == 5
                assert await db.get(b"counter") in (b"1", b"2")
            relay.stop()


async def test_when_a_node_is_gone_the_map_comes_from_another(tmp_path: Path) -> None:
    """Two seeds; the first goes away. Reads and writes that never reached it
    are routed by the map the second gives (here two single nodes stand for
    a cluster whose partition moved to the second)."""
    with trio.fail_after(30):
        async with (
            running_node(tmp_path / "one", default_store="memory") as one,
            running_node(tmp_path / "two", default_store="memory") as two,
            trio.open_nursery() as nursery,
        ):
            relay = Relay(one.data_address)
            await nursery.start(relay.run)
            async with (
                mkv.Client.connect(relay.address, two.data_address) as db,
                mkv.Client.connect(two.data_address) as direct,
            ):
                await db.upsert({b"k": b"on one"})
                await direct.upsert({b"k": b"on two"})
                assert await db.get(b"k") == b"on one"
                relay.stop()
                # A read, then a write: the relay refuses to connect, so the
                # write was certainly not sent and may go to the new owner.
                assert await db.get(b"k") == b"on two"
                await db.upsert({b"w": b"1"})
                assert await direct.get(b"w") == b"1"
                assert [p.address for p in await db.partition_map()] == [str(two.data_address)]
