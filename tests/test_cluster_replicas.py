"""Replicated partitions, the cluster half (issue 16): the election and ISR
Txns against a real etcd, and AddPartition of several replicas on real
``mkv serve`` nodes (docs/cluster.md, rule 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from mkv.cluster.elections import campaign, change_isr
from mkv.cluster.keyspace import Keys, LeaderRecord, PartitionRecord
from mkv.cluster.view import PartitionEntry
from mkv.etcd import Etcd, open_etcd
from mkv.router import KeyRange
from mkv.v1 import control_pb2, data_pb2
from mkv.wire import parse_address
from tests.cluster import Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call
from tests.test_metrics import http
from tests.test_mkvctl import mkvctl, unused_port

KEYS = Keys("t")
REPLICAS = ("n1", "n2", "n3")


async def _put(etcd: Etcd, record: PartitionRecord) -> PartitionEntry:
    await etcd.put(KEYS.partition(record.id), record.encode())
    return await _read(etcd, record.id)


async def _read(etcd: Etcd, pid: str, keys: Keys = KEYS) -> PartitionEntry:
    kv, _ = await etcd.get(keys.partition(pid))
    assert kv is not None
    return PartitionEntry(PartitionRecord.decode(pid, kv.value), kv.mod_revision)


async def _leader(etcd: Etcd, pid: str) -> tuple[str, int] | None:
    kv, _ = await etcd.get(KEYS.leader(pid))
    return None if kv is None else (LeaderRecord.decode(pid, kv.value).node, kv.create_revision)


def _record(isr: tuple[str, ...] = REPLICAS, state: str = "active") -> PartitionRecord:
    return PartitionRecord("p", KeyRange(b"", None), "sqlite", ("wal",), REPLICAS, state, isr)


async def test_the_election_refuses_a_node_outside_the_isr_and_a_stale_read(
    etcd: EtcdProcess,
) -> None:
    """Only an ISR member can win, and only on the record as it read it:
    removed from the ISR after its read, it loses (the guard on the record's
    mod_revision), so a replica missing acknowledged writes never leads."""
    async with open_etcd([etcd.endpoint]) as client:
        lease = (await client.grant(30)).id
        entry = await _put(client, _record(isr=("n1", "n2")))
        # n3 is a replica but not in sync: it does not get to run.
        assert await campaign(client, KEYS, "n3", lease, entry) is None
        assert await _leader(client, "p") is None
        # n2 read the record with itself in sync; then the leader of the time
        # removed it (the record changes). Its campaign on that read fails.
        stale = entry
        await _put(client, _record(isr=("n1",)))
        assert await campaign(client, KEYS, "n2", lease, stale) is None
        assert await _leader(client, "p") is None
        # Read afresh, n2 is out of the ISR: still nothing.
        fresh = await _read(client, "p")
        assert await campaign(client, KEYS, "n2", lease, fresh) is None
        # n1, in sync and up to date, wins; the epoch is its key's create revision.
        epoch = await campaign(client, KEYS, "n1", lease, fresh)
        assert epoch is not None
        assert await _leader(client, "p") == ("n1", epoch)
        # A second candidate with the same (now stale) read cannot unseat it.
        assert await campaign(client, KEYS, "n1", lease, fresh) is None
        assert await _leader(client, "p") == ("n1", epoch)


async def test_the_first_election_marks_a_new_partition_active(etcd: EtcdProcess) -> None:
    async with open_etcd([etcd.endpoint]) as client:
        lease = (await client.grant(30)).id
        entry = await _put(client, _record(state="new"))
        assert await campaign(client, KEYS, "n2", lease, entry) is not None
        assert (await _read(client, "p")).record.state == "active"


async def test_change_isr_refuses_a_deposed_leader(etcd: EtcdProcess) -> None:
    """A leader whose key was recreated (a new epoch: it lost its lease and
    someone, even itself, was elected again) can no longer change the ISR:
    the Txn compares the leader key's create revision with its epoch."""
    async with open_etcd([etcd.endpoint]) as client:
        lease = (await client.grant(30)).id
        first = await campaign(client, KEYS, "n1", lease, await _put(client, _record()))
        assert first is not None
        assert await change_isr(client, KEYS, "p", first, frozenset({"n1", "n3"}))
        assert (await _read(client, "p")).record.isr == ("n1", "n3")
        # Deposed: the key goes (its lease lapsed), n3 is elected: a new epoch.
        await client.delete(KEYS.leader("p"))
        second = await campaign(client, KEYS, "n3", lease, await _read(client, "p"))
        assert second is not None
        assert second > first
        before = await _read(client, "p")
        assert not await change_isr(client, KEYS, "p", first, frozenset({"n1"}))
        assert await _read(client, "p") == before  # not written at all
        # The same node elected again is a new epoch too: the old one is void.
        await client.delete(KEYS.leader("p"))
        third = await campaign(client, KEYS, "n1", lease, await _read(client, "p"))
        assert third is not None
        assert not await change_isr(client, KEYS, "p", first, frozenset({"n1"}))
        assert not await change_isr(client, KEYS, "p", second, frozenset({"n1"}))
        assert await change_isr(client, KEYS, "p", third, frozenset({"n1"}))
        assert (await _read(client, "p")).record.isr == ("n1",)
        # An ISR without its leader, or naming a stranger, is a bug: refused.
        with pytest.raises(ValueError, match="leaves out its leader"):
            await change_isr(client, KEYS, "p", third, frozenset({"n2", "n3"}))
        with pytest.raises(ValueError, match="one or more of its replicas"):
            await change_isr(client, KEYS, "p", third, frozenset({"n1", "n9"}))
        assert (await _read(client, "p")).record.isr == ("n1",)
        # No leader at all, or no partition: deposed as well.
        await client.delete(KEYS.leader("p"))
        assert not await change_isr(client, KEYS, "p", third, frozenset(REPLICAS))


async def test_isr_changes_racing_each_other_all_commit(etcd: EtcdProcess) -> None:
    """Changes by the same leader at once: the Txns that lose the race on
    the record's mod_revision are retried (still leader), so all commit, one
    after another, and none reports the leader deposed."""
    async with open_etcd([etcd.endpoint]) as client:
        lease = (await client.grant(30)).id
        epoch = await campaign(client, KEYS, "n1", lease, await _put(client, _record()))
        assert epoch is not None
        sets = [frozenset({"n1", "n2"}), frozenset({"n1", "n3"}), frozenset({"n1"})] * 2
        results: list[bool] = []

        async def change(isr: frozenset[str]) -> None:
            results.append(await change_isr(client, KEYS, "p", epoch, isr))

        async with trio.open_nursery() as nursery:
            for isr in sets:
                nursery.start_soon(change, isr)
        assert results == [True] * len(sets)
        assert (await _read(client, "p")).record.isr in {tuple(sorted(i)) for i in sets}


async def test_a_partition_of_three_replicas_on_three_nodes(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """AddPartition(replicas=3) names three distinct live nodes, all in sync,
    in one record; every node lists them, and mkvctl shows them; a count
    above the live nodes is capped with a warning; a follower killed for
    good leaves the ISR, which `cluster status` flags and the leader's
    metrics count."""
    metrics = [parse_address(f"127.0.0.1:{unused_port()}") for _ in range(3)]
    nodes = [
        cluster_node(
            tmp_path, f"n{i}", etcd, "--metrics-addr", str(metrics[i]), "--replica-lag-timeout", "2"
        )
        for i in range(3)
    ]
    rpc = Stubs(stubs)
    async with running(*nodes):
        by_id = {(await rpc.status(node)).node_id: i for i, node in enumerate(nodes)}
        ids = sorted(by_id)
        await leader_of(rpc, nodes[0], "default")
        with rpc.control(nodes[1]) as control:
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
            added = await call(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="a", start=b"", end=b"m", replicas=3),
            )
            capped = await call(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="b", start=b"m", replicas=5),
            )
        assert sorted(added.partition.replicas) == ids
        assert list(added.partition.isr) == list(added.partition.replicas)
        assert list(added.warnings) == []
        # The first replica is the preferred leader, and leads.
        assert added.partition.node == added.partition.replicas[0]
        assert added.partition.epoch > 0
        assert sorted(capped.partition.replicas) == ids
        (warning,) = capped.warnings
        assert "asked for 5 replicas but only 3 node(s) are live" in warning
        # Least loaded first: b's preferred leader is not a's.
        assert capped.partition.replicas[0] != added.partition.replicas[0]
        # The record in etcd. A replica that sees the record already led
        # ("active") before it opened a copy leaves the ISR (it cannot tell
        # a new partition from a lost disk) and is added back by the leader
        # once caught up (ci33): the ISR is whole again moments later.
        async with open_etcd([etcd.endpoint]) as client:

            async def whole() -> bool:
                found = (await _read(client, "a", Keys("test"))).record
                return found.isr == found.replicas

            await eventually(whole, what="a's ISR all its replicas")
            record = (await _read(client, "a", Keys("test"))).record
        assert record.replicas == tuple(added.partition.replicas)
        assert record.isr == record.replicas
        assert len(set(record.replicas)) == 3

        # Every node lists the same replicas and in-sync set.
        async def listed_alike() -> bool:
            for node in nodes:
                listed = {p.id: p for p in await rpc.partitions(node)}
                assert list(listed["a"].replicas) == list(record.replicas)
                if list(listed["a"].isr) != list(record.isr):
                    return False
            return True

        await eventually(listed_alike, what="every node listing a's ISR as etcd has it")
        # mkvctl: the table's columns, and the JSON.
        control_addr = f"--control-addr={nodes[2].control_addr}"
        table = await mkvctl(control_addr, "partitions", "list")
        assert table.code == 0, table.err
        header, *rows = table.out.decode().splitlines()
        assert header.split()[:6] == ["ID", "RANGE", "NODE", "EPOCH", "REPLICAS", "ISR"]
        row_a = next(row.split() for row in rows if row.startswith("a "))
        epoch, replicas, isr = row_a[4:7]
        assert (epoch, replicas, isr) == (
            str(added.partition.epoch),
            ",".join(record.replicas),
            ",".join(record.isr),
        )
        listed_json = await mkvctl(control_addr, "--json", "partitions", "list")
        (doc_a,) = [p for p in json.loads(listed_json.out)["partitions"] if p["id"] == "a"]
        assert (doc_a["replicas"], doc_a["isr"]) == (list(record.replicas), list(record.isr))
        healthy = await mkvctl(control_addr, "--json", "cluster", "status")
        assert json.loads(healthy.out)["problems"] == []
        # A follower of a killed for good leaves the ISR by the leader's own
        # path (a write waits for it past replica_lag_timeout, then the
        # leader's Txn drops it): the record says so, status flags it, and
        # the leader's metrics count it. (Dropping it by hand in etcd would
        # race the leader adding a caught-up follower straight back.)
        dead = record.replicas[2]
        await nodes[by_id[dead]].kill()
        leader = nodes[by_id[added.partition.node]]
        live = nodes[by_id[record.replicas[1]]]

        async def written() -> bool:
            return (await rpc.put(leader, b"a-key", b"v")).status == data_pb2.OK

        await eventually(written, within=30, what="a write acknowledged without the dead follower")
        async with open_etcd([etcd.endpoint]) as client:
            shrunk = (await _read(client, "a", Keys("test"))).record
        assert set(shrunk.isr) == set(record.replicas[:2]), shrunk
        status = await mkvctl(f"--control-addr={live.control_addr}", "cluster", "status")
        assert (
            f"partition a is under-replicated: 2 of its 3 replicas in sync "
            f"({dead} not)" in status.out.decode()
        ), status.out.decode()
        # The leader's metrics: a's replicas and ISR size, and its election.
        leader_metrics = metrics[by_id[added.partition.node]]

        async def isr_gauge() -> bool:
            status, _, body = await http(
                leader_metrics, b"GET /metrics HTTP/1.1\r\nHost: mkv\r\n\r\n"
            )
            assert status == "HTTP/1.1 200 OK"
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(body.decode())
                for sample in family.samples
            }
            part = (("partition", "a"),)
            assert samples[("mkv_partition_replicas", part)] == 3
            assert samples[("mkv_cluster_elections_total", ())] >= 1
            return samples[("mkv_partition_isr_size", part)] == 2

        await eventually(isr_gauge, what="the ISR gauge at 2")


async def test_the_winner_drops_dead_members_from_the_isr_in_its_election(
    etcd: EtcdProcess,
) -> None:
    """A new leader must have its epoch-start record durable on every ISR
    member before it serves; a dead member (its lease, and so its node key,
    gone with the old leader's) would hold it up for replica_lag_timeout.
    The election Txn takes the members that are not alive out of the ISR,
    and requires their node keys still absent: one that came back in the
    meantime stays. (Mutation: ``election_isr`` returning the record's ISR
    fails the first check.)"""
    async with open_etcd([etcd.endpoint]) as client:
        lease = (await client.grant(30)).id
        entry = await _put(client, _record())
        # n1 (the old leader) is dead; n3 is alive.
        await client.put(KEYS.node("n3"), b"{}")
        epoch = await campaign(client, KEYS, "n2", lease, entry, alive={"n2", "n3"})
        assert epoch is not None
        assert (await _read(client, "p")).record.isr == ("n2", "n3")
        # n3 dies too, but registers again before the Txn: not dropped, and
        # the election fails (read again, it is alive and stays in sync).
        await client.delete(KEYS.leader("p"))
        entry = await _read(client, "p")
        assert await campaign(client, KEYS, "n2", lease, entry, alive={"n2"}) is None
        assert await _leader(client, "p") is None
        assert (await _read(client, "p")).record.isr == ("n2", "n3")
        epoch = await campaign(client, KEYS, "n2", lease, entry, alive={"n2", "n3"})
        assert epoch is not None
        assert (await _read(client, "p")).record.isr == ("n2", "n3")
