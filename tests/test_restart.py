"""A real `mkv serve` process: stop, kill -9, start again; nothing acknowledged is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

import mkv
from tests.processes import ServerProcess


async def test_stop_and_start_brings_everything_back(server_process: ServerProcess) -> None:
    with trio.fail_after(60):
        async with mkv.AdminClient.connect(server_process.control_addr) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(start=b"", end=b"a", partition_id="numbers")
            await admin.add_partition(start=b"a", partition_id="letters")
        async with mkv.Client.connect(server_process.data_addr) as client:
            await client.upsert({b"1": b"one", b"b": b"bee"})
            [ack] = await client.upsert({b"b": b"bee2"})
        assert await server_process.stop() == 0, server_process.stderr()

        await server_process.start()
        async with mkv.AdminClient.connect(server_process.control_addr) as admin:
            ranges = {p.id: p.range for p in await admin.list_partitions()}
        assert ranges == {
            "numbers": mkv.KeyRange(b"", b"a"),
            "letters": mkv.KeyRange(b"a", None),
        }
        async with mkv.Client.connect(server_process.data_addr) as client:
            assert await client.get(b"1") == b"one"
            assert await client.get_item(b"b") == mkv.Item(b"bee2", ack.seq, ack.timestamp)


async def test_kill_9_loses_no_acknowledged_write(server_process: ServerProcess) -> None:
    """Writers run while the server is killed; every write that got an OK is there after."""
    acknowledged: dict[bytes, bytes] = {}

    async def writer(n: int, client: mkv.Client) -> None:
        i = 0
        while True:
            key, value = f"w{n:02d}-{i:05d}".encode(), b"x" * (i % 200)
            try:
                await client.upsert({key: value})
            except mkv.UnavailableError:
                return  # the server died under us: this write has no answer
            acknowledged[key] = value
            i += 1

    with trio.fail_after(90):
        async with (
            mkv.Client.connect(server_process.data_addr) as client,
            trio.open_nursery() as nursery,
        ):
            for n in range(16):
                nursery.start_soon(writer, n, client)
            await trio.sleep(1.0)
            await server_process.kill()
        assert len(acknowledged) > 50, "the writers got going before the kill"

        await server_process.start()
        async with mkv.Client.connect(server_process.data_addr) as client:
            for key, value in acknowledged.items():
                assert await client.get(key) == value, key
        await server_process.stop()
    database = server_process.data_dir / "partitions" / "default" / "store.sqlite3"
    assert _integrity(database) == "ok"


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_sigterm_answers_in_flight_requests_before_exiting(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    await server.start()
    acknowledged: list[bytes] = []
    refused = 0

    async def writer(n: int, client: mkv.Client) -> None:
        nonlocal refused
        for i in range(10_000):
            key = f"w{n}-{i}".encode()
            try:
                await client.upsert({key: b"v"})
            except mkv.UnavailableError:
                refused += 1
                return
            acknowledged.append(key)

    with trio.fail_after(60):
        async with (
            mkv.Client.connect(server.data_addr) as client,
            trio.open_nursery() as nursery,
        ):
            for n in range(8):
                nursery.start_soon(writer, n, client)
            await trio.sleep(0.5)
            assert await server.stop() == 0, server.stderr()
        assert refused == 8, "every writer was eventually refused, none hung"
        await server.start()
        async with mkv.Client.connect(server.data_addr) as client:
            missing = [k for k in acknowledged if await client.get(k) != b"v"]
        await server.stop()
    assert not missing
