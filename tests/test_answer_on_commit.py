"""Writes are answered once committed (durable in the partition's log, in
order) and applied to the store after; every read waits until the store holds
every write acknowledged before the read began (mkv.partition.task, issue 17).

The slow store is a real node's SQLite store with its ``apply`` wrapped (an
in-process node, so the test reaches the partition's store object): applies
block until the test lets them go, as a store on a stalled disk would. The
log is not held up, so a write commits and is answered; what each test shows
is what a reader sees meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

import mkv
from mkv.errors import StorageError
from mkv.node.server import Node
from mkv.partition.task import Partition
from mkv.records import Write
from mkv.testing import running_node

# Generous: the machine is shared. A write held up by its store's apply would
# wait until the test lets the store go, far beyond this.
BOUND = 5.0
# How long a read is given to (wrongly) answer before its writes are applied.
SETTLE = 0.3


@attrs.define
class HeldStore:
    """The partition's store, its applies held until ``release`` is set."""

    release: threading.Event = attrs.field(factory=threading.Event)
    entered: threading.Event = attrs.field(factory=threading.Event)
    applied: list[int] = attrs.field(factory=list)
    # Raised by the next apply once released, instead of applying.
    failure: StorageError | None = None

    async def wait_entered(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, BOUND), "no apply began"


@attrs.frozen
class Setup:
    node: Node
    partition: Partition
    held: HeldStore
    client: mkv.Client


@asynccontextmanager
async def held_partition(
    tmp_path: Path, pipeline: Sequence[str] = ("timestamp", "wal")
) -> AsyncIterator[Setup]:
    """A node whose one partition ``p`` has a held store, and a client of it."""
    async with running_node(tmp_path / "data") as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="p", pipeline=list(pipeline))
        partition = node.registry.partition("p")
        assert partition is not None
        assert partition._store is not None
        store = partition._store
        held = HeldStore()
        original = store.apply

        def held_apply(writes: Sequence[Write]) -> list[int]:
            held.entered.set()
            held.release.wait(60)
            if held.failure is not None:
                raise held.failure
            held.applied.extend(write.seq for write in writes)
            return original(writes)

        store.apply = held_apply  # type: ignore[method-assign]
        try:
            async with mkv.Client.connect(node.data_address) as client:
                yield Setup(node, partition, held, client)
        finally:
            held.release.set()  # else the node could not drain at teardown


async def test_a_write_is_answered_before_its_apply_and_reads_wait_for_it(
    tmp_path: Path,
) -> None:
    """Mutations: answering only after the apply (no early answer in
    ``_release``) makes the upsert time out; a fast-path Get that does not
    wait (no ``wait_applied`` in ``submit``) answers None meanwhile."""
    async with held_partition(tmp_path) as setup:
        partition = setup.partition
        held = setup.held
        client = setup.client
        with trio.fail_after(BOUND):
            [ack] = await client.upsert({b"k": b"v1"})
        await held.wait_entered()
        assert held.applied == []
        assert partition.last_seq() < ack.seq
        # Nothing is unanswered, so a Get would take the fast path to
        # the store, which lacks the write: each kind of read must wait.
        assert partition._unanswered.count == 0
        answers: dict[str, object] = {}

        async def get() -> None:
            answers["get"] = await client.get(b"k")

        async def batch_get() -> None:
            [item] = await client.batch_get([b"k"])
            answers["batch_get"] = None if item is None else item.value

        async def scan() -> None:
            answers["scan"] = [(key, item.value) async for key, item in client.scan()]

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                # The Get alone first: the queued reads would make it queue too.
                for read in (get, batch_get, scan):
                    nursery.start_soon(read)
                    await trio.sleep(SETTLE)
                    assert answers == {}, "a read answered before the store held the write"
                held.release.set()
        assert answers == {"get": b"v1", "batch_get": b"v1", "scan": [(b"k", b"v1")]}
        assert held.applied == [ack.seq]
        # Applied: reads take the fast path again.
        assert await client.get(b"k") == b"v1"
        assert partition.last_seq() == ack.seq


async def test_a_watch_started_after_an_answer_starts_at_or_after_it(tmp_path: Path) -> None:
    """A watch from the acknowledged write's seq is valid at once, though
    the feed (filled as writes are applied) is behind. Mutation: without
    ``wait_applied`` in ``mkv.node.watching`` the watch is refused with
    "has applied writes only up to"."""
    async with held_partition(tmp_path) as setup:
        held = setup.held
        client = setup.client
        with trio.fail_after(BOUND):
            [first] = await client.upsert({b"a": b"1"})
        await held.wait_entered()
        seen: list[tuple[bytes, int]] = []

        async def watch() -> None:
            async with client.watch(from_seq=first.seq) as changes:
                async for change in changes:
                    seen.append((change.key, change.seq))
                    return

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.sleep(SETTLE)
                held.release.set()
                [second] = await client.upsert({b"b": b"2"})
        assert seen == [(b"b", second.seq)]


async def test_a_remove_is_answered_after_its_apply(tmp_path: Path) -> None:
    """A remove's answer counts the keys it removed, which only the store
    knows: it waits for the apply. Mutation: answering every write on commit
    (``not write.deletes`` dropped in ``_release``) answers count 0."""
    async with held_partition(tmp_path) as setup:
        held = setup.held
        client = setup.client
        held.release.set()
        await client.upsert({b"k": b"v"})
        held.release.clear()
        held.entered.clear()
        removed: list[int] = []

        async def remove() -> None:
            [ack] = await client.remove(b"k", b"missing")
            removed.append(ack.count)

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove)
                await held.wait_entered()
                await trio.sleep(SETTLE)
                assert removed == []
                held.release.set()
        assert removed == [1]


async def test_without_a_log_a_write_is_answered_after_its_apply(tmp_path: Path) -> None:
    """Without a log the store is the only durable copy. Mutation: answering
    on commit whatever the pipeline (``early`` always true) answers first."""
    async with held_partition(tmp_path, pipeline=("timestamp",)) as setup:
        held = setup.held
        client = setup.client
        answered: list[int] = []

        async def upsert() -> None:
            [ack] = await client.upsert({b"k": b"v"})
            answered.append(ack.seq)

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(upsert)
                await held.wait_entered()
                await trio.sleep(SETTLE)
                assert answered == []
                held.release.set()
        assert held.applied == answered


async def test_a_store_that_fails_behind_an_answer_fails_the_reads_waiting(
    tmp_path: Path,
) -> None:
    """The store fails applying an acknowledged write: a read waiting for it
    gets an error, never the store's older state, and never hangs. The write
    is in the log: the reopened partition replays it. Mutation: not waking
    the waiting readers in ``_fail`` leaves the Get hanging."""
    async with held_partition(tmp_path) as setup:
        held = setup.held
        client = setup.client
        with trio.fail_after(BOUND):
            [ack] = await client.upsert({b"k": b"v"})
        await held.wait_entered()
        held.failure = StorageError("disk gone (test)")
        outcome: list[object] = []

        async def get() -> None:
            try:
                outcome.append(await client.get(b"k"))
            except mkv.MkvError as exc:
                outcome.append(exc)

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(get)
                await trio.sleep(SETTLE)
                assert outcome == []
                held.release.set()
        [error] = outcome
        assert isinstance(error, mkv.MkvError), error
        assert "failed" in str(error)
        async with mkv.AdminClient.connect(setup.node.control_address) as admin:
            with trio.fail_after(BOUND * 4):
                await admin.reopen_partition("p")
        item = await client.get_item(b"k")
        assert item is not None
        assert (item.value, item.seq) == (b"v", ack.seq)
