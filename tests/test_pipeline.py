"""Pipelines end to end: stages an application registers, out-of-order
asynchronous stages, and failures, through the real server."""

from __future__ import annotations

import random
from collections.abc import Awaitable

import attrs
import pytest
import trio

import mkv
from mkv.errors import InvalidArgumentError, UnavailableError
from mkv.pipeline import StageContext, Write, check_pipeline, register_stage
from mkv.testing import running_node


@attrs.define
class Jitter:
    """An asynchronous stage that finishes writes in random order, and fails
    those that carry a key starting with ``fail``."""

    rng: random.Random
    name: str = "test-jitter"
    finished: list[int] = attrs.field(factory=list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def submit(self, write: Write) -> Awaitable[None]:
        return self._work(write)

    async def _work(self, write: Write) -> None:
        await trio.sleep(self.rng.uniform(0, 0.02))
        self.finished.append(write.seq)
        if any(key.startswith(b"fail") for key, _ in write.puts):
            raise UnavailableError("The test stage failed this write.")

    def close(self) -> None:
        pass


@attrs.frozen
class Shout:
    name: str = "test-shout"

    def process(self, write: Write) -> Write:
        return attrs.evolve(write, puts=[(k, v.upper()) for k, v in write.puts])


JITTERS: list[Jitter] = []


def make_jitter(argument: str, context: StageContext) -> Jitter:
    stage = Jitter(random.Random(int(argument or 0)))
    JITTERS.append(stage)
    return stage


register_stage("test-jitter", make_jitter)
register_stage("test-shout", lambda argument, context: Shout())


async def test_out_of_order_stages_still_apply_and_answer_in_order() -> None:
    async with running_node() as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(
                partition_id="p", pipeline=["timestamp", "test-shout", "test-jitter:7", "wal"]
            )
        jitter = JITTERS[-1]
        acks: list[tuple[int, bytes]] = []
        failures: list[bytes] = []

        async def writer(n: int) -> None:
            async with mkv.Client.connect(node.data_address) as client:
                for i in range(15):
                    key = b"fail-me" if i % 7 == 3 else b"shared"
                    value = f"w{n}-{i}".encode()
                    try:
                        [ack] = await client.upsert({key: value})
                    except mkv.UnavailableError:
                        failures.append(key)
                        continue
                    acks.append((ack.seq, value.upper()))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(16):
                    nursery.start_soon(writer, n)
            async with mkv.Client.connect(node.data_address) as client:
                item = await client.get_item(b"shared")
                assert await client.get(b"fail-me") is None, "a failed write is not applied"

    assert jitter.finished != sorted(jitter.finished), "the stage really finished out of order"
    assert set(failures) == {b"fail-me"}
    assert len(failures) == 16 * 2
    seq, value = max(acks)
    assert item is not None
    assert (item.seq, item.value) == (seq, value), "the last write in seq order won"


register_stage("test-broken", lambda argument, context: Broken())


@attrs.frozen
class Broken:
    name: str = "test-broken"

    def process(self, write: Write) -> Write:
        if write.puts and write.puts[0][0] == b"boom":
            raise ZeroDivisionError("a bug in an application's stage")
        return write


async def test_a_stage_that_raises_costs_the_write_not_the_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_node() as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="p", pipeline=["test-broken", "wal"])
        async with mkv.Client.connect(node.data_address) as client:
            with pytest.raises(mkv.InternalError, match="test-broken failed"):
                await client.upsert({b"boom": b"1"})
            await client.upsert({b"fine": b"2"})
            assert await client.get(b"fine") == b"2"
    assert "ZeroDivisionError" in caplog.text


def test_a_pipeline_is_checked_before_a_partition_is_made() -> None:
    check_pipeline(["timestamp", "test-shout", "wal:interval=5"])
    with pytest.raises(InvalidArgumentError, match="Unknown pipeline stage"):
        check_pipeline(["timestamp", "no-such-stage"])
    with pytest.raises(InvalidArgumentError, match="must come before"):
        check_pipeline(["wal", "timestamp"])
    with pytest.raises(InvalidArgumentError, match="takes 'always'"):
        check_pipeline(["wal:sometimes"])
