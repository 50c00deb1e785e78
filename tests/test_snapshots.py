"""Snapshots and restores against a real node: consistency under write load,
store kinds in and out, corruption, operations, and the store-level pieces."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import mkv
from mkv.operations import Operation, OperationRegistry, OperationState
from mkv.records import Write
from mkv.snapshots import stores
from mkv.snapshots.manifest import verify_snapshot
from mkv.store import Item, MemoryStore, StoreOptions, StoreStats
from mkv.store.sqlite import LayoutReader, SqliteStore
from mkv.testing import running_node

TIMEOUT = 60


@attrs.frozen
class Ack:
    seq: int
    key: bytes
    # None: a delete.
    value: bytes | None
    # When the acknowledgement came (trio.current_time()) and how long it took.
    at: float
    latency: float


def model_at(acks: list[Ack], seq: int) -> dict[bytes, tuple[bytes, int]]:
    """The state after every acknowledged write up to ``seq``: key -> (value, seq)."""
    state: dict[bytes, tuple[bytes, int]] = {}
    for ack in sorted(acks, key=lambda a: a.seq):
        if ack.seq > seq:
            break
        if ack.value is None:
            state.pop(ack.key, None)
        else:
            state[ack.key] = (ack.value, ack.seq)
    return state


def file_state(path: Path) -> tuple[int, dict[bytes, tuple[bytes, int]]]:
    """A snapshot data file's last_seq and every key -> (value, seq) in it."""
    with LayoutReader(path) as reader:
        rows = {k: (item.value, item.seq) for batch in reader.batches() for k, item in batch}
        return reader.last_seq, rows


class CopyGate:
    """Holds a snapshot's copy after its first step until the test lets it go:
    a seam in the real copy (progress is reported between backup steps), so
    a test can prove writes are applied and acknowledged mid-copy."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Operation.report
        gate = self

        def report(self: Operation, phase: str, done: int, total: int, unit: str = "bytes") -> None:
            original(self, phase, done, total, unit)
            if phase == "copy" and 0 < done < total and not gate.release.is_set():
                gate.reached.set()
                gate.release.wait(TIMEOUT)

        monkeypatch.setattr(Operation, "report", report)
        # Small steps, so a small partition still takes many.
        monkeypatch.setattr(stores, "BACKUP_STEP_PAGES", 4)

    async def wait_reached(self) -> None:
        await trio.to_thread.run_sync(self.reached.wait, TIMEOUT)
        assert self.reached.is_set(), "the copy never started"


@asynccontextmanager
async def clients(node: mkv.Node) -> AsyncIterator[tuple[mkv.Client, mkv.AdminClient]]:
    async with (
        mkv.Client.connect(node.data_address) as client,
        mkv.AdminClient.connect(node.control_address) as admin,
    ):
        yield client, admin


async def preload(client: mkv.Client, acks: list[Ack], count: int, size: int) -> None:
    rng = random.Random(7)
    for first in range(0, count, 500):
        batch = {b"pre:%06d" % i: rng.randbytes(size) for i in range(first, first + 500)}
        (ack,) = await client.upsert(batch)
        now = trio.current_time()
        acks.extend(Ack(ack.seq, k, v, now, 0.0) for k, v in batch.items())


async def writer(client: mkv.Client, acks: list[Ack], n: int, stop: trio.Event) -> None:
    """Single upserts and deletes over a small hot keyspace until ``stop``."""
    rng = random.Random(n)
    i = 0
    while not stop.is_set():
        key = b"hot:%03d" % rng.randrange(200)
        started = trio.current_time()
        if rng.random() < 0.2:
            (ack,) = await client.remove(key)
            value = None
        else:
            value = f"w{n}-{i}".encode()
            (ack,) = await client.upsert({key: value})
        now = trio.current_time()
        acks.append(Ack(ack.seq, key, value, now, now - started))
        i += 1


def latency_summary(acks: list[Ack]) -> str:
    if not acks:
        return "no writes"
    latencies = sorted(a.latency for a in acks)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    span = max(a.at for a in acks) - min(a.at - a.latency for a in acks)
    return f"{len(acks)} writes, {len(acks) / span:.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_a_snapshot_under_write_load_restores_the_model_at_its_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    gate = CopyGate()
    gate.install(monkeypatch)
    root = tmp_path / "snapshots"
    acks: list[Ack] = []
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "a", default_store=store, snapshot_root=root) as node,
            clients(node) as (client, admin),
        ):
            await preload(client, acks, 2000, 1000)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(writer, client, acks, n, stop)
                await trio.sleep(0.3)
                before = [a for a in acks if a.latency > 0]
                started = trio.current_time()
                operation_id = await admin.snapshot("default", "load")
                if store == "sqlite":
                    # The copy is held mid-way while the writers go on: they
                    # must be answered (not queued behind the copy).
                    await gate.wait_reached()
                    count = len(acks)
                    with trio.fail_after(10):
                        while len(acks) < count + 100:  # noqa: ASYNC110 (writers append to a list)
                            await trio.sleep(0.01)
                    gate.release.set()
                done = await admin.wait_operation(operation_id, poll_interval=0.01)
                finished = trio.current_time()
                await trio.sleep(0.2)
                stop.set()
    assert done.snapshot is not None
    seq = done.snapshot.manifest.seq
    during = [a for a in acks if started <= a.at <= finished and a.latency > 0]
    # Shown in every run, not only on failure: how much the snapshot cost the writers.
    with capsys.disabled():
        print(f"\n[{store}] writers before the snapshot: {latency_summary(before)}")
        held = ", copy held until 100 more writes" if store == "sqlite" else ""
        print(
            f"[{store}] writers during the snapshot ({finished - started:.2f} s{held}): "
            f"{latency_summary(during)}"
        )
    assert any(a.seq > seq for a in during), "writes were acknowledged during the snapshot"
    assert any(a.seq > seq for a in acks), "and after its sequence number"
    model = model_at(acks, seq)

    # The file itself holds exactly the model at its seq...
    manifest, data_file = verify_snapshot(root / done.snapshot.manifest_path)
    assert manifest == done.snapshot.manifest
    file_seq, rows = file_state(data_file)
    assert file_seq == seq
    assert rows == model

    # ...and so does a partition restored from it, on another node, as the other kind.
    other = "memory" if store == "sqlite" else "sqlite"
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "b", snapshot_root=root) as node,
            clients(node) as (client, admin),
        ):
            await admin.remove_partition("default")
            info = await admin.add_partition(
                partition_id="restored", snapshot=done.snapshot.manifest_path, store=other
            )
            assert (info.store, info.range, info.last_seq) == (other, mkv.KeyRange(b"", None), seq)
            assert info.key_count == len(model)
            for key in sorted({a.key for a in acks}):
                item = await client.get_item(key)
                expected = model.get(key)
                assert (None if item is None else (item.value, item.seq)) == expected, key
            (ack,) = await client.upsert({b"next": b"1"})
            assert ack.seq == seq + 1


async def test_a_restored_memory_partition_comes_back_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "a", snapshot_root=root) as node,
            clients(node) as (
                client,
                admin,
            ),
        ):
            await client.upsert({b"a": b"1", b"b": b"2"})
            await client.remove(b"b")
            done = await admin.wait_operation(await admin.snapshot("default", ""))
        assert done.snapshot is not None
        manifest_path = done.snapshot.manifest_path
        for pipeline in (["timestamp"], ["timestamp", "wal"]):
            data = tmp_path / f"memory-{len(pipeline)}"
            async with (
                running_node(data, snapshot_root=root) as node,
                clients(node) as (
                    client,
                    admin,
                ),
            ):
                await admin.remove_partition("default")
                await admin.add_partition(
                    partition_id="m", snapshot=manifest_path, store="memory", pipeline=pipeline
                )
                await client.upsert({b"c": b"3"})
            async with (
                running_node(data, snapshot_root=root) as node,
                clients(node) as (
                    client,
                    _,
                ),
            ):
                assert await client.get(b"a") == b"1"
                assert await client.get(b"b") is None
                # With a log, what came after the snapshot is replayed on top;
                # without one, a memory partition keeps nothing of its own.
                expected = b"3" if "wal" in pipeline else None
                assert await client.get(b"c") == expected
                (ack,) = await client.upsert({b"d": b"4"})
                assert ack.seq > done.snapshot.manifest.seq + 1


async def test_a_corrupt_snapshot_is_refused_and_nothing_is_served(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "a", snapshot_root=root) as node,
            clients(node) as (
                client,
                admin,
            ),
        ):
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="src", start=b"a", end=b"m")
            await client.upsert({b"apple": b"1", b"kiwi": b"2"})
            done = await admin.wait_operation(await admin.snapshot("src", "x"))
            assert done.snapshot is not None
            await admin.remove_partition("src")
            data_file = root / done.snapshot.data_path
            good = data_file.read_bytes()

            corrupt = bytearray(good)
            corrupt[len(corrupt) // 2] ^= 0x40
            cases = {
                "SHA-256": bytes(corrupt),
                "bytes": good[:-1],
            }
            for fragment, content in cases.items():
                data_file.write_bytes(content)
                with pytest.raises(mkv.InvalidArgumentError, match=fragment):
                    await admin.add_partition(
                        partition_id="bad", snapshot=done.snapshot.manifest_path
                    )
                assert await admin.list_partitions() == []
                assert not (node.config.data_dir / "partitions" / "bad").exists()
                catalog = json.loads((node.config.data_dir / "catalog.json").read_text())
                assert catalog["partitions"] == []
                with pytest.raises(mkv.BadNodeError):
                    await client.get(b"apple")

            # A manifest whose checksum matches but whose seq does not is refused too.
            data_file.write_bytes(good)
            manifest_file = root / done.snapshot.manifest_path
            document = json.loads(manifest_file.read_text())
            document["seq"] += 1
            manifest_file.write_text(json.dumps(document))
            with pytest.raises(mkv.InvalidArgumentError, match="sequence number"):
                await admin.add_partition(partition_id="bad", snapshot=done.snapshot.manifest_path)
            assert await admin.list_partitions() == []

            # Put back as it was, the same snapshot restores.
            document["seq"] -= 1
            manifest_file.write_text(json.dumps(document))
            info = await admin.add_partition(
                partition_id="good", snapshot=done.snapshot.manifest_path
            )
            assert info.range == mkv.KeyRange(b"a", b"m")
            assert await client.get(b"kiwi") == b"2"


async def test_restore_takes_the_snapshot_range_or_refuses_another(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (client, admin):
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="src", start=b"a", end=b"m")
            await client.upsert({b"b": b"1"})
            done = await admin.wait_operation(await admin.snapshot("src", ""))
            assert done.snapshot is not None
            path = done.snapshot.manifest_path
            with pytest.raises(mkv.InvalidArgumentError, match="range"):
                await admin.add_partition(partition_id="x", start=b"a", end=b"z", snapshot=path)
            # The same range as a partition that exists: the usual overlap error.
            with pytest.raises(mkv.AlreadyExistsError):
                await admin.add_partition(partition_id="x", start=b"a", end=b"m", snapshot=path)
            with pytest.raises(mkv.AlreadyExistsError):
                await admin.add_partition(partition_id="src", snapshot=path)
            with pytest.raises(mkv.InvalidArgumentError, match="store kind"):
                await admin.add_partition(partition_id="x", store="floppy", snapshot=path)
            with pytest.raises(mkv.InvalidArgumentError, match="No snapshot manifest"):
                await admin.add_partition(partition_id="x", snapshot="nothing.manifest.json")
            assert [p.id for p in await admin.list_partitions()] == ["src"]
            assert not (node.config.data_dir / "partitions" / "x").exists()


async def test_snapshots_at_the_same_seq_never_replace_each_other(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (client, admin):
            await client.upsert({b"k": b"v"})
            first = await admin.wait_operation(await admin.snapshot("default", "same"))
            second = await admin.wait_operation(await admin.snapshot("default", "same"))
    assert first.snapshot is not None
    assert second.snapshot is not None
    assert first.snapshot.manifest.seq == second.snapshot.manifest.seq
    assert first.snapshot.data_path == "same/default-1.sqlite3"
    assert second.snapshot.data_path == "same/default-1-2.sqlite3"
    root = node.config.snapshot_dir
    for done in (first, second):
        assert done.snapshot is not None
        verify_snapshot(root / done.snapshot.manifest_path)
    assert sorted(p.name for p in (root / "same").iterdir()) == [
        "default-1-2.sqlite3",
        "default-1-2.sqlite3.manifest.json",
        "default-1.sqlite3",
        "default-1.sqlite3.manifest.json",
    ]


async def test_one_snapshot_of_a_partition_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = CopyGate()
    gate.install(monkeypatch)
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (client, admin):
            await client.upsert({b"k%d" % i: b"v" * 1000 for i in range(200)})
            operation_id = await admin.snapshot("default", "")
            await gate.wait_reached()
            running = await admin.get_operation(operation_id)
            assert (running.state, running.phase, running.unit) == ("running", "copy", "bytes")
            assert 0 < running.done < running.total
            with pytest.raises(mkv.AlreadyExistsError, match=operation_id):
                await admin.snapshot("default", "")
            gate.release.set()
            done = await admin.wait_operation(operation_id)
            assert done.state == "done"
            assert done.finished is not None
            assert done.finished >= done.started
            await admin.wait_operation(await admin.snapshot("default", ""))


async def test_operations_unknown_ids_and_partitions(mkv_admin: mkv.AdminClient) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(mkv.NotFoundError, match="No operation"):
            await mkv_admin.get_operation("0123456789abcdef")
        with pytest.raises(mkv.NotFoundError, match="No operation"):
            await mkv_admin.get_operation("")
        with pytest.raises(mkv.NotFoundError, match="No partition"):
            await mkv_admin.snapshot("nope", "")


async def test_a_failed_operation_reports_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(store: object) -> Any:
        raise mkv.StorageError("The disk is on fire.")

    monkeypatch.setattr("mkv.snapshots.take.begin_capture", broken)
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (_, admin):
            operation_id = await admin.snapshot("default", "")
            with pytest.raises(mkv.InternalError, match="on fire"):
                await admin.wait_operation(operation_id)
            info = await admin.get_operation(operation_id)
            assert (info.state, info.phase, info.snapshot) == ("failed", "failed", None)
            assert isinstance(info.error, mkv.InternalError)
            # No temporary file is left behind.
            assert list(node.config.snapshot_dir.iterdir()) == []


async def test_the_registry_forgets_the_oldest_finished_operations() -> None:
    registry = OperationRegistry(max_finished=2)

    async def work(operation: Operation) -> str:
        return operation.id

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            operations = []
            for _ in range(3):
                operations.append(registry.start("test", "p", work))
                # One at a time: Trio does not promise tasks run in start order.
                await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(mkv.NotFoundError):
                registry.get(operations[0].id)
            for operation in operations[1:]:
                assert registry.get(operation.id).result == operation.id
            registry.close()
        with pytest.raises(mkv.UnavailableError):
            registry.start("test", "p", work)


async def test_shutdown_stops_a_running_snapshot_and_removes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = CopyGate()
    gate.install(monkeypatch)
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (client, admin):
            await client.upsert({b"k%d" % i: b"v" * 1000 for i in range(200)})
            operation_id = await admin.snapshot("default", "d")
            await gate.wait_reached()
            operation = node.operations.get(operation_id)
            temporary = list((node.config.snapshot_dir / "d").iterdir())
            assert [p.name for p in temporary] == [f".mkv-snapshot-{operation_id}.tmp"]
            node.operations.close()
            # The copy is still held; the stop request must end it when let go.
            await trio.sleep(0.1)
            gate.release.set()
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(10):
                while operation.state is not OperationState.FAILED:  # noqa: ASYNC110 (no event)
                    await trio.sleep(0.01)
    assert operation.error is not None
    assert "shut down" in operation.error.message
    assert list((node.config.snapshot_dir / "d").iterdir()) == []


def test_a_pinned_view_ignores_later_writes_and_sync_does_not_wait_for_it(
    tmp_path: Path,
) -> None:
    """SQLite's backup restarts when another connection changes the source,
    unless the backup's connection holds its read transaction: checked here
    directly, with commits between every backup step."""
    store = SqliteStore(tmp_path / "s.sqlite3", logged=True)
    try:
        store.apply([Write(puts=[(b"k%04d" % i, b"x" * 500)], seq=i + 1) for i in range(2000)])
        conn, seq, _ = store.open_pinned_reader()
        assert seq == 2000
        target = sqlite3.connect(tmp_path / "copy.sqlite3")
        steps = 0

        def progress(status: int, remaining: int, total: int) -> None:
            nonlocal steps
            steps += 1
            store.apply([Write(puts=[(b"new%04d" % steps, b"y")], seq=2000 + steps)])

        conn.backup(target, pages=4, progress=progress)
        target.close()
        assert steps > 10
        last_seq, rows = file_state(tmp_path / "copy.sqlite3")
        assert last_seq == 2000
        assert len(rows) == 2000
        assert not any(key.startswith(b"new") for key in rows)

        # A TRUNCATE checkpoint would wait 5 s for the pinned view and then
        # give up; sync must answer at once and still make the writes durable.
        began = time.monotonic()
        assert store.sync() == 2000 + steps
        assert time.monotonic() - began < 1.0
        store.release_pinned_reader(conn)
        began = time.monotonic()
        store.sync()
        assert time.monotonic() - began < 1.0
        wal = tmp_path / "s.sqlite3-wal"
        assert wal.stat().st_size == 0, "with the view gone, the WAL is checkpointed away"
    finally:
        store.close()


def test_without_a_pinned_view_the_backup_takes_in_later_writes(tmp_path: Path) -> None:
    """The contrast to the test above, and SQLite's documented behaviour: a
    backup from a connection with no open read transaction restarts when
    another connection commits, and so ends with whatever was committed
    last. Consistency at one sequence number comes from the pin alone."""
    store = SqliteStore(tmp_path / "s.sqlite3", logged=True)
    try:
        store.apply([Write(puts=[(b"k%04d" % i, b"x" * 500)], seq=i + 1) for i in range(2000)])
        conn = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
        target = sqlite3.connect(tmp_path / "copy.sqlite3")
        steps = 0

        def progress(status: int, remaining: int, total: int) -> None:
            nonlocal steps
            steps += 1
            if steps <= 10:  # then let it finish
                store.apply([Write(puts=[(b"new%04d" % steps, b"y")], seq=2000 + steps)])

        conn.backup(target, pages=4, progress=progress)
        target.close()
        conn.close()
        last_seq, rows = file_state(tmp_path / "copy.sqlite3")
        assert last_seq == 2010
        assert sum(key.startswith(b"new") for key in rows) == 10
    finally:
        store.close()


class WriteThrough:
    """A store kind registered the way applications register theirs: a memory
    cache in front of a durable SQLite store, exposed as ``durable`` as the
    caching store does. Snapshots must come from the durable store, and
    restores into it go through ``apply``."""

    kind = "write-through"
    persistent = True

    def __init__(self, directory: Path, logged: bool, options: StoreOptions) -> None:
        self.durable = SqliteStore(directory / "durable.sqlite3", logged=logged)
        self.cache = MemoryStore()

    def last_seq(self) -> int:
        return self.durable.last_seq()

    def last_timestamp(self) -> int:
        return self.durable.last_timestamp()

    def get(self, key: bytes) -> Item | None:
        return self.cache.get(key) or self.durable.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        return self.durable.get_many(keys)

    def scan(
        self, start: bytes, end: bytes | None, limit: int, *, keys_only: bool = False
    ) -> list[tuple[bytes, Item]]:
        return self.durable.scan(start, end, limit, keys_only=keys_only)

    def apply(self, writes: Sequence[Write]) -> list[int]:
        removed = self.durable.apply(writes)
        self.cache.apply(writes)
        return removed

    def sync(self) -> int:
        return self.durable.sync()

    def stats(self) -> StoreStats:
        return self.durable.stats()

    def close(self) -> None:
        self.cache.close()
        self.durable.close()


async def test_a_store_with_a_durable_inside_snapshots_and_restores_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(mkv.store._FACTORIES, "write-through", WriteThrough)
    with trio.fail_after(TIMEOUT):
        async with running_node(tmp_path / "a") as node, clients(node) as (client, admin):
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="w", end=b"m", store="write-through")
            await client.upsert({b"a": b"1", b"b": b"2"})
            await client.remove(b"b")
            done = await admin.wait_operation(await admin.snapshot("w", ""))
            assert done.snapshot is not None
            assert done.snapshot.manifest.store_kind == "write-through"
            assert file_state(node.config.snapshot_dir / done.snapshot.data_path) == (
                2,
                {b"a": (b"1", 1)},
            )
            await admin.remove_partition("w")
            # Back into the same kind: filled through apply, seq kept.
            info = await admin.add_partition(
                partition_id="again", snapshot=done.snapshot.manifest_path
            )
            assert (info.store, info.last_seq, info.key_count) == ("write-through", 2, 1)
            item = await client.get_item(b"a")
            assert item is not None
            assert (item.value, item.seq) == (b"1", 1)
            assert await client.get(b"b") is None
            (ack,) = await client.upsert({b"c": b"3"})
            assert ack.seq == 3


async def test_caching_partitions_snapshot_their_durable_store_and_restore_into_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "snapshots"
    managed = tmp_path / "managed-disk"
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "a", snapshot_root=root, durable_dir=managed) as node,
            clients(node) as (client, admin),
        ):
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="c", store="caching")
            await client.upsert({b"k%03d" % i: b"v%d" % i for i in range(100)})
            await client.remove(b"k007")
            assert await client.get(b"k001") == b"v1"  # in the cache too
            done = await admin.wait_operation(await admin.snapshot("c", "cached"))
            assert done.snapshot is not None
            manifest = done.snapshot.manifest
            assert (manifest.store_kind, manifest.seq) == ("caching", 2)
            _, rows = file_state(root / done.snapshot.data_path)
            assert len(rows) == 99
            assert b"k007" not in rows
            await admin.remove_partition("c")
            info = await admin.add_partition(
                partition_id="back", snapshot=done.snapshot.manifest_path
            )
            assert (info.store, info.key_count, info.last_seq) == ("caching", 99, 2)
            # Its durable store is on the managed disk, where the store expects it.
            assert (managed / "back" / "store.sqlite3").exists()
            assert await client.get(b"k050") == b"v50"
            assert await client.get(b"k007") is None
            (ack,) = await client.upsert({b"after": b"1"})
            assert ack.seq == 3
        # And after a restart (cache cold), from the durable store.
        async with (
            running_node(tmp_path / "a", snapshot_root=root, durable_dir=managed) as node,
            clients(node) as (client, _),
        ):
            assert await client.get(b"k099") == b"v99"
            assert await client.get(b"after") == b"1"
