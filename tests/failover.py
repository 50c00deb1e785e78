"""Writers under failure: K clients through ``mkv.Client.connect(*seeds)``
recording what they were told, a fault injected mid-run, and the checks
issue 16 asks after every failover test.

Writer kinds (``Load``):

- ``upserts``: single-key upserts and reads of a few shared keys (registers);
- ``batches``: 1 MiB upserts of keys of their own (read back afterwards);
- ``cas``: compare-and-set chains (read, then ``if_value`` / ``if_seq=0``);
- ``increments``: +1 on a few shared counters.

Every call ends as one of (tests/linearizability.py):

- OK: answered; a refused condition is OK with result False (nothing applied);
- FAILED, definitely not applied: ``NotSentError``, ``BadNodeError`` (the
  client retried BAD_NODE answers, which are never applied, until it gave up);
- INDETERMINATE: ``UNAVAILABLE`` (the node's lease ran out, or the
  connection broke after sending: "outcome unknown"), any other error, and
  a call cut by ``CALL_TIMEOUT``.

``Run.verify`` then checks: every acknowledged batch is readable; each
counter holds exactly the acknowledged increments plus some of the
indeterminate ones; the history of registers and counters is linearizable
with the indeterminate calls as such. ``replicas`` hooks in more readers
(every replica, once there are replicas) that must see the same.

    run = await run_writers(seeds, seconds=6, fault=kill_leader, fault_at=2)
    async with mkv.Client.connect(*seeds) as db:
        await run.verify(db)

Runs on one cluster may follow each other: each starts its history from the
registers and counters the one before left. ``Load.batch_bytes`` sets the
batches' size (1 MiB by default).

The cluster (``cluster``): any number of ``mkv serve`` nodes logging JSON,
``LAYOUT``'s partitions placed with ``replicas`` each (1 by default, the
tests here; 3 for the replicated ones), leader i mod size. Faults:

- kill -9: ``await c.nodes[i].stop(signal.SIGKILL)``, then
  ``await c.nodes[i].start(same_ports=True)`` to bring it back;
- pause: SIGSTOP / SIGCONT to ``c.nodes[i].process`` (``_pause`` in
  tests/test_failover.py);
- network cut: ``cluster(..., inside=(i, ns))`` runs node i in a network
  namespace (tests/netns.py; ``one_node_in_a_namespace`` skips without
  root), every control plane reachable under a shared token;
  ``ns.cut_off(etcd_port, *its_ports)`` cuts it off from etcd (and from
  clients, given their ports), ``ns.isolate(its_data_port)`` from
  everything (etcd, clients, the other nodes both ways), ``ns.heal()``;
- aim a fault at whoever leads a partition now:
  ``c.nodes[await c.leader_index("b")]`` (ListPartitions).

After a run: ``c.serving()`` gives every partition's serving intervals from
the nodes' own logs (tests/serving.py: ``assert_disjoint``, ``covering``);
``logged_at(log, event)`` the times of any logged event (``cluster_lease_lost``,
``serving_stop``) for checks of when a node noticed what.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import grpc
import pytest
import trio

import mkv
from mkv.client.channel import NotSentError
from mkv.errors import BadNodeError, ConditionFailedError, MkvError
from mkv.v1 import control_pb2
from tests import netns
from tests.cluster import LEASE_TTL, Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call
from tests.linearizability import (
    CounterModel,
    History,
    Outcome,
    RegisterModel,
    Status,
    check,
)
from tests.netns import Namespace
from tests.processes import ServerProcess
from tests.serving import Interval, covering, intervals

__all__ = [
    "CALL_TIMEOUT",
    "LAYOUT",
    "LOG_SLACK",
    "Answer",
    "Cluster",
    "Load",
    "Run",
    "cluster",
    "finished",
    "one_node_in_a_namespace",
    "partition_of",
    "run_writers",
]

# A call still unanswered after this is given up as indeterminate.
CALL_TIMEOUT = 15.0

# An answer reaches the client a little after the node sent it (a loaded
# machine: up to this much), so an answer's time is checked against the
# serving intervals this much earlier.
ANSWER_SLACK = 0.3
# A serving_stop is logged within this of its deadline (a loaded machine).
LOG_SLACK = 0.12
BATCH_BYTES = 1024 * 1024
BATCH_KEYS = 64  # of 16 KiB each


@attrs.frozen
class Load:
    """How many writers of each kind, and the keys they share."""

    upserts: int = 6
    batches: int = 2
    cas: int = 4
    increments: int = 4
    # Shared keys, spread over the key space (and so over the partitions).
    registers: Sequence[bytes] = tuple(f"{c}-reg{i}".encode() for c in "agmt" for i in range(2))
    counters: Sequence[bytes] = tuple(f"{c}-ctr".encode() for c in "bhnu")
    seed: int = 16
    # Bytes of each batch (``BATCH_KEYS`` keys): 1 MiB by default.
    batch_bytes: int = BATCH_BYTES

    @property
    def writers(self) -> int:
        return self.upserts + self.batches + self.cas + self.increments


@attrs.frozen
class Answer:
    """A single-key call answered OK (a read, or an acknowledged write):
    when the client had the answer, by the wall clock all processes share."""

    key: bytes
    kind: str
    answered: float


# Reads ``keys`` somewhere (a replica, once there are): their values, in order.
ReplicaReader = Callable[[Sequence[bytes]], Awaitable[Sequence[bytes | None]]]


@attrs.define
class Run:
    load: Load
    registers: History = attrs.field(factory=History)
    counters: History = attrs.field(factory=History)
    # Acknowledged batches: key -> value; every single-key call answered OK.
    batches: dict[bytes, bytes] = attrs.field(factory=dict)
    answers: list[Answer] = attrs.field(factory=list)
    # Errors by class name, for the report.
    errors: dict[str, int] = attrs.field(factory=dict)
    # Counters' values before the run (an earlier run's on the same cluster).
    initial: dict[bytes, int] = attrs.field(factory=dict)
    calls: int = 0

    def outcomes(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for op in (*self.registers.operations, *self.counters.operations):
            counted[op.outcome.value] = counted.get(op.outcome.value, 0) + 1
        return counted

    def summary(self) -> str:
        return (
            f"{self.calls} calls, {len(self.answers)} answered OK, outcomes "
            f"{self.outcomes()}, {len(self.batches) // BATCH_KEYS} batches; errors {self.errors}"
        )

    async def verify(self, db: mkv.Client, *, replicas: Sequence[ReplicaReader] = ()) -> None:
        """The checks after a run (on ``db``, through the cluster as it is now).

        Raises:
            AssertionError: an acknowledged write is missing, a counter is
                off, or the history is not linearizable.
        """
        readers: list[ReplicaReader] = [_reader(db), *replicas]
        batch_keys = sorted(self.batches)
        for n, read in enumerate(readers):
            for first in range(0, len(batch_keys), BATCH_KEYS):
                keys = batch_keys[first : first + BATCH_KEYS]
                got = await read(keys)
                for key, value in zip(keys, got, strict=True):
                    assert value == self.batches[key], (
                        f"reader {n}: acknowledged batch key {key!r} reads {value!r:.40}"
                    )
        # One final read of every shared key joins the history: each
        # acknowledged write must show there.
        for key in self.load.registers:
            [value] = await readers[0]([key])
            token = self.registers.invoke("final", key, "read")
            self.registers.complete(token, Outcome.OK, value)
        for key in self.load.counters:
            [raw] = await readers[0]([key])
            final = int(raw) if raw is not None else 0
            ops = [op for op in self.counters.operations if op.key == key and op.kind == "incr"]
            acked = sum(op.args[0] for op in ops if op.outcome is Outcome.OK)
            unknown = sum(op.args[0] for op in ops if op.outcome is Outcome.INDETERMINATE)
            was = self.initial.get(key, 0)
            assert acked <= final - was <= acked + unknown, (
                f"counter {key!r} is {final}, {was} before the run: {acked} acknowledged, "
                f"{unknown} indeterminate"
            )
            for read in readers[1:]:
                assert await read([key]) == [raw], f"counter {key!r} differs on a replica"
            token = self.counters.invoke("final", key, "read")
            self.counters.complete(token, Outcome.OK, final)
        for history, model in (
            (self.registers, RegisterModel()),
            (self.counters, CounterModel()),
        ):
            verdict = check(history.operations, model)
            assert verdict.status is Status.LINEARIZABLE, verdict


def _get(db: mkv.Client, key: bytes) -> Callable[[], Awaitable[object]]:
    async def get() -> object:
        return await db.get(key)

    return get


def _reader(db: mkv.Client) -> ReplicaReader:
    async def read(keys: Sequence[bytes]) -> Sequence[bytes | None]:
        items = await db.batch_get(keys) if len(keys) > 1 else [await db.get_item(keys[0])]
        return [None if item is None else item.value for item in items]

    return read


async def run_writers(
    seeds: Sequence[str],
    *,
    seconds: float,
    load: Load = Load(),
    fault: Callable[[], Awaitable[object]] | None = None,
    fault_at: float = 0.0,
) -> Run:
    """Run ``load``'s writers through one client on ``seeds`` for
    ``seconds``; ``fault()`` is awaited ``fault_at`` seconds in (the
    writers go on meanwhile). Returns once every call has ended."""
    run = Run(load)
    rng = random.Random(load.seed)
    stop = trio.Event()

    async def call(
        history: History | None,
        process: str,
        key: bytes,
        kind: str,
        args: tuple[object, ...],
        body: Callable[[], Awaitable[object]],
        *,
        write: bool,
    ) -> tuple[Outcome, object]:
        """Run one call, recording its outcome in ``history`` (if any)."""
        token = history.invoke(process, key, kind, args) if history is not None else 0
        run.calls += 1
        outcome, result, answered = Outcome.INDETERMINATE, None, 0.0
        with trio.move_on_after(CALL_TIMEOUT):
            try:
                result = await body()
                outcome, answered = Outcome.OK, time.time()
            except ConditionFailedError:
                outcome, result, answered = Outcome.OK, False, time.time()
            except (NotSentError, BadNodeError) as exc:
                run.errors[type(exc).__name__] = run.errors.get(type(exc).__name__, 0) + 1
                outcome = Outcome.FAILED
            except MkvError as exc:
                run.errors[type(exc).__name__] = run.errors.get(type(exc).__name__, 0) + 1
                # A read has no effect either way; a write may have been applied.
                outcome = Outcome.INDETERMINATE if write else Outcome.FAILED
        if history is not None:
            history.complete(token, outcome, result if outcome is Outcome.OK else None)
        if outcome is Outcome.OK and key:
            run.answers.append(Answer(key, kind, answered))
        return outcome, result

    async def upserter(db: mkv.Client, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            key = rng.choice(load.registers)
            if rng.random() < 0.5:
                value = f"u{n}-{i}".encode()

                async def put(key: bytes = key, value: bytes = value) -> object:
                    await db.upsert({key: value})
                    return None

                await call(run.registers, f"u{n}", key, "write", (value,), put, write=True)
            else:
                await call(run.registers, f"u{n}", key, "read", (), _get(db, key), write=False)

    async def batcher(db: mkv.Client, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            value_size = load.batch_bytes // BATCH_KEYS - 32
            # Over the whole key space: one batch becomes one per partition.
            batch = {
                f"{'agmt'[j % 4]}-batch{n}-{i}-{j:03d}".encode(): (b"%d-%d-%d:" % (n, i, j)).ljust(
                    value_size, b"."
                )
                for j in range(BATCH_KEYS)
            }

            async def put(batch: dict[bytes, bytes] = batch) -> object:
                await db.upsert(batch)
                run.batches.update(batch)
                return None

            await call(None, f"b{n}", b"", "batch", (), put, write=True)

    async def cas_chain(db: mkv.Client, n: int) -> None:
        i = 0
        seen: dict[bytes, bytes | None] = {}
        while not stop.is_set():
            i += 1
            key = rng.choice(load.registers)
            if key not in seen or rng.random() < 0.3:
                outcome, result = await call(
                    run.registers, f"c{n}", key, "read", (), _get(db, key), write=False
                )
                if outcome is Outcome.OK:
                    seen[key] = result  # type: ignore[assignment]
                continue
            expected, new = seen[key], f"c{n}-{i}".encode()

            async def cas(
                key: bytes = key, expected: bytes | None = expected, new: bytes = new
            ) -> object:
                if expected is None:
                    await db.upsert({key: new}, if_seq={key: 0})
                else:
                    await db.upsert({key: new}, if_value={key: expected})
                return True

            outcome, result = await call(
                run.registers, f"c{n}", key, "cas", (expected, new), cas, write=True
            )
            if outcome is Outcome.OK and result:
                seen[key] = new
            else:
                seen.pop(key, None)  # read it again

    async def incrementer(db: mkv.Client, n: int) -> None:
        while not stop.is_set():
            key = rng.choice(load.counters)

            async def incr(key: bytes = key) -> object:
                return await db.increment(key, 1)

            await call(run.counters, f"i{n}", key, "incr", (1,), incr, write=True)

    async with mkv.Client.connect(*seeds) as db, trio.open_nursery() as nursery:
        # What an earlier run on the same cluster left: the history starts
        # from it (a write completed before any call of this run began).
        for history, keys in ((run.registers, load.registers), (run.counters, load.counters)):
            for key in keys:
                item = await db.get_item(key)
                if item is None:
                    continue
                value: object = item.value
                if history is run.counters:
                    value = run.initial[key] = int(item.value)
                token = history.invoke("before", key, "write", (value,))
                history.complete(token, Outcome.OK, None)
        for n in range(load.upserts):
            nursery.start_soon(upserter, db, n)
        for n in range(load.batches):
            nursery.start_soon(batcher, db, n)
        for n in range(load.cas):
            nursery.start_soon(cas_chain, db, n)
        for n in range(load.increments):
            nursery.start_soon(incrementer, db, n)
        began = trio.current_time()
        if fault is not None:
            await trio.sleep(fault_at)
            await fault()
        await trio.sleep_until(began + seconds)
        stop.set()
    return run


# -- a cluster to fail over ---------------------------------------------------------

# Partitions and the key ranges they own; partition i starts on node i.
LAYOUT = (("a", b"", b"h"), ("b", b"h", b"p"), ("c", b"p", b""))


def answered_while_served(run: Run, found: dict[str, list[Interval]]) -> None:
    """Every answer OK (a read, an acknowledged write) left its node while
    that node served the key's partition."""
    outside = [
        answer
        for answer in run.answers
        if covering(found, partition_of(answer.key), answer.answered - ANSWER_SLACK) is None
        and covering(found, partition_of(answer.key), answer.answered) is None
    ]
    assert not outside, (
        f"{len(outside)} answers outside any serving interval, e.g. {outside[:3]}; "
        f"intervals: {[str(i) for each in found.values() for i in each]}"
    )


def partition_of(key: bytes) -> str:
    """Which of ``LAYOUT``'s partitions owns ``key``."""
    for pid, start, end in LAYOUT:
        if start <= key and (not end or key < end):
            return pid
    raise AssertionError(f"no partition owns {key!r}")


@attrs.define
class Cluster:
    """``mkv serve`` nodes in one cluster, logging JSON (their serving
    intervals among it), with ``LAYOUT``'s partitions placed one per node."""

    nodes: list[ServerProcess]
    ids: list[str]
    rpc: Stubs

    @property
    def seeds(self) -> list[str]:
        return [node.data_addr for node in self.nodes]

    def logs(self) -> dict[str, str]:
        return {node_id: node.stderr() for node_id, node in zip(self.ids, self.nodes, strict=True)}

    def serving(self) -> dict[str, list[Interval]]:
        """Every partition's serving intervals, from all the nodes' logs."""
        return intervals(self.logs())

    async def leaders(self) -> dict[str, str]:
        """Partition -> the node leading it, as the first live node sees it."""
        for node in self.nodes:
            if node.process is not None:
                try:
                    infos = await self.rpc.partitions(node)
                except grpc.RpcError:
                    continue
                return {p.id: p.node for p in infos if p.node and p.epoch}
        return {}

    def node(self, node_id: str) -> ServerProcess:
        return self.nodes[self.ids.index(node_id)]

    async def leader_index(self, partition_id: str) -> int:
        """The index in ``nodes`` of the node leading ``partition_id`` now
        (ListPartitions), to aim a fault at whoever leads after a failover."""
        leaders = await self.leaders()
        return self.ids.index(leaders[partition_id])

    async def serves_all(self, *, within: float = 30.0) -> None:
        """Wait until every partition answers a write through a fresh client."""

        async def check() -> bool:
            async with mkv.Client.connect(*self.seeds) as db:
                with trio.move_on_after(5):
                    await db.upsert({start + b"probe": b"1" for _, start, _ in LAYOUT})
                    return True
            return False

        await eventually(check, within=within, what="every partition served")


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    etcd: EtcdProcess,
    stubs: GrpcioStubs,
    *,
    size: int = 3,
    replicas: int = 1,
    inside: tuple[int, Namespace] | None = None,
    extra: Sequence[str] = (),
) -> AsyncIterator[Cluster]:
    """``size`` nodes with ``LAYOUT`` placed on them (partition i on node i
    mod size); killed afterwards.

    Args:
        replicas: each partition's replica count (AddPartition's; 0 the
            cluster's default), its leader node i mod size.
        inside: (i, namespace): node i runs in that network namespace
            (tests/netns.py), reached at its address there, so that
            ``namespace.cut_off`` or ``namespace.isolate`` can cut it from
            etcd, its clients and the other nodes; etcd must then listen
            beyond loopback (``etcd.listen_host``). Every node's control
            plane is then reachable across the veth pair, under one control
            token (``Cluster.rpc`` sends it): a follower inside fetches from
            its leader's control port, and the leader's followers from its.
        extra: more ``mkv serve`` arguments for every node.
    """
    nodes = []
    token: str | None = None
    if inside is not None:
        ns = inside[1]
        token = secrets.token_hex(16)
        token_file = tmp_path / "control-token"
        token_file.write_text(token)
        # Beyond loopback a control plane needs a token; the nodes share
        # it, as in a real cluster (they call each other's with it).
        shared = ("--token-file", str(token_file), "--log-format", "json", *extra)
    for i in range(size):
        if inside is None:
            nodes.append(cluster_node(tmp_path, f"n{i}", etcd, "--log-format", "json", *extra))
            continue
        # Inside: on its veth address, reaching etcd at the host's end.
        # Outside: on the host's end, which the namespace reaches (and the
        # test too, as any local address).
        host = ns.inside_ip if inside[0] == i else ns.host_ip
        nodes.append(
            ServerProcess(
                tmp_path / f"n{i}",
                *("--etcd", f"http://{ns.host_ip}:{etcd.client_port}", "--cluster", "test"),
                *("--lease-ttl", str(LEASE_TTL), "--advertise-addr", host, *shared),
                data_host=host,
                control_host=host,
                prefix=ns.prefix if inside[0] == i else (),
            )
        )
    rpc = Stubs(stubs, token=token)
    async with running(*nodes):
        # Kept in the data directory, written before the node listens.
        ids = [(node.data_dir / "node-id").read_text().strip() for node in nodes]
        await leader_of(rpc, nodes[0], "default")
        with rpc.control(nodes[0]) as control:
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
            for i, (pid, start, end) in enumerate(LAYOUT):
                await call(
                    control.AddPartition,
                    control_pb2.AddPartitionRequest(
                        id=pid, start=start, end=end, node=ids[i % size], replicas=replicas
                    ),
                )
        for i, (pid, _, _) in enumerate(LAYOUT):
            assert await leader_of(rpc, nodes[0], pid) == ids[i % size]
        found = Cluster(nodes, ids, rpc)
        await found.serves_all()
        yield found


@contextlib.asynccontextmanager
async def one_node_in_a_namespace(
    tmp_path: Path,
    etcd: EtcdProcess,
    stubs: GrpcioStubs,
    victim: int,
    *,
    replicas: int = 1,
    extra: Sequence[str] = (),
) -> AsyncIterator[tuple[Cluster, Namespace]]:
    """``cluster`` with node ``victim`` in a fresh network namespace (skips
    the test without root, as tests/netns.py says why)."""
    if (why := netns.available()) is not None:
        pytest.skip(why)
    # Reached from the namespace, at the host's end of its veth pair.
    await etcd.stop()
    etcd.listen_host = "0.0.0.0"
    await etcd.start()
    with netns.namespace() as ns:
        async with cluster(
            tmp_path, etcd, stubs, replicas=replicas, inside=(victim, ns), extra=extra
        ) as c:
            yield c, ns


async def finished(rpc: Stubs, node: ServerProcess, operation_id: str) -> control_pb2.Operation:
    """The operation ``operation_id`` on ``node`` once it is no longer running."""

    async def check() -> control_pb2.Operation | None:
        with rpc.control(node) as control:
            answer = await call(
                control.GetOperation, control_pb2.GetOperationRequest(id=operation_id)
            )
        operation: control_pb2.Operation = answer.operation
        return operation if operation.state != control_pb2.RUNNING else None

    result: control_pb2.Operation = await eventually(check, within=120, what="the operation")
    return result
