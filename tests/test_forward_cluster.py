"""SplitPartition and MergePartitions asked of nodes that do not lead the
partition, and ListPartitions from a node that leads nothing: real etcd, real
``mkv serve`` subprocesses, writers on ``mkv.Client`` throughout (issue 15,
item 5)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import trio

import mkv
from mkv.errors import MkvError
from mkv.v1 import control_pb2
from tests.cluster import Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call
from tests.processes import ServerProcess

PREFILL = 2000


async def _finished(rpc: Stubs, node: ServerProcess, operation_id: str) -> control_pb2.Operation:
    async def check() -> control_pb2.Operation | None:
        with rpc.control(node) as control:
            answer = await call(
                control.GetOperation, control_pb2.GetOperationRequest(id=operation_id)
            )
        operation: control_pb2.Operation = answer.operation
        return operation if operation.state != control_pb2.RUNNING else None

    result: control_pb2.Operation = await eventually(check, within=60, what="the operation")
    return result


async def test_split_and_merge_asked_of_nodes_that_do_not_lead_under_writers(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(3)]
    rpc = Stubs(stubs)
    acked: dict[bytes, bytes] = {}
    errors: list[str] = []
    with trio.fail_after(180):
        async with running(*nodes):
            ids = [(await rpc.status(node)).node_id for node in nodes]
            assert await leader_of(rpc, nodes[2], "default") == ids[0]
            async with mkv.Client.connect(nodes[2].data_addr) as db:
                await db.upsert({b"pre%05d" % i: b"p%d" % i for i in range(PREFILL)})

                # ListPartitions from a node that leads nothing: the owner's
                # real numbers, not 0.
                async def counted() -> control_pb2.PartitionInfo | None:
                    (info,) = await rpc.partitions(nodes[1])
                    return info if info.key_count == PREFILL else None

                listed = await eventually(counted, what="the owner's count from n1")
                assert (listed.id, listed.node, listed.state) == (
                    "default",
                    ids[0],
                    control_pb2.ACTIVE,
                )
                assert listed.last_seq > 0

                stop = trio.Event()

                async def writer(n: int) -> None:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        # Keys on both sides of the split point.
                        key = b"%s-w%d-%d" % (b"az"[i % 2 : i % 2 + 1], n, i)
                        try:
                            await db.upsert({key: b"%d" % i})
                        except MkvError as exc:
                            errors.append(repr(exc))
                            continue
                        acked[key] = b"%d" % i

                async with trio.open_nursery() as nursery:
                    for n in range(4):
                        nursery.start_soon(writer, n)
                    await trio.sleep(0.5)
                    # Split asked of n1, which does not lead default.
                    with rpc.control(nodes[1]) as control:
                        started = await call(
                            control.SplitPartition,
                            control_pb2.SplitPartitionRequest(
                                id="default", at=b"m", new_id="upper"
                            ),
                        )
                    split = await _finished(rpc, nodes[1], started.operation_id)
                    assert split.state == control_pb2.DONE, split.error_message
                    assert split.kind == "split"
                    assert (split.split.parent.id, split.split.partition.id) == (
                        "default",
                        "upper",
                    )
                    assert split.split.partition.start == b"m"

                    async def both_halves_everywhere() -> bool:
                        for node in nodes:
                            answer = await rpc.map(node)
                            got = [(p.id, p.start, p.end, p.address) for p in answer.partitions]
                            want = [
                                ("default", b"", b"m", nodes[0].data_addr),
                                ("upper", b"m", b"", nodes[0].data_addr),
                            ]
                            if got != want:
                                return False
                        return True

                    await eventually(both_halves_everywhere, what="both halves in every map")
                    await trio.sleep(0.5)
                    # Merged back, asked of n2: a third node.
                    with rpc.control(nodes[2]) as control:
                        started = await call(
                            control.MergePartitions,
                            control_pb2.MergePartitionsRequest(left="default", right="upper"),
                        )
                    merged = await _finished(rpc, nodes[2], started.operation_id)
                    assert merged.state == control_pb2.DONE, merged.error_message
                    assert merged.kind == "merge"
                    assert (merged.merged.id, merged.merged.start, merged.merged.end) == (
                        "default",
                        b"",
                        b"",
                    )
                    await trio.sleep(0.5)
                    stop.set()

                async def whole_everywhere() -> bool:
                    for node in nodes:
                        answer = await rpc.map(node)
                        got = [(p.id, p.start, p.end) for p in answer.partitions]
                        if got != [("default", b"", b"")]:
                            return False
                    return True

                await eventually(whole_everywhere, what="one range in every map")
                assert len(acked) > 20, len(acked)
                for key, value in acked.items():
                    assert await db.get(key) == value, key
                for i in (0, PREFILL // 2, PREFILL - 1):
                    assert await db.get(b"pre%05d" % i) == b"p%d" % i

            # The count from a non-owner is the owner's own, writes included.
            async def same_count() -> bool:
                (mine,) = await rpc.partitions(nodes[0])
                (theirs,) = await rpc.partitions(nodes[2])
                return bool(mine.key_count == theirs.key_count >= PREFILL + len(acked))

            await eventually(same_count, what="the owner's count from n2")
    assert not errors, errors[:5]


async def test_list_partitions_answers_in_time_when_an_owner_does_not(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    # The owner's lease outlasts the test, so etcd still names it while frozen.
    nodes = [
        cluster_node(tmp_path, "n0", etcd, lease_ttl=60),
        cluster_node(tmp_path, "n1", etcd),
    ]
    rpc = Stubs(stubs)
    with trio.fail_after(60):
        async with running(*nodes):
            owner = (await rpc.status(nodes[0])).node_id
            assert await leader_of(rpc, nodes[1], "default") == owner
            assert (await rpc.put(nodes[0], b"k", b"v")).status == 0
            os.kill(nodes[0].pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                (info,) = await rpc.partitions(nodes[1])
                seconds = time.monotonic() - began
            finally:
                os.kill(nodes[0].pid, signal.SIGCONT)
            # Bounded by the 2 s per-owner deadline, with room for a busy machine.
            assert seconds < 6, seconds
            assert (info.id, info.node, info.key_count) == ("default", owner, 0)
            assert info.state == control_pb2.PARTITION_STATE_UNSPECIFIED

            async def counted_again() -> bool:
                (info,) = await rpc.partitions(nodes[1])
                return bool(info.key_count == 1 and info.state == control_pb2.ACTIVE)

            await eventually(counted_again, what="the owner's count once it answers")
