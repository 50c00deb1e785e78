"""Load generator for tools/bench.py: one process, Trio, its own connections.

The orchestrator (tools/bench.py) starts a few of these and talks to each over
stdin/stdout, one JSON object a line:

    orchestrator → worker   {"cmd": "job", ...spec}      open connections
    worker → orchestrator   {"event": "ready"}
    orchestrator → worker   {"cmd": "go", "t0": T, "t1": T}
    worker → orchestrator   {"event": "result", ...}     latencies of ops ending in [t0, t1]
    orchestrator → worker   {"cmd": "exit"} (or EOF)

A preload job answers its result without the ready/go exchange. Times are
``time.monotonic()``, which on Linux is one clock for every process, so the
orchestrator can give all workers the same measurement window.

Each concurrent "client" is a task with a connection of its own, as separate
application processes would have; ops run back to back (a closed loop), so
concurrency is the number of requests in flight.

Jobs whose kind starts with ``grpc-`` run on asyncio with grpc.aio (grpcio's
C-core client), not on Trio: etcd's put and linearizable get, and mkv's
unary Upsert and Get, through one client library, so that mkv and etcd are
compared with the same client cost. All tasks of a process share one grpc.aio
channel (one HTTP/2 connection), as an application holds one.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

import mkv
from mkv.client.channel import Channel, open_channel
from mkv.errors import MkvError
from mkv.etcd.pb import rpc_pb2 as etcd_pb
from mkv.v1 import data_pb2 as pb
from mkv.wire import MAX_REQUEST_BYTES

ECHO_SERVICE = "mkvbench.Echo"
KEY_BYTES = 16
VALUE_BYTES = 100
# Protobuf size of one Entry inside an UpsertRequest: tag and length byte
# around (key field: tag, length, 16 bytes) + (value field: tag, length, 100 bytes).
ENTRY_WIRE_BYTES = 2 + (2 + KEY_BYTES) + (2 + VALUE_BYTES)
# As many entries as fit in one request of mkv.wire.MAX_REQUEST_BYTES (1 MiB),
# so that one client.upsert call is exactly one Upsert request.
BATCH_ENTRIES = MAX_REQUEST_BYTES // ENTRY_WIRE_BYTES

Op = Callable[[], Awaitable[int]]


def preload_key(i: int) -> bytes:
    """Key number ``i`` of the preloaded keyspace that Get and mix read."""
    return b"g" + i.to_bytes(KEY_BYTES - 1, "big")


def state_key(i: int) -> bytes:
    """Key number ``i`` of a state built on disk by tools/bench_data.py (restart,
    RSS): ASCII digits, so that SQLite can make it in SQL."""
    return b"r" + b"%0*d" % (KEY_BYTES - 1, i)


def fresh_keys(tag: bytes, task: int, start: int, count: int) -> list[bytes]:
    """``count`` keys never written before by this run: tag, task number, counter.

    A counter per task makes each task append at its own spot of the B-tree,
    much as independent writers with time-ordered keys would.
    """
    prefix = tag + task.to_bytes(3, "big")
    width = KEY_BYTES - len(prefix)
    return [prefix + n.to_bytes(width, "big") for n in range(start, start + count)]


def batch_pairs(task: int, number: int, entries: int, value: bytes) -> list[tuple[bytes, bytes]]:
    """Batch ``number`` of task ``task``: the same bytes for mkv and the SQLite baseline."""
    keys = fresh_keys(b"b", task, number * entries, entries)
    return [(k, value) for k in keys]


def bench_value(seed: int) -> bytes:
    return random.Random(seed).randbytes(VALUE_BYTES)


class Zipfian:
    """Ranks 0..n-1 drawn Zipf-like with exponent ``theta``, hot ranks scattered.

    The generator of YCSB (Gray et al., "Quickly generating billion-record
    synthetic databases", 1994): O(n) set-up, O(1) per draw. Ranks are
    multiplied by a large prime modulo n so that the hot keys are spread over
    the table rather than all in its first pages.
    """

    _SCATTER = 2_654_435_761  # prime, so coprime with any n it does not divide

    def __init__(self, n: int, theta: float = 0.99, rng: random.Random | None = None) -> None:
        self.n = n
        self.theta = theta
        self.rng = rng or random.Random()
        self.zetan = math.fsum(i**-theta for i in range(1, n + 1))
        zeta2 = 1 + 0.5**theta
        self.alpha = 1 / (1 - theta)
        self.eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / self.zetan)
        self.scatter = self._SCATTER if n % self._SCATTER else 1

    def rank(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1:
            return 0
        if uz < 1 + 0.5**self.theta:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1) ** self.alpha))

    def __call__(self) -> int:
        return (self.rank() * self.scatter) % self.n


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _read_command() -> dict[str, Any]:
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        raise SystemExit(0)  # the orchestrator is gone
    command: dict[str, Any] = json.loads(line)
    return command


def _nothing() -> None:
    pass


def _make_op(
    spec: dict[str, Any], task: int, conn: mkv.Client | Channel
) -> tuple[Op, Callable[[], None]]:
    """The operation one task repeats (it returns how many keys it carried),
    and what to do before each one, untimed."""
    kind: str = spec["kind"]
    rng = random.Random(spec["seed"] * 1_000_003 + task)
    value = bench_value(task)
    keyspace: int = spec.get("keyspace", 0)

    if kind == "echo":
        assert isinstance(conn, Channel)
        channel = conn

        async def echo() -> int:
            key = preload_key(rng.randrange(keyspace))
            await channel.unary(ECHO_SERVICE, "Get", pb.GetRequest(key=key), pb.GetResponse)
            return 1

        return echo, _nothing

    assert isinstance(conn, mkv.Client)
    client = conn
    if kind == "batch":
        entries: int = spec["batch_entries"]
        counter = iter(range(1 << 40))
        # The next batch is built by ``prepare``, outside the timed call: the
        # load generator's own work is not part of a request's latency (the
        # client's encoding of it is).
        pending: list[tuple[bytes, bytes]] = []

        def prepare() -> None:
            if not pending:
                pending.extend(batch_pairs(task, next(counter), entries, value))

        async def batch() -> int:
            acks = await client.upsert(pending)
            if len(acks) != 1:
                raise RuntimeError(f"a batch went out as {len(acks)} requests, not one")
            count = len(pending)
            pending.clear()
            return count

        return batch, prepare
    if kind == "single":
        numbers = iter(range(1 << 40))

        async def single() -> int:
            (key,) = fresh_keys(b"s", task, next(numbers), 1)
            await client.upsert([(key, value)])
            return 1

        return single, _nothing
    if kind == "spread":
        # Keys drawn uniformly from the whole key space: spread evenly over
        # partitions cut at even prefixes (tools/bench_data.spread_ranges).
        async def spread() -> int:
            await client.upsert([(rng.randbytes(KEY_BYTES), value)])
            return 1

        return spread, _nothing
    key_of = state_key if spec.get("key_format") == "state" else preload_key
    draw: Callable[[], int] = (
        Zipfian(keyspace, rng=rng) if spec.get("zipf") else lambda: rng.randrange(keyspace)
    )
    if kind == "get":

        async def get() -> int:
            if await client.get(key_of(draw())) is None:
                raise RuntimeError("a preloaded key is missing")
            return 1

        return get, _nothing
    if kind == "mix":

        async def mix() -> int:
            key = key_of(draw())
            if rng.random() < 0.5:
                await client.get(key)
            else:
                await client.upsert([(key, value)])
            return 1

        return mix, _nothing
    raise ValueError(f"unknown job kind {kind!r}")


async def _timed_job(spec: dict[str, Any]) -> dict[str, Any]:
    tasks: list[int] = spec["tasks"]
    latencies: list[float] = []
    totals = {"ops": 0, "keys": 0, "errors": 0, "end": 0.0}
    first_error: list[str] = []
    async with AsyncExitStack() as stack:
        conns: list[mkv.Client | Channel] = []
        session: bool = spec.get("session", True)
        if spec.get("shared"):
            # One client for all of this process's tasks, as an application
            # holds one: their calls share its connection (and its session).
            shared = await stack.enter_async_context(
                mkv.Client.connect(spec["addr"], session=session)
            )
            conns = [shared] * len(tasks)
        elif spec["kind"] == "echo":
            for _ in tasks:
                conns.append(await stack.enter_async_context(open_channel(spec["addr"])))
        else:
            for _ in tasks:
                client = mkv.Client.connect(spec["addr"], session=session)
                conns.append(await stack.enter_async_context(client))
        ops = [_make_op(spec, task, conn) for task, conn in zip(tasks, conns, strict=True)]
        _emit({"event": "ready"})
        go = await _read_command()
        if go["cmd"] != "go":
            raise SystemExit(0)  # the orchestrator gave up on this run
        t0: float = go["t0"]
        t1: float = go["t1"]

        async def loop(op: Op, prepare: Callable[[], None]) -> None:
            measured = 0
            while True:
                prepare()
                start = time.monotonic()
                try:
                    keys = await op()
                except (MkvError, RuntimeError) as exc:
                    totals["errors"] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                    await trio.sleep(0.01)  # a failing server must not become a busy loop
                    keys = 0
                end = time.monotonic()
                # A task keeps going past t1 until it has one measured op, so a
                # window shorter than one op (the smoke test's) still measures.
                if end > t1 and measured:
                    return
                if keys and end >= t0:
                    measured += 1
                    latencies.append(end - start)
                    totals["ops"] += 1
                    totals["keys"] += keys
                    totals["end"] = max(totals["end"], end)

        async with trio.open_nursery() as nursery:
            for op, prepare in ops:
                nursery.start_soon(loop, op, prepare)
    return {
        "event": "result",
        "latencies_us": [round(x * 1e6) for x in latencies],
        "ops": totals["ops"],
        "keys": totals["keys"],
        "errors": totals["errors"],
        "first_error": first_error[0] if first_error else None,
        "end": max(totals["end"], t1),
    }


async def _preload(spec: dict[str, Any]) -> dict[str, Any]:
    """Write preload keys [lo, hi) in full batches, ``spec["tasks"]`` at a time."""
    lo: int = spec["lo"]
    hi: int = spec["hi"]
    entries: int = spec["batch_entries"]
    value = bench_value(0)
    starts = iter(range(lo, hi, entries))

    async def load(client: mkv.Client) -> None:
        for start in starts:  # shared iterator: the tasks take turns
            keys = [preload_key(i) for i in range(start, min(start + entries, hi))]
            await client.upsert([(k, value) for k in keys])

    async with AsyncExitStack() as stack:
        # Connections first: each holds a nursery, which must close after ours.
        clients = [
            await stack.enter_async_context(mkv.Client.connect(spec["addr"]))
            for _ in range(spec["tasks"])
        ]
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(load, client)
    return {"event": "result", "keys": hi - lo}


async def _first_get(spec: dict[str, Any]) -> dict[str, Any]:
    """Get ``spec["key"]`` (hex) until it is found; say when (monotonic) and
    after how many attempts. A node still starting may refuse or stall a call."""
    key = bytes.fromhex(spec["key"])
    attempts = 0
    with trio.fail_after(spec.get("timeout", 300)):
        while True:
            attempts += 1
            try:
                with trio.move_on_after(5):
                    async with mkv.Client.connect(spec["addr"]) as client:
                        if await client.get(key) is not None:
                            return {
                                "event": "result",
                                "end": time.monotonic(),
                                "attempts": attempts,
                            }
            except (MkvError, OSError):
                pass
            await trio.sleep(0.005)


# -- grpc.aio jobs: etcd and mkv's unary methods through the same client ---------

# Method paths as the protos name them (etcd's rpc.proto, mkv's data.proto):
# (path, request type, response type). A generated stub's method is this same
# callable; building it by path spares a protoc run in every load generator.
_GRPC_METHODS: dict[str, tuple[str, Any, Any]] = {
    "etcd-put": ("/etcdserverpb.KV/Put", etcd_pb.PutRequest, etcd_pb.PutResponse),
    "etcd-get": ("/etcdserverpb.KV/Range", etcd_pb.RangeRequest, etcd_pb.RangeResponse),
    "mkv-upsert": ("/mkv.v1.DataPlane/Upsert", pb.UpsertRequest, pb.UpsertResponse),
    "mkv-get": ("/mkv.v1.DataPlane/Get", pb.GetRequest, pb.GetResponse),
}
_GRPC_TIMEOUT = 30.0


def _grpc_request(kind: str, key: bytes, value: bytes) -> Any:
    if kind == "etcd-put":
        return etcd_pb.PutRequest(key=key, value=value)
    if kind == "etcd-get":
        # serializable=False: a linearizable read, through etcd's read index.
        return etcd_pb.RangeRequest(key=key, serializable=False)
    if kind == "mkv-upsert":
        return pb.UpsertRequest(entries=[pb.Entry(key=key, value=value)])
    return pb.GetRequest(key=key)


def _grpc_check(kind: str, response: Any) -> None:
    """Raises RuntimeError when the answer is not the success the op expects."""
    if kind == "etcd-get" and not response.kvs:
        raise RuntimeError("a preloaded etcd key is missing")
    if kind.startswith("mkv-") and response.status != pb.OK:
        raise RuntimeError(f"mkv answered status {response.status}")
    if kind == "mkv-get" and not response.found:
        raise RuntimeError("a preloaded key is missing")


async def _grpc_job(spec: dict[str, Any]) -> dict[str, Any]:
    """A timed job (kinds ``grpc-etcd-put``, ``grpc-etcd-get``, ``grpc-mkv-upsert``,
    ``grpc-mkv-get``) or ``grpc-etcd-preload``: as ``_timed_job``, on grpc.aio."""
    import grpc  # here: only these jobs need grpcio

    kind = spec["kind"].removeprefix("grpc-")
    preload = kind == "etcd-preload"
    path, request_type, response_type = _GRPC_METHODS["etcd-put" if preload else kind]
    async with grpc.aio.insecure_channel(spec["addr"]) as channel:
        method = channel.unary_unary(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        await channel.channel_ready()
        if preload:
            return await _grpc_preload(spec, method)
        tasks: list[int] = spec["tasks"]
        keyspace: int = spec.get("keyspace", 0)
        latencies: list[float] = []
        totals = {"ops": 0, "errors": 0, "end": 0.0}
        first_error: list[str] = []
        _emit({"event": "ready"})
        go = json.loads(await asyncio.to_thread(sys.stdin.readline) or '{"cmd": "exit"}')
        if go["cmd"] != "go":
            raise SystemExit(0)
        t0: float = go["t0"]
        t1: float = go["t1"]

        async def loop(task: int) -> None:
            rng = random.Random(spec["seed"] * 1_000_003 + task)
            value = bench_value(task)
            numbers = iter(range(1 << 40))
            measured = 0
            while True:
                if kind in ("etcd-put", "mkv-upsert"):
                    # Not "s": the session and unary upserts on the same server use it.
                    (key,) = fresh_keys(b"q", task, next(numbers), 1)
                else:
                    key = preload_key(rng.randrange(keyspace))
                request = _grpc_request(kind, key, value)
                start = time.monotonic()
                ok = True
                try:
                    _grpc_check(kind, await method(request, timeout=_GRPC_TIMEOUT))
                except (grpc.RpcError, RuntimeError) as exc:
                    ok = False
                    totals["errors"] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.01)
                end = time.monotonic()
                if end > t1 and measured:
                    return
                if ok and end >= t0:
                    measured += 1
                    latencies.append(end - start)
                    totals["ops"] += 1
                    totals["end"] = max(totals["end"], end)

        await asyncio.gather(*(loop(task) for task in tasks))
    return {
        "event": "result",
        "latencies_us": [round(x * 1e6) for x in latencies],
        "ops": totals["ops"],
        "keys": totals["ops"],
        "errors": totals["errors"],
        "first_error": first_error[0] if first_error else None,
        "end": max(totals["end"], t1),
    }


async def _grpc_preload(spec: dict[str, Any], put: Any) -> dict[str, Any]:
    """Put etcd keys [lo, hi) (the Get keyspace), 64 at a time."""
    value = bench_value(0)
    numbers = iter(range(spec["lo"], spec["hi"]))

    async def load() -> None:
        for i in numbers:  # shared iterator: the tasks take turns
            await put(etcd_pb.PutRequest(key=preload_key(i), value=value), timeout=_GRPC_TIMEOUT)

    await asyncio.gather(*(load() for _ in range(64)))
    return {"event": "result", "keys": spec["hi"] - spec["lo"]}


def main() -> None:
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        command = json.loads(line)
        if command["cmd"] == "exit":
            return
        if command["kind"].startswith("grpc-"):
            _emit(asyncio.run(_grpc_job(command)))
            continue
        jobs = {"preload": _preload, "first-get": _first_get}
        job = jobs.get(command["kind"], _timed_job)
        _emit(trio.run(job, command))


if __name__ == "__main__":
    main()
