"""The leader's half of replicated partitions (issue 16): the replicate stage,
Fetch serving the uncommitted tail, the in-sync set, promotion and step-down.

A real node runs in this process on port 0 with a partition whose pipeline
has the ``replicate`` stage. Its followers are the test's own: real
``Replication/Fetch`` clients over the node's control port that acknowledge
durable seqs as each test chooses (so a test can hold a follower back). The
ISR's etcd side is a small in-memory ``IsrWriter`` (the etcd one is tested
in tests/test_cluster_replicas.py); writes go through the data plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mkv.client.channel import Channel, open_channel
from mkv.errors import FailedPreconditionError, MkvError, UnavailableError
from mkv.node.server import Node
from mkv.partition.task import Partition
from mkv.rpc.dial import BidiCall, open_bidi
from mkv.testing import running_node
from mkv.v1 import data_pb2
from mkv.v1 import replication_pb2 as rpb
from mkv.wire import DATA_SERVICE

REPLICATION = "mkv.v1.Replication"
PIPELINE = ("timestamp", "wal", "replicate:sync")
PID = "default"
REPLICAS = ("n1", "n2", "n3")


class MemoryIsr:
    """The etcd side of ISR changes, in memory: records each change in order."""

    def __init__(self, events: list[Any] | None = None) -> None:
        self.events: list[Any] = [] if events is None else events
        self.accept = True

    async def change_isr(self, partition_id: str, epoch: int, isr: frozenset[str]) -> bool:
        self.events.append(("isr", epoch, isr))
        return self.accept


@asynccontextmanager
async def leader_node(
    tmp_path: Path, lag_timeout: float = 30.0, pipeline: tuple[str, ...] = PIPELINE
) -> AsyncIterator[Node]:
    async with running_node(
        tmp_path / "leader", default_pipeline=pipeline, metrics_addr="127.0.0.1:0"
    ) as node:
        node.registry.node_id = "n1"
        node.registry.replica_lag_timeout = lag_timeout
        yield node


def partition_of(node: Node) -> Partition:
    partition = node.registry.partition(PID)
    assert partition is not None
    return partition


def in_store(node: Node, key: bytes) -> bytes | None:
    """The store's own view, read directly: what it has applied, nothing else."""
    store = partition_of(node)._store
    assert store is not None
    item = store.get(key)
    return None if item is None else item.value


class Replica:
    """A test-side follower: one Fetch stream, acknowledging what the test says."""

    def __init__(self, call: BidiCall[rpb.FetchResponse], node_id: str, epoch: int) -> None:
        self.call = call
        self.node_id = node_id
        self.epoch = epoch
        self.records: list[rpb.Record] = []
        self.commit_seq = 0

    async def ask(self, durable_seq: int) -> rpb.FetchResponse:
        await self.call.send(
            rpb.FetchRequest(
                partition_id=PID,
                epoch=self.epoch,
                durable_seq=durable_seq,
                follower=self.node_id,
                replica=True,
            )
        )
        return await self.receive()

    async def receive(self) -> rpb.FetchResponse:
        answer = await self.call.receive()
        self.commit_seq = answer.commit_seq
        if answer.WhichOneof("body") == "records":
            self.records += answer.records.records
        return answer

    @property
    def last(self) -> int:
        return self.records[-1].seq if self.records else 0

    async def until(self, seq: int, durable_seq: int) -> None:
        """Fetch until a record ``seq`` arrived, reporting ``durable_seq`` each time."""
        with trio.fail_after(10):
            while self.last < seq:
                await self.ask(durable_seq)


@asynccontextmanager
async def replica(
    node: Node,
    node_id: str,
    epoch: int,
    *,
    after_seq: int = 0,
    last_epoch: int = 0,
    durable_seq: int = 0,
) -> AsyncIterator[tuple[Replica, rpb.FetchResponse]]:
    """A replica stream; yields it with the leader's first answer."""
    async with open_bidi(
        node.control_address, REPLICATION, "Fetch", rpb.FetchRequest, rpb.FetchResponse
    ) as call:
        await call.send(
            rpb.FetchRequest(
                partition_id=PID,
                epoch=epoch,
                after_seq=after_seq,
                durable_seq=durable_seq,
                follower=node_id,
                replica=True,
                last_epoch=last_epoch,
            )
        )
        follower = Replica(call, node_id, epoch)
        first = await follower.receive()
        yield follower, first


async def configured(node: Node, epoch: int) -> None:
    """Wait until ``lead`` has told the partition's stage its epoch and ISR
    (before that a replica stream is refused)."""
    with trio.fail_after(10):
        while True:
            partition = node.registry.partition(PID)
            stage = None if partition is None else partition.replicate_stage()
            if stage is not None and stage.epoch == epoch and stage.isr is not None:
                return
            await trio.sleep(0.01)


async def serving(node: Node) -> None:
    with trio.fail_after(5):
        while node.registry.role(PID) != "leader":  # noqa: ASYNC110 (no event to wait on)
            await trio.sleep(0.01)


async def refused(node: Node, node_id: str, epoch: int, **first: Any) -> str:
    """Open a replica stream that the leader must refuse; returns why."""
    async with open_bidi(
        node.control_address, REPLICATION, "Fetch", rpb.FetchRequest, rpb.FetchResponse
    ) as call:
        first.setdefault("after_seq", 0)
        await call.send(
            rpb.FetchRequest(partition_id=PID, epoch=epoch, follower=node_id, replica=True, **first)
        )
        with pytest.raises(FailedPreconditionError) as refusal:
            await call.receive()
    return str(refusal.value)


async def keep_up(node: Node, node_id: str, epoch: int, last_epoch: int = 0) -> None:
    """A follower that acknowledges everything it receives, until cancelled."""
    await configured(node, epoch)
    async with replica(node, node_id, epoch, last_epoch=last_epoch) as (follower, first):
        durable = first.truncate.seq if first.WhichOneof("body") == "truncate" else follower.last
        while True:
            await follower.ask(durable)
            durable = max(durable, follower.last)


async def upsert(channel: Channel, key: bytes, value: bytes) -> int:
    request = data_pb2.UpsertRequest(entries=[data_pb2.Entry(key=key, value=value)])
    response: Any = await channel.unary(DATA_SERVICE, "Upsert", request, data_pb2.UpsertResponse)
    assert response.status == data_pb2.OK, response
    return int(response.seq)


async def get(channel: Channel, key: bytes) -> bytes | None:
    response: Any = await channel.unary(
        DATA_SERVICE, "Get", data_pb2.GetRequest(key=key), data_pb2.GetResponse
    )
    return bytes(response.value) if response.found else None


class Outcome:
    """What a write running in the background came to."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.seq: int | None = None
        self.error: MkvError | None = None

    async def run(self, channel: Channel, key: bytes, value: bytes) -> None:
        try:
            self.seq = await upsert(channel, key, value)
        except MkvError as exc:
            self.error = exc
        self.done.set()


async def lead(
    node: Node, epoch: int, replicas: tuple[str, ...], isr: MemoryIsr, **kw: Any
) -> None:
    kw.setdefault("min_isr", 1)
    await node.registry.lead(
        PID,
        epoch,
        replicas=replicas,
        isr=frozenset(kw.pop("in_sync", replicas)),
        isr_writer=isr,
        **kw,
    )


async def test_a_write_is_answered_only_once_every_isr_member_has_it_durable(
    tmp_path: Path,
) -> None:
    """Mutation: ReplicateStage.submit completing every write at once (no
    waiter) answers the write while the follower holds its ack."""
    with trio.fail_after(60):
        async with leader_node(tmp_path) as node, open_channel(node.data_address) as channel:
            # Single node before any lead(): the stage commits at the local fsync.
            assert await upsert(channel, b"solo", b"1") == 1
            isr = MemoryIsr()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lead, node, 5, ("n1", "n2"), isr)
                await configured(node, 5)
                async with replica(node, "n2", 5, after_seq=1, last_epoch=0) as (n2, first):
                    # Its log (seq 1, no epoch) ends where epoch 0 ends here.
                    assert first.truncate.seq == 1
                    await n2.until(2, durable_seq=1)
                    start = n2.records[-1]
                    assert (start.seq, start.epoch, list(start.puts)) == (2, 5, [])
                    assert node.registry.role(PID) is None  # not serving yet
                    await n2.ask(2)
                    await serving(node)
                    write = Outcome()
                    nursery.start_soon(write.run, channel, b"k", b"v")
                    # The follower receives the write (from the tail: not applied)
                    # with the commit still below it.
                    await n2.until(3, durable_seq=2)
                    assert n2.records[-1].epoch == 5
                    assert n2.commit_seq == 2
                    await trio.sleep(0.3)
                    assert not write.done.is_set()
                    assert in_store(node, b"k") is None  # rule 3: not above the commit
                    answer = await n2.ask(3)
                    with trio.fail_after(5):
                        await write.done.wait()
                    assert write.seq == 3
                    assert write.error is None
                    assert answer.commit_seq == 3
                    assert await get(channel, b"k") == b"v"
                    assert in_store(node, b"k") == b"v"
                    states = node.registry.replica_states(PID)
                    assert states is not None
                    assert states.commit_seq == 3
                    (progress,) = states.replicas
                    assert (progress.node, progress.durable_seq, progress.in_sync) == (
                        "n2",
                        3,
                        True,
                    )
                    assert progress.lag_records == 0
            assert isr.events == []  # nobody lagged: no ISR change


async def test_async_mode_answers_at_the_local_log_but_lead_waits_for_the_isr(
    tmp_path: Path,
) -> None:
    """replicate:async: a write is answered once durable here (a failover may
    lose it), yet a new leader serves only once the ISR has its epoch-start
    record. Mutation: dropping ``wait_committed`` in lead returns at once."""
    pipeline = ("timestamp", "wal", "replicate:async")
    with trio.fail_after(60):
        async with (
            leader_node(tmp_path, pipeline=pipeline) as node,
            open_channel(node.data_address) as channel,
            trio.open_nursery() as nursery,
        ):
            leading = Outcome()

            async def promote() -> None:
                await lead(node, 5, ("n1", "n2"), MemoryIsr())
                leading.done.set()

            nursery.start_soon(promote)
            await configured(node, 5)
            async with replica(node, "n2", 5) as (n2, _):
                await n2.until(1, durable_seq=0)
                await trio.sleep(0.3)
                assert not leading.done.is_set()
                await n2.ask(1)
                with trio.fail_after(5):
                    await leading.done.wait()
                # n2 has not got it, and the write is answered all the same.
                assert await upsert(channel, b"k", b"v") == 2
                answer = await n2.ask(1)
                assert answer.commit_seq == 1


async def test_records_near_the_largest_request_go_one_per_answer(tmp_path: Path) -> None:
    """Two writes of almost 1 MiB each in the tail: each answer carries
    what fits one message (purerpc refuses to send more than the port's
    largest message, and the stream would fail on every retry: a paused
    leader's replica never rejoined). Mutation: packing records while the
    size so far is under the budget (what it did) fails the second answer
    with INTERNAL."""
    pipeline = ("timestamp", "wal", "replicate:async")
    big = b"x" * (900 * 1024)
    with trio.fail_after(60):
        async with (
            leader_node(tmp_path, pipeline=pipeline) as node,
            open_channel(node.data_address) as channel,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(lead, node, 5, ("n1", "n2"), MemoryIsr())
            await configured(node, 5)
            async with replica(node, "n2", 5) as (n2, _):
                await n2.until(1, durable_seq=0)
                await n2.ask(1)
                await serving(node)
                # Answered at the local log (async): both wait in the tail.
                assert await upsert(channel, b"a", big) == 2
                assert await upsert(channel, b"b", big) == 3
                first = await n2.ask(1)
                assert [r.seq for r in first.records.records] == [2]
                second = await n2.ask(2)
                assert [r.seq for r in second.records.records] == [3]
                assert [bytes(r.puts[0].value) for r in n2.records[-2:]] == [big, big]


async def test_a_replica_stream_from_a_stranger_is_refused(tmp_path: Path) -> None:
    """Mutation: dropping the replicas check in ReplicationService._replica."""
    with trio.fail_after(60):
        async with leader_node(tmp_path) as node, trio.open_nursery() as nursery:
            nursery.start_soon(keep_up, node, "n2", 5)
            await lead(node, 5, ("n1", "n2"), MemoryIsr())
            assert "not a replica" in await refused(node, "n9", 5)
            # A node naming the leader itself is no follower either.
            assert "not a replica" in await refused(node, "n1", 5)
            nursery.cancel_scope.cancel()


async def test_a_lagging_follower_leaves_the_isr_in_etcd_first_and_rejoins(
    tmp_path: Path,
) -> None:
    """Mutations: ReplicateStage._check_isr setting the local ISR without
    the IsrWriter (no etcd event before the write), or never adding back."""
    with trio.fail_after(60):
        async with leader_node(tmp_path, lag_timeout=2.0) as node:
            events: list[Any] = []
            isr = MemoryIsr(events)
            replicas = ("n1", "n2", "n3")
            async with trio.open_nursery() as nursery, open_channel(node.data_address) as channel:
                nursery.start_soon(keep_up, node, "n2", 5)
                # n3 never fetches: the epoch-start record commits only once
                # it is out of the ISR in etcd.
                await lead(node, 5, replicas, isr)
                events.append("serving")
                assert events[0] == ("isr", 5, frozenset({"n1", "n2"}))
                assert events[1] == "serving"
                states = node.registry.replica_states(PID)
                assert states is not None
                lagging = {p.node: p for p in states.replicas}["n3"]
                assert not lagging.in_sync
                assert lagging.lag_records > 0
                assert node.metrics is not None
                metrics = (await node.metrics.render()).decode()
                assert 'mkv_replica_in_sync{partition="default",replica="n3"} 0.0' in metrics
                assert 'mkv_replica_in_sync{partition="default",replica="n2"} 1.0' in metrics
                assert 'mkv_replica_lag_records{partition="default",replica="n3"} 1.0' in metrics
                shrinks = 'mkv_partition_isr_changes_total{direction="shrink",partition="default"}'
                assert f"{shrinks} 1.0" in metrics
                seq = await upsert(channel, b"a", b"1")
                # n3 catches up and reaches the commit: added back, in etcd.
                async with replica(node, "n3", 5, after_seq=0) as (n3, _):
                    await n3.until(seq, durable_seq=0)
                    await n3.ask(seq)
                    with trio.fail_after(5):
                        while len(events) < 3:
                            await n3.ask(seq)
                    assert events[2] == ("isr", 5, frozenset(replicas))
                    # Back in the commit: a write waits for it again.
                    write = Outcome()
                    nursery.start_soon(write.run, channel, b"b", b"2")
                    await n3.until(seq + 1, durable_seq=seq)
                    await trio.sleep(0.2)
                    assert not write.done.is_set()
                    await n3.ask(seq + 1)
                    with trio.fail_after(5):
                        await write.done.wait()
                    assert write.error is None
                nursery.cancel_scope.cancel()


async def test_below_min_isr_writes_are_refused_and_nothing_is_logged(tmp_path: Path) -> None:
    """Mutation: Partition._admit skipping the stages' admission check logs
    the write (it then waits for an ISR it cannot get)."""
    with trio.fail_after(60):
        async with leader_node(tmp_path, lag_timeout=0.5) as node:
            isr = MemoryIsr()
            async with trio.open_nursery() as nursery, open_channel(node.data_address) as channel:
                leading = Outcome()

                async def promote() -> None:
                    await lead(node, 5, ("n1", "n2"), isr, min_isr=2)
                    leading.done.set()

                nursery.start_soon(promote)
                await configured(node, 5)
                async with replica(node, "n2", 5) as (n2, _):
                    await n2.until(1, durable_seq=0)
                    await n2.ask(1)
                    with trio.fail_after(5):
                        await leading.done.wait()
                    # Admitted with the ISR whole; n2 stops acknowledging.
                    write = Outcome()
                    nursery.start_soon(write.run, channel, b"a", b"1")
                    await n2.until(2, durable_seq=1)
                # n2 is gone: removed after the lag timeout; the write logged
                # before that is committed without it.
                with trio.fail_after(5):
                    await write.done.wait()
                assert write.error is None
                assert write.seq == 2
                assert isr.events == [("isr", 5, frozenset({"n1"}))]
                wal = partition_of(node).statistics()
                with pytest.raises(UnavailableError, match="min_isr"):
                    await upsert(channel, b"b", b"2")
                # Nothing logged, nothing numbered; reads go on.
                assert partition_of(node).statistics().wal_synced_seq == wal.wal_synced_seq == 2
                assert await get(channel, b"a") == b"1"
                nursery.cancel_scope.cancel()


async def test_step_down_fails_unacknowledged_writes_and_lead_commits_the_tail_first(
    tmp_path: Path,
) -> None:
    """step_down: the writes the ISR never acknowledged fail UNAVAILABLE.
    lead at a new epoch on that log: the tail is not in the store until the
    ISR has the epoch-start record after it; nothing is served before.

    Mutations: replaying the whole log at promotion (``replay_through``
    ignored) puts the tail in the store before the ack; a step-down that
    does not abandon the stage's writes hangs."""
    with trio.fail_after(60):
        async with leader_node(tmp_path) as node, open_channel(node.data_address) as channel:
            isr = MemoryIsr()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 5)
                await lead(node, 5, ("n1", "n2"), isr)
                assert await upsert(channel, b"a", b"1") == 2
                nursery.cancel_scope.cancel()
            async with (
                trio.open_nursery() as nursery,
                replica(node, "n2", 5, after_seq=2, last_epoch=5) as (n2, first),
            ):
                assert first.WhichOneof("body") == "records"  # same epoch: no truncation
                held = [Outcome(), Outcome()]
                nursery.start_soon(held[0].run, channel, b"b", b"2")
                await n2.until(3, durable_seq=2)
                nursery.start_soon(held[1].run, channel, b"c", b"3")
                await n2.until(4, durable_seq=2)
                await node.registry.step_down(PID, None)
                for outcome in held:
                    with trio.fail_after(5):
                        await outcome.done.wait()
                    assert isinstance(outcome.error, UnavailableError)
                    assert "outcome is unknown" in str(outcome.error)
            assert node.registry.role(PID) is None
            # Promoted again at epoch 9 over the same log (b and c in its tail).
            async with trio.open_nursery() as nursery:
                leading = Outcome()

                async def promote() -> None:
                    await lead(node, 9, ("n1", "n2"), isr)
                    leading.done.set()

                nursery.start_soon(promote)
                await configured(node, 9)
                assert in_store(node, b"a") == b"1"
                assert in_store(node, b"b") is None
                assert in_store(node, b"c") is None
                # A replica that has only up to seq 2 of epoch 5 is cut there
                # (end of epoch 5 here is 4), then fed 3, 4 and the epoch start.
                async with replica(node, "n2", 9, after_seq=2, last_epoch=5) as (n2, first):
                    assert first.truncate.seq == 2
                    await n2.until(5, durable_seq=2)
                    assert [(r.seq, r.epoch) for r in n2.records[-3:]] == [(3, 5), (4, 5), (5, 9)]
                    await trio.sleep(0.3)
                    assert not leading.done.is_set()
                    assert node.registry.role(PID) is None
                    assert in_store(node, b"b") is None  # uncommitted: not in the store
                    await n2.ask(5)
                    with trio.fail_after(5):
                        await leading.done.wait()
                    assert node.registry.role(PID) == "leader"
                    # Committed under epoch 9: applied, and read.
                    assert await get(channel, b"b") == b"2"
                    assert await get(channel, b"c") == b"3"
                    assert in_store(node, b"c") == b"3"
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("last_epoch", "after_seq", "expected"),
    [
        (5, 9, 4),  # epoch 5 ends at 4 here: its records past it diverge
        (5, 3, 3),  # never past where the replica's log ends
        (3, 9, 0),  # older than any epoch here: everything of it goes
    ],
)
async def test_a_fetch_of_an_older_epoch_is_answered_truncate(
    tmp_path: Path, last_epoch: int, after_seq: int, expected: int
) -> None:
    """Mutations: answering Truncate{after_seq} (end_of ignored) fails the
    first case; counting the replica's reported durable seq past the
    truncation point (its cut tail) for the commit fails every case."""
    with trio.fail_after(60):
        async with leader_node(tmp_path) as node, open_channel(node.data_address) as channel:
            isr = MemoryIsr()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 5)
                await lead(node, 5, REPLICAS, isr, in_sync=("n1", "n2"))  # seq 1
                for i in range(3):  # seqs 2 to 4
                    await upsert(channel, b"k%d" % i, b"v")
                nursery.cancel_scope.cancel()
            await node.registry.step_down(PID, None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 9, 5)
                await lead(node, 9, REPLICAS, isr, in_sync=("n1", "n2"))  # seq 5
                nursery.cancel_scope.cancel()
            # n3's log, of epoch ``last_epoch``, ends at ``after_seq``, all durable.
            async with replica(
                node,
                "n3",
                9,
                after_seq=after_seq,
                last_epoch=last_epoch,
                durable_seq=after_seq,
            ) as (n3, first):
                assert first.WhichOneof("body") == "truncate"
                assert first.truncate.seq == expected
                assert first.epoch == 9
                # What it says it holds past the cut is not this log: only up
                # to the cut counts for the commit.
                await n3.ask(after_seq)
                states = node.registry.replica_states(PID)
                assert states is not None
                assert {p.node: p.durable_seq for p in states.replicas}["n3"] == expected
            # Its own epoch: no truncation; a newer one: this leader is stale.
            async with replica(node, "n3", 9, after_seq=5, last_epoch=9) as (_, first):
                assert first.WhichOneof("body") == "records"
            why = await refused(node, "n3", 9, after_seq=5, last_epoch=10)
            assert "newer than this leader" in why


async def test_a_restarted_leader_keeps_its_epochs_and_its_epoch_start_records(
    tmp_path: Path,
) -> None:
    """The epoch file and the epoch-start record (a write of nothing) survive
    a restart: the log replays it, the feed serves it, the next leadership
    numbers after it."""
    with trio.fail_after(60):
        async with (
            leader_node(tmp_path) as node,
            open_channel(node.data_address) as channel,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(keep_up, node, "n2", 5)
            await lead(node, 5, ("n1", "n2"), MemoryIsr())
            assert await upsert(channel, b"a", b"1") == 2
            nursery.cancel_scope.cancel()
        async with leader_node(tmp_path) as node, open_channel(node.data_address) as channel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 7, 5)
                await lead(node, 7, ("n1", "n2"), MemoryIsr())
                assert await get(channel, b"a") == b"1"
                assert await upsert(channel, b"b", b"2") == 4
                nursery.cancel_scope.cancel()
            stage = partition_of(node).replicate_stage()
            assert stage is not None
            assert stage.history.entries == ((5, 1), (7, 3))
            # The whole log, from the feed the restart loaded and from the tail.
            async with replica(node, "n2", 7, after_seq=0, last_epoch=5) as (n2, first):
                assert first.truncate.seq == 0
                await n2.until(4, durable_seq=0)
                assert [(r.seq, r.epoch, len(r.puts)) for r in n2.records] == [
                    (1, 5, 0),
                    (2, 5, 1),
                    (3, 7, 0),
                    (4, 7, 1),
                ]


async def test_a_replica_too_far_behind_starts_from_a_snapshot_and_rejoins(
    tmp_path: Path,
) -> None:
    """A replica's stream may start with a snapshot (its log is too old for
    the leader's feed): then the records after it, its durable seq counted
    from the snapshot's seq; once at the commit it is back in the ISR."""
    with trio.fail_after(60):
        async with (
            leader_node(tmp_path) as node,
            open_channel(node.data_address) as channel,
            trio.open_nursery() as nursery,
        ):
            isr = MemoryIsr()
            nursery.start_soon(keep_up, node, "n2", 5)
            await lead(node, 5, REPLICAS, isr, in_sync=("n1", "n2"))
            for i in range(3):
                await upsert(channel, b"k%d" % i, b"v%d" % i)
            async with open_bidi(
                node.control_address, REPLICATION, "Fetch", rpb.FetchRequest, rpb.FetchResponse
            ) as call:
                await call.send(
                    rpb.FetchRequest(
                        partition_id=PID, epoch=5, snapshot=True, follower="n3", replica=True
                    )
                )
                n3 = Replica(call, "n3", 5)
                begin = await n3.receive()
                assert begin.snapshot_begin.seq == 4
                assert begin.epoch == 5
                assert begin.commit_seq == 4  # the ISR's, not the applied seq
                rows = []
                while (answer := await n3.ask(0)).WhichOneof("body") == "snapshot_rows":
                    rows += [(r.key, r.value) for r in answer.snapshot_rows.rows]
                assert answer.WhichOneof("body") == "snapshot_end"
                assert rows == [(b"k%d" % i, b"v%d" % i) for i in range(3)]
                seq = await upsert(channel, b"k9", b"v9")
                await n3.until(seq, durable_seq=4)
                assert [(r.seq, r.epoch) for r in n3.records] == [(seq, 5)]
                with trio.fail_after(5):
                    while len(isr.events) < 1:
                        await n3.ask(seq)
                assert isr.events == [("isr", 5, frozenset(REPLICAS))]
            nursery.cancel_scope.cancel()


async def test_snapshot_rows_near_the_largest_request_go_one_per_answer(
    tmp_path: Path,
) -> None:
    """A snapshot of values of almost 1 MiB: each answer within the port's
    largest message, one row each. Mutation: packing rows while the size so
    far is under the budget (what it did) fails the stream with INTERNAL."""
    big = b"x" * (900 * 1024)
    with trio.fail_after(60):
        async with (
            leader_node(tmp_path) as node,
            open_channel(node.data_address) as channel,
        ):
            await upsert(channel, b"big0", big)
            await upsert(channel, b"big1", big)
            async with open_bidi(
                node.control_address, REPLICATION, "Fetch", rpb.FetchRequest, rpb.FetchResponse
            ) as call:
                await call.send(rpb.FetchRequest(partition_id=PID, snapshot=True, follower="n3"))
                n3 = Replica(call, "n3", 0)
                assert (await n3.receive()).WhichOneof("body") == "snapshot_begin"
                rows = []
                while (answer := await n3.ask(0)).WhichOneof("body") == "snapshot_rows":
                    assert answer.ByteSize() <= 1024 * 1024 + 64 * 1024
                    rows += [bytes(r.key) for r in answer.snapshot_rows.rows]
                assert answer.WhichOneof("body") == "snapshot_end"
                assert rows == [b"big0", b"big1"]


async def test_a_refused_isr_change_means_deposed_and_the_leader_steps_down(
    tmp_path: Path,
) -> None:
    """The IsrWriter's False: another node leads (its guard failed). The
    laggard is not left out, and the partition steps down: what waited for
    the ISR (here the epoch-start record) fails UNAVAILABLE. Mutation:
    taking False for a committed change serves on without the laggard."""
    with trio.fail_after(60):
        async with leader_node(tmp_path, lag_timeout=0.5) as node:
            isr = MemoryIsr()
            isr.accept = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 5)
                with pytest.raises(UnavailableError, match="stopped leading"):
                    await lead(node, 5, REPLICAS, isr)
                nursery.cancel_scope.cancel()
            assert isr.events == [("isr", 5, frozenset({"n1", "n2"}))]
            assert node.registry.role(PID) is None
            with trio.fail_after(5):
                await partition_of(node).wait_stopped()


async def test_set_isr_from_etcd_takes_effect_on_the_commit(tmp_path: Path) -> None:
    """The cluster layer saw etcd's record change (set_isr): a member it
    leaves out no longer holds writes back. Mutation: set_isr a no-op."""
    with trio.fail_after(60):
        async with leader_node(tmp_path) as node:
            isr = MemoryIsr()
            leading = Outcome()

            async def promote() -> None:
                await lead(node, 5, REPLICAS, isr)
                leading.done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_up, node, "n2", 5)
                nursery.start_soon(promote)
                await configured(node, 5)
                await trio.sleep(0.3)
                assert not leading.done.is_set()  # n3 has not got the epoch start
                node.registry.set_isr(PID, REPLICAS, frozenset({"n1", "n2"}))
                with trio.fail_after(5):
                    await leading.done.wait()
                nursery.cancel_scope.cancel()
            assert isr.events == []  # etcd's change, not this leader's
