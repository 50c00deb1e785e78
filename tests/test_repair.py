"""Repair (issue 16): a node gone longer than ``node_dead_timeout`` is replaced
in every record that names it, by a live node holding no replica of it, one
Txn per record; the rules apart from I/O, then real etcd and real nodes."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from mkv.cluster.keyspace import Keys, LeaderRecord, PartitionRecord
from mkv.cluster.repair import GoneNodes, plan_repair, repairer
from mkv.cluster.view import ClusterView
from mkv.etcd import open_etcd
from mkv.router import KeyRange
from mkv.v1 import control_pb2
from tests.cluster import Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call
from tests.test_cluster_rules import KV, node, view_of

KEYS = Keys("t")


def _view(
    records: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], alive: tuple[str, ...]
) -> ClusterView:
    kvs = []
    for i, (pid, (replicas, isr)) in enumerate(sorted(records.items())):
        rng = KeyRange(bytes([i]), bytes([i + 1]))
        record = PartitionRecord(pid, rng, "sqlite", ("wal",), replicas, "active", isr)
        kvs.append(KV(KEYS.partition(pid), record.encode(), mod_revision=5 + i))
    kvs += [KV(KEYS.node(n), node(n, 10 * (i + 1)).encode()) for i, n in enumerate(alive)]
    return view_of(*kvs)


def test_a_dead_node_is_replaced_by_the_least_loaded_live_node_outside_the_record() -> None:
    view = _view(
        {
            "a": (("n1", "n2", "n3"), ("n1", "n2", "n3")),
            "b": (("n2", "n4"), ("n2", "n4")),
        },
        alive=("n1", "n2", "n3", "n4", "n5"),
    )
    # Nobody dead: nothing to do.
    assert plan_repair(view, frozenset()) is None
    plan = plan_repair(view, {"n2"})
    assert plan is not None
    # One record at a time, "a" first; n5 holds nothing (n4 holds one).
    assert (plan.partition_id, plan.mod_revision, plan.dead, plan.replacement) == (
        "a",
        5,
        "n2",
        "n5",
    )
    # The dead node leaves replicas and ISR; the new one comes last (not the
    # preferred leader: it starts empty) and out of the ISR (it joins through
    # the leader once caught up).
    assert plan.record.replicas == ("n1", "n3", "n5")
    assert plan.record.isr == ("n1", "n3")
    # With "a" repaired, "b" next: its only candidates hold none of it.
    repaired = _view(
        {"a": (("n1", "n3", "n5"), ("n1", "n3")), "b": (("n2", "n4"), ("n2", "n4"))},
        alive=("n1", "n3", "n4", "n5"),
    )
    plan = plan_repair(repaired, {"n2"})
    assert plan is not None
    assert (plan.partition_id, plan.replacement) == ("b", "n1")
    assert plan.record.replicas == ("n4", "n1")
    assert plan.record.isr == ("n4",)


def test_a_drained_node_gets_no_replica() -> None:
    """A node marked drained (DrainNode) is live but takes no new replica,
    however few it holds. Mutation: ``placeable`` as every live node ->
    n5, which holds none, is chosen."""
    view = _view({"a": (("n1", "n2", "n3"), ("n1", "n2", "n3"))}, alive=("n1", "n2", "n3", "n4"))
    view.put(KV(KEYS.node("n5"), attrs.evolve(node("n5", 50), drained=True).encode()))
    assert view.placeable == {"n1", "n2", "n3", "n4"}
    plan = plan_repair(view, {"n2"})
    assert plan is not None
    assert plan.replacement == "n4"
    view.put(KV(KEYS.node("n4"), attrs.evolve(node("n4", 40), drained=True).encode()))
    assert plan_repair(view, {"n2"}) is None


def test_no_repair_without_a_live_in_sync_replica_or_a_free_node() -> None:
    # Its only in-sync replica is dead: nobody alive has every acknowledged
    # write; a replacement would start empty. Left for the node to return.
    lost = _view({"a": (("n1", "n2"), ("n1",))}, alive=("n2", "n3"))
    assert plan_repair(lost, {"n1"}) is None
    # Every live node holds a replica already: nowhere to put one.
    full = _view({"a": (("n1", "n2", "n3"), ("n1", "n2", "n3"))}, alive=("n1", "n2"))
    assert plan_repair(full, {"n3"}) is None


def test_a_node_counts_as_dead_only_after_the_timeout_and_only_while_gone() -> None:
    gone = GoneNodes()
    view = _view({"a": (("n1", "n2", "n3"), ("n1", "n2", "n3"))}, alive=("n1", "n2"))
    gone.observe(view, 100.0)
    assert gone.dead(100.0, 60.0) == frozenset()
    gone.observe(view, 130.0)  # still gone: counted from when first seen
    assert gone.dead(159.9, 60.0) == frozenset()
    assert gone.dead(160.0, 60.0) == {"n3"}
    # It came back (its key again): forgotten, and a later absence counts anew.
    back = _view({"a": (("n1", "n2", "n3"), ("n1", "n2", "n3"))}, alive=("n1", "n2", "n3"))
    gone.observe(back, 161.0)
    assert gone.dead(161.0, 60.0) == frozenset()
    gone.observe(view, 170.0)
    assert gone.dead(200.0, 60.0) == frozenset()
    assert gone.dead(230.0, 60.0) == {"n3"}
    # The lowest live id repairs.
    assert repairer(["n3", "n1", "n2"]) == "n1"
    assert repairer([]) is None


async def _records(etcd: EtcdProcess) -> dict[str, PartitionRecord]:
    keys = Keys("test")
    async with open_etcd([etcd.endpoint]) as client:
        entries, _ = await client.get_prefix(keys.prefix + b"partitions/")
    return {
        kv.key.decode().rsplit("/", 1)[1]: PartitionRecord.decode(
            kv.key.decode().rsplit("/", 1)[1], kv.value
        )
        for kv in entries
    }


async def test_after_node_dead_timeout_every_record_names_r_live_nodes(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """Three nodes, partitions of two replicas; one node is killed (-9) for
    good: within the timeout nothing changes (a restart is not a death);
    after it, every record that named it names a live node instead, and the
    dead node is in no ISR. Holds at the etcd level, with or without the
    replica data path. (Mutation: ``GoneNodes.dead`` ignoring the timeout
    fails the first check; ``plan_repair`` keeping the dead node in the ISR
    fails the last.)"""
    dead_timeout = 4.0
    nodes = [
        cluster_node(tmp_path, f"n{i}", etcd, "--node-dead-timeout", str(dead_timeout))
        for i in range(3)
    ]
    rpc = Stubs(stubs)
    async with running(*nodes):
        ids = [(await rpc.status(n)).node_id for n in nodes]
        await leader_of(rpc, nodes[0], "default")
        with rpc.control(nodes[0]) as control:
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
            for pid, start, end in (("a", b"", b"h"), ("b", b"h", b"p"), ("c", b"p", b"")):
                await call(
                    control.AddPartition,
                    control_pb2.AddPartitionRequest(id=pid, start=start, end=end, replicas=2),
                )
        before = await _records(etcd)
        assert all(len(r.replicas) == 2 for r in before.values())
        # The victim: the highest id (never the repairer), named by some record.
        victim = max(ids)
        named = sorted(pid for pid, r in before.items() if victim in r.replicas)
        assert named
        await nodes[ids.index(victim)].kill()
        killed = trio.current_time()
        alive_ids = set(ids) - {victim}

        async def key_gone() -> bool:
            async with open_etcd([etcd.endpoint]) as client:
                kv, _ = await client.get(Keys("test").node(victim))
            return kv is None

        await eventually(key_gone, what="the dead node's key to lapse")
        gone_at = trio.current_time()
        # Within node_dead_timeout of its key going: still named (it may be
        # restarting).
        await trio.sleep(dead_timeout / 2)
        assert {pid for pid, r in (await _records(etcd)).items() if victim in r.replicas} == set(
            named
        )

        async def repaired() -> dict[str, PartitionRecord] | None:
            records = await _records(etcd)
            if all(len(r.replicas) == 2 and set(r.replicas) <= alive_ids for r in records.values()):
                return records
            return None

        after: dict[str, PartitionRecord] = await eventually(
            repaired, within=dead_timeout + 20, what="every record on live nodes"
        )
        took = trio.current_time() - gone_at
        print(
            f"repair: key lapsed {gone_at - killed:.1f} s after the kill, "
            f"every record repaired {took:.1f} s after that"
        )
        assert took >= dead_timeout - 0.5
        for pid in named:
            record = after[pid]
            assert victim not in record.isr
            assert record.range == before[pid].range
            # The surviving replica keeps its place first when it was first.
            survivor = next(n for n in before[pid].replicas if n != victim)
            assert survivor in record.isr
        # The dead node's leader keys went with its lease; the records not
        # naming it are untouched.
        for pid in set(before) - set(named):
            assert after[pid] == before[pid]
        async with open_etcd([etcd.endpoint]) as client:
            for pid in named:
                kv, _ = await client.get(Keys("test").leader(pid))
                assert kv is None or LeaderRecord.decode(pid, kv.value).node != victim
