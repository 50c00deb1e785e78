"""mkv.v1.Replication and a partition's move between two real nodes (docs/replication.md).

Two nodes run in this process on port 0 and talk real gRPC: the target's
follower fetches over the source's control port. Clients re-route by the
BAD_NODE hint's owner address in the tests' own loop.
"""

from __future__ import annotations

import functools
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from google.protobuf.message import Message

import mkv
from mkv.client.channel import Channel, open_channel
from mkv.errors import DataLossError, FailedPreconditionError
from mkv.node.catalog import Catalog
from mkv.node.replication import MoveResult, move_partition
from mkv.node.server import Node
from mkv.rpc.dial import open_bidi
from mkv.testing import prefill_key, prefill_sqlite_partition, running_node
from mkv.v1 import data_pb2
from mkv.v1 import replication_pb2 as rpb
from mkv.wire import DATA_SERVICE
from tests.linearizability import History, Outcome, assert_linearizable

REPLICATION = "mkv.v1.Replication"


@asynccontextmanager
async def two_nodes(
    tmp_path: Path, *, prefill: int = 0, **settings: object
) -> AsyncIterator[tuple[Node, Node]]:
    settings.setdefault("replica_grace", 0.5)
    if prefill:
        await trio.to_thread.run_sync(
            lambda: prefill_sqlite_partition(tmp_path / "source", keys=prefill, value_size=100)
        )
    async with (
        running_node(tmp_path / "source", **settings) as source,
        running_node(tmp_path / "target", **settings) as target,
    ):
        # The target owns nothing yet: the move brings "default" to it.
        await target.registry.remove("default")
        yield source, target


async def move(source: Node, target: Node, pid: str = "default", **kwargs: Any) -> MoveResult:
    return await move_partition(
        source.registry,
        target.registry,
        pid,
        source_address=source.control_address,
        target_data_address=target.data_address,
        **kwargs,
    )


def p99(seconds: list[float]) -> float:
    return seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] if seconds else 0.0


async def gone(node: Node, pid: str) -> None:
    """Wait until ``node`` has forgotten ``pid`` (its grace period over) and
    its catalog no longer lists it as retired (its files are deleted by then)."""
    path = node.config.data_dir / "catalog.json"
    with trio.fail_after(10):
        while True:
            catalog = await trio.to_thread.run_sync(Catalog.load, path)
            assert catalog is not None
            if node.registry.partition(pid) is None and pid not in catalog.retired:
                return
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
            async with (
                open_channel(source.data_address) as watching,
                watching.open_stream(
                    DATA_SERVICE,
                    "Watch",
                    data_pb2.WatchRequest(from_seq=1),
                    data_pb2.WatchResponse,
                ) as watch,
            ):
                result = await move(source, target)
                # The source's watcher gets every change up to the cut-over,
                # then BAD_NODE naming the target and the seq to resume from.
                seen = 0
                async for message in watch:
                    seen = max([seen, *(c.seq for c in message.changes)])
                    if message.status == data_pb2.BAD_NODE:
                        break
            assert seen == result.final_seq
            assert message.progress_seq == result.final_seq
            assert message.hint.owner.address == str(target.data_address)
            async with (
                open_channel(target.data_address) as watching,
                watching.open_stream(
                    DATA_SERVICE,
                    "Watch",
                    data_pb2.WatchRequest(from_seq=result.final_seq),
                    data_pb2.WatchResponse,
                ) as watch,
            ):
                first = await anext(aiter(watch))
                assert first.status == data_pb2.OK
            assert target.registry.partition("default") is not None
            async with mkv.Client.connect(target.data_address) as client:
                assert await client.get(b"k0001") == b"v1"
                assert await client.get(b"k0005") is None
                assert await client.get_item(b"k0007") == before
                [ack] = await client.upsert({b"new": b"x"})
                assert ack.seq == result.final_seq + 1
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


async def test_a_move_under_writers_and_readers_loses_nothing_and_is_linearizable(
    tmp_path: Path,
) -> None:
    """100k keys copied while 8 writers and readers go on, following BAD_NODE."""
    rng = random.Random(15)
    history = History()
    keys = [f"{c}{i}".encode() for c in "agmt" for i in range(5)]
    acked_unique: dict[bytes, bytes] = {}
    latencies: list[tuple[float, float]] = []  # (start, seconds) of every write
    with trio.fail_after(240):
        async with (
            two_nodes(tmp_path, prefill=100_000, replica_grace=60) as (source, target),
            open_channel(source.data_address) as to_source,
            open_channel(target.data_address) as to_target,
        ):
            channels = {str(source.data_address): to_source, str(target.data_address): to_target}
            stop = trio.Event()
            routers: list[Router] = []

            async def worker(n: int) -> None:
                router = Router(channels, str(source.data_address))
                routers.append(router)
                i = 0
                while not stop.is_set():
                    i += 1
                    key = rng.choice(keys)
                    began = time.monotonic()
                    if rng.random() < 0.5:
                        value = f"{n}-{i}".encode()
                        token = history.invoke(n, key, "write", (value,))
                        await router.upsert(key, value)
                        history.complete(token, Outcome.OK)
                    elif rng.random() < 0.5:
                        unique = f"u{n}-{i}".encode()
                        await router.upsert(unique, b"%d" % i)
                        acked_unique[unique] = b"%d" % i
                    else:
                        token = history.invoke(n, key, "read")
                        history.complete(token, Outcome.OK, await router.get(key))
                        continue
                    latencies.append((began, time.monotonic() - began))

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(worker, n)
                await trio.sleep(1.0)
                moved_at = time.monotonic()
                result = await move(source, target)
                moved_by = time.monotonic()
                await trio.sleep(0.5)
                stop.set()
            # Every key read once more, on the target: the checker then holds
            # each acknowledged write to be there.
            final = Router(channels, str(target.data_address))
            for key in keys:
                token = history.invoke("final", key, "read")
                history.complete(token, Outcome.OK, await final.get(key))
            assert final.bad_nodes == 0, "the target refused a key it serves"
            assert_linearizable(history.operations)
            for key, value in acked_unique.items():
                assert await final.get(key) == value, key
            for i in (0, 4_999, 99_999):
                assert await final.get(prefill_key(i)) is not None
            # The follower reported what it held durable on the stream.
            assert 100_000 <= source.replication.durable["default", "move"] <= result.final_seq
            # The source answers BAD_NODE naming the target.
            response = await to_source.unary(
                DATA_SERVICE, "Get", data_pb2.GetRequest(key=keys[0]), data_pb2.GetResponse
            )
            assert response.status == data_pb2.BAD_NODE
            assert response.hint.owner.address == str(target.data_address)
    cut_start = moved_by - result.cut_over_seconds
    across = [s for began, s in latencies if began <= moved_by and began + s >= cut_start]
    before = sorted(s for began, s in latencies if began + s < moved_at)
    during = sorted(s for began, s in latencies if moved_at <= began and began + s < cut_start)
    print(
        f"move of 100k keys: {result.seconds:.2f} s, cut-over "
        f"{result.cut_over_seconds * 1000:.0f} ms; writers' max latency across it "
        f"{max(across) * 1000:.0f} ms; p99 before {p99(before) * 1000:.0f} ms, during the "
        f"copy {p99(during) * 1000:.0f} ms; {len(latencies)} writes, "
        f"{sum(r.bad_nodes for r in routers)} BAD_NODE re-routes"
    )
    assert len(acked_unique) > 50
    assert max(across) < 10.0


@asynccontextmanager
async def fetch_stream(node: Node) -> AsyncIterator[Any]:
    """A Fetch stream to ``node``'s control port, driven by hand."""
    async with open_bidi(
        node.control_address,
        REPLICATION,
        "Fetch",
        rpb.FetchRequest,
        rpb.FetchResponse,
        silence=10.0,
    ) as call:
        yield call


async def test_a_leader_refuses_a_fetch_of_an_older_epoch(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_node(tmp_path / "leader") as leader:
            leader.registry.set_epoch("default", 7)
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", epoch=6, snapshot=True))
                with pytest.raises(FailedPreconditionError, match="epoch 7"):
                    await call.receive()
            # The current epoch (or a newer one) is served.
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", epoch=7, after_seq=0))
                answer = await call.receive()
                assert answer.epoch == 7
                assert answer.WhichOneof("body") == "records"


async def test_a_follower_refuses_records_of_an_older_epoch(tmp_path: Path) -> None:
    """A deposed leader (epoch 3) cannot feed a follower that knows epoch 5."""
    with trio.fail_after(30):
        async with two_nodes(tmp_path) as (source, target):
            source.registry.set_epoch("default", 3)
            async with mkv.Client.connect(source.data_address) as client:
                await client.upsert({b"k": b"v"})
            follower = await target.registry.follow(
                "default",
                source.registry.partition("default").range,  # type: ignore[union-attr]
                "sqlite",
                None,
                source.control_address,
                5,
            )
            with pytest.raises(FailedPreconditionError, match="older than epoch 5"):
                await follower.caught_up()
            await follower.abandon()
            assert not (tmp_path / "target" / "partitions" / "default").exists()
            assert target.registry.partition("default") is None


def _change_value(row: rpb.Row) -> None:
    row.value = b"tampered"


def _empty_key(row: rpb.Row) -> None:
    row.key = b""


def _seq_past_snapshot(row: rpb.Row) -> None:
    row.seq = 10**9


@pytest.mark.parametrize(
    ("tamper", "refusal"),
    [
        (_change_value, "checksum"),
        (_empty_key, "bad length"),
        (_seq_past_snapshot, "the snapshot is at"),
    ],
)
async def test_a_bad_snapshot_is_refused_and_nothing_installed(
    tmp_path: Path, tamper: Callable[[rpb.Row], None], refusal: str
) -> None:
    with trio.fail_after(60):
        async with two_nodes(tmp_path, prefill=5_000) as (source, target):

            def corrupt(rows: list[rpb.Row]) -> None:
                # One row changed in transit, after the leader hashed it.
                tamper(rows[len(rows) // 2])

            source.replication.tamper = corrupt
            with pytest.raises(DataLossError, match=refusal):
                await move(source, target)
            assert target.registry.partition("default") is None
            assert target.registry.follower("default") is None
            assert not (tmp_path / "target" / "partitions" / "default").exists()
            # The source never stopped serving it.
            source.replication.tamper = None
            async with mkv.Client.connect(source.data_address) as client:
                assert await client.get(prefill_key(17)) is not None
                await client.upsert({b"after": b"1"})


# A leader whose change feed keeps only the last 64 KiB of writes, and whose
# log rolls every 64 KiB, so that checkpoints drop what the feed let go.
SMALL_LOG = {
    "watch_retention_bytes": "64KiB",
    "default_pipeline": ("timestamp", "wal:always,segment=65536"),
}


async def write_kib(node: Node, count: int, prefix: bytes = b"k") -> None:
    """``count`` writes of 1,000 bytes each, applied when it returns."""
    async with mkv.Client.connect(node.data_address) as client:
        for i in range(count):
            await client.upsert({prefix + b"%d" % i: b"x" * 1000})
    partition = node.registry.partition("default")
    assert partition is not None
    await partition.wait_applied()


async def read_on(call: Any, after: int, through: int) -> None:
    """Ask for records until ``through``; they must come one seq after another."""
    while after < through:
        await call.send(rpb.FetchRequest())
        answer = await call.receive()
        assert answer.WhichOneof("body") == "records", answer.WhichOneof("body")
        seqs = [record.seq for record in answer.records.records]
        assert seqs == list(range(after + 1, after + 1 + len(seqs)))
        after = seqs[-1] if seqs else after


async def test_a_follower_behind_the_feed_catches_up_from_the_log_on_disk(
    tmp_path: Path,
) -> None:
    """The feed keeps 64 KiB; the log on disk still holds every write, so a
    follower far behind the feed gets records, not SNAPSHOT_REQUIRED.
    Mutation: answer SNAPSHOT_REQUIRED where the feed ends (no read from
    disk) -> the first answer is snapshot_required."""
    with trio.fail_after(60):
        async with running_node(tmp_path / "leader", watch_retention_bytes="64KiB") as leader:
            await write_kib(leader, 200)
            partition = leader.registry.partition("default")
            assert partition is not None
            assert partition.feed.retained_after > 10
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", after_seq=3))
                answer = await call.receive()
                assert answer.WhichOneof("body") == "records"
                assert answer.records.records[0].seq == 4
                assert answer.records.records[0].puts[0].key == b"k3"
                assert answer.commit_seq == 200
                await read_on(call, answer.records.records[-1].seq, 200)


async def test_a_follower_behind_the_log_too_is_told_to_take_a_snapshot(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with running_node(tmp_path / "leader", **SMALL_LOG) as leader:
            await write_kib(leader, 200)
            partition = leader.registry.partition("default")
            assert partition is not None
            feed = partition.feed
            assert feed.retained_after > 10
            assert partition.statistics().wal_segments < 4  # checkpointed
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", after_seq=3))
                answer = await call.receive()
                assert answer.WhichOneof("body") == "snapshot_required"
                assert answer.snapshot_required.retained_after == feed.retained_after
                assert answer.commit_seq == 200
            # From the retained position on, records come.
            async with fetch_stream(leader) as call:
                await call.send(
                    rpb.FetchRequest(partition_id="default", after_seq=feed.retained_after)
                )
                answer = await call.receive()
                assert answer.records.records[0].seq == feed.retained_after + 1


async def test_the_log_after_a_followers_position_is_kept_while_it_reads(
    tmp_path: Path,
) -> None:
    """Checkpoints keep the log after where a follower stands, for as long
    as its stream lasts, so a follower that fell behind the feed meanwhile
    catches up from disk; once the stream ends, the log is checkpointed.
    Mutation: no hold at the follower's position -> snapshot_required."""
    with trio.fail_after(60):
        async with running_node(tmp_path / "leader", **SMALL_LOG) as leader:
            await write_kib(leader, 5, b"a")
            partition = leader.registry.partition("default")
            assert partition is not None
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", after_seq=0))
                answer = await call.receive()
                assert [r.seq for r in answer.records.records] == [1, 2, 3, 4, 5]
                await write_kib(leader, 300)
                assert partition.feed.retained_after > 100
                assert partition.statistics().wal_segments > 4
                await read_on(call, 5, 305)
            # Released: the next checkpoint drops what the feed let go.
            await write_kib(leader, 100, b"b")
            assert partition.statistics().wal_segments < 4


async def test_the_log_after_a_snapshot_is_kept_until_the_follower_reads_on(
    tmp_path: Path,
) -> None:
    """However long a snapshot takes to stream, the log after its seq stays
    on disk, and the follower goes on from there instead of starting
    another snapshot (issue 16: under sustained 1 MiB batches, a replica
    never caught up). Mutation: no hold at the captured seq ->
    snapshot_required after the snapshot."""
    with trio.fail_after(60):
        async with running_node(tmp_path / "leader", **SMALL_LOG) as leader:
            await write_kib(leader, 5, b"a")
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", snapshot=True))
                begin = await call.receive()
                assert begin.snapshot_begin.seq == 5
                await write_kib(leader, 300)
                while True:
                    await call.send(rpb.FetchRequest())
                    answer = await call.receive()
                    if answer.WhichOneof("body") == "snapshot_end":
                        break
                assert answer.snapshot_end.rows == 5
                await read_on(call, 5, 305)


async def test_a_follower_that_stops_reading_holds_the_leader_to_its_credit(
    tmp_path: Path,
) -> None:
    """Each request is answered once: a follower that stops asking gets no
    more, and the leader reads no further into the snapshot."""
    with trio.fail_after(60):
        async with two_nodes(tmp_path, prefill=200_000) as (leader, _):
            async with fetch_stream(leader) as call:
                await call.send(rpb.FetchRequest(partition_id="default", snapshot=True))
                for _ in range(3):
                    await call.send(rpb.FetchRequest(partition_id="default", max_bytes=1 << 20))
                # Not reading, not asking: the leader stops at four answers.
                await trio.sleep(1.5)
                assert leader.replication.answers == 4
                asked = 4
                rows = 0
                while True:
                    answer = await call.receive()
                    body = answer.WhichOneof("body")
                    if body == "snapshot_end":
                        break
                    rows += len(answer.snapshot_rows.rows)
                    await call.send(rpb.FetchRequest(partition_id="default", max_bytes=1 << 20))
                    asked += 1
                assert rows == answer.snapshot_end.rows == 200_000
            # Every answer answered a request, and only one: the three asked
            # ahead at the start are still unanswered when the snapshot ends.
            assert leader.replication.answers == asked - 3


async def test_an_abandoned_move_leaves_the_source_serving(tmp_path: Path) -> None:
    """The switch fails after the target cut over: the source serves again,
    the target forgets its copy, and the requests held meanwhile are answered."""
    with trio.fail_after(60):
        async with (
            two_nodes(tmp_path, prefill=2_000) as (source, target),
            mkv.Client.connect(source.data_address) as client,
        ):

            async def switch(final_seq: int) -> None:
                # Meanwhile a write waits, held by the fence.
                nursery.start_soon(client.upsert, {b"held": b"1"})
                await trio.sleep(0.2)
                raise FailedPreconditionError("the etcd Txn lost")

            async with trio.open_nursery() as nursery:
                with pytest.raises(FailedPreconditionError, match="etcd Txn"):
                    await move(source, target, switch=switch)
            assert await client.get(b"held") == b"1"
            assert not source.registry.fenced("default")
            assert target.registry.partition("default") is None
            assert not (tmp_path / "target" / "partitions" / "default").exists()
            await client.upsert({b"after": b"2"})
            assert await client.get(prefill_key(5)) is not None


_TARGET = """
import sys, trio
from pathlib import Path
from mkv.router import KeyRange
from mkv.testing import running_node
from mkv.wire import parse_address

async def main():
    async with running_node(Path(sys.argv[1])) as node:
        await node.registry.remove("default")
        await node.registry.follow(
            "default", KeyRange(b"", None), "sqlite", None, parse_address(sys.argv[2]), 0
        )
        print("copying", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@pytest.mark.parametrize("delay", [0.05, 0.6])
async def test_kill_9_of_the_target_mid_copy_loses_nothing(tmp_path: Path, delay: float) -> None:
    with trio.fail_after(120):
        await trio.to_thread.run_sync(
            lambda: prefill_sqlite_partition(tmp_path / "source", keys=200_000, value_size=100)
        )
        async with (
            running_node(tmp_path / "source") as source,
            mkv.Client.connect(source.data_address) as client,
        ):
            acked: dict[bytes, bytes] = {}
            stop = trio.Event()

            async def writer() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    await client.upsert({b"w%d" % i: b"%d" % i})
                    acked[b"w%d" % i] = b"%d" % i

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        [
                            sys.executable,
                            "-c",
                            _TARGET,
                            str(tmp_path / "target"),
                            str(source.control_address),
                        ],
                        stdout=subprocess.PIPE,
                        check=False,
                    )
                )
                assert process.stdout is not None
                assert b"copying" in await process.stdout.receive_some()
                await trio.sleep(delay)
                process.kill()  # SIGKILL
                await process.wait()
                await trio.sleep(0.3)
                stop.set()
            # The source served throughout: every acknowledged write is there.
            for key, value in acked.items():
                assert await client.get(key) == value
            assert await client.get(prefill_key(123_456)) is not None
            # The snapshot the source was streaming is deleted with its stream.
            outgoing = tmp_path / "source" / "replication-out"
            with trio.fail_after(8):
                while outgoing.exists() and any(outgoing.iterdir()):  # noqa: ASYNC110
                    await trio.sleep(0.05)
        catalog = Catalog.load(tmp_path / "target" / "catalog.json")
        assert catalog is not None
        assert catalog.copies == ("default",)
        # The target's next start removes the unfinished copy's files.
        async with running_node(tmp_path / "target") as target:
            assert target.registry.partition("default") is None
            assert not (tmp_path / "target" / "partitions" / "default").exists()
        catalog = Catalog.load(tmp_path / "target" / "catalog.json")
        assert catalog is not None
        assert catalog.copies == ()
