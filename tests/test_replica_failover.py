"""Replicated failover (issue 16, "Must show"): real etcd, three ``mkv serve``
nodes, partitions of R = 3 replicas with ``replicate:sync``, the 16 writers
of tests/failover.py (single keys, 1 MiB batches, CAS, increments).

- kill -9 of a leader: a new leader serves within lease TTL + 2 s; every
  acknowledged write is on the new leader and on every ISR member; the
  history is linearizable with the calls cut by the failover
  indeterminate; the old leader restarts, catches up and rejoins the ISR
  (``MKV_FAILOVER_RUNS`` rounds: 5 in CI, 20 in ``just soak``, which prints
  the distribution of failover times);
- a paused leader (SIGSTOP past its lease): another ISR member leads within
  lease TTL + 2 s, the paused one answers nothing past its deadline, then
  steps down and rejoins the ISR as a follower;
- a slow follower (SIGSTOP) leaves the ISR within replica_lag_timeout and
  writes go on; it rejoins after SIGCONT;
- two followers stopped with min_isr = 2: writes get UNAVAILABLE and none
  is acknowledged; reads go on;
- repair after a node is killed for good.

The stores are compared at the end, key for key, with every node stopped:
a follower's store holds what its leader committed, so equal stores on
every ISR member prove they have every acknowledged write.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import grpc
import pytest
import trio

import mkv
from mkv.errors import UnavailableError
from mkv.store import open_store
from mkv.v1 import control_pb2
from tests import netns
from tests.cluster import LEASE_TTL, Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.failover import (
    ANSWER_SLACK,
    LAYOUT,
    LOG_SLACK,
    Cluster,
    Load,
    Run,
    answered_while_served,
    one_node_in_a_namespace,
    partition_of,
    run_writers,
)
from tests.grpcio_stubs import GrpcioStubs, call
from tests.processes import ServerProcess
from tests.serving import Interval, assert_disjoint, logged_at

# Seconds a follower may lag before its leader drops it from the ISR.
LAG = 2.0
# A replica that restarted or resumed catches up (a snapshot of 1 MiB batches,
# maybe) and is added back: seconds on a quiet machine, tens of seconds while
# the whole suite loads two cores (30 s was not enough once in CI).
REJOIN = 60.0
# The must-show's bound on a failover: lease TTL + 2 s.
FAILOVER_BOUND = LEASE_TTL + 2.0
WHOLE = (("a", b"", b""),)


@contextlib.asynccontextmanager
async def replicated(
    tmp_path: Path,
    etcd: EtcdProcess,
    stubs: GrpcioStubs,
    *extra: str,
    layout: Sequence[tuple[str, bytes, bytes]] = LAYOUT,
    replicas: int = 3,
    spread: bool = True,
) -> AsyncIterator[Cluster]:
    """Three nodes; ``layout``'s partitions with ``replicas`` replicas each,
    partition i led by node i (``spread``) or all by node 0."""
    nodes = [
        cluster_node(
            tmp_path,
            f"n{i}",
            etcd,
            "--log-format",
            "json",
            "--replica-lag-timeout",
            str(LAG),
            *extra,
        )
        for i in range(3)
    ]
    rpc = Stubs(stubs)
    async with running(*nodes):
        ids = [(await rpc.status(node)).node_id for node in nodes]
        await leader_of(rpc, nodes[0], "default")
        with rpc.control(nodes[0]) as control:
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
            for i, (pid, start, end) in enumerate(layout):
                await call(
                    control.AddPartition,
                    control_pb2.AddPartitionRequest(
                        id=pid,
                        start=start,
                        end=end,
                        node=ids[i % 3 if spread else 0],
                        replicas=replicas,
                    ),
                )
        found = Cluster(nodes, ids, rpc)
        for i, (pid, _, _) in enumerate(layout):
            assert await leader_of(rpc, nodes[0], pid) == ids[i % 3 if spread else 0]
        await _serves(found, layout)
        yield found


async def _serves(c: Cluster, layout: Sequence[tuple[str, bytes, bytes]]) -> None:
    seeds = [n.data_addr for n in c.nodes if n.process is not None]

    async def check() -> bool:
        async with mkv.Client.connect(*seeds) as db:
            with trio.move_on_after(5):
                await db.upsert({start + b"probe": b"1" for _, start, _ in layout})
                return True
        return False

    await eventually(check, within=30, what="every partition served")


async def _records(c: Cluster, *, not_from: str = "") -> dict[str, control_pb2.PartitionInfo]:
    """Every partition's record, as the first live node (but ``not_from``,
    whose view may be stale: it was cut off from etcd) sees it."""
    for node_id, node in zip(c.ids, c.nodes, strict=True):
        if node.process is not None and node_id != not_from:
            with contextlib.suppress(grpc.RpcError):
                return {p.id: p for p in await c.rpc.partitions(node)}
    return {}


async def _isr_is(
    c: Cluster, pids: Sequence[str], members: set[str], within: float, *, not_from: str = ""
) -> float:
    """Wait until every partition of ``pids`` has exactly ``members`` in
    sync (as etcd has it; not as node ``not_from`` sees it); the seconds it
    took."""
    began = trio.current_time()

    async def check() -> bool:
        records = await _records(c, not_from=not_from)
        return all(pid in records and set(records[pid].isr) == members for pid in pids)

    await eventually(check, within=within, what=f"ISR {sorted(members)} of {list(pids)}")
    return trio.current_time() - began


def _load(round_: int) -> Load:
    """Keys of their own per round: each round's history starts empty."""
    return Load(
        registers=tuple(f"{c}-r{round_}-reg{i}".encode() for c in "agmt" for i in range(2)),
        counters=tuple(f"{c}-r{round_}-ctr".encode() for c in "bhnu"),
        seed=16 + round_,
    )


def _store_items(node: ServerProcess, pid: str) -> tuple[int, dict[bytes, bytes]]:
    """A stopped node's store of ``pid``: its last seq, and every key's value."""
    store = open_store("sqlite", node.data_dir / "partitions" / pid, logged=True)
    try:
        items = {key: item.value for key, item in store.scan(b"", None, 10**9)}
        return store.last_seq(), items
    finally:
        store.close()


async def _stores_agree(c: Cluster, pids: Sequence[str], runs: Sequence[Run]) -> None:
    """With every node stopped: each partition's store is the same on every
    node (so on every ISR member), key for key, and holds every
    acknowledged batch."""
    for node in c.nodes:
        if node.process is not None:
            await node.stop()
    for pid in pids:
        stores = {
            node_id: await trio.to_thread.run_sync(_store_items, node, pid)
            for node_id, node in zip(c.ids, c.nodes, strict=True)
        }
        (first_id, (_, first)), *others = stores.items()
        for node_id, (_, items) in others:
            missing = set(first) ^ set(items)
            differ = [k for k in set(first) & set(items) if first[k] != items[k]]
            what = f"partition {pid}: {node_id}'s store differs from {first_id}'s"
            assert not missing, (
                f"{what}: {len(missing)} keys on one only, e.g. {sorted(missing)[:3]}"
            )
            assert not differ, f"{what}: {len(differ)} values differ, e.g. {differ[:3]}"
        for run in runs:
            for key, value in run.batches.items():
                if partition_of(key) == pid:
                    assert first.get(key) == value, f"acknowledged {key!r} missing on {pid}"


def _served_at(log: str, pid: str) -> list[float]:
    """When a node's log says it began serving ``pid`` as its leader."""
    found = []
    for line in log.splitlines():
        if '"cluster_serving"' in line:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "cluster_serving" and record.get("partition") == pid:
                    found.append(
                        datetime.datetime.fromisoformat(
                            record["time"].replace("Z", "+00:00")
                        ).timestamp()
                    )
    return found


def _killed_stop(
    found: dict[str, list[Interval]], kills: Sequence[tuple[str, float]]
) -> dict[str, list[Interval]]:
    """A node killed with SIGKILL logs no stop: its interval open at the
    kill ends there (the process was gone; it served nothing after)."""
    out: dict[str, list[Interval]] = {}
    for pid, each in found.items():
        out[pid] = []
        for interval in each:
            for node, at in kills:
                if interval.node == node and interval.start < at < interval.stop:
                    interval = attrs.evolve(interval, stop=at, why="killed")
            out[pid].append(interval)
    return out


async def _settle(c: Cluster) -> None:
    """One more write everywhere, then a moment: followers learn the commit
    point of every write before it (they apply only up to it)."""
    await _serves(c, LAYOUT)
    await trio.sleep(1.0)


async def _kill_rounds(tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs, rounds: int) -> None:
    """Each round: partition a's leader is killed with SIGKILL under the 16
    writers. A new leader (an ISR member) serves a within lease TTL + 2 s of
    the kill (measured from the first answer for one of a's keys after it);
    nothing acknowledged is lost and the history is linearizable, calls cut
    by the kill indeterminate; serving intervals never overlap; the old
    leader restarts, catches up and rejoins the ISR. At the end every node's
    store of every partition is the same. (Mutations: a follower applying
    past the commit, or an election open to non-ISR replicas, break the
    store comparison or the history; an epoch-start not awaited breaks the
    serving intervals.)"""
    times: list[float] = []
    runs: list[Run] = []
    kills: list[tuple[str, float]] = []
    pids = [pid for pid, _, _ in LAYOUT]
    with trio.fail_after(40 + 25 * rounds):
        async with replicated(tmp_path, etcd, stubs) as c:
            for round_ in range(rounds):
                victim = (await c.leaders())["a"]
                killed: list[float] = []

                async def kill(victim: str = victim, killed: list[float] = killed) -> None:
                    killed.append(time.time())
                    await c.node(victim).kill()

                run = await run_writers(
                    [n.data_addr for n in c.nodes if n.process is not None],
                    seconds=4.5,
                    load=_load(round_),
                    fault=kill,
                    fault_at=1.0,
                )
                runs.append(run)
                # Served again: the new leader's "serving as leader" (logged
                # once its epoch-start record is durable on the ISR: before,
                # it holds requests) on another node after the kill.
                starts = [
                    at
                    for node_id, log in c.logs().items()
                    if node_id != victim
                    for at in _served_at(log, "a")
                    if at > killed[0]
                ]
                assert starts, f"round {round_}: a was not served after the kill; {run.summary()}"
                took = min(starts) - killed[0]
                times.append(took)
                kills.append((victim, killed[0]))
                assert any(
                    partition_of(a.key) == "a" and a.answered > min(starts) for a in run.answers
                ), f"round {round_}: nothing of a answered after its new leader started"
                leaders = await c.leaders()
                assert leaders.get("a") not in (None, victim), leaders
                async with mkv.Client.connect(
                    *[n.data_addr for n in c.nodes if n.process is not None]
                ) as db:
                    await run.verify(db)
                assert took <= FAILOVER_BOUND, (
                    f"round {round_}: a served again {took:.2f} s after the kill"
                )
                # The old leader comes back: a follower, caught up, in sync.
                await c.node(victim).start()
                rejoined = await _isr_is(c, pids, set(c.ids), within=REJOIN)
                print(
                    f"round {round_}: failover {took:.2f} s, rejoined {rejoined:.1f} s after "
                    f"restart; {run.summary()}"
                )
            assert_disjoint(_killed_stop(c.serving(), kills))
            await _settle(c)
            await _stores_agree(c, pids, runs)
    print(
        f"\nfailover times over {len(times)} kill -9 runs: min {min(times):.2f} s, median "
        f"{statistics.median(times):.2f} s, max {max(times):.2f} s; all: "
        + " ".join(f"{t:.2f}" for t in sorted(times))
    )


async def test_kill_9_of_a_leader_under_16_writers(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """Five rounds in CI (``MKV_FAILOVER_RUNS`` to change)."""
    await _kill_rounds(tmp_path, etcd, stubs, int(os.environ.get("MKV_FAILOVER_RUNS", "5")))


@pytest.mark.slow
async def test_twenty_kills_of_a_leader(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """``just soak``: 20 rounds, with the distribution of failover times."""
    await _kill_rounds(tmp_path, etcd, stubs, 20)


def _replaced(
    found: dict[str, list[Interval]], victim: str, fault: float, run: Run
) -> tuple[Interval, Interval]:
    """a's leader ``victim`` stopped (paused, cut off) at ``fault``: its
    interval then ended at its lease deadline, within a TTL; another ISR
    member (the majority side) led a at a later epoch within
    ``FAILOVER_BOUND``. The two intervals."""
    [ended] = [i for i in found["a"] if i.node == victim and i.start < fault < i.stop]
    assert ended.why == "lease deadline passed", ended
    assert ended.stop - fault < LEASE_TTL, ended
    successors = [i for i in found["a"] if i.node != victim and i.start > fault]
    assert successors, f"nobody else led a after the fault; {run.summary()}"
    took = successors[0].start - fault
    assert successors[0].epoch > ended.epoch, (ended, successors[0])
    assert took <= FAILOVER_BOUND, f"a served again {took:.2f} s after the fault"
    return ended, successors[0]


async def test_a_paused_leader_is_deposed_and_rejoins_as_a_follower(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """SIGSTOP of a's leader for longer than its lease under the 16
    writers, then SIGCONT. Its serving interval ends at its lease deadline,
    within a TTL of the stop; another ISR member leads a at a later epoch
    within TTL + 2 s of the stop; no answer for a left the paused node
    after its deadline (every answer left a node while it served the key);
    once resumed, the old leader finds it was deposed, steps down, follows
    and rejoins the ISR; nothing acknowledged is lost, the history is
    linearizable, and the stores agree. This test found two bugs: a leader
    deposed by a refused ISR change stopped without following anybody, so
    it never rejoined (3 runs of 4); and answers of two 1 MiB records were
    larger than the control port may send, so its catch-up failed forever.
    (Mutation: the answer-time gate removed, so a request admitted before
    the stop is answered after the resume, breaks the answers' check about
    one run in three, as at R = 1.)"""
    pids = [pid for pid, _, _ in LAYOUT]
    with trio.fail_after(150):
        async with replicated(tmp_path, etcd, stubs) as c:
            victim = (await c.leaders())["a"]
            times: list[float] = []

            async def pause() -> None:
                process = c.node(victim).process
                assert process is not None
                process.send_signal(signal.SIGSTOP)
                times.append(time.time())
                try:
                    await trio.sleep(LEASE_TTL + 2.0)
                finally:
                    process.send_signal(signal.SIGCONT)
                    times.append(time.time())

            run = await run_writers(
                c.seeds, seconds=LEASE_TTL + 6.0, load=_load(0), fault=pause, fault_at=1.0
            )
            stopped, resumed = times
            found = c.serving()
            assert_disjoint(found)
            cut, successor = _replaced(found, victim, stopped, run)
            took = successor.start - stopped
            answered_while_served(run, found)
            async with mkv.Client.connect(*c.seeds) as db:
                await run.verify(db)
            # Deposed: it stepped down once resumed, and follows again.
            log = c.logs()[victim]
            assert [at for at in logged_at(log, "replica_stepped_down") if at > resumed - 0.01], (
                "the paused leader never stepped down"
            )
            await _isr_is(c, pids, set(c.ids), within=REJOIN)
            rejoined = time.time() - resumed
            assert (await c.leaders())["a"] != victim
            print(
                f"\npaused leader: deadline +{cut.stop - stopped:.2f} s after the stop, a served "
                f"by {successor.node} +{took:.2f} s, back in the ISR within {rejoined:.1f} s "
                f"of SIGCONT; {run.summary()}"
            )
            await _settle(c)
            await _stores_agree(c, pids, [run])


async def _cut_leader_round(
    c: Cluster, ns: netns.Namespace, round_: int, *, clients_reach: bool = False
) -> tuple[float, float, Run]:
    """a's leader, node 0 in ``ns``, cut off from etcd, its clients (unless
    ``clients_reach``) and the other nodes for LEASE_TTL + 2 s under the 16
    writers, then healed; the checks. Returns the seconds from the cut to a
    served by its successor, the seconds from healing to every ISR whole
    again, and the run."""
    pids = [pid for pid, _, _ in LAYOUT]
    victim = c.ids[0]
    assert (await c.leaders())["a"] == victim
    data_port = int(c.nodes[0].data_addr.rsplit(":", 1)[1])
    times: list[float] = []
    whole: list[float] = []

    async def rejoin() -> None:
        # It rejoins every ISR (a's, and b's and c's, which dropped it), as
        # the others see it: its own view is still the one from before the
        # cut until its watch catches up. Timed from the heal, while the
        # writers go on and after: not under them to the end, as a replica
        # that needs a snapshot may not catch up under 1 MiB batches that
        # outrun the leader's retained log (docs/replication.md).
        whole.append(await _isr_is(c, pids, set(c.ids), within=REJOIN, not_from=victim))

    async with trio.open_nursery() as nursery:

        async def cut() -> None:
            ns.isolate(data_port, reachable=clients_reach)
            times.append(time.time())
            try:
                await trio.sleep(LEASE_TTL + 2.0)
            finally:
                ns.heal()
                times.append(time.time())
            nursery.start_soon(rejoin)

        run = await run_writers(
            c.seeds, seconds=LEASE_TTL + 5.0, load=_load(round_), fault=cut, fault_at=1.0
        )
    cut_at, healed = times
    found = c.serving()
    assert_disjoint(found)
    # It stopped serving at its lease deadline, within a TTL of the cut, and
    # the majority side led a (``_replaced``); it said so then (the log
    # line's own time), while still cut off.
    cut_off, successor = _replaced(found, victim, cut_at, run)
    took = successor.start - cut_at
    logged = logged_at(c.logs()[victim], "serving_stop")
    assert [t for t in logged if cut_off.stop - 0.01 < t < cut_off.stop + LOG_SLACK < healed], (
        cut_off,
        logged,
        healed,
    )
    # Nothing of a answered between the cut node's deadline and its
    # successor's start (only it could have), and every answer left a node
    # while that node served the key.
    late = [
        a
        for a in run.answers
        if partition_of(a.key) == "a" and cut_off.stop + ANSWER_SLACK < a.answered < successor.start
    ]
    assert not late, late[:3]
    answered_while_served(run, found)
    async with mkv.Client.connect(*c.seeds) as db:
        await run.verify(db)
    # Healed: it found it was deposed, stepped down, followed the new
    # leader and rejoined every ISR (``whole``), as it still is.
    log = c.logs()[victim]
    assert [at for at in logged_at(log, "replica_stepped_down") if at > cut_off.stop], (
        "the cut-off leader never stepped down"
    )
    [rejoined] = whole
    await _isr_is(c, pids, set(c.ids), within=REJOIN)
    assert (await c.leaders())["a"] != victim
    print(
        f"cut-off leader: deadline +{cut_off.stop - cut_at:.2f} s after the cut, a served by "
        f"{successor.node} +{took:.2f} s, every ISR whole {rejoined:.1f} s after "
        f"healing; {run.summary()}"
    )
    return took, rejoined, run


async def _cut_leader_rounds(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs, rounds: int
) -> None:
    """``rounds`` cuts of a's leader, led back into the namespace before each."""
    took: list[float] = []
    rejoined: list[float] = []
    with trio.fail_after(REJOIN + 40 * rounds):
        async with one_node_in_a_namespace(
            tmp_path,
            etcd,
            stubs,
            0,
            replicas=3,
            extra=("--replica-lag-timeout", str(LAG)),
        ) as (c, ns):
            records = await _records(c)
            assert all("replicate:sync" in records[pid].pipeline for pid, _, _ in LAYOUT), records
            runs: list[Run] = []
            for round_ in range(rounds):
                if round_:
                    await _lead(c, "a", c.ids[0])
                # Odd rounds (the soak's): clients still reach the cut
                # leader, which must refuse them past its deadline.
                one, two, run = await _cut_leader_round(
                    c, ns, round_, clients_reach=bool(round_ % 2)
                )
                took.append(one)
                rejoined.append(two)
                runs.append(run)
            await _settle(c)
            await _stores_agree(c, [pid for pid, _, _ in LAYOUT], runs)
    print(
        f"\ncut-off leader over {rounds} rounds: a served again after the cut in min "
        f"{min(took):.2f} s, median {statistics.median(took):.2f} s, max {max(took):.2f} s; "
        f"ISRs whole after healing in min {min(rejoined):.1f} s, median "
        f"{statistics.median(rejoined):.1f} s, max {max(rejoined):.1f} s"
    )


async def _lead(c: Cluster, pid: str, node: str) -> None:
    """TransferLeader ``pid`` to ``node`` (an ISR member), asked of that node."""
    with c.rpc.control(c.node(node)) as control:
        await call(control.TransferLeader, control_pb2.TransferLeaderRequest(id=pid, node=node))
    await eventually(lambda: _leads(c, pid, node), within=REJOIN, what=f"{node} leading {pid}")


async def _leads(c: Cluster, pid: str, node: str) -> bool:
    return (await c.leaders()).get(pid) == node


async def test_a_leader_cut_off_is_replaced_and_rejoins(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """a's leader runs in a network namespace and is cut off (nftables) from
    etcd, from its clients and from the other nodes, its control port too
    (no follower fetches from it, so it commits nothing), for LEASE_TTL + 2
    s under the 16 writers, then healed. It stops serving at its deadline
    (logged then, while cut off); another ISR member leads a at a later
    epoch within TTL + 2 s of the cut; no answer for a left the cut node
    after its deadline; healed, it steps down, follows, and rejoins every
    ISR; nothing acknowledged is lost, the history is linearizable, the
    serving intervals are disjoint and the stores agree. Skipped without
    root (``ip netns``, ``nft``). Every node's control plane is beyond
    loopback here, under a shared token: node-to-node calls carry it.

    Mutations: ``PartitionRegistry.step_down`` not following (the step-down
    of a leader that sees another's key once healed) → a's ISR never whole
    again; ``Membership._watch_deadline`` not started → the stop logged
    late (at the next etcd error, ~0.2 s on). ``Leaderships._step_down_and_
    follow`` not following fails it only in the runs where the healed
    leader learns it was deposed from a refused ISR change rather than from
    the leader key (seen in some runs, not most). The data plane's lease
    checks cannot show here, its clients cut off; they are the R = 1 cut
    test's and the pause tests' to show."""
    await _cut_leader_rounds(tmp_path, etcd, stubs, 1)


@pytest.mark.slow
async def test_twenty_cuts_of_a_leader(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """``just soak``: 20 rounds, with the distribution of failover and rejoin
    times. In every other round the clients still reach the cut leader
    (cut off from etcd and its peers only), which must answer them nothing
    past its deadline; before each round but the first, a is transferred
    back into the namespace. (Mutations: with the data plane's admission
    and answer-time lease checks both removed, two such rounds still
    passed: something else holds the cut leader back, not yet found out.)"""
    await _cut_leader_rounds(tmp_path, etcd, stubs, 20)


async def test_a_slow_follower_leaves_the_isr_and_rejoins(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """A follower stopped with SIGSTOP leaves the ISR within
    replica_lag_timeout (+ slack for a loaded machine); writes are
    acknowledged again without it; after SIGCONT it catches up and rejoins.
    (Mutation: the leader never dropping laggers: writes stall, the ISR
    never shrinks.)"""
    with trio.fail_after(90):
        async with replicated(tmp_path, etcd, stubs, layout=WHOLE, spread=False) as c:
            slow = c.ids[2]
            shrunk: list[float] = []
            resumed: list[float] = []

            async def pause() -> None:
                c.node(slow).process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                stopped = trio.current_time()
                try:
                    await _isr_is(c, ["a"], set(c.ids) - {slow}, within=LAG + 8)
                    shrunk.append(trio.current_time() - stopped)
                    await trio.sleep(1.5)  # writes go on without it
                finally:
                    c.node(slow).process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                    resumed.append(time.time())

            run = await run_writers(
                c.seeds, seconds=8.0, load=Load(batches=1), fault=pause, fault_at=1.0
            )
            assert shrunk, "the ISR never shrank"
            assert shrunk[0] <= LAG + 3.0, f"dropped from the ISR {shrunk[0]:.1f} s after SIGSTOP"
            # Acknowledged between the shrink and the resume: writes went on.
            window = [a for a in run.answers if a.kind != "read" and a.answered < resumed[0]]
            assert window, run.summary()
            rejoined = await _isr_is(c, ["a"], set(c.ids), within=REJOIN)
            async with mkv.Client.connect(*c.seeds) as db:
                await run.verify(db)
            print(
                f"\nslow follower: out of the ISR {shrunk[0]:.1f} s after SIGSTOP (lag timeout "
                f"{LAG} s), back {rejoined:.1f} s after SIGCONT; {run.summary()}"
            )
            await _settle(c)
            await _stores_agree(c, ["a"], [run])


async def test_below_min_isr_writes_are_refused_and_reads_go_on(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """Both followers stopped, min_isr = 2. A write then waits for them; after
    replica_lag_timeout the leader drops them (the ISR is the leader alone,
    in etcd). From then on writes get UNAVAILABLE at admission and none is
    acknowledged or applied (it reads as before); reads go on. After
    SIGCONT the followers rejoin and writes are acknowledged again.
    (Mutation: no min_isr check at admission: the writes are acknowledged
    by the leader alone.)"""
    with trio.fail_after(90):
        async with replicated(
            tmp_path, etcd, stubs, "--min-isr", "2", layout=WHOLE, spread=False
        ) as c:
            leader = c.nodes[0]
            async with mkv.Client.connect(leader.data_addr) as db:
                await db.upsert({b"k": b"before"})
            for node in c.nodes[1:]:
                node.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                async with mkv.Client.connect(leader.data_addr) as db, trio.open_nursery() as n:
                    # Logged before the ISR shrinks: it waits for the followers
                    # (its fate is the leader's rule for writes logged before).
                    n.start_soon(_write_quietly, db, {b"pending": b"1"})
                    await _isr_is(c, ["a"], {c.ids[0]}, within=LAG + 10)
                    refused = acknowledged = 0
                    for i in range(5):
                        try:
                            with trio.fail_after(10):
                                await db.upsert({b"k": b"during-%d" % i})
                            acknowledged += 1
                        except UnavailableError:
                            refused += 1
                    # Reads go on, and see none of the refused writes.
                    assert await db.get(b"k") == b"before"
                    assert (acknowledged, refused) == (0, 5)
                    n.cancel_scope.cancel()
            finally:
                for node in c.nodes[1:]:
                    node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            await _isr_is(c, ["a"], set(c.ids), within=REJOIN)
            async with mkv.Client.connect(*c.seeds) as db:
                await db.upsert({b"k": b"after"})
                assert await db.get(b"k") == b"after"


async def _write_quietly(db: mkv.Client, batch: dict[bytes, bytes]) -> None:
    with contextlib.suppress(mkv.MkvError):
        await db.upsert(batch)


async def test_repair_after_a_node_is_killed_for_good(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """Partitions of two replicas on three nodes; one node is killed for
    good under writers. After node_dead_timeout every record names two live
    nodes; the new replica catches up from the leader (snapshot, log) and
    joins the ISR; its store then equals the leader's, with every
    acknowledged write. (Mutation: repair putting the new replica in the
    ISR at once: it is in sync before it has anything, and the stores
    differ.)"""
    dead_timeout = 3.0
    with trio.fail_after(120):
        async with replicated(
            tmp_path,
            etcd,
            stubs,
            "--node-dead-timeout",
            str(dead_timeout),
            "--min-isr",
            "1",
            replicas=2,
        ) as c:
            pids = [pid for pid, _, _ in LAYOUT]
            before = await _records(c)
            victim = c.ids[2]
            named = [pid for pid in pids if victim in before[pid].replicas]
            assert named

            async def kill() -> None:
                await c.node(victim).kill()

            run = await run_writers(c.seeds, seconds=5.0, fault=kill, fault_at=1.0)
            alive = set(c.ids) - {victim}

            async def repaired() -> bool:
                records = await _records(c)
                return all(
                    set(records[pid].replicas) <= alive
                    and len(records[pid].replicas) == 2
                    and set(records[pid].isr) == set(records[pid].replicas)
                    for pid in pids
                )

            await eventually(repaired, within=dead_timeout + 40, what="every record repaired")
            async with mkv.Client.connect(*[c.nodes[0].data_addr, c.nodes[1].data_addr]) as db:
                await run.verify(db)
            await _settle_on(c, alive)
            live = [n for i, n in zip(c.ids, c.nodes, strict=True) if i in alive]
            survivors = Cluster(live, [i for i in c.ids if i in alive], c.rpc)
            await _stores_agree(survivors, pids, [run])


async def _settle_on(c: Cluster, alive: set[str]) -> None:
    seeds = [n.data_addr for i, n in zip(c.ids, c.nodes, strict=True) if i in alive]
    async with mkv.Client.connect(*seeds) as db:
        with trio.fail_after(20):
            await db.upsert({start + b"probe": b"2" for _, start, _ in LAYOUT})
    await trio.sleep(1.0)
