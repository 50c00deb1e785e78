"""Scan and BatchGet against a real node: ordered, paged, consistent per page,
continued across partitions, and equal to point reads."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import grpc
import pytest
import trio

import mkv
from mkv.testing import running_node
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import GrpcioStubs, call_error, connect


@pytest.fixture
async def two_partitions() -> AsyncIterator[mkv.Node]:
    """A node whose keys are split at b"m" between partitions ``a`` and ``b``."""
    async with running_node() as node:
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="a", start=b"", end=b"m")
            await admin.add_partition(partition_id="b", start=b"m", end=None)
        yield node


STABLE = {
    **{b"b-stable-%03d" % i: b"s%d" % i for i in range(150)},
    **{b"y-stable-%03d" % i: b"s%d" % i for i in range(150)},
}


async def test_scan_pages_through_partitions_in_order(two_partitions: mkv.Node) -> None:
    async with mkv.Client.connect(two_partitions.data_address) as client:
        await client.upsert(STABLE)
        everything = [(k, item.value) async for k, item in client.scan(page_size=7)]
        assert everything == sorted(STABLE.items())
        bounded = [k async for k, _ in client.scan(b"b-stable-140", b"y-stable-005")]
        assert bounded == sorted(k for k in STABLE if b"b-stable-140" <= k < b"y-stable-005")
        keys_only = [item async for _, item in client.scan(b"y", keys_only=True)]
        assert len(keys_only) == 150
        assert {item.value for item in keys_only} == {b""}
        assert [k async for k, _ in client.scan(b"q", b"q")] == []


async def test_pages_are_consistent_views_while_writers_run(
    two_partitions: mkv.Node, stubs: GrpcioStubs
) -> None:
    """Every page of a Scan equals the state at its sequence number, as rebuilt
    from the acknowledged writes; client scans never miss or repeat a key."""
    node = two_partitions
    acked: list[tuple[str, int, bytes, bytes | None]] = []
    pages: list[tuple[int, bytes, list[tuple[bytes, bytes, int]], bytes, bool]] = []
    async with mkv.Client.connect(node.data_address) as client:
        [preload] = [ack for ack in await client.upsert(STABLE) if ack.partition_id == "a"]

        async def writer(n: int, stop: trio.Event) -> None:
            rng = random.Random(n)
            async with mkv.Client.connect(node.data_address) as own:
                while not stop.is_set():
                    key = b"%s-churn-%03d" % (rng.choice([b"c", b"x"]), rng.randrange(60))
                    if rng.random() < 0.3:
                        [ack] = await own.remove(key)
                        acked.append((ack.partition_id, ack.seq, key, None))
                    else:
                        value = b"w%d-%d" % (n, rng.randrange(10**6))
                        [ack] = await own.upsert({key: value})
                        acked.append((ack.partition_id, ack.seq, key, value))

        def grpcio_pages() -> None:
            with connect(stubs, node.data_address, node.control_address) as grpcio:
                start = b""
                for _ in range(40):
                    request = pb.ScanRequest(start=start, end=b"m", limit=23)
                    messages = list(grpcio.data.Scan(request, timeout=10))
                    items = [(kv.key, kv.value, kv.seq) for m in messages for kv in m.items]
                    last = messages[-1]
                    assert {m.seq for m in messages} == {last.seq}, "one view per call"
                    pages.append((last.seq, start, items, last.next_start, last.more))
                    start = last.next_start if last.more else b""

        with trio.fail_after(120):
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(writer, n, stop)
                for _ in range(5):
                    scanned = [k async for k, _ in client.scan(page_size=31)]
                    assert scanned == sorted(set(scanned)), "in order, no key twice"
                    assert set(STABLE) <= set(scanned), "no stable key missed"
                await trio.to_thread.run_sync(grpcio_pages)
                stop.set()

    history = sorted((seq, key, value) for pid, seq, key, value in acked if pid == "a")
    base = {k: (v, preload.seq) for k, v in STABLE.items() if k < b"m"}
    assert len(history) > 100, "the writers really wrote during the scans"
    for seq, start, items, next_start, more in pages:
        model = dict(base)
        for write_seq, key, value in history:
            if write_seq > seq:
                break
            if value is None:
                model.pop(key, None)
            else:
                model[key] = (value, write_seq)
        upper = next_start if more else b"m"
        expected = [(k, v, s) for k, (v, s) in sorted(model.items()) if start <= k < upper]
        assert items == expected, f"page from {start!r} at seq {seq}"


async def test_batch_get_matches_get_key_by_key(two_partitions: mkv.Node) -> None:
    async with mkv.Client.connect(two_partitions.data_address) as client:
        await client.upsert(STABLE)
        await client.remove(b"b-stable-007")
        rng = random.Random(5)
        keys = [*rng.sample(sorted(STABLE), 120), b"b-stable-007", b"missing", b"zzz"]
        rng.shuffle(keys)
        keys += keys[:10]  # repeats are answered in place
        batch = await client.batch_get(keys)
        singles = [await client.get_item(key) for key in keys]
        assert batch == singles
        assert sum(item is None for item in batch) >= 3


async def test_batch_get_and_scan_refuse_bad_input(
    two_partitions: mkv.Node, stubs: GrpcioStubs
) -> None:
    node = two_partitions
    with connect(stubs, node.data_address, node.control_address) as grpcio:
        empty = await call_error(grpcio.data.BatchGet, pb.BatchGetRequest())
        assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
        spans = await call_error(grpcio.data.BatchGet, pb.BatchGetRequest(keys=[b"a", b"z"]))
        assert spans.code() == grpc.StatusCode.INVALID_ARGUMENT
        too_many = await call_error(
            grpcio.data.BatchGet, pb.BatchGetRequest(keys=[b"k%d" % i for i in range(10_001)])
        )
        assert too_many.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        def long_start() -> grpc.RpcError:
            try:
                list(grpcio.data.Scan(pb.ScanRequest(start=b"k" * 5000), timeout=10))
            except grpc.RpcError as exc:
                return exc
            raise AssertionError("a 5000-byte scan start was accepted")

        error = await trio.to_thread.run_sync(long_start)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
