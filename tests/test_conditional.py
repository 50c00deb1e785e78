"""Conditional writes and counters against a real node: decided in the
partition's order, atomic, and exact under concurrency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import grpc
import pytest
import trio
import trio.testing

import mkv
from mkv.pipeline import Write, register_stage
from mkv.testing import running_node
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import GrpcioStubs, call, call_error, connect


async def test_if_seq_zero_creates_only_once(mkv_client: mkv.Client) -> None:
    [ack] = await mkv_client.upsert({b"k": b"first"}, if_seq={b"k": 0})
    with pytest.raises(mkv.ConditionFailedError) as failed:
        await mkv_client.upsert({b"k": b"second"}, if_seq={b"k": 0})
    assert (failed.value.key, failed.value.current_seq) == (b"k", ack.seq)
    assert await mkv_client.get(b"k") == b"first"


async def test_compare_and_set_on_seq_and_on_value(mkv_client: mkv.Client) -> None:
    [ack] = await mkv_client.upsert({b"k": b"v1"})
    [ack2] = await mkv_client.upsert({b"k": b"v2"}, if_seq={b"k": ack.seq})
    with pytest.raises(mkv.ConditionFailedError):
        await mkv_client.upsert({b"k": b"stale"}, if_seq={b"k": ack.seq})
    await mkv_client.upsert({b"k": b"v3"}, if_value={b"k": b"v2"})
    with pytest.raises(mkv.ConditionFailedError):
        await mkv_client.upsert({b"k": b"v4"}, if_value={b"k": b"v2"})
    item = await mkv_client.get_item(b"k")
    assert item is not None
    assert item.value == b"v3"
    assert item.seq > ack2.seq


async def test_a_failed_condition_applies_nothing_of_the_batch(mkv_client: mkv.Client) -> None:
    [ack] = await mkv_client.upsert({b"guard": b"locked", b"a": b"old"})
    with pytest.raises(mkv.ConditionFailedError) as failed:
        await mkv_client.upsert(
            {b"a": b"new", b"b": b"new"}, if_value={b"a": b"old", b"guard": b"open"}
        )
    assert failed.value.key == b"guard", "the failing key is named, not the first one"
    assert await mkv_client.batch_get([b"a", b"b"]) == [
        mkv.Item(b"old", ack.seq, ack.timestamp),
        None,
    ]


async def test_conditional_removes(mkv_client: mkv.Client) -> None:
    [ack] = await mkv_client.upsert({b"k": b"v"})
    with pytest.raises(mkv.ConditionFailedError):
        await mkv_client.remove(b"k", if_seq={b"k": ack.seq + 100})
    assert await mkv_client.get(b"k") == b"v"
    [removed] = await mkv_client.remove(b"k", if_seq={b"k": ack.seq})
    assert removed.count == 1
    assert await mkv_client.get(b"k") is None


async def test_counters(mkv_client: mkv.Client) -> None:
    assert await mkv_client.increment(b"n") == 1
    assert await mkv_client.increment(b"n", 41) == 42
    assert await mkv_client.get(b"n") == b"42", "counters read back as decimal text"
    assert await mkv_client.increment_many([(b"n", -50), (b"m", 2), (b"n", 1)]) == [-8, 2, -7]
    await mkv_client.upsert({b"text": b"hello"})
    with pytest.raises(mkv.FailedPreconditionError, match="not a counter"):
        await mkv_client.increment_many([(b"n", 1), (b"text", 1)])
    assert await mkv_client.get(b"n") == b"-7", "a failed batch of increments applies nothing"
    await mkv_client.upsert({b"big": b"%d" % (2**63 - 2)})
    assert await mkv_client.increment(b"big") == 2**63 - 1
    with pytest.raises(mkv.FailedPreconditionError, match="overflow"):
        await mkv_client.increment(b"big")
    assert await mkv_client.get(b"big") == b"%d" % (2**63 - 1)


async def compare_and_set_loop(client: mkv.Client, key: bytes, rounds: int) -> int:
    """Read, add one, write back if unchanged; returns how many writes succeeded."""
    successes = 0
    for _ in range(rounds):
        item = await client.get_item(key)
        current = 0 if item is None else int(item.value)
        try:
            await client.upsert(
                {key: b"%d" % (current + 1)}, if_seq={key: 0 if item is None else item.seq}
            )
        except mkv.ConditionFailedError:
            continue
        successes += 1
    return successes


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_32_clients_compare_and_set_one_key_without_losing_an_update(store: str) -> None:
    async with running_node(default_store=store) as node:
        successes: list[int] = []

        async def client_task() -> None:
            async with mkv.Client.connect(node.data_address) as client:
                successes.append(await compare_and_set_loop(client, b"counter", 20))

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(client_task)
            async with mkv.Client.connect(node.data_address) as client:
                final = await client.get(b"counter")
    assert len(successes) == 32
    assert sum(successes) > 0
    assert final == b"%d" % sum(successes), "every acknowledged CAS counted exactly once"


async def test_32_clients_increment_one_key_exactly() -> None:
    async with running_node() as node:
        acknowledged: list[int] = []

        async def client_task() -> None:
            async with mkv.Client.connect(node.data_address) as client:
                for _ in range(30):
                    acknowledged.append(await client.increment(b"hits"))

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(client_task)
            async with mkv.Client.connect(node.data_address) as client:
                final = await client.get(b"hits")
    assert final == b"%d" % (32 * 30)
    assert sorted(acknowledged) == list(range(1, 32 * 30 + 1)), "each value handed out once"


async def test_counters_and_conditions_survive_a_restart(tmp_path: Path) -> None:
    async with (
        running_node(tmp_path / "data") as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        for _ in range(5):
            await client.increment(b"n", 2)
        await client.upsert({b"k": b"v"}, if_seq={b"k": 0})
    async with (
        running_node(tmp_path / "data") as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        assert await client.get(b"n") == b"10"
        assert await client.increment(b"n") == 11
        with pytest.raises(mkv.ConditionFailedError):
            await client.upsert({b"k": b"again"}, if_seq={b"k": 0})


async def test_grpcio_sees_condition_failed_and_counter_errors(
    stubs: GrpcioStubs, mkv_node: mkv.Node
) -> None:
    with connect(stubs, mkv_node.data_address, mkv_node.control_address) as client:
        data = client.data
        ok = await call(
            data.Upsert,
            pb.UpsertRequest(
                entries=[pb.Entry(key=b"k", value=b"v")], conditions=[pb.Condition(key=b"k", seq=0)]
            ),
        )
        assert ok.status == pb.OK
        failed = await call(
            data.Upsert,
            pb.UpsertRequest(
                entries=[pb.Entry(key=b"k", value=b"w")], conditions=[pb.Condition(key=b"k", seq=0)]
            ),
        )
        assert failed.status == pb.CONDITION_FAILED
        assert (failed.failure.key, failed.failure.found, failed.failure.seq) == (
            b"k",
            True,
            ok.seq,
        )
        counted = await call(
            data.Increment, pb.IncrementRequest(deltas=[pb.CounterDelta(key=b"c", delta=-3)])
        )
        assert list(counted.values) == [-3]
        error = await call_error(
            data.Increment, pb.IncrementRequest(deltas=[pb.CounterDelta(key=b"k", delta=1)])
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not a counter" in (error.details() or "")
        no_test = await call_error(
            data.Upsert,
            pb.UpsertRequest(
                entries=[pb.Entry(key=b"k", value=b"w")], conditions=[pb.Condition(key=b"k")]
            ),
        )
        assert no_test.code() == grpc.StatusCode.INVALID_ARGUMENT


@attrs.frozen
class FailSlowly:
    """An asynchronous stage (before the log) that holds writes touching a
    ``doomed`` key for a while, then fails them."""

    name: str = "test-fail-slowly"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def submit(self, write: Write) -> Awaitable[None]:
        return self._work(write)

    async def _work(self, write: Write) -> None:
        if any(key == b"doomed" for key, _ in write.puts):
            await trio.sleep(2)
            raise mkv.UnavailableError("The test stage failed this write.")

    def close(self) -> None:
        pass


register_stage("test-fail-slowly", lambda argument, context: FailSlowly())


async def test_a_decision_on_a_write_that_then_fails_is_aborted(tmp_path: Path) -> None:
    """An increment and a CAS read a write still in flight; that write fails,
    so they must not apply (nor reach the log: a restart replays nothing)."""
    async with running_node(tmp_path / "data") as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(
                partition_id="p", pipeline=["timestamp", "test-fail-slowly", "wal"]
            )
        async with mkv.Client.connect(node.data_address) as client:
            outcomes: dict[str, BaseException | None] = {}

            async def doomed() -> None:
                with pytest.raises(mkv.UnavailableError):
                    await client.upsert({b"doomed": b"", b"n": b"41", b"v": b"seen"})

            async def attempt(name: str, call: Callable[[], Awaitable[object]]) -> None:
                try:
                    await call()
                    outcomes[name] = None
                except mkv.MkvError as exc:
                    outcomes[name] = exc

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(doomed)
                    # Everything idle: the doomed write is held in the stage.
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(attempt, "incr", lambda: client.increment(b"n"))
                    nursery.start_soon(
                        attempt,
                        "cas",
                        lambda: client.upsert({b"w": b"x"}, if_value={b"v": b"seen"}),
                    )
            assert isinstance(outcomes["incr"], mkv.AbortedError)
            assert isinstance(outcomes["cas"], mkv.AbortedError)
            assert await client.batch_get([b"n", b"v", b"w"]) == [None, None, None]
            assert await client.increment(b"n") == 1, "the store never saw 41 or 42"
    async with (
        running_node(tmp_path / "data") as node,
        mkv.Client.connect(node.data_address) as client,
    ):
        [n, w] = await client.batch_get([b"n", b"w"])
        assert n is not None
        assert (n.value, w) == (b"1", None), "replay brought back nothing aborted"
