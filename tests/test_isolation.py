"""One partition's failing disk ends only that partition: the node and the
other partitions go on, and the failed one is reopened without a restart.

The failure is made the way an operator's disk makes it, in a real ``mkv
serve`` process: the partition's ``wal`` directory is swapped for a file, so
the next log segment cannot be created (as on a full or read-only file
system). Running as root, chmod would not stop anything; this does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import mkv
from tests.processes import ServerProcess

# The smallest segment the wal stage takes: a few writes of VALUE roll the log.
SEGMENT = 64 * 1024
VALUE = b"v" * 8192
# A partition on a log that rolls quickly, and one on the node's default.
PIPELINE = ("timestamp", f"wal:always,segment={SEGMENT}")


class _BrokenWal:
    """The partition's log directory replaced by a file, and put back."""

    def __init__(self, data_dir: Path, partition_id: str) -> None:
        self.wal = data_dir / "partitions" / partition_id / "wal"
        self.aside = self.wal.with_name("wal.aside")

    def __enter__(self) -> _BrokenWal:
        self.wal.rename(self.aside)
        self.wal.write_bytes(b"")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wal.unlink()
        self.aside.rename(self.wal)


async def _write_until_refused(
    client: mkv.Client, prefix: str, acknowledged: dict[bytes, bytes]
) -> mkv.MkvError:
    """Write to partition ``a`` until a write is refused (the log cannot roll)."""
    for i in range(4 * SEGMENT // len(VALUE)):
        key = f"a/{prefix}{i:04d}".encode()
        try:
            await client.upsert({key: VALUE})
        except mkv.MkvError as exc:
            return exc
        acknowledged[key] = VALUE
    raise AssertionError("the log rolled into a directory that is a file")


async def _states(admin: mkv.AdminClient) -> dict[str, str]:
    return {p.id: p.state for p in await admin.list_partitions()}


async def _check_serving(client: mkv.Client, acknowledged: dict[bytes, bytes]) -> int:
    """Every acknowledged write is there; a new one is taken. Returns its seq."""
    for key, value in acknowledged.items():
        assert await client.get(key) == value, key
    [ack] = await client.upsert({b"a/after": b"1"})
    return ack.seq


@pytest.fixture
async def two_partitions(server_process: ServerProcess) -> ServerProcess:
    async with mkv.AdminClient.connect(server_process.control_addr) as admin:
        await admin.remove_partition("default")
        await admin.add_partition(start=b"", end=b"m", partition_id="a", pipeline=PIPELINE)
        await admin.add_partition(start=b"m", partition_id="b")
    return server_process


async def test_a_failed_log_ends_only_its_partition_and_reopen_brings_it_back(
    two_partitions: ServerProcess,
) -> None:
    server = two_partitions
    acknowledged: dict[bytes, bytes] = {}
    with trio.fail_after(60):
        async with (
            mkv.AdminClient.connect(server.control_addr) as admin,
            mkv.Client.connect(server.data_addr) as client,
        ):
            [first] = await client.upsert({b"a/first": b"1"})
            acknowledged[b"a/first"] = b"1"
            with _BrokenWal(server.data_dir, "a"):
                refused = await _write_until_refused(client, "x", acknowledged)
                assert isinstance(refused, mkv.InternalError)
                await client.upsert({b"m/during": b"2"})  # b still takes writes
                assert await _states(admin) == {"a": "failed", "b": "active"}
                # The failed partition still answers reads (its store holds
                # only what the log made durable) and refuses writes clearly.
                assert await client.get(b"a/first") == b"1"
                with pytest.raises(mkv.InternalError, match="Partition a failed"):
                    await client.upsert({b"a/refused": b"1"})
                # Reopening while the cause is there fails and changes nothing.
                with pytest.raises(mkv.InternalError, match="write-ahead log"):
                    await admin.reopen_partition("a")
                assert await _states(admin) == {"a": "failed", "b": "active"}
                assert await client.get(b"m/during") == b"2"
            assert server.process is not None
            assert server.process.returncode is None, server.stderr()

            info = await admin.reopen_partition("a")
            assert info.state == "active"
            seq = await _check_serving(client, acknowledged)
            assert seq > first.seq
            assert await client.get(b"m/during") == b"2"
        # The reopened partition recovered as a restart would: nothing twice.
        assert await server.stop() == 0, server.stderr()
    assert server.stderr().count("partition a failed:") == 1  # logged once


async def test_a_failed_partition_reopens_by_itself_once_the_cause_is_gone(
    two_partitions: ServerProcess,
) -> None:
    server = two_partitions
    acknowledged: dict[bytes, bytes] = {}
    with trio.fail_after(60):
        async with (
            mkv.AdminClient.connect(server.control_addr) as admin,
            mkv.Client.connect(server.data_addr) as client,
        ):
            await client.upsert({b"a/first": b"1"})
            acknowledged[b"a/first"] = b"1"
            with _BrokenWal(server.data_dir, "a"):
                await _write_until_refused(client, "x", acknowledged)
                await trio.sleep(1.5)  # a retry or two find the cause still there
                assert await _states(admin) == {"a": "failed", "b": "active"}
            for _ in range(200):  # the first retry after the cause is gone
                if (await _states(admin))["a"] == "active":
                    break
                await trio.sleep(0.1)
            assert await _states(admin) == {"a": "active", "b": "active"}
            await _check_serving(client, acknowledged)


async def test_a_reopened_merge_survivor_still_refuses_positions_before_the_merge(
    two_partitions: ServerProcess,
) -> None:
    """Reopening a failed partition keeps what the catalog says of it: a
    merge's survivor goes on refusing watch positions from before the merge
    (its log holds its own history there, not the absorbed partition's)."""
    server = two_partitions
    with trio.fail_after(60):
        async with (
            mkv.AdminClient.connect(server.control_addr) as admin,
            mkv.Client.connect(server.data_addr) as client,
        ):
            await client.upsert({b"a/first": b"1"})
            # b numbers well past a, so a's own log covers b's positions.
            for i in range(20):
                await client.upsert({b"m/x": b"%d" % i})
            [seen] = await client.upsert({b"m/x": b"seen"})
            [missed] = await client.upsert({b"m/x": b"missed"})
            assert seen.partition_id == missed.partition_id == "b"
            operation_id = await admin.merge_partitions("a", "b")
            done = await admin.wait_operation(operation_id, poll_interval=0.05)
            assert done.merged is not None
            with _BrokenWal(server.data_dir, "a"):
                await _write_until_refused(client, "x", {})
            await admin.reopen_partition("a")
            assert await _states(admin) == {"a": "active"}
            await client.upsert({b"a/after": b"1"})

            async def watch_from_before() -> None:
                async with client.watch(b"", None, from_seq=seen.seq) as changes:
                    async for change in changes:
                        pytest.fail(
                            f"a watch from before the merge got {change.key!r} {change.seq}"
                        )

            with trio.fail_after(10), pytest.raises(mkv.CompactedError):
                await watch_from_before()
        assert await server.stop() == 0, server.stderr()
