"""Point reads: queued behind the writes before them, straight from the store
when there are none (mkv.partition.task's fast path)."""

from __future__ import annotations

from collections.abc import Awaitable

import attrs
import pytest
import trio
import trio.testing

import mkv
from mkv.pipeline import Write, register_stage


@attrs.define
class GateControl:
    opened: trio.Event = attrs.field(factory=trio.Event)


# What the running test's gate waits for (the pipeline builds stages more
# than once: to check a spec, then to run it).
CONTROL = GateControl()


@attrs.frozen
class Gate:
    """An asynchronous stage that holds writes of the value ``b"held"`` until
    ``CONTROL.opened`` is set, and refuses writes of ``b"refused"``."""

    name: str = "test-gate"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def submit(self, write: Write) -> Awaitable[None]:
        return self._work(write)

    async def _work(self, write: Write) -> None:
        if any(value == b"held" for _, value in write.puts):
            await CONTROL.opened.wait()
        if any(value == b"refused" for _, value in write.puts):
            raise mkv.InvalidArgumentError("The test gate refuses this write.")

    def close(self) -> None:
        pass


register_stage("test-gate", lambda argument, context: Gate())


async def gated_partition(admin: mkv.AdminClient) -> GateControl:
    CONTROL.opened = trio.Event()
    await admin.remove_partition("default")
    await admin.add_partition(partition_id="p", pipeline=["timestamp", "test-gate", "wal"])
    return CONTROL


async def test_a_get_waits_for_the_write_before_it_and_sees_it(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        gate = await gated_partition(mkv_admin)
        await mkv_client.upsert({b"k": b"before"})
        answers: list[tuple[str, object]] = []

        async def write() -> None:
            await mkv_client.upsert({b"k": b"held"})
            answers.append(("write", None))

        async def read() -> None:
            answers.append(("read", await mkv_client.get(b"k")))

        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                # Answered from the store now, the read would say b"before"
                # and overtake the write that arrived first.
                assert answers == []
            finally:
                gate.opened.set()  # else the node could not drain at teardown
        # (The client may wake the two callers in either order.)
        assert sorted(answers, key=str) == [("read", b"held"), ("write", None)]
        # Nothing in flight now: the next read comes straight from the store.
        assert await mkv_client.get(b"k") == b"held"


async def test_every_outcome_of_a_write_lets_reads_skip_the_queue_again(
    mkv_node: mkv.Node, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    """Writes and Reads are counted from submission to answer, whatever the
    answer: a count that leaked would send every later Get through the queue."""
    with trio.fail_after(20):
        await gated_partition(mkv_admin)
        partition = mkv_node.registry.partition("p")
        assert partition is not None
        await mkv_client.upsert({b"k": b"v"})
        with pytest.raises(mkv.InvalidArgumentError):
            await mkv_client.upsert({b"k": b"refused"})
        with pytest.raises(mkv.ConditionFailedError):
            await mkv_client.upsert({b"k": b"w"}, if_value={b"k": b"other"})
        with pytest.raises(mkv.FailedPreconditionError):
            await mkv_client.increment(b"k")  # not a counter
        [item, missing] = await mkv_client.batch_get([b"k", b"x"])
        assert (item and item.value, missing) == (b"v", None)
        assert [key async for key, _ in mkv_client.scan()] == [b"k"]
        assert partition._unanswered.count == 0
