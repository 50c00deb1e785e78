"""The worked examples in examples/ run against a real node and do what they say."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import trio

import mkv
from mkv.testing import running_node

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def split(node: mkv.Node, partition_id: str, at: bytes) -> None:
    async with mkv.AdminClient.connect(node.control_address) as admin:
        await admin.wait_operation(await admin.split_partition(partition_id, at))


@pytest.mark.parametrize("layout", ["one partition", "two partitions", "split while counting"])
async def test_session_counter_counts_every_click_exactly_once(layout: str) -> None:
    counter = load("session_counter")
    rng = random.Random(7)
    clicks: Counter[bytes] = Counter()
    async with running_node() as node, mkv.Client.connect(node.data_address) as client:
        if layout != "one partition":
            # The README's layout: the position and the sessions live in
            # another partition than the clicks, with other numbers.
            await split(node, "default", b"m")
            for i in range(50):
                await client.upsert({b"zz": b"%d" % i})

        async def produce(n: int) -> None:
            async with mkv.Client.connect(node.data_address) as own:
                for i in range(60):
                    session = b"s%d" % rng.randrange(5)
                    await own.upsert({b"clicks/%s/%d-%d" % (session, n, i): b""})
                    clicks[session] += 1

        async def count(checkpoint_every: int) -> None:
            async with mkv.Client.connect(node.data_address) as own:
                await counter.run_counter(own, checkpoint_every=checkpoint_every)

        with trio.fail_after(90):
            async with trio.open_nursery() as counters:
                # Two copies compete (compare-and-set sorts them out); a third
                # is stopped half-way and a fresh one resumes from its checkpoint.
                counters.start_soon(count, 10)
                counters.start_soon(count, 25)
                with trio.move_on_after(0.5):
                    await count(7)
                async with trio.open_nursery() as producers:
                    for n in range(4):
                        producers.start_soon(produce, n)
                    if layout == "split while counting":
                        await trio.sleep(0.2)
                        await split(node, "default", b"c")  # clicks/ moves
                counters.start_soon(count, 7)
                while True:
                    counted = {
                        key[len(counter.SESSIONS) :]: counter.parse_count(item)[0]
                        async for key, item in client.scan(counter.SESSIONS, b"sessions0")
                    }
                    if counted == dict(clicks):
                        break
                    await trio.sleep(0.1)
                counters.cancel_scope.cancel()
    assert sum(clicks.values()) == 240
