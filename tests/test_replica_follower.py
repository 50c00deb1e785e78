"""A replica's follower (issue 16, docs/replication.md "Replicas"): real nodes
in this process on port 0, and a test-side leader (a real gRPC Replication
server whose answers each test writes, to choose the commit seq, send a
Truncate or garbage). A crash is a ``kill -9`` of a node in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import mkv
from mkv.client.channel import open_channel
from mkv.cluster.reconcile import LeaderRef
from mkv.errors import DataLossError, NotFoundError, StorageError, leaves
from mkv.node.follower import REPLICATION_SERVICE
from mkv.node.replica_follower import EPOCH_FILE, WAL_DIR, ReplicaFollower
from mkv.node.server import Node
from mkv.partition.commands import Read
from mkv.pipeline.payload import decode_write
from mkv.records import Item
from mkv.router import KeyRange
from mkv.rpc.dial import open_bidi
from mkv.rpc.server import BidiStream, RpcServer
from mkv.store.base import StateStore
from mkv.testing import running_node
from mkv.v1 import data_pb2
from mkv.v1 import replication_pb2 as pb
from mkv.wal.epochs import read_epoch_file
from mkv.wal.log import WriteAheadLog
from mkv.wire import DATA_SERVICE, Address

EVERYTHING = KeyRange(b"", None)


class ScriptedLeader:
    """A real Replication server on port 0 whose Fetch answers come from the
    test (``answer``: to the stream that asked last; None ends it), one per
    request, as a leader's are."""

    def __init__(self) -> None:
        self.requests: list[pb.FetchRequest] = []
        # The first request of each stream.
        self.starts: list[pb.FetchRequest] = []
        self._latest: trio.MemorySendChannel[pb.FetchResponse | None] | None = None
        self._asked = trio.Event()
        self.address = Address("127.0.0.1", 0)

    async def fetch(
        self, requests: AsyncIterator[pb.FetchRequest]
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        send, answers = trio.open_memory_channel[pb.FetchResponse | None](100)
        async for request in requests:
            self.requests.append(request)
            if request.WhichOneof("start") is not None:
                self.starts.append(request)
            self._latest = send
            self._asked.set()
            self._asked = trio.Event()
            answer = await answers.receive()
            if answer is None:
                return
            yield answer

    async def answer(self, response: pb.FetchResponse | None) -> None:
        assert self._latest is not None
        await self._latest.send(response)

    async def _until(self, done: Callable[[], bool]) -> None:
        with trio.fail_after(20):
            while not done():
                await self._asked.wait()

    async def asked(self, count: int) -> pb.FetchRequest:
        """The ``count``-th request (from 1), once it has come."""
        await self._until(lambda: len(self.requests) >= count)
        return self.requests[count - 1]

    async def opened(self, count: int) -> pb.FetchRequest:
        """The first request of the ``count``-th stream, once it has come."""
        await self._until(lambda: len(self.starts) >= count)
        return self.starts[count - 1]

    def ref(self, epoch: int, node: str = "leader") -> LeaderRef:
        return LeaderRef(node, self.address, epoch)


@asynccontextmanager
async def scripted_leader() -> AsyncIterator[ScriptedLeader]:
    leader = ScriptedLeader()
    server = RpcServer(
        REPLICATION_SERVICE,
        {"Fetch": (pb.FetchRequest, BidiStream(leader.fetch))},
        Address("127.0.0.1", 0),
    )
    async with trio.open_nursery() as nursery:
        leader.address = await nursery.start(server.run)
        yield leader
        server.stop()


@asynccontextmanager
async def follower_node(data_dir: Path, **settings: object) -> AsyncIterator[Node]:
    """A node that holds no partition of its own (its default one removed)."""
    async with running_node(data_dir, **settings) as node:
        node.registry.node_id = "follower-1"
        if node.registry.partition("default") is not None:
            await node.registry.remove("default")
        yield node


class AcceptingIsr:
    """The etcd side of the leader's ISR changes, in memory: every change is
    committed (tests/test_cluster_replicas.py tests the etcd one)."""

    async def change_isr(self, partition_id: str, epoch: int, isr: frozenset[str]) -> bool:
        return True


@asynccontextmanager
async def replicated_leader(
    data_dir: Path, epoch: int, *, small_log: bool = False, **settings: object
) -> AsyncIterator[Node]:
    """A node leading ``default`` as a replicated partition at ``epoch`` (the
    leader's half refuses a replica stream from a partition that is not led
    with replicas), this test's follower a replica outside the ISR until it
    has caught up. ``small_log``: the log rolls every 64 KiB, so checkpoints
    soon drop what the feed let go."""
    wal = "wal:always,segment=65536" if small_log else "wal"
    async with running_node(
        data_dir, default_pipeline=("timestamp", wal, "replicate:sync"), **settings
    ) as node:
        node.registry.node_id = "leader"
        await node.registry.lead(
            "default",
            epoch,
            replicas=("leader", "follower-1"),
            isr=frozenset({"leader"}),
            isr_writer=AcceptingIsr(),
            min_isr=1,
        )
        yield node


def record(seq: int, value: bytes = b"", *, epoch: int = 3, key: bytes | None = None) -> pb.Record:
    return pb.Record(
        seq=seq,
        timestamp=1000 + seq,
        puts=[
            data_pb2.Entry(key=b"k%03d" % seq if key is None else key, value=value or b"v%d" % seq)
        ],
        epoch=epoch,
    )


def records(
    first: int, last: int, *, commit: int, epoch: int = 3, value: bytes = b""
) -> pb.FetchResponse:
    return pb.FetchResponse(
        epoch=epoch,
        commit_seq=commit,
        records=pb.Records(
            records=[
                record(s, value + b"%d" % s if value else b"", epoch=epoch)
                for s in range(first, last + 1)
            ]
        ),
    )


def values(items: list[tuple[bytes, Item]]) -> dict[bytes, bytes]:
    return {key: item.value for key, item in items}


async def open_replica(
    node: Node, leader: LeaderRef | None, pid: str = "p", key_range: KeyRange = EVERYTHING
) -> ReplicaFollower:
    await node.registry.open_follower(pid, key_range, "sqlite", (), leader)
    replica = node.registry.replica(pid)
    assert replica is not None
    return replica


def logged(directory: Path) -> dict[int, bytes]:
    """seq -> the key=value the log holds (read once the node stopped)."""
    wal, _ = WriteAheadLog.open(directory / WAL_DIR)
    with wal:
        out = {}
        for seq, ts, payload in (r for batch in wal.replay_batches(0) for r in batch):
            write = decode_write(payload, seq, ts)
            out[seq] = b"%s=%s" % write.puts[0] if write.puts else b""
        return out


async def test_the_store_never_holds_a_record_above_the_leaders_commit(tmp_path: Path) -> None:
    """Rule 3: ten records arrive and are logged (and reported durable), but
    only the six the leader committed reach the store; the rest once the
    commit covers them. Mutation: apply every record received (the bound in
    ``_apply_committed`` = the durable seq) -> the store holds ten at once."""
    with trio.fail_after(60):
        async with scripted_leader() as leader, follower_node(tmp_path / "f") as node:
            replica = await open_replica(node, leader.ref(3))
            first = await leader.asked(1)
            assert first.replica
            assert first.follower == "follower-1"
            assert (first.partition_id, first.epoch, first.last_epoch) == ("p", 3, 0)
            assert first.WhichOneof("start") == "after_seq"
            assert first.after_seq == 0
            await leader.answer(records(1, 10, commit=6))
            second = await leader.asked(2)
            assert second.durable_seq == 10  # logged and fsynced, reported on the next request
            assert replica.log_end == 10
            assert replica.applied_seq == 6
            assert sorted(values(await replica.items())) == [b"k%03d" % s for s in range(1, 7)]
            history = read_epoch_file(replica.directory / EPOCH_FILE)
            assert history.entries == ((3, 1),)
            assert history.commit_seq <= 6  # what the store holds, never past the commit
            await leader.answer(records(11, 10, commit=10))  # a heartbeat: commit 10
            await replica.wait_until(applied=10)
            assert len(await replica.items()) == 10
            # A follower serves nothing: no route here, and BAD_NODE for its keys.
            assert node.registry.partition("p") is None
            assert node.registry.router.lookup(b"k001") is None
            async with open_channel(node.data_address) as channel:
                answer = await channel.unary(
                    DATA_SERVICE, "Get", data_pb2.GetRequest(key=b"k001"), data_pb2.GetResponse
                )
            assert answer.status == data_pb2.BAD_NODE
            # Nor is it a leader to fetch from.
            refused: BaseException | None = None
            try:
                async with open_bidi(
                    node.control_address,
                    REPLICATION_SERVICE,
                    "Fetch",
                    pb.FetchRequest,
                    pb.FetchResponse,
                ) as call:
                    await call.send(pb.FetchRequest(partition_id="p", after_seq=0))
                    await call.receive()
            except Exception as exc:  # purerpc's tasks wrap it in a group
                refused = exc
            assert refused is not None
            assert any(isinstance(cause, NotFoundError) for cause in leaves(refused))
            await leader.answer(None)


async def leader_items(node: Node, pid: str = "default") -> dict[bytes, bytes]:
    partition = node.registry.partition(pid)
    assert partition is not None

    def scan(store: StateStore) -> list[tuple[bytes, Item]]:
        return store.scan(b"", None, 1_000_000)

    return values(await partition.submit(Read(scan)))


async def converged(replica: ReplicaFollower, leader: Node, pid: str = "default") -> None:
    """Wait until the replica holds what the leader's store holds (an
    acknowledged write may be applied on the leader a moment after its answer)."""
    with trio.fail_after(30):
        while True:
            expected = await leader_items(leader, pid)
            if values(await replica.items()) == expected:
                return
            await trio.sleep(0.05)


async def test_a_follower_of_a_real_leader_matches_it_key_for_key(tmp_path: Path) -> None:
    """A replicated leader (Fetch serving its log with the ISR commit) feeds a
    replica, which logs, applies and then follows live writes."""
    with trio.fail_after(60):
        async with (
            replicated_leader(tmp_path / "leader", 2) as leader,
            follower_node(tmp_path / "f") as node,
        ):
            async with mkv.Client.connect(leader.data_address) as client:
                await client.upsert({b"a%04d" % i: b"x%d" % i for i in range(300)})
                await client.remove(b"a0007")
                partition = leader.registry.partition("default")
                assert partition is not None
                replica = await open_replica(
                    node, LeaderRef("leader", leader.control_address, 2), "default"
                )
                await converged(replica, leader)
                for i in range(50):  # live writes, one record each
                    await client.upsert({b"b%02d" % i: b"y"})
                await converged(replica, leader)
            history = read_epoch_file(replica.directory / EPOCH_FILE)
            assert history.entries == ((2, 1),)


CRASHING_FOLLOWER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from mkv.cluster.reconcile import LeaderRef
    from mkv.router import KeyRange
    from mkv.testing import running_node
    from mkv.wire import parse_address


    async def main() -> None:
        async with running_node(Path(sys.argv[1])) as node:
            await node.registry.remove("default")
            leader = LeaderRef("leader", parse_address(sys.argv[2]), 3)
            await node.registry.open_follower("p", KeyRange(b"", None), "sqlite", (), leader)
            replica = node.registry.replica("p")
            await replica.wait_until(applied=6, durable=10)
            print("ready", flush=True)
            await trio.sleep_forever()


    trio.run(main)
    """
)


async def test_a_follower_killed_mid_stream_applies_nothing_past_the_commit_it_knew(
    tmp_path: Path,
) -> None:
    """kill -9 of a follower holding ten records logged and six committed:
    reopened, its store holds the six and no more (the tail stays logged),
    and then it catches up. Mutation: replay the whole log at open (``commit``
    in ``_open_files`` = the log's last seq) -> the store holds ten."""
    data_dir = tmp_path / "f"
    with trio.fail_after(90):
        async with scripted_leader() as leader:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", CRASHING_FOLLOWER, str(data_dir), str(leader.address)],
                stdout=subprocess.PIPE,
            )
            try:
                await leader.asked(1)
                await leader.answer(records(1, 10, commit=6))
                assert process.stdout is not None
                line = await process.stdout.receive_some(100)
                assert line.startswith(b"ready"), line
            finally:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()
            async with follower_node(data_dir) as node:
                # A replica's directory (its epoch file): not opened as a leader.
                assert node.registry.partition("p") is None
                assert node.registry.router.lookup(b"k001") is None
                replica = await open_replica(node, None)
                assert replica.log_end == 10
                assert replica.applied_seq == 6
                assert sorted(values(await replica.items())) == [b"k%03d" % s for s in range(1, 7)]
                node.registry.set_leader("p", leader.ref(3))
                request = await leader.opened(2)
                assert (request.after_seq, request.last_epoch) == (10, 3)
                await leader.answer(records(11, 12, commit=12))
                await replica.wait_until(applied=12)
                assert len(await replica.items()) == 12
                await leader.answer(None)


async def test_truncate_cuts_the_log_and_epoch_file_then_it_matches_the_new_leader(
    tmp_path: Path,
) -> None:
    """Records 1-10 of epoch 3, six committed; the leader of epoch 5 answers
    Truncate{8}: 9 and 10 (never committed) go from the log and the epoch
    file, its own 9-11 come instead (9 its epoch-start record). Mutation: ignore Truncate -> the new
    records do not follow the log's end and are refused."""
    with trio.fail_after(60):
        async with (
            scripted_leader() as old,
            scripted_leader() as new,
            follower_node(tmp_path / "f") as node,
        ):
            replica = await open_replica(node, old.ref(3))
            await old.asked(1)
            await old.answer(records(1, 10, commit=6))
            await replica.wait_until(durable=10)
            node.registry.set_leader("p", new.ref(5, "new"))
            first = await new.asked(1)
            assert (first.after_seq, first.last_epoch, first.epoch) == (10, 3, 5)
            await new.answer(pb.FetchResponse(epoch=5, commit_seq=8, truncate=pb.Truncate(seq=8)))
            await new.asked(2)
            assert replica.log_end == 8
            assert replica.truncations == 1
            assert read_epoch_file(replica.directory / EPOCH_FILE).entries == ((3, 1),)
            # The new leader's epoch-start record (no puts, no deletes), then its writes.
            answer = records(9, 11, commit=11, epoch=5, value=b"new")
            del answer.records.records[0].puts[:]
            await new.answer(answer)
            await replica.wait_until(applied=11)
            expected = {b"k%03d" % s: b"v%d" % s for s in range(1, 9)}
            expected |= {b"k%03d" % s: b"new%d" % s for s in range(10, 12)}
            assert values(await replica.items()) == expected
            history = read_epoch_file(replica.directory / EPOCH_FILE)
            assert history.entries == ((3, 1), (5, 9))
            await new.answer(None)
            directory = replica.directory
        on_disk = logged(directory)
        assert sorted(on_disk) == list(range(1, 12))
        assert on_disk[9] == b""  # the epoch-start record
        assert on_disk[10] == b"k010=new10"


async def test_a_truncate_below_the_store_is_data_loss(tmp_path: Path) -> None:
    """Truncate{4} when the store holds six committed writes: refused with
    DATA_LOSS, the follower stops (failed), the log is not cut. Mutation:
    drop the ``seq < applied_seq`` check -> the log is cut to 4."""
    with trio.fail_after(60):
        async with scripted_leader() as leader, follower_node(tmp_path / "f") as node:
            replica = await open_replica(node, leader.ref(3))
            await leader.asked(1)
            await leader.answer(records(1, 10, commit=6))
            await replica.wait_until(applied=6, durable=10)
            await leader.answer(None)  # the stream ends; the follower asks again
            await leader.opened(2)
            await leader.answer(
                pb.FetchResponse(epoch=3, commit_seq=6, truncate=pb.Truncate(seq=4))
            )
            error = await replica.wait_failed()
            assert isinstance(error, DataLossError)
            assert "store holds writes through 6" in str(error)
            assert replica.state == "failed"
            assert replica.log_end == 10


GARBAGE = {
    "a seq that goes back": records(5, 5, commit=5),
    "a key out of range": pb.FetchResponse(
        epoch=3, commit_seq=11, records=pb.Records(records=[record(11, key=b"zzz")])
    ),
    "an empty key": pb.FetchResponse(
        epoch=3, commit_seq=11, records=pb.Records(records=[record(11, key=b"")])
    ),
    "an epoch past the leader's": pb.FetchResponse(
        epoch=3, commit_seq=11, records=pb.Records(records=[record(11, epoch=4)])
    ),
    "an epoch older than the log's": pb.FetchResponse(
        epoch=3, commit_seq=11, records=pb.Records(records=[record(11, epoch=2)])
    ),
    "a truncate above the position asked": pb.FetchResponse(
        epoch=3, commit_seq=6, truncate=pb.Truncate(seq=20)
    ),
    "a truncate not first": pb.FetchResponse(epoch=3, commit_seq=6, truncate=pb.Truncate(seq=10)),
}


@pytest.mark.parametrize("what", list(GARBAGE))
async def test_garbage_from_the_leader_is_refused(tmp_path: Path, what: str) -> None:
    """Each bad answer ends the follower with DATA_LOSS, nothing of it logged.
    Mutation: drop the matching check in ``_check_records`` / ``_receive`` /
    ``_truncate`` -> the record is logged (or the log cut)."""
    with trio.fail_after(60):
        async with scripted_leader() as leader, follower_node(tmp_path / "f") as node:
            replica = await open_replica(node, leader.ref(3), key_range=KeyRange(b"", b"m"))
            await leader.asked(1)
            await leader.answer(records(1, 10, commit=6, value=b"ok"))
            await replica.wait_until(durable=10)
            if what != "a truncate not first":
                await leader.answer(None)  # a new stream: its first answer is the garbage
                await leader.opened(2)
            await leader.answer(GARBAGE[what])
            error = await replica.wait_failed()
            assert isinstance(error, DataLossError), error
            assert "refused" in str(error)
            assert replica.log_end == 10
            assert replica.applied_seq == 6
            assert read_epoch_file(replica.directory / EPOCH_FILE).entries == ((3, 1),)


@pytest.mark.parametrize(
    "garbage", [b"", b"mkv-epochs 1\ncommit x\n", b"mkv-epochs 1\ncommit 0\n3 5\n2 9\n", b"\xff"]
)
async def test_a_garbage_epoch_file_is_refused_with_a_clear_error(
    tmp_path: Path, garbage: bytes
) -> None:
    """The epoch file is read back as bad input: a damaged one stops the
    replica from opening, naming the file; the node itself runs on."""
    with trio.fail_after(60):
        async with follower_node(tmp_path / "f") as node:
            replica = await open_replica(node, None)
            directory = replica.directory
        (directory / EPOCH_FILE).write_bytes(garbage)
        async with follower_node(tmp_path / "f") as node:
            assert node.registry.partition("p") is None
            with pytest.raises(StorageError, match=r"epoch file .*epochs"):
                await open_replica(node, None)
            assert node.registry.replica("p") is None


async def test_a_follower_behind_the_feed_catches_up_from_the_leaders_log(
    tmp_path: Path,
) -> None:
    """A leader whose feed retains only the last few writes, but whose log
    on disk holds them all: a new replica catches up from the log, with no
    snapshot, and matches the leader. Mutation: SNAPSHOT_REQUIRED where the
    feed ends -> a snapshot is installed."""
    with trio.fail_after(90):
        async with (
            replicated_leader(tmp_path / "leader", 4, watch_retention_bytes=4096) as leader,
            follower_node(tmp_path / "f") as node,
        ):
            async with mkv.Client.connect(leader.data_address) as client:
                for i in range(200):
                    await client.upsert({b"s%04d" % i: b"z" * 100})
                partition = leader.registry.partition("default")
                assert partition is not None
                assert partition.feed.retained_after > 100
                replica = await open_replica(
                    node, LeaderRef("leader", leader.control_address, 4), "default"
                )
                await converged(replica, leader)
                assert replica.snapshots == 0
            directory = replica.directory
        # Every write and the leader's epoch-start record, from the first on.
        assert sorted(logged(directory)) == list(range(1, 202))


async def test_a_far_behind_follower_installs_a_snapshot(tmp_path: Path) -> None:
    """A leader whose feed and log no longer hold the first writes answers
    SNAPSHOT_REQUIRED; the follower installs a snapshot, starts its log after
    it, and then matches the leader key for key, live writes included.
    Mutation: skip the install (keep the old store) -> keys are missing."""
    with trio.fail_after(90):
        async with (
            replicated_leader(
                tmp_path / "leader", 4, small_log=True, watch_retention_bytes=4096
            ) as leader,
            follower_node(tmp_path / "f") as node,
        ):
            async with mkv.Client.connect(leader.data_address) as client:
                for i in range(200):
                    await client.upsert({b"s%04d" % i: b"z" * 1000})
                partition = leader.registry.partition("default")
                assert partition is not None
                assert partition.feed.retained_after > 0
                replica = await open_replica(
                    node, LeaderRef("leader", leader.control_address, 4), "default"
                )
                await converged(replica, leader)
                assert replica.snapshots == 1
                history = read_epoch_file(replica.directory / EPOCH_FILE)
                assert history.entries[0][0] == 4
                for i in range(20):
                    await client.upsert({b"t%02d" % i: b"after"})
                await converged(replica, leader)
            directory = replica.directory
        # The log starts after the snapshot: it holds only the live writes.
        assert len(logged(directory)) == 20


async def test_a_single_node_is_unchanged_across_a_restart(tmp_path: Path) -> None:
    """No cluster, no replica: no epoch file is written, and a restart opens
    the default partition as a serving leader as before."""
    with trio.fail_after(60):
        async with (
            running_node(tmp_path / "n") as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            await client.upsert({b"k": b"v"})
        assert not (tmp_path / "n" / "partitions" / "default" / EPOCH_FILE).exists()
        async with running_node(tmp_path / "n") as node:
            assert node.registry.partition("default") is not None
            async with mkv.Client.connect(node.data_address) as client:
                assert await client.get(b"k") == b"v"


async def test_a_replica_closed_before_its_task_ran_ends_it_quietly(tmp_path: Path) -> None:
    """The node may close a replica between its opening and the start of its
    task (it began to shut down while a deposed leader stepped down to a
    replica). The task then ends at once with the replica closed; it used to
    close the files a second time, on the lane the first close had stopped,
    and its RuntimeError took the node's shutdown down (found in CI)."""
    with trio.fail_after(30):
        async with follower_node(tmp_path / "f") as node:
            replica = ReplicaFollower(
                "p",
                EVERYTHING,
                "sqlite",
                (),
                tmp_path / "f" / "p",
                node="follower-1",
                workers=node.registry.workers,
            )
            await replica.open()
            await replica.close()
            assert replica.state == "closed"
            async with trio.open_nursery() as nursery:
                await nursery.start(replica.run)
            assert replica.state == "closed"
            assert replica.error is None


async def test_a_replica_is_removed_with_its_files(tmp_path: Path) -> None:
    """``remove`` (a Delete decided in etcd) closes a replica, drops it from
    the catalog and deletes its files, opened or found at start alike."""
    with trio.fail_after(60):
        async with scripted_leader() as leader:
            async with follower_node(tmp_path / "f") as node:
                replica = await open_replica(node, leader.ref(3))
                await leader.opened(1)
                await leader.answer(records(1, 4, commit=4))
                await replica.wait_until(applied=4)
                report = await node.registry.remove("p")
                assert report.last_seq == 4
                assert node.registry.replica("p") is None
                assert not replica.directory.exists()
                replica = await open_replica(node, None, "q")
                directory = replica.directory
            async with follower_node(tmp_path / "f") as node:
                await node.registry.remove("q")  # found at start, never opened
                assert not directory.exists()
            async with follower_node(tmp_path / "f") as node:
                with pytest.raises(NotFoundError):
                    await node.registry.remove("q")


async def test_a_replica_whose_log_lost_what_its_store_holds_is_refused_untouched(
    tmp_path: Path,
) -> None:
    """A store ahead of its log (records it applied gone from the log) is
    damage: opening it fails, naming why, and leaves the epoch file as it
    was. Mutation: record the commit while closing after the failed open
    (``persist=False`` dropped) -> the epoch file is rewritten."""
    with trio.fail_after(60):
        async with scripted_leader() as leader, follower_node(tmp_path / "f") as node:
            replica = await open_replica(node, leader.ref(3))
            await leader.opened(1)
            await leader.answer(records(1, 8, commit=6))
            await replica.wait_until(applied=6, durable=8)
            directory = replica.directory
        wal, _ = WriteAheadLog.open(directory / WAL_DIR)
        with wal:
            wal.truncate_after(3)
        before = (directory / EPOCH_FILE).read_bytes()
        async with follower_node(tmp_path / "f") as node:
            with pytest.raises(StorageError, match="past its log's last seq 3"):
                await open_replica(node, None)
        assert (directory / EPOCH_FILE).read_bytes() == before


async def test_a_replica_restarted_far_behind_replaces_its_state_by_a_snapshot(
    tmp_path: Path,
) -> None:
    """A replica that holds data (store and log) and was down while the
    leader's retained log moved past it: reopened, it installs a snapshot
    over its old store, its log restarts after the snapshot, and it matches
    the leader. Mutation: keep the old files (``_clear_state`` a no-op) ->
    the old log's records stay and the log does not start after the snapshot."""
    with trio.fail_after(90):
        async with (
            replicated_leader(
                tmp_path / "leader", 4, small_log=True, watch_retention_bytes=4096
            ) as leader,
            mkv.Client.connect(leader.data_address) as client,
        ):
            ref = LeaderRef("leader", leader.control_address, 4)
            for i in range(5):
                await client.upsert({b"early%d" % i: b"e"})
            async with follower_node(tmp_path / "f") as node:
                replica = await open_replica(node, ref, "default")
                await converged(replica, leader)
                assert replica.snapshots == 0
            for i in range(200):
                await client.upsert({b"s%04d" % i: b"z" * 1000})
            await client.remove(b"early1")
            async with follower_node(tmp_path / "f") as node:
                replica = await open_replica(node, ref, "default")
                await converged(replica, leader)
                assert replica.snapshots == 1
                snapshot_seq = replica.history.entries[0][1]
                assert replica.history.entries == ((4, snapshot_seq),)
                await client.upsert({b"late": b"l"})
                await converged(replica, leader)
                directory = replica.directory
        assert sorted(logged(directory)) == [snapshot_seq + 1]
