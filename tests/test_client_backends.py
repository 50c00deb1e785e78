"""The async clients under both back ends: the same calls, errors and streams
under Trio and under asyncio.

The node runs on a thread of its own (it needs Trio); each test body runs in
``anyio.run`` with the back end of its parameter. The tests are plain
functions rather than ``@pytest.mark.anyio`` ones because this suite runs
pytest-trio in trio mode, which would claim every ``async def`` test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import mkv
from mkv.client.streams import Watch
from mkv.testing import node_in_thread

BACKENDS = ["trio", "asyncio"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[mkv.Node]:
    with node_in_thread(tmp_path / "data") as node:
        yield node


@pytest.fixture(params=BACKENDS)
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Run an async function to its end under this test's back end, bounded in time."""
    backend: str = request.param

    def run_under_backend(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def bounded() -> Any:
            with anyio.fail_after(60):
                return await function(*args)

        return anyio.run(bounded, backend=backend)

    return run_under_backend


async def round_trips(address: str) -> None:
    async with mkv.Client.connect(address) as db:
        [ack] = await db.upsert({b"user:1": b"ada", "user:2": "grace", b"user:3": b"linus"})
        assert ack.partition_id == "default"
        assert await db.get(b"user:1") == b"ada"
        assert await db.get(b"nobody") is None
        item = await db.get_item("user:2")
        assert item is not None
        assert (item.value, item.seq) == (b"grace", ack.seq)
        assert [i and i.value for i in await db.batch_get([b"user:3", b"x", b"user:1"])] == [
            b"linus",
            None,
            b"ada",
        ]
        [removed] = await db.remove(b"user:3", b"missing")
        assert removed.count == 1
        assert await db.increment(b"n", 5) == 5
        assert await db.increment_many([(b"n", -2), (b"m", 1)]) == [3, 1]
        [cas] = await db.upsert({b"user:1": b"ada2"}, if_seq={b"user:1": ack.seq})
        with pytest.raises(mkv.ConditionFailedError) as failed:
            await db.upsert({b"user:1": b"ada3"}, if_seq={b"user:1": ack.seq})
        assert failed.value.current_seq == cas.seq
        await db.remove(b"user:1", if_value={b"user:1": b"ada2"})
        assert await db.get(b"user:1") is None
        [partition] = await db.partition_map()
        assert partition.id == "default"


def test_round_trips(run: Callable[..., Any], node: mkv.Node) -> None:
    run(round_trips, node.data_address)


async def large_writes(address: str) -> None:
    async with mkv.Client.connect(address) as db:
        items = {b"big:%06d" % i: bytes([i % 256]) * 1000 for i in range(3000)}  # ~3 MiB
        acks = await db.upsert(items)
        assert len(acks) >= 3  # one batch per MiB, each atomic
        assert [i and i.value for i in await db.batch_get(items)] == list(items.values())
        with pytest.raises(mkv.ResourceExhaustedError, match="at most"):
            await db.upsert({b"huge": b"x" * (1024 * 1024 + 1)})


def test_large_writes_are_split_and_oversized_entries_refused(
    run: Callable[..., Any], node: mkv.Node
) -> None:
    run(large_writes, node.data_address)


async def scan_and_watch(address: str) -> None:
    async with mkv.Client.connect(address) as db:
        keys = [b"s:%03d" % i for i in range(25)]
        [first] = await db.upsert({k: b"v" for k in keys})
        # Pages of 7: four Scan calls, read as one ordered stream.
        assert [k async for k, _ in db.scan(b"s:", b"s;", page_size=7)] == keys
        assert [k async for k, _ in db.scan(b"s:010", b"s:013", keys_only=True)] == keys[10:13]
        async for _ in db.scan(b"s:"):
            break  # stopping early leaves nothing open (warnings are errors here)

        await db.upsert({b"s:000": b"changed"})
        await db.remove(b"s:001")
        async with db.watch(b"s:", b"s;", from_seq=first.seq) as changes:
            seen = []
            async for change in changes:
                seen.append((change.key, change.value))
                if len(seen) == 2:
                    break
            assert seen == [(b"s:000", b"changed"), (b"s:001", None)]
            position = changes.position
        # A second watch carries on exactly where the first stopped, live.
        async with db.watch(b"s:", b"s;", from_seq=position) as changes:
            await db.upsert({b"s:002": b"live"})
            change = await changes.__anext__()
            assert (change.key, change.value) == (b"s:002", b"live")


def test_scan_and_watch(run: Callable[..., Any], node: mkv.Node) -> None:
    run(scan_and_watch, node.data_address)


async def typed_errors(data_address: str, control_address: str) -> None:
    # Raised past the connection block, as the error itself: not an
    # ExceptionGroup from the task groups inside the client.
    with pytest.raises(mkv.InvalidArgumentError, match="must not be empty"):
        async with mkv.Client.connect(data_address) as db:
            await db.upsert({b"": b"v"})
    with pytest.raises(mkv.InvalidArgumentError):
        async with mkv.Client.connect(data_address) as db:
            await db.batch_get([b"k" * 5000])
    async with mkv.AdminClient.connect(control_address) as admin:
        with pytest.raises(mkv.NotFoundError):
            await admin.remove_partition("no-such-partition")
        await admin.remove_partition("default")
        await admin.add_partition(start=b"a", end=b"m", partition_id="am")
        await admin.add_partition(start=b"m", end=b"z", partition_id="mz")
    async with mkv.Client.connect(data_address) as db:
        # Two partitions, so two batches sent side by side; one key is unowned.
        with pytest.raises(mkv.BadNodeError):
            await db.upsert({b"b": b"1", b"n": b"2", b"zz": b"3"})
        with pytest.raises(mkv.BadNodeError):
            await db.batch_get([b"b", b"n", b"zz"])
        with pytest.raises(mkv.InvalidArgumentError, match="leaves partition am"):
            async with db.watch(b"b", b"n") as changes:
                await changes.__anext__()


def test_errors_are_typed(run: Callable[..., Any], node: mkv.Node) -> None:
    run(typed_errors, node.data_address, node.control_address)


async def admin_calls(control_address: str) -> None:
    async with mkv.AdminClient.connect(control_address) as admin:
        await admin.remove_partition("default")
        added = await admin.add_partition(end=b"m", partition_id="low", store="memory")
        assert added.store == "memory"
        await admin.add_partition(start=b"m", partition_id="high")
        with pytest.raises(mkv.AlreadyExistsError):
            await admin.add_partition(start=b"a", end=b"b", partition_id="other")
        assert {p.id for p in await admin.list_partitions()} == {"low", "high"}
        operation_id = await admin.snapshot("high", "backend-test")
        done = await admin.wait_operation(operation_id, poll_interval=0.05)
        assert done.state == "done"
        assert done.snapshot is not None
        assert (await admin.get_operation(operation_id)).id == operation_id
        assert (await admin.remove_partition("low")).id == "low"


def test_admin_calls(run: Callable[..., Any], node: mkv.Node) -> None:
    run(admin_calls, node.control_address)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def connect_to_nothing(address: str) -> None:
    with pytest.raises(mkv.UnavailableError, match="Cannot connect"):
        async with mkv.Client.connect(address):
            pass


def test_connecting_to_nothing_is_unavailable(run: Callable[..., Any]) -> None:
    run(connect_to_nothing, f"127.0.0.1:{free_port()}")


def test_calls_after_the_server_stopped_are_unavailable(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(node_in_thread(tmp_path / "data"))

        async def write_then_lose_the_server() -> None:
            async with mkv.Client.connect(node.data_address) as db:
                await db.upsert({b"k": b"v"})
                await anyio.to_thread.run_sync(stack.close)  # stops the node
                with pytest.raises(mkv.UnavailableError):
                    await db.get(b"k")

        run(write_then_lose_the_server)


def test_asyncio_run_connects() -> None:
    """The issue's own report: Client.connect inside asyncio.run(...)."""

    async def main(address: str) -> bytes | None:
        async with mkv.Client.connect(address) as db:
            await db.upsert({b"k": b"from asyncio"})
            return await db.get(b"k")

    with node_in_thread() as node:
        assert asyncio.run(main(node.data_address)) == b"from asyncio"


async def cancel_a_waiting_watch(address: str) -> None:
    async with mkv.Client.connect(address) as db:
        async with db.watch(b"w:", b"w;") as changes:
            # Nothing is written: the loop's own timeout cancels the wait.
            with anyio.move_on_after(0.3) as scope:
                await changes.__anext__()
            assert scope.cancelled_caught
        # The connection is still good after the cancelled call.
        await db.upsert({b"w:1": b"after"})
        assert await db.get(b"w:1") == b"after"


def test_the_loops_own_timeouts_cancel_a_call(run: Callable[..., Any], node: mkv.Node) -> None:
    run(cancel_a_waiting_watch, node.data_address)


async def watch_past_its_client(address: str) -> None:
    errors: list[Exception] = []
    ended = anyio.Event()
    async with anyio.create_task_group() as tasks:
        async with mkv.Client.connect(address) as db:

            async def read(watch: contextlib.AbstractAsyncContextManager[Watch]) -> None:
                try:
                    async with watch as changes:
                        async for _ in changes:
                            pass
                except mkv.UnavailableError as exc:
                    errors.append(exc)
                ended.set()

            tasks.start_soon(read, db.watch(b"w:", b"w;"))
            await anyio.sleep(0.2)  # the watch is waiting for news
        # The client is closed: the watch ends rather than redial forever.
        with anyio.fail_after(10):
            await ended.wait()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


def test_a_watch_ends_when_its_client_closes(run: Callable[..., Any], node: mkv.Node) -> None:
    run(watch_past_its_client, node.data_address)
