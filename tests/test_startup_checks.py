"""What a node reads from disk at start, damaged: it refuses clearly (the
whole node for a missing or damaged catalog, only the partition for its own
files), rebuilds what its log can rebuild, and never deletes data."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import mkv
from mkv.errors import StorageError
from mkv.limits import MAX_LOADED, MAX_STORED
from mkv.records import Write
from mkv.store import SqliteStore
from mkv.wal.record import encode_record
from tests.processes import ServerProcess

KEYS = 1500


def _key(i: int) -> bytes:
    return f"k{i:05d}".encode()


def _value(i: int) -> bytes:
    return f"value {i} ".encode() * 10


def _store(data_dir: Path, partition: str) -> Path:
    return data_dir / "partitions" / partition / "store.sqlite3"


def _rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])
    finally:
        conn.close()


async def _write(server: ServerProcess, keys: range) -> None:
    async with mkv.Client.connect(server.data_addr) as client:
        for start in range(keys.start, keys.stop, 100):
            await client.upsert(
                {_key(i): _value(i) for i in range(start, min(start + 100, keys.stop))}
            )


async def _start_refused(server: ServerProcess) -> str:
    """Start ``server`` expecting it to exit; returns its 'cannot start' line."""
    server.stderr_path.unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="exited with 1 before listening") as failed:
        await server.start()
    lines = [line for line in str(failed.value).splitlines() if "cannot start" in line]
    assert len(lines) == 1, str(failed.value)
    assert "Traceback" not in str(failed.value)
    return lines[0]


async def test_a_missing_or_damaged_catalog_refuses_to_start_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    catalog = server.data_dir / "catalog.json"
    with trio.fail_after(90):
        await server.start()
        await _write(server, range(100))
        assert await server.stop() == 0
        saved = catalog.read_bytes()

        catalog.unlink()
        line = await _start_refused(server)
        assert "catalog.json is missing" in line
        assert str(server.data_dir / "partitions" / "default") in line
        assert "backup" in line
        assert _rows(_store(server.data_dir, "default")) == 100

        catalog.write_bytes(saved[: len(saved) // 2])
        line = await _start_refused(server)
        assert "catalog" in line
        assert "damaged" in line
        assert _rows(_store(server.data_dir, "default")) == 100

        catalog.write_bytes(saved)
        await server.start()
        try:
            async with mkv.Client.connect(server.data_addr) as client:
                for i in range(100):
                    assert await client.get(_key(i)) == _value(i)
        finally:
            await server.stop()


def _truncate(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def _scribble(path: Path) -> None:
    """Garbage over the middle pages: the file keeps its size (SQLite's
    quick_check finds it, not the page count)."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 3)
        file.write(b"\xa5" * (size // 3))


@pytest.mark.parametrize("damage", [_truncate, _scribble])
async def test_a_store_damaged_after_kill_9_is_rebuilt_from_the_log(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    store = _store(server.data_dir, "default")
    with trio.fail_after(120):
        await server.start()
        # A clean stop checkpoints the keys into the database file itself.
        await _write(server, range(KEYS))
        assert await server.stop() == 0
        await server.start()
        await _write(server, range(KEYS, KEYS + 10))
        await server.kill()
        damage(store)

        await server.start()
        try:
            async with mkv.Client.connect(server.data_addr) as client:
                for i in range(KEYS + 10):
                    assert await client.get(_key(i)) == _value(i), i
                await client.upsert({b"after": b"rebuild"})
                assert await client.get(b"after") == b"rebuild"
        finally:
            await server.stop()
    assert "rebuilding it from the log" in server.stderr()
    # The damaged file is kept for a look, not deleted.
    [aside] = store.parent.glob("store.sqlite3.damaged-*Z")
    assert aside.stat().st_size > 0


def _two_partitions_config(tmp_path: Path) -> Path:
    # A small watch retention, so that a log roll lets a checkpoint drop
    # the oldest segment (the log then no longer holds every write).
    config = tmp_path / "mkv.toml"
    config.write_text("watch_retention_bytes = 1024\n")
    return config


async def _two_partitions(server: ServerProcess) -> None:
    async with mkv.AdminClient.connect(server.control_addr) as admin:
        await admin.remove_partition("default")
        await admin.add_partition(
            end=b"m", partition_id="low", pipeline=["timestamp", "wal:segment=65536"]
        )
        await admin.add_partition(start=b"m", partition_id="high")


async def _refused_alone(server: ServerProcess, reason: str) -> None:
    """``low`` refuses every request, ``high`` serves, the log says why in one line."""
    async with mkv.Client.connect(server.data_addr) as client:
        with pytest.raises(mkv.UnavailableError, match="did not start"):
            await client.get(b"k00001")
        with pytest.raises(mkv.UnavailableError, match="did not start"):
            await client.upsert({b"k00001": b"x"})
        await client.upsert({b"z": b"still here"})
        assert await client.get(b"z") == b"still here"
    async with mkv.AdminClient.connect(server.control_addr) as admin:
        states = {p.id: p.state for p in await admin.list_partitions()}
    assert states == {"low": "failed", "high": "active"}
    [line] = [line for line in server.stderr().splitlines() if "refused to start" in line]
    assert "partition low" in line
    assert reason in line


async def test_a_damaged_store_the_log_cannot_rebuild_refuses_only_its_partition(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data", "--config", str(_two_partitions_config(tmp_path)))
    store = _store(server.data_dir, "low")
    wal = store.parent / "wal"
    with trio.fail_after(120):
        await server.start()
        await _two_partitions(server)
        # About 250 KiB of records: the 64 KiB segments roll and checkpoints drop the first.
        await _write(server, range(KEYS))
        assert not (wal / f"{1:020d}.wal").exists()
        await server.kill()
        with store.open("r+b") as file:
            file.truncate(store.stat().st_size // 2)
        size = store.stat().st_size

        await server.start()
        try:
            await _refused_alone(server, "cannot rebuild the store")
        finally:
            await server.stop()
    assert store.stat().st_size == size, "the damaged store is left as it was"


async def test_a_missing_partition_directory_refuses_only_its_partition(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    with trio.fail_after(90):
        await server.start()
        await _two_partitions(server)
        await _write(server, range(10))
        assert await server.stop() == 0
        low = server.data_dir / "partitions" / "low"
        low.rename(tmp_path / "low-aside")

        await server.start()
        try:
            await _refused_alone(server, "is missing")
            assert not low.exists(), "no empty partition was made in its place"
            # Put back, it is reopened without a restart, its data whole.
            (tmp_path / "low-aside").rename(low)
            async with mkv.AdminClient.connect(server.control_addr) as admin:
                assert (await admin.reopen_partition("low")).state == "active"
            async with mkv.Client.connect(server.data_addr) as client:
                assert await client.get(_key(9)) == _value(9)
        finally:
            assert await server.stop() == 0


async def test_an_out_of_range_seq_in_store_meta_refuses_only_its_partition(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    with trio.fail_after(90):
        await server.start()
        await _two_partitions(server)
        await _write(server, range(10))
        assert await server.stop() == 0
        conn = sqlite3.connect(_store(server.data_dir, "low"))
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (MAX_STORED,))
        conn.close()

        for _ in range(2):  # and it starts again the same way
            await server.start()
            try:
                await _refused_alone(server, f"last_seq {MAX_STORED} is outside")
            finally:
                assert await server.stop() == 0
            server.stderr_path.unlink()


async def test_an_out_of_range_seq_in_a_log_record_refuses_only_its_partition(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    with trio.fail_after(90):
        await server.start()
        await _two_partitions(server)
        await _write(server, range(10))
        assert await server.stop() == 0
        [segment] = (server.data_dir / "partitions" / "low" / "wal").glob("*.wal")
        # A record with a right CRC: written as it is, never taken for a torn tail.
        with segment.open("ab") as file:
            file.write(encode_record(MAX_STORED, 1, b"\n\x05\n\x01a\x12\x00"))
        size = segment.stat().st_size

        await server.start()
        try:
            await _refused_alone(server, f"last_seq {MAX_STORED} is outside")
        finally:
            assert await server.stop() == 0
    assert segment.stat().st_size == size, "the log is left as it was"


def test_a_seq_past_what_sqlite_holds_is_a_store_failure_not_a_crash(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3", logged=True)
    try:
        store.apply([Write(puts=[(b"a", b"1")], seq=MAX_STORED, timestamp=1)])
        with pytest.raises(StorageError, match="nothing was applied"):
            store.apply([Write(puts=[(b"b", b"2")], seq=MAX_STORED + 1, timestamp=2)])
        assert store.get(b"b") is None
        assert store.last_seq() == MAX_STORED
    finally:
        store.close()


async def test_a_partition_at_the_bound_refuses_writes_and_still_starts(tmp_path: Path) -> None:
    """Nothing past the bound is written, so what mkv wrote always loads again."""
    server = ServerProcess(tmp_path / "mkv-data")
    with trio.fail_after(90):
        await server.start()
        await _two_partitions(server)
        await _write(server, range(10))
        assert await server.stop() == 0
        conn = sqlite3.connect(_store(server.data_dir, "low"))
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (MAX_LOADED,))
        conn.close()

        for _ in range(2):
            await server.start()
            try:
                async with mkv.Client.connect(server.data_addr) as client:
                    with pytest.raises(mkv.InternalError, match="used up its numbers"):
                        await client.upsert({b"k00001": b"x"})
                    assert await client.get(b"k00001") == _value(1)
                    await client.upsert({b"z": b"still here"})
            finally:
                assert await server.stop() == 0


def _creation_cut_short(store: Path) -> None:
    """Leave what a power cut during a store's creation leaves: SQLite's
    header and an empty -wal (its unclean-stop sign), but not the schema,
    which was committed to the WAL without an fsync."""
    for path in store.parent.glob("store.sqlite3*"):
        path.unlink()
    scratch = store.parent / "scratch" / store.name
    scratch.parent.mkdir()
    conn = sqlite3.connect(scratch, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        # While the connection is open its -wal exists: copy both as they are.
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{scratch}{suffix}", f"{store}{suffix}")
    finally:
        conn.close()
    shutil.rmtree(scratch.parent)


async def test_a_store_whose_creation_a_power_cut_took_is_replayed_from_the_log(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "mkv-data")
    store = _store(server.data_dir, "default")
    with trio.fail_after(120):
        await server.start()
        await _write(server, range(300))
        await server.kill()
        _creation_cut_short(store)
        assert store.with_name("store.sqlite3-wal").exists()

        await server.start()
        try:
            async with mkv.Client.connect(server.data_addr) as client:
                for i in range(300):
                    assert await client.get(_key(i)) == _value(i), i
        finally:
            await server.stop()
    assert "refused" not in server.stderr()
