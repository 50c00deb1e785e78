"""The durable write path, through the real server: log replay, torn tails,
fsync policies, checkpoints, and clocks that step back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

import mkv
from mkv.partition.task import Partition
from mkv.testing import running_node
from mkv.wal import RECORD_OVERHEAD, decode_segment
from tests.processes import ServerProcess


def partition(node: mkv.Node, partition_id: str = "default") -> Partition:
    found = node.registry.partition(partition_id)
    assert found is not None
    return found


async def add_only_partition(node: mkv.Node, *, store: str, pipeline: list[str]) -> None:
    """Replace the default partition by one ``p`` with this store and pipeline."""
    async with mkv.AdminClient.connect(node.control_address) as admin:
        await admin.remove_partition("default")
        await admin.add_partition(partition_id="p", store=store, pipeline=pipeline)


async def test_a_memory_partition_with_a_log_survives_kill_9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    await server.start()
    try:
        with trio.fail_after(60):
            async with mkv.AdminClient.connect(server.control_addr) as admin:
                await admin.remove_partition("default")
                await admin.add_partition(
                    partition_id="counters", store="memory", pipeline=["timestamp", "wal"]
                )
            async with mkv.Client.connect(server.data_addr) as client:
                for i in range(50):
                    await client.upsert({f"k{i}".encode(): str(i).encode()})
                [gone] = await client.remove(b"k7")
                assert gone.count == 1
            await server.kill()
            await server.start()
            async with mkv.Client.connect(server.data_addr) as client:
                for i in range(50):
                    assert await client.get(f"k{i}".encode()) == (
                        None if i == 7 else str(i).encode()
                    )
                [ack] = await client.upsert({b"next": b"1"})
                assert ack.seq == 52, "numbering carries on after the log"
    finally:
        await server.kill()


def last_segment(data_dir: Path, partition_id: str) -> Path:
    segments = sorted((data_dir / "partitions" / partition_id / "wal").glob("*.wal"))
    assert segments
    return segments[-1]


async def test_a_torn_log_tail_is_cut_and_only_complete_writes_come_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut the log inside its last record, at every byte: the server starts,
    has exactly the writes before it, and says it cut the log."""
    data_dir = tmp_path / "data"
    async with running_node(data_dir) as node:
        await add_only_partition(node, store="memory", pipeline=["wal"])
        async with mkv.Client.connect(node.data_address) as client:
            for i in range(5):
                await client.upsert({f"k{i}".encode(): b"v" * i})
    segment = last_segment(data_dir, "p")
    whole = segment.read_bytes()
    _, records, _ = decode_segment(whole)
    before_last = len(whole) - (RECORD_OVERHEAD + len(records[-1].payload))
    assert len(records) == 5
    for cut in range(before_last, len(whole)):
        segment.write_bytes(whole[:cut])
        caplog.clear()
        with trio.fail_after(20):
            async with (
                running_node(data_dir) as node,
                mkv.Client.connect(node.data_address) as client,
            ):
                for i in range(4):
                    assert await client.get(f"k{i}".encode()) == b"v" * i
                assert await client.get(b"k4") is None
        if cut > before_last:
            assert "write-ahead log tail cut" in caplog.text
        # The next start cut it again from the original file.
        segment.write_bytes(whole)


async def test_timestamps_never_go_back_across_a_restart_with_the_clock_set_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    async with running_node(data_dir) as node, mkv.Client.connect(node.data_address) as client:
        stamps = [(await client.upsert({b"k": str(i).encode()}))[0].timestamp for i in range(20)]
    assert stamps == sorted(set(stamps)), "strictly increasing"
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # an hour back
    async with running_node(data_dir) as node, mkv.Client.connect(node.data_address) as client:
        item = await client.get_item(b"k")
        assert item is not None
        assert item.timestamp == stamps[-1]
        after = [(await client.upsert({b"k": b"again"}))[0].timestamp for _ in range(5)]
    assert after[0] > stamps[-1]
    assert after == sorted(set(after))


@pytest.mark.parametrize(
    ("policy", "synced_after_ack"),
    [("wal:always", True), ("wal:always,group=off", True), ("wal:off", False)],
)
async def test_fsync_policy_always_syncs_before_it_acknowledges(
    policy: str, synced_after_ack: bool
) -> None:
    """``always``: every acknowledged write is fsynced in the log. ``off`` (and
    ``interval``) acknowledge before: a power cut can lose the last writes."""
    async with running_node() as node:
        await add_only_partition(node, store="sqlite", pipeline=["timestamp", policy])
        async with mkv.Client.connect(node.data_address) as client:
            for i in range(10):
                [ack] = await client.upsert({f"k{i}".encode(): b"v"})
                synced = partition(node, "p").statistics().wal_synced_seq
                assert synced is not None
                assert (synced >= ack.seq) is synced_after_ack


async def test_fsync_interval_syncs_soon_after() -> None:
    # The real clock: the fsync runs on a thread, which a fake clock would not wait for.
    async with running_node() as node:
        await add_only_partition(node, store="sqlite", pipeline=["wal:interval=20"])
        async with mkv.Client.connect(node.data_address) as client:
            [ack] = await client.upsert({b"k": b"v"})
            with trio.fail_after(5):
                # Polling: the fsync happens on the log's thread, with no event to wait on.
                while (partition(node, "p").statistics().wal_synced_seq or 0) < ack.seq:  # noqa: ASYNC110
                    await trio.sleep(0.01)


async def test_checkpoints_keep_the_log_bounded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    value = b"x" * 1000
    # The log keeps what watchers may resume from, too: here less than a segment.
    async with running_node(data_dir, watch_retention_bytes=100_000) as node:
        await add_only_partition(
            node, store="sqlite", pipeline=["timestamp", "wal:always,segment=262144"]
        )
        async with mkv.Client.connect(node.data_address) as client:
            for batch in range(40):  # ~4 MiB through 256 KiB segments
                await client.upsert({f"k{batch}-{i}".encode(): value for i in range(100)})
            assert partition(node, "p").statistics().wal_segments <= 3
    segments = list((data_dir / "partitions" / "p" / "wal").glob("*.wal"))
    assert 1 <= len(segments) <= 3
    async with running_node(data_dir) as node, mkv.Client.connect(node.data_address) as client:
        assert await client.get(b"k0-0") == value
        assert await client.get(b"k39-99") == value


async def test_filters_refuse_writes_whole_with_a_clear_status() -> None:
    async with running_node() as node:
        await add_only_partition(
            node,
            store="sqlite",
            pipeline=[
                "timestamp",
                "reject-prefix:secret/",
                "max-value-size:40",
                "sanitize-json:password",
                "wal",
            ],
        )
        async with mkv.Client.connect(node.data_address) as client:
            with pytest.raises(mkv.PermissionDeniedError, match="secret/"):
                await client.upsert({b"ok": b"1", b"secret/x": b"2"})
            with pytest.raises(mkv.InvalidArgumentError, match="limit"):
                await client.upsert({b"ok": b"1", b"big": b"x" * 41})
            assert await client.get(b"ok") is None, "a refused batch stores nothing"
            await client.upsert({b"user": b'{"name":"ada","password":"x"}'})
            assert await client.get(b"user") == b'{"name":"ada"}'


async def test_the_log_holds_writes_as_the_stages_made_them(tmp_path: Path) -> None:
    """An upsert's request bytes are logged as they are, unless a stage changed
    the write: then the changed write is what a restart replays."""
    data_dir = tmp_path / "data"
    async with running_node(data_dir) as node:
        await add_only_partition(
            node, store="memory", pipeline=["timestamp", "sanitize-json:password", "wal"]
        )
        async with mkv.Client.connect(node.data_address) as client:
            await client.upsert({b"user": b'{"name":"ada","password":"x"}'})
            await client.upsert({b"plain": b"not json"})
    async with running_node(data_dir) as node, mkv.Client.connect(node.data_address) as client:
        assert await client.get(b"user") == b'{"name":"ada"}'
        assert await client.get(b"plain") == b"not json"
