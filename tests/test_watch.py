"""Watch against a real node: every acknowledged mutation once and in order,
across reconnects and restarts; retention and slow watchers as documented."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import trio

import mkv
from mkv.testing import running_node
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import GrpcioStubs, grpcio_channel
from tests.processes import ServerProcess

Mutation = tuple[int, bytes, bytes | None]


class Log:
    """A list of mutations that tasks can wait on."""

    def __init__(self) -> None:
        self.items: list[Mutation] = []
        self._changed = trio.Event()

    def append(self, item: Mutation) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[list[Mutation]], bool]) -> None:
        while not predicate(self.items):
            await self._changed.wait()


async def write_some(
    address: str, n: int, count: int, acked: Log, *, tolerate_outage: bool = False
) -> None:
    """Upserts and removes of keys in [b"w/", b"w0") and outside it; records
    the acknowledged ones in range as (seq, key, value or None)."""
    rng = random.Random(n)
    async with mkv.Client.connect(address) as client:
        done = 0
        while done < count:
            key = (b"w/%02d" if rng.random() < 0.8 else b"other/%02d") % rng.randrange(20)
            try:
                if rng.random() < 0.25:
                    [ack] = await client.remove(key)
                    value = None
                else:
                    value = b"%d-%d" % (n, done)
                    [ack] = await client.upsert({key: value})
            except mkv.UnavailableError:
                if not tolerate_outage:
                    raise
                await trio.sleep(0.05)  # unknown outcome: it may show up, or not
                continue
            if key.startswith(b"w/"):
                acked.append((ack.seq, key, value))
            done += 1


async def collect(client: mkv.Client, from_seq: int, seen: Log) -> None:
    async with client.watch(b"w/", b"w0", from_seq=from_seq) as changes:
        async for change in changes:
            seen.append((change.seq, change.key, change.value))


def check_delivery(seen: list[Mutation], acked: list[Mutation]) -> None:
    assert [m[0] for m in seen] == sorted(m[0] for m in seen), "in sequence order"
    assert len(set(seen)) == len(seen), "no mutation delivered twice"
    missing = set(acked) - set(seen)
    assert not missing, f"acknowledged mutations never delivered: {sorted(missing)[:5]}"


async def test_watch_sees_every_write_once_across_a_kill_9_and_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    await server.start()
    acked, seen = Log(), Log()
    try:
        with trio.fail_after(120):
            async with mkv.Client.connect(server.data_addr) as client:
                [start] = await client.upsert({b"other/start": b""})
                async with trio.open_nursery() as watching:
                    watching.start_soon(collect, client, start.seq, seen)
                    async with trio.open_nursery() as writers:
                        for n in range(4):
                            writers.start_soon(
                                functools.partial(
                                    write_some,
                                    server.data_addr,
                                    n,
                                    60,
                                    acked,
                                    tolerate_outage=True,
                                )
                            )
                        await acked.wait_until(lambda items: len(items) >= 80)
                        await server.kill()
                        await server.start(same_ports=True)
                    # One last write marks the end; wait until the watch sees it.
                    [last] = await client.upsert({b"w/last": b"end"})
                    acked.append((last.seq, b"w/last", b"end"))
                    await seen.wait_until(lambda items: bool(items) and items[-1][0] >= last.seq)
                    watching.cancel_scope.cancel()
    finally:
        await server.kill()
    assert len(acked.items) > 150
    check_delivery(seen.items, acked.items)


async def test_a_new_watch_resumes_exactly_where_another_stopped() -> None:
    async with running_node() as node, mkv.Client.connect(node.data_address) as client:
        [start] = await client.upsert({b"other/start": b""})
        acked = Log()
        await write_some(str(node.data_address), 1, 50, acked)
        first: list[Mutation] = []
        with trio.fail_after(30):
            async with client.watch(b"w/", b"w0", from_seq=start.seq) as changes:
                async for change in changes:
                    first.append((change.seq, change.key, change.value))
                    if len(first) == 20:
                        break
                position = changes.position
            await write_some(str(node.data_address), 2, 50, acked)
            second: list[Mutation] = []
            async with client.watch(b"w/", b"w0", from_seq=position) as changes:
                async for change in changes:
                    second.append((change.seq, change.key, change.value))
                    if change.seq == max(seq for seq, _, _ in acked.items):
                        break
    check_delivery(first + second, acked.items)


async def test_watching_from_a_position_no_longer_retained_says_resync() -> None:
    async with (
        running_node(watch_retention_bytes=20_000) as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        [first] = await client.upsert({b"w/a": b"x" * 1000})
        for i in range(40):
            await client.upsert({b"w/%d" % i: b"x" * 1000})
        with trio.fail_after(10), pytest.raises(mkv.CompactedError, match="scan"):
            async with client.watch(b"w/", b"w0", from_seq=first.seq) as changes:
                await changes.__anext__()
        with trio.fail_after(10), pytest.raises(mkv.CompactedError, match="only up to"):
            async with client.watch(b"w/", b"w0", from_seq=10**9) as changes:
                await changes.__anext__()
        # From the current position it works, and sees new writes.
        [now] = await client.upsert({b"other": b"1"})
        await client.upsert({b"w/new": b"1"})
        with trio.fail_after(10):
            async with client.watch(b"w/", b"w0", from_seq=now.seq) as changes:
                change = await changes.__anext__()
                assert change.key == b"w/new"


async def test_a_watch_range_must_stay_in_one_partition() -> None:
    async with running_node() as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="a", start=b"", end=b"m")
            await admin.add_partition(partition_id="b", start=b"m", end=None)
        async with mkv.Client.connect(node.data_address) as client:
            with (
                trio.fail_after(10),
                pytest.raises(mkv.InvalidArgumentError, match="per partition"),
            ):
                async with client.watch(b"a", b"z") as changes:
                    await changes.__anext__()


def read_slowly(responses: Iterator[pb.WatchResponse], pause: float) -> grpc.RpcError:
    """Read a grpcio response stream, pausing after each message; its error."""
    try:
        for _ in responses:
            time.sleep(pause)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the watch ended without an error")


async def test_a_slow_watcher_is_cut_off_and_memory_stays_bounded(stubs: GrpcioStubs) -> None:
    """A client whose HTTP/2 window stays small (grpcio without its window
    auto-tuning) and who reads slowly paces the server: the watcher's lag
    grows until it is cut off. (A client with a large window takes the
    changes into its own memory instead; the server's stays bounded either way.)"""
    retention = 1_000_000
    async with (
        running_node(watch_retention_bytes=retention) as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        partition = node.registry.partition("default")
        assert partition is not None
        [start] = await client.upsert({b"other": b""})
        with grpcio_channel(node.data_address, [("grpc.http2.bdp_probe", 0)]) as channel:
            responses = stubs.data_stub(channel).Watch(
                pb.WatchRequest(start=b"w/", end=b"w0", from_seq=start.seq), timeout=120
            )
            with trio.fail_after(100):
                async with trio.open_nursery() as nursery:
                    cut: list[grpc.RpcError] = []

                    async def slow() -> None:
                        cut.append(await trio.to_thread.run_sync(read_slowly, responses, 0.2))
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(slow)
                    for i in range(100_000):
                        await client.upsert({b"w/%05d" % i: b"x" * 4000})
                        assert partition.feed.bytes_retained <= retention
        assert cut[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fell" in (cut[0].details() or "")
        assert "resume from seq" in (cut[0].details() or "")
        assert await client.get(b"w/00000") == b"x" * 4000, "others still served"


@pytest.mark.parametrize(
    ("value_size", "window_options", "ends"),
    [
        # Changes well below the client's window: it stops reading at a
        # change boundary, where the call ends with a status.
        (10_000, [("grpc.http2.bdp_probe", 0)], {grpc.StatusCode.RESOURCE_EXHAUSTED}),
        # Changes larger than a quarter of its window start as soon as that
        # much is open (waiting for room for a whole change could wait for
        # ever with a client that keeps HTTP/2's default windows), so the
        # call may be cut off mid-change, where only a reset ends it.
        (
            100_000,
            [],
            {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED},
        ),
    ],
)
async def test_a_watcher_that_stops_reading_is_ended_with_a_status(
    stubs: GrpcioStubs,
    value_size: int,
    window_options: list[tuple[str, int]],
    ends: set[grpc.StatusCode],
) -> None:
    async with (
        running_node(stream_stall_timeout=1.0) as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        [start] = await client.upsert({b"other": b""})
        with grpcio_channel(node.data_address, window_options) as channel:
            responses = stubs.data_stub(channel).Watch(
                pb.WatchRequest(start=b"w/", end=b"w0", from_seq=start.seq), timeout=120
            )
            await trio.to_thread.run_sync(next, responses)  # subscribed; now it reads nothing
            with trio.fail_after(60):
                for i in range(300):
                    await client.upsert({b"w/%03d" % i: b"x" * value_size})
                await trio.sleep(3)
            error = await trio.to_thread.run_sync(read_slowly, responses, 0)
        assert error.code() in ends
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "stopped reading" in (error.details() or "")
        assert await client.get(b"w/000") == b"x" * value_size
