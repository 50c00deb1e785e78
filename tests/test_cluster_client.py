"""``mkv.Client`` against a real three-node cluster (real etcd, ``mkv serve``
subprocesses): one seed, one connection per node, every partition read and
written on its own node, and a partition followed when it is removed and
added again on another node (issue 15, item 6)."""

from __future__ import annotations

from pathlib import Path

import trio

import mkv
from mkv.v1 import control_pb2, data_pb2
from mkv.wire import parse_address
from tests.cluster import Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call

RANGES = {"a": (b"", b"h"), "b": (b"h", b"p"), "c": (b"p", b"")}
KEYS = {"a": b"apple", "b": b"kiwi", "c": b"zebra"}


async def test_one_seed_reaches_every_partition_on_its_node_and_follows_a_move(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(3)]
    rpc = Stubs(stubs)
    with trio.fail_after(120):
        async with running(*nodes):
            ids = [(await rpc.status(node)).node_id for node in nodes]
            by_id = dict(zip(ids, nodes, strict=True))
            await leader_of(rpc, nodes[0], "default")
            with rpc.control(nodes[1]) as control:
                await call(
                    control.RemovePartition, control_pb2.RemovePartitionRequest(id="default")
                )
                leaders = {}
                for pid, (start, end) in RANGES.items():
                    added = await call(
                        control.AddPartition,
                        control_pb2.AddPartitionRequest(id=pid, start=start, end=end),
                    )
                    leaders[pid] = added.partition.node
            assert sorted(leaders.values()) == sorted(ids), "one partition on each node"

            async def served_everywhere() -> data_pb2.PartitionMapResponse | None:
                maps = [await rpc.map(node) for node in nodes]
                ready = all(m == maps[0] for m in maps) and len(maps[0].partitions) == 3
                return maps[0] if ready and all(p.address for p in maps[0].partitions) else None

            await eventually(served_everywhere, what="one map with every leader")

            async with mkv.Client.connect(nodes[2].data_addr) as db:
                for pid, key in KEYS.items():
                    [ack] = await db.upsert({key: b"v-" + key})
                    assert ack.partition_id == pid
                    assert await db.get(key) == b"v-" + key
                # Each partition on its own node; the client holds a connection to each.
                assert {p.id: p.address for p in await db.partition_map()} == {
                    pid: by_id[leaders[pid]].data_addr for pid in RANGES
                }
                assert sorted(map(str, db._nodes.pool.addresses)) == sorted(
                    node.data_addr for node in nodes
                )
                # A batch across partitions, a scan across nodes.
                await db.upsert({b"ant": b"1", b"lime": b"2", b"yak": b"3"})
                assert [i and i.value for i in await db.batch_get([b"ant", b"lime", b"yak"])] == [
                    b"1",
                    b"2",
                    b"3",
                ]
                assert [k async for k, _ in db.scan()] == [
                    b"ant",
                    b"apple",
                    b"kiwi",
                    b"lime",
                    b"yak",
                    b"zebra",
                ]

                # c goes, and comes back (empty) on another node. The client's
                # map still names the old node: that node refuses, naming the
                # new owner, and the client follows.
                old = leaders["c"]
                new = next(i for i in ids if i != old)
                with rpc.control(nodes[0]) as control:
                    await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="c"))
                    added = await call(
                        control.AddPartition,
                        control_pb2.AddPartitionRequest(id="c", start=b"p", node=new),
                    )
                assert added.partition.node == new

                async def moved() -> bool:
                    for node in nodes:
                        addresses = {p.id: p.address for p in (await rpc.map(node)).partitions}
                        if addresses.get("c") != by_id[new].data_addr:
                            return False
                    return True

                await eventually(moved, what="c led by its new node in every map")
                refreshes = db._nodes.refreshes
                assert await db.get(b"zebra") is None  # removed with its partition
                assert db._nodes.refreshes == refreshes, "the hint was followed, no map fetched"
                await db.upsert({b"zebra": b"again"})
                assert await db.get(b"zebra") == b"again"
                assert (await rpc.get(by_id[new], b"zebra")).value == b"again"
                route = db._nodes.table.lookup(b"zebra") if db._nodes.table else None
                assert route is not None
                assert route.address == parse_address(by_id[new].data_addr)
                # The other partitions were not disturbed.
                assert await db.get(b"apple") == b"v-apple"


async def test_writers_and_a_watch_through_a_node_that_leads_nothing_across_a_split(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """The client's seed leads no partition: every call goes to the other
    node. A split there under 4 writers fails none of their writes, and a
    watch of the upper keys carries on on the new partition, missing and
    repeating nothing."""
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(2)]
    rpc = Stubs(stubs)
    with trio.fail_after(120):
        async with running(*nodes):
            await leader_of(rpc, nodes[1], "default")
            written: dict[bytes, bytes] = {}
            failures: list[BaseException] = []
            async with (
                mkv.Client.connect(nodes[1].data_addr) as db,
                mkv.AdminClient.connect(nodes[0].control_addr) as admin,
            ):
                await db.upsert({b"a-zero": b"0"})
                [ack] = await db.upsert({b"x-first": b"0"})
                async with db.watch(b"m", from_seq=ack.seq - 1) as changes:
                    first = await changes.__anext__()
                    assert first.key == b"x-first"
                    stop = trio.Event()

                    async def writer(n: int) -> None:
                        i = 0
                        while not stop.is_set():
                            key = f"{'ax'[i % 2]}{n}-{i % 10}".encode()
                            value = f"{i}".encode()
                            try:
                                await db.upsert({key: value})
                            except mkv.MkvError as exc:
                                failures.append(exc)
                            else:
                                written[key] = value
                            i += 1

                    async with trio.open_nursery() as nursery:
                        for n in range(4):
                            nursery.start_soon(writer, n)
                        await trio.sleep(0.3)
                        operation = await admin.split_partition("default", b"m", new_id="upper")
                        done = await admin.wait_operation(operation, poll_interval=0.05)
                        assert done.split is not None
                        await trio.sleep(0.3)
                        stop.set()
                    assert not failures, failures[:3]
                    await db.upsert({b"x-last": b"1"})
                    seen: dict[bytes, bytes | None] = {}
                    seqs = [first.seq]
                    async for change in changes:
                        seen[change.key] = change.value
                        seqs.append(change.seq)
                        if change.key == b"x-last":
                            break
                    upper = {k: v for k, v in written.items() if k >= b"m"}
                    assert {k: seen[k] for k in upper} == upper
                    # One key per write: nothing repeated, in order across the split.
                    assert seqs == sorted(set(seqs))
                    for key, value in written.items():
                        assert await db.get(key) == value
                assert [p.id for p in await db.partition_map()] == ["default", "upper"]
                assert sorted(db._nodes.pool.addresses, key=str) == sorted(
                    (parse_address(n.data_addr) for n in nodes), key=str
                )
