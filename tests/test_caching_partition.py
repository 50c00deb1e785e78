"""Caching partitions through a real server: added with AddPartition, served
from the cache, durable in a separate directory, correct after a restart with
a cold cache, and gone (durable files too) when removed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

import mkv
from mkv.store import CachingStore
from mkv.testing import running_node
from tests.processes import ServerProcess


async def test_a_caching_partition_serves_round_trips_from_its_cache(
    mkv_node: mkv.Node, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(30):
        await mkv_admin.remove_partition("default")
        info = await mkv_admin.add_partition(partition_id="cached", store="caching")
        assert (info.store, info.pipeline) == ("caching", ("timestamp", "wal"))
        [ack] = await mkv_client.upsert({b"k": b"v1"})
        assert await mkv_client.get_item(b"k") == mkv.Item(b"v1", ack.seq, ack.timestamp)
        await mkv_client.upsert({b"k": b"v2", b"j": b"w"})
        assert await mkv_client.get(b"k") == b"v2"
        assert await mkv_client.get(b"j") == b"w"
        await mkv_client.remove(b"k")
        assert await mkv_client.get(b"k") is None
        assert await mkv_client.get(b"never") is None
        # Counters read the store on the event loop while writes apply.
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(mkv_client.increment, b"n")
        assert await mkv_client.get(b"n") == b"20"
        assert [i.value if i else None for i in await mkv_client.batch_get([b"j", b"k"])] == [
            b"w",
            None,
        ]
        assert [(k, i.value) async for k, i in mkv_client.scan()] == [(b"j", b"w"), (b"n", b"20")]

        partition = mkv_node.registry.partition("cached")
        assert partition is not None
        store = partition._store
        assert isinstance(store, CachingStore)
        stats = store.statistics()
        assert stats.hits >= 4  # written keys are cached: the reads hit
        assert stats.misses <= 2  # the first reads of b"never" and b"n"
        # What the cache answered is what SQLite holds.
        assert store.durable.get(b"j") is not None
        assert store.durable.get(b"k") is None

        [listed] = await mkv_admin.list_partitions()
        assert (listed.store, listed.key_count) == ("caching", 2)
        directory = partition.directory
        assert (directory / "durable" / "store.sqlite3").exists()
        await mkv_admin.remove_partition("cached")
        assert not directory.exists()


async def test_an_unknown_store_kind_names_caching_among_the_known(
    mkv_admin: mkv.AdminClient,
) -> None:
    with (
        trio.fail_after(10),
        pytest.raises(mkv.InvalidArgumentError, match="known kinds are caching, memory, sqlite"),
    ):
        await mkv_admin.add_partition(start=b"zz", store="cachin")


async def test_the_default_store_can_be_caching_with_a_durable_dir(tmp_path: Path) -> None:
    managed = tmp_path / "managed"
    with trio.fail_after(30):
        async with (
            running_node(
                tmp_path / "data", default_store="caching", durable_dir=managed, cache_bytes=4096
            ) as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            await client.upsert({b"k": b"v"})
            assert await client.get(b"k") == b"v"
            partition = node.registry.partition("default")
            assert partition is not None
            assert isinstance(partition._store, CachingStore)
            assert partition._store.statistics().max_bytes == 4096
    assert _keys(managed / "default" / "store.sqlite3") == {b"k"}
    assert not (tmp_path / "data" / "partitions" / "default" / "durable").exists()


async def test_reads_after_a_restart_are_right_with_a_cold_cache(tmp_path: Path) -> None:
    """Subprocess server, durable SQLite on a separate directory, a cache far
    smaller than the data: stop and start, kill -9 and start, then remove."""
    managed = tmp_path / "managed-disk"
    server = ServerProcess(
        tmp_path / "mkv-data", "--durable-dir", str(managed), "--cache-bytes", "16384"
    )
    expected: dict[bytes, bytes] = {}
    with trio.fail_after(90):
        await server.start()
        try:
            async with mkv.AdminClient.connect(server.control_addr) as admin:
                await admin.remove_partition("default")
                await admin.add_partition(partition_id="c", store="caching")
            async with mkv.Client.connect(server.data_addr) as client:
                # About 110 KiB charged in the cache: it holds a seventh of it.
                for i in range(60):
                    batch = {b"c:%04d" % (i * 5 + j): b"%d" % i * 20 for j in range(5)}
                    await client.upsert(batch)
                    expected.update(batch)
                await client.remove(b"c:0000", b"c:0001")
                del expected[b"c:0000"], expected[b"c:0001"]
                await client.upsert({b"c:0002": b"changed"})
                expected[b"c:0002"] = b"changed"
                await _read_back(client, expected)
            assert await server.stop() == 0, server.stderr()

            # Stopped: the durable store is on the managed disk, not in the partition.
            assert _keys(managed / "c" / "store.sqlite3") == set(expected)
            assert not list((tmp_path / "mkv-data" / "partitions" / "c").glob("**/*.sqlite3"))

            await server.start()
            async with mkv.Client.connect(server.data_addr) as client:
                await _read_back(client, expected)
                assert await client.get(b"c:0000") is None
                # Written after the restart, then lost with the process.
                await client.upsert({b"c:late": b"after restart", b"c:0003": b"new"})
                expected.update({b"c:late": b"after restart", b"c:0003": b"new"})
            await server.kill()

            await server.start()
            async with mkv.Client.connect(server.data_addr) as client:
                await _read_back(client, expected)
            async with mkv.AdminClient.connect(server.control_addr) as admin:
                await admin.remove_partition("c")
            assert not (managed / "c").exists()
            assert managed.exists()  # the node's durable_dir itself stays
        finally:
            await server.kill()


async def _read_back(client: mkv.Client, expected: dict[bytes, bytes]) -> None:
    """Get every key, eight at a time, and compare."""
    keys = sorted(expected)

    async def read(start: int) -> None:
        for key in keys[start::8]:
            assert await client.get(key) == expected[key], key

    async with trio.open_nursery() as nursery:
        for start in range(8):
            nursery.start_soon(read, start)


def _keys(database: Path) -> set[bytes]:
    conn = sqlite3.connect(database)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM kv")}
    finally:
        conn.close()
