"""SplitPartition through the real server: data moves, seqs go on, routing follows,
watches hand over, and concurrent clients see one linearizable history."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio

import mkv
from mkv.client.admin import PartitionInfo
from mkv.client.channel import open_channel
from mkv.errors import StorageError
from mkv.node.catalog import Catalog, CatalogEntry
from mkv.testing import running_node
from mkv.v1 import data_pb2
from mkv.wire import DATA_SERVICE
from tests.linearizability import History, Outcome, assert_linearizable


async def split(
    admin: mkv.AdminClient, pid: str, at: bytes, new_id: str | None = None
) -> PartitionInfo:
    """Split and wait; the new partition as of the cut-over."""
    operation_id = await admin.split_partition(pid, at, new_id=new_id)
    done = await admin.wait_operation(operation_id, poll_interval=0.02)
    assert done.split is not None
    return done.split[1]


@pytest.mark.parametrize("store", ["sqlite", "memory", "caching"])
async def test_split_moves_the_upper_keys_and_seqs_go_on(tmp_path: Path, store: str) -> None:
    with trio.fail_after(60):
        async with (
            running_node(tmp_path / "data", default_store=store) as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            keys = {f"k{i:03d}".encode(): f"v{i}".encode() for i in range(200)}
            await client.upsert(keys)
            before = {k: (await client.get_item(k)) for k in (b"k000", b"k150")}
            child = await split(admin, "default", b"k100", "upper")
            assert child.id == "upper"
            # The parent's last seq at the cut-over: one upsert.
            assert child.last_seq == 1
            parts = {p.id: p for p in await admin.list_partitions()}
            assert (parts["default"].range.start, parts["default"].range.end) == (b"", b"k100")
            assert (parts["upper"].range.start, parts["upper"].range.end) == (b"k100", None)
            assert parts["upper"].key_count == 100
            assert parts["upper"].store == store
            # Every key still reads back, with the seq it had.
            for key, value in keys.items():
                assert await client.get(key) == value
            for key, item in before.items():
                assert await client.get_item(key) == item
            [ack] = await client.upsert({b"k150": b"new"})
            assert ack.partition_id == "upper"
            assert ack.seq == child.last_seq + 1
            moved = before[b"k150"]
            assert moved is not None
            assert ack.seq > moved.seq
            # The parent purges the moved keys in the background.
            with trio.fail_after(20):
                while True:
                    parts = {p.id: p for p in await admin.list_partitions()}
                    if parts["default"].key_count == 100:
                        break
                    await trio.sleep(0.05)
        # After a restart both partitions come back with their keys.
        async with (
            running_node(tmp_path / "data", default_store=store) as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            if store != "memory":
                assert await client.get(b"k150") == b"new"
                assert await client.get(b"k050") == b"v50"


async def test_split_refuses_bad_requests_clearly(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        with pytest.raises(mkv.NotFoundError):
            await mkv_admin.split_partition("nope", b"m")
        with pytest.raises(mkv.InvalidArgumentError, match="not inside"):
            await mkv_admin.split_partition("default", b"")
        await split(mkv_admin, "default", b"m", "high")
        with pytest.raises(mkv.InvalidArgumentError, match="not inside"):
            await mkv_admin.split_partition("default", b"q")
        with pytest.raises(mkv.AlreadyExistsError):
            await mkv_admin.split_partition("default", b"c", new_id="high")
        with pytest.raises(mkv.InvalidArgumentError):
            await mkv_admin.split_partition("default", b"c", new_id="../x")


async def test_the_parent_answers_bad_node_naming_the_new_owner(
    mkv_node: mkv.Node, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(20):
        await mkv_client.upsert({b"a": b"1", b"z": b"2"})
        await split(mkv_admin, "default", b"m", "high")
        parent = mkv_node.registry.partition("default")
        assert parent is not None
        # A request for the moved range that reaches the parent directly.
        from mkv.partition.task import Get

        with pytest.raises(mkv.errors.MovedError, match="high"):
            await parent.submit(Get(b"z"))
        async with open_channel(mkv_node.data_address) as channel:
            response = await channel.unary(
                DATA_SERVICE, "Get", data_pb2.GetRequest(key=b"z"), data_pb2.GetResponse
            )
        assert response.status == data_pb2.OK
        assert response.partition_id == "high"
        # A client holding the old map re-routes by itself.
        assert await mkv_client.get(b"z") == b"2"
        [ack] = await mkv_client.upsert({b"zz": b"3"})
        assert ack.partition_id == "high"


async def test_a_watcher_of_the_moved_range_sees_every_change_once(
    mkv_node: mkv.Node, mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(60):
        await mkv_client.upsert({b"n0": b"x"})
        seen: list[tuple[bytes, bytes, int]] = []
        written: list[tuple[bytes, bytes]] = []
        stop = trio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                key, value = f"n{i % 50}".encode(), f"{i}".encode()
                await mkv_client.upsert({key: value})
                written.append((key, value))
                i += 1
            # A few after the split, all on the new owner.
            for j in range(20):
                await mkv_client.upsert({b"n1": f"after{j}".encode()})
                written.append((b"n1", f"after{j}".encode()))

        handed_over = trio.Event()

        async def watch(start_seq: int) -> None:
            position = start_seq
            async with open_channel(mkv_node.data_address) as channel:
                for _ in range(2):
                    request = data_pb2.WatchRequest(start=b"n", end=b"o", from_seq=position)
                    async with channel.open_stream(
                        DATA_SERVICE, "Watch", request, data_pb2.WatchResponse
                    ) as responses:
                        async for response in responses:
                            if response.status == data_pb2.BAD_NODE:
                                assert "high" in response.hint.message
                                position = response.progress_seq
                                handed_over.set()
                                break
                            assert response.status == data_pb2.OK
                            for c in response.changes:
                                seen.append((c.key, c.value, c.seq))
            raise AssertionError("the new owner's watch ended")

        [first] = await mkv_client.upsert({b"n0": b"start"})
        written.append((b"n0", b"start"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, first.seq - 1)
            async with trio.open_nursery() as writers:
                writers.start_soon(writer)
                await trio.sleep(0.3)
                await split(mkv_admin, "default", b"m", "high")
                await trio.sleep(0.2)
                stop.set()
            await handed_over.wait()
            while len(seen) < len(written):  # noqa: ASYNC110 - the watcher appends, no event
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert [(k, v) for k, v, _ in seen] == written
        seqs = [s for _, _, s in seen]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)


async def test_split_under_concurrent_writers_and_readers_is_linearizable(
    tmp_path: Path,
) -> None:
    rng = random.Random(14)
    history = History()
    acked: dict[bytes, bytes] = {}
    keys = [f"{c}{i}".encode() for c in "agmt" for i in range(5)]
    with trio.fail_after(120):
        async with (
            running_node(tmp_path / "data") as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await client.upsert({f"fill{i:05d}".encode(): b"x" * 100 for i in range(3000)})
            stop = trio.Event()

            async def worker(n: int) -> None:
                i = 0
                while not stop.is_set():
                    key = rng.choice(keys)
                    if rng.random() < 0.5:
                        value = f"{n}-{i}".encode()
                        token = history.invoke(n, key, "write", (value,))
                        await client.upsert({key: value})
                        history.complete(token, Outcome.OK)
                        acked[key] = value
                    else:
                        token = history.invoke(n, key, "read")
                        got = await client.get(key)
                        history.complete(token, Outcome.OK, got)
                    i += 1

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(worker, n)
                await trio.sleep(0.3)
                await split(admin, "default", b"g", "upper")
                await split(admin, "upper", b"m", "top")
                await trio.sleep(0.3)
                stop.set()
            # Every key read once more after the splits, by its new owner:
            # the checker then holds each acknowledged write to be there.
            async with open_channel(node.data_address) as channel:
                for key in keys:
                    owner = "default" if key < b"g" else "upper" if key < b"m" else "top"
                    token = history.invoke("final", key, "read")
                    response = await channel.unary(
                        DATA_SERVICE, "Get", data_pb2.GetRequest(key=key), data_pb2.GetResponse
                    )
                    assert response.status == data_pb2.OK
                    assert response.partition_id == owner
                    history.complete(token, Outcome.OK, response.value if response.found else None)
                    assert response.found or key not in acked
            assert_linearizable(history.operations)
            for key in keys:
                owner = "default" if key < b"g" else "upper" if key < b"m" else "top"
                [ack] = await client.upsert({key: b"check"})
                assert ack.partition_id == owner
            with trio.fail_after(30):
                while True:
                    parts = {p.id: p for p in await admin.list_partitions()}
                    if sum(p.key_count for p in parts.values()) == 3000 + len(keys):
                        break
                    await trio.sleep(0.1)


async def test_mkvctl_split_waits_with_progress(mkv_node: mkv.Node, mkv_client: mkv.Client) -> None:
    from mkv.cli.ctl import run

    with trio.fail_after(30):
        await mkv_client.upsert({b"a": b"1", b"v": b"2"})
        stdout, stderr = io.BytesIO(), io.StringIO()
        code = await run(
            ["partitions", "split", "default", "u/", "--new-id", "users", "--wait"],
            stdout,
            stderr,
            env={"MKV_CONTROL_ADDR": str(mkv_node.control_address)},
        )
        assert code == 0, stderr.getvalue()
        assert b"users" in stdout.getvalue()
        assert await mkv_client.get(b"v") == b"2"


async def test_kill_9_at_random_points_of_splits_loses_nothing(tmp_path: Path) -> None:
    from tests.crash import crash_cycles

    with trio.fail_after(300):
        model = await crash_cycles(tmp_path / "data", cycles=12, seed=1414, splits=True)
    assert model.acks > 100


@pytest.mark.slow
async def test_soak_kill_9_during_splits(tmp_path: Path) -> None:
    import os

    from tests.crash import crash_cycles

    seed = int(os.environ.get("MKV_SOAK_SEED") or random.randrange(2**32))
    cycles = int(os.environ.get("MKV_SOAK_CYCLES", "200"))
    print(f"soak: {cycles} kill -9 cycles during splits, MKV_SOAK_SEED={seed}")
    with trio.fail_after(cycles * 10):
        await crash_cycles(tmp_path / "data", cycles=cycles, seed=seed, splits=True)


async def merge(admin: mkv.AdminClient, left: str, right: str) -> PartitionInfo:
    operation_id = await admin.merge_partitions(left, right)
    done = await admin.wait_operation(operation_id, poll_interval=0.02)
    assert done.merged is not None
    return done.merged


async def merge_when_purged(admin: mkv.AdminClient, left: str, right: str) -> PartitionInfo:
    """Merge, once ``left`` has purged what an earlier split moved out of it."""
    with trio.fail_after(20):
        while True:
            try:
                return await merge(admin, left, right)
            except mkv.FailedPreconditionError:
                await trio.sleep(0.05)


@pytest.mark.parametrize("store", ["sqlite", "caching"])
async def test_merge_joins_adjacent_partitions_and_seqs_go_on(tmp_path: Path, store: str) -> None:
    with trio.fail_after(60):
        async with (
            running_node(tmp_path / "data", default_store=store) as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await client.upsert({f"k{i:03d}".encode(): b"v" for i in range(100)})
            await split(admin, "default", b"k050", "upper")
            for i in range(30):
                await client.upsert({b"k070": f"u{i}".encode()})
            await client.remove(b"k060", b"k010")
            seqs = {p.id: p.last_seq for p in await admin.list_partitions()}
            survivor = await merge_when_purged(admin, "default", "upper")
            assert survivor.id == "default"
            assert survivor.range == mkv.KeyRange(b"", None)
            assert survivor.key_count == 98
            parts = await admin.list_partitions()
            assert [p.id for p in parts] == ["default"]
            assert await client.get(b"k070") == b"u29"
            assert await client.get(b"k060") is None
            assert await client.get(b"k010") is None
            [ack] = await client.upsert({b"k070": b"merged"})
            assert ack.partition_id == "default"
            assert ack.seq > max(seqs.values())
        async with (
            running_node(tmp_path / "data", default_store=store) as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            assert await client.get(b"k070") == b"merged"
            assert await client.get(b"k060") is None
            assert [p.key_count for p in await admin.list_partitions()] == [98]
            assert not (tmp_path / "data" / "partitions" / "upper").exists()


async def test_a_merge_survivor_refuses_older_positions_even_after_a_restart(
    tmp_path: Path,
) -> None:
    """The survivor's log holds its own history below the merge's seq M, not
    the absorbed partition's: a watcher of the absorbed range resuming from
    before M must be refused (resync), not served a history with a gap, also
    once a restart has rebuilt the change feed from that log."""
    with trio.fail_after(60):
        async with (
            running_node(tmp_path / "data") as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await client.upsert({f"k{i:03d}".encode(): b"v" for i in range(100)})
            await split(admin, "default", b"k050", "upper")
            # The left partition numbers well past the right one, so its own
            # log covers seqs the right one's watchers hold positions at.
            for i in range(20):
                await client.upsert({b"k010": f"l{i}".encode()})
            [seen] = await client.upsert({b"k070": b"a"})
            [missed] = await client.upsert({b"k070": b"b"})
            assert seen.partition_id == missed.partition_id == "upper"
            survivor = await merge_when_purged(admin, "default", "upper")
            assert missed.seq < survivor.last_seq
            await refuses_before_the_merge(client, seen.seq, b"running")
        async with (
            running_node(tmp_path / "data") as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            await refuses_before_the_merge(client, seen.seq, b"restarted")


async def refuses_before_the_merge(client: mkv.Client, position: int, value: bytes) -> None:

    async def watch_from_before() -> None:
        async with client.watch(b"k050", None, from_seq=position) as changes:
            async for change in changes:
                pytest.fail(f"a watch from before the merge got {change}")

    # Without the refusal the watch waits for live changes: a gap, silently.
    with trio.fail_after(10), pytest.raises(mkv.CompactedError):
        await watch_from_before()
    # From the survivor's own positions a watch goes on as usual.
    [ack] = await client.upsert({b"k070": value})
    async with client.watch(b"k050", None, from_seq=ack.seq - 1) as changes:
        change = await changes.__anext__()
        assert (change.key, change.value, change.seq) == (b"k070", value, ack.seq)


async def test_merge_refuses_what_it_cannot_join(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(30):
        await split(mkv_admin, "default", b"m", "mid")
        await split(mkv_admin, "mid", b"t", "top")
        with pytest.raises(mkv.InvalidArgumentError, match="not adjacent"):
            await mkv_admin.merge_partitions("default", "top")
        with pytest.raises(mkv.InvalidArgumentError, match="lower one first"):
            await mkv_admin.merge_partitions("mid", "default")
        with pytest.raises(mkv.InvalidArgumentError, match="itself"):
            await mkv_admin.merge_partitions("mid", "mid")
        with pytest.raises(mkv.NotFoundError):
            await mkv_admin.merge_partitions("mid", "nope")
        top = await merge_when_purged(mkv_admin, "mid", "top")
        assert top.range == mkv.KeyRange(b"m", None)
        await mkv_admin.remove_partition("mid")
        await mkv_admin.add_partition(start=b"m", end=b"t", partition_id="mem", store="memory")
        await mkv_admin.add_partition(start=b"t", end=None, partition_id="mem2", store="memory")
        with pytest.raises(mkv.InvalidArgumentError, match="same store kind"):
            await mkv_admin.merge_partitions("default", "mem")
        # Memory partitions merge too (nothing is reopened): the keys stay.
        await mkv_client.upsert({b"n": b"1", b"u": b"2"})
        mem = await merge(mkv_admin, "mem", "mem2")
        assert mem.range == mkv.KeyRange(b"m", None)
        assert mem.key_count == 2
        assert await mkv_client.get(b"u") == b"2"


async def test_mkv_client_watch_follows_the_moved_range_by_itself(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(30):
        await mkv_client.upsert({b"a": b"0"})  # so that from_seq below is not 0 ("now")
        [first] = await mkv_client.upsert({b"w/1": b"a"})
        got: list[tuple[bytes, bytes | None]] = []
        async with mkv_client.watch(b"w/", b"w0", from_seq=first.seq - 1) as changes:
            async for change in changes:
                got.append((change.key, change.value))
                if len(got) == 1:
                    await split(mkv_admin, "default", b"t", "upper")
                    await mkv_client.upsert({b"w/2": b"b"})
                    await mkv_client.remove(b"w/1")
                if len(got) == 3:
                    break
        assert got == [(b"w/1", b"a"), (b"w/2", b"b"), (b"w/1", None)]


async def test_a_position_taken_on_the_parent_resumes_on_the_new_partition(
    mkv_client: mkv.Client, mkv_admin: mkv.AdminClient
) -> None:
    with trio.fail_after(30):
        [first] = await mkv_client.upsert({b"w/1": b"a"})
        await mkv_client.upsert({b"a": b"elsewhere"})
        await mkv_client.upsert({b"w/2": b"b"})
        await split(mkv_admin, "default", b"t", "upper")
        await mkv_client.upsert({b"w/3": b"c"})
        got = []
        async with mkv_client.watch(b"w/", b"w0", from_seq=first.seq) as changes:
            async for change in changes:
                got.append((change.key, change.value))
                if len(got) == 2:
                    break
        assert got == [(b"w/2", b"b"), (b"w/3", b"c")]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_merge_leaves_only_the_copied_rows_in_the_moved_range(tmp_path: Path, kind: str) -> None:
    """The survivor's store may still hold keys of the range it takes back
    (purged late, or a merge cut short by a crash): they must not come back.
    And every step keeps the store's last seq, until the cut-over sets it."""
    from mkv.records import Write
    from mkv.router import KeyRange
    from mkv.snapshots.transfer import (
        RangeFile,
        load_rows,
        load_writes,
        remove_range,
        set_last_seq,
    )
    from mkv.store import open_store

    store = open_store(kind, tmp_path, logged=True)
    try:
        store.apply([Write(puts=[(b"a", b"own"), (b"z1", b"stale"), (b"z0", b"stale")], seq=5)])
        moved = KeyRange(b"m", None)
        copy = RangeFile(tmp_path / "copy.sqlite3", moved)
        copy.apply([Write(puts=[(b"z2", b"new"), (b"z3", b"gone")], seq=9, timestamp=7)])
        assert remove_range(store, moved, 1) == 1
        assert remove_range(store, moved, 10) == 1
        assert remove_range(store, moved, 10) == 0
        load_rows(store, copy.rows_after(None, 10))
        assert store.last_seq() == 5
        load_writes(
            store,
            [Write(puts=[(b"z4", b"late"), (b"b", b"not mine")], deletes=[b"z3"], seq=11)],
            moved,
        )
        assert store.last_seq() == 5
        copy.close()
        assert store.get(b"z1") is None
        assert store.get(b"b") is None
        assert store.get(b"z3") is None
        z2, z4 = store.get(b"z2"), store.get(b"z4")
        assert z2 is not None
        assert z4 is not None
        assert (z2.value, z2.seq, z4.seq) == (b"new", 9, 11)
        assert store.get(b"a") is not None
        set_last_seq(store, 20, 7)
        assert store.last_seq() == 20
    finally:
        store.close()


@pytest.mark.parametrize("floor", ["12", -1, 2**63 - 1, True])
def test_a_catalog_with_a_bad_history_floor_is_refused(tmp_path: Path, floor: object) -> None:
    """The floor is read from disk: a value the code cannot use is a damaged
    catalog, not a floor of 0 (which would answer watches with a gap)."""
    path = tmp_path / "catalog.json"
    entry = CatalogEntry("default", mkv.KeyRange(b"", None), "sqlite", (), history_floor=7)
    Catalog([entry], map_version=1).save(path)
    loaded = Catalog.load(path)
    assert loaded is not None
    assert loaded.partitions[0].history_floor == 7
    doc = json.loads(path.read_bytes())
    doc["partitions"][0]["history_floor"] = floor
    path.write_text(json.dumps(doc))
    with pytest.raises(StorageError, match="history_floor"):
        Catalog.load(path)


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_both_sides_are_served_during_a_merge_of_many_keys(
    tmp_path: Path, store: str
) -> None:
    """The merge is online: while the right partition's rows go into the
    left one's store, and across the cut-over, reads, writes and increments
    on both sides keep being answered, without an error reaching the client
    and within a bounded time; counters on both sides end at the number of
    acknowledged increments (a read-modify-write just after the cut-over
    sees the right partition's last writes)."""
    right_keys = [b"n/%06d" % i for i in range(30_000)]
    left_keys = [b"a/%04d" % i for i in range(500)]
    latencies: dict[str, list[float]] = {"left": [], "right": []}
    during: dict[str, int] = {"left": 0, "right": 0}
    increments = {"left": 0, "right": 0}
    counters = {"left": b"a/counter", "right": b"n/counter"}
    merging = False
    stop = trio.Event()
    with trio.fail_after(120):
        async with (
            running_node(tmp_path / "data", default_store=store) as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await split(admin, "default", b"m", "upper")
            for first in range(0, len(right_keys), 2000):
                await client.upsert({k: b"r" * 100 for k in right_keys[first : first + 2000]})
            await client.upsert({k: b"l" * 100 for k in left_keys})

            async def timed(side: str, call: Any) -> None:
                began = trio.current_time()
                await call
                latencies[side].append(trio.current_time() - began)
                if merging:
                    during[side] += 1

            async def load(side: str, keys: list[bytes], seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    key = rng.choice(keys)
                    await timed(side, client.upsert({key: b"w%d" % rng.randrange(1000)}))
                    await timed(side, client.get(rng.choice(keys)))
                    await timed(side, client.increment(counters[side]))
                    increments[side] += 1

            async with trio.open_nursery() as nursery:
                for n in range(2):
                    nursery.start_soon(load, "left", left_keys, n)
                    nursery.start_soon(load, "right", right_keys, 10 + n)
                await trio.sleep(0.3)
                merging = True
                survivor = await merge(admin, "default", "upper")
                merging = False
                await trio.sleep(0.2)
                stop.set()
            assert survivor.range == mkv.KeyRange(b"", None)
            # Served all along: on both sides, while the merge ran.
            assert during["left"] > 20, during
            assert during["right"] > 20, during
            # No request waited long (a shared 2-core machine: a generous bound).
            assert max(latencies["left"] + latencies["right"]) < 3.0
            for side, key in counters.items():
                assert await client.get(key) == str(increments[side]).encode(), side
            parts = await admin.list_partitions()
            assert [p.key_count for p in parts] == [len(right_keys) + len(left_keys) + 2]
