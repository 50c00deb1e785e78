"""mkv.Client as a user meets it: batching, typed errors, lost connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

import mkv
from mkv.testing import running_node


async def test_a_large_upsert_is_split_into_batches_under_the_limit(
    mkv_client: mkv.Client,
) -> None:
    items = {f"key-{i:06d}".encode(): bytes([i % 256]) * 1000 for i in range(3000)}  # ~3 MiB
    with trio.fail_after(30):
        acks = await mkv_client.upsert(items)
        assert len(acks) >= 3
        assert sorted(a.seq for a in acks) == list(range(1, len(acks) + 1))
        for key in list(items)[::100]:
            assert await mkv_client.get(key) == items[key]


async def test_an_entry_over_the_limit_is_refused_before_sending(mkv_client: mkv.Client) -> None:
    with pytest.raises(mkv.ResourceExhaustedError, match="at most"):
        await mkv_client.upsert({b"big": b"x" * (1024 * 1024 + 1)})


async def test_str_keys_and_values_are_utf8(mkv_client: mkv.Client) -> None:
    await mkv_client.upsert([("clé", "välue")])
    assert await mkv_client.get("clé".encode()) == "välue".encode()


async def test_errors_are_typed_outside_the_connection_block_too() -> None:
    """Trio nurseries inside the client must not turn errors into ExceptionGroups."""
    async with running_node() as node:
        with pytest.raises(mkv.InvalidArgumentError, match="must not be empty"):
            async with mkv.Client.connect(node.data_address) as client:
                await client.upsert({b"": b"v"})
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(start=b"a", end=b"m", partition_id="am")
            await admin.add_partition(start=b"m", end=b"z", partition_id="mz")
        # Two partitions, so two batches sent side by side; one key is unowned.
        with pytest.raises(mkv.BadNodeError):
            async with mkv.Client.connect(node.data_address) as client:
                await client.upsert({b"b": b"1", b"n": b"2", b"zz": b"3"})


async def test_connecting_to_nothing_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(mkv.UnavailableError, match="Cannot connect"):
        async with mkv.Client.connect(f"127.0.0.1:{port}"):
            pass


async def test_calls_after_the_server_stopped_are_unavailable(tmp_path: Path) -> None:
    config = mkv.Config(
        data_addr="127.0.0.1:0", control_addr="127.0.0.1:0", data_dir=tmp_path / "data"
    )
    stopped = trio.Event()

    async def run_node(*, task_status: trio.TaskStatus[mkv.Node]) -> None:
        await mkv.Node(config).run(task_status=task_status)
        stopped.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node: mkv.Node = await nursery.start(run_node)
            async with mkv.Client.connect(node.data_address) as client:
                await client.upsert({b"k": b"v"})
                node.stop()
                await stopped.wait()
                with pytest.raises(mkv.UnavailableError):
                    await client.get(b"k")
