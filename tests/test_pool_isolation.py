"""Invariant 4 on the node-wide worker pool: 64 partitions share a few
threads, and one partition whose store blocks holds one of them while the
other 63 go on reading and writing; its own writes are answered once in its
log, reads of them wait for the store, and they apply in order. Partitions
started and stopped leave no thread behind.

The slow store is a real node's SQLite store with its ``apply`` wrapped (an
in-process node, so the test reaches the partition's store object): the
first apply blocks until the test lets it go, as a store on a stalled disk
would.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import mkv
from mkv.node.server import Node
from mkv.records import Write
from mkv.testing import running_node
from tests.processes import ServerProcess

PARTITIONS = 64
SLOW = "p17"
# Generous: the machine is shared; a stalled partition would block forever.
OP_BOUND = 5.0
# Adding 64 partitions is more than the control plane's default rate.
FAST_CONTROL = {"control_rate": 1000.0, "control_burst": 1000}


def _bounds(count: int) -> list[tuple[bytes, bytes | None]]:
    """``count`` adjacent ranges covering every key: p00 takes "" .. "k01/"."""
    starts = [b""] + [b"k%02d/" % i for i in range(1, count)]
    return list(zip(starts, [*starts[1:], None], strict=True))


def _key(partition: int, name: str) -> bytes:
    return b"k%02d/%s" % (partition, name.encode())


def _mkv_threads() -> set[str]:
    """The threads mkv names as its own (trio's own thread cache is left out)."""
    return {t.name for t in threading.enumerate() if t.name.startswith("mkv-")}


async def _add_partitions(node: Node, count: int, first: int = 0) -> None:
    async with mkv.AdminClient.connect(node.control_address) as admin:
        if first == 0:
            await admin.remove_partition("default")
        for i, (start, end) in enumerate(_bounds(count)):
            if i >= first:
                await admin.add_partition(start=start, end=end, partition_id=f"p{i:02d}")


async def test_a_slow_store_holds_up_only_its_own_partition(tmp_path: Path) -> None:
    async with running_node(tmp_path / "data", **FAST_CONTROL) as node:
        await _add_partitions(node, PARTITIONS)
        slow = node.registry.partition(SLOW)
        assert slow is not None
        assert slow._store is not None
        store = slow._store
        release, entered = threading.Event(), threading.Event()
        applied: list[int] = []
        original = store.apply

        def blocking_apply(writes: Sequence[Write]) -> list[int]:
            entered.set()
            release.wait(60)
            applied.extend(write.seq for write in writes)
            return original(writes)

        store.apply = blocking_apply  # type: ignore[method-assign]
        slow_index = int(SLOW[1:])
        slow_key = _key(slow_index, "hot")
        acks: dict[int, int] = {}  # value number -> seq
        all_acked = trio.Event()
        latencies: list[float] = []

        async with mkv.Client.connect(node.data_address) as client:

            async def write_slow(n: int) -> None:
                [ack] = await client.upsert({slow_key: b"%d" % n})
                acks[n] = ack.seq
                if len(acks) == 10:
                    all_acked.set()

            read: list[bytes | None] = []

            async def read_slow() -> None:
                read.append(await client.get(slow_key))

            async def read_and_write(partition: int) -> None:
                for round_ in range(3):
                    key = _key(partition, f"r{round_}")
                    started = time.monotonic()
                    await client.upsert({key: b"v%d" % round_})
                    assert await client.get(key) == b"v%d" % round_
                    latencies.append(time.monotonic() - started)

            try:
                async with trio.open_nursery() as nursery:
                    for n in range(10):
                        nursery.start_soon(write_slow, n)
                    # Until the slow partition's store is blocked in its first apply.
                    assert await trio.to_thread.run_sync(entered.wait, 10)
                    others = [i for i in range(PARTITIONS) if i != slow_index]
                    # Without isolation this hangs until the store is let go:
                    # a bound well short of that is the test.
                    with trio.fail_after(30):
                        async with trio.open_nursery() as load:
                            for i in others:
                                load.start_soon(read_and_write, i)
                    assert len(latencies) == 3 * len(others)
                    assert max(latencies) < OP_BOUND, sorted(latencies)[-5:]
                    # The slow partition's writes are answered once committed
                    # in its log, which its store does not hold up; none is
                    # applied, so a read of the key waits for the store.
                    with trio.fail_after(OP_BOUND):
                        await all_acked.wait()
                    assert applied == []
                    nursery.start_soon(read_slow)
                    await trio.sleep(0.2)
                    assert read == []
                    release.set()
            finally:
                release.set()
            # Its writes, once let go, applied one after another in seq
            # order, each acknowledged once, the last one's value standing.
            assert sorted(acks) == list(range(10))
            assert applied == sorted(applied)
            assert sorted(applied) == sorted(acks.values())
            last = max(acks, key=lambda n: acks[n])
            # The read that waited saw every write acknowledged before it.
            assert read == [b"%d" % last]
            assert await client.get(slow_key) == b"%d" % last


async def test_partitions_share_the_pool_and_leave_no_thread_behind(tmp_path: Path) -> None:
    before = _mkv_threads()
    async with running_node(tmp_path / "data", worker_threads=4, **FAST_CONTROL) as node:
        pool = {f"mkv-worker-{i}" for i in range(4)}
        assert _mkv_threads() - before == pool
        await _add_partitions(node, 16)
        async with mkv.Client.connect(node.data_address) as client:
            for i in range(16):
                await client.upsert({_key(i, "a"): b"1"})
            # Sixteen partitions, each with a store and a log: the same four threads.
            assert _mkv_threads() - before == pool
            async with mkv.AdminClient.connect(node.control_address) as admin:
                for i in range(8, 16):
                    await admin.remove_partition(f"p{i:02d}")
            assert _mkv_threads() - before == pool
            await _add_partitions(node, 16, first=8)
            for i in range(16):
                await client.upsert({_key(i, "b"): b"2"})
                assert await client.get(_key(i, "b")) == b"2"
            assert _mkv_threads() - before == pool
    assert _mkv_threads() == before


def test_the_pool_size_leaves_room_for_a_slow_partition() -> None:
    """A slow partition holds up to two threads (its store's lane and its
    log's): fewer than three would let one partition stall the node."""
    assert mkv.Config().worker_threads >= 3
    with pytest.raises(ValueError, match="worker_threads"):
        mkv.Config(worker_threads=2)
    assert mkv.Config(worker_threads=3).worker_threads == 3


async def test_the_worker_threads_flag(tmp_path: Path) -> None:
    """``mkv serve --worker-threads N`` sizes the pool; too few is refused."""
    server = ServerProcess(tmp_path / "data", "--worker-threads", "3")
    await server.start()
    async with mkv.Client.connect(server.data_addr) as client:
        await client.upsert({b"k": b"v"})
        assert await client.get(b"k") == b"v"
    assert await server.stop() == 0
    too_few, elsewhere = ("--worker-threads", "2"), ("--data-dir", str(tmp_path / "other"))
    with trio.fail_after(30):
        refused = await trio.run_process(
            [sys.executable, "-m", "mkv.cli.server", "serve", *too_few, *elsewhere],
            capture_stderr=True,
            check=False,
        )
    assert refused.returncode == 2
    assert "worker_threads" in refused.stderr.decode()
