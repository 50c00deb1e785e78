"""mkv's benchmark suite: throughput and latency of a real server, next to its ceilings.

    python tools/bench.py              # full: ~8 s a run, 1M preloaded keys
    python tools/bench.py --quick      # CI-sized, well under a minute
    python tools/bench.py --only get mix --duration 3

A real ``mkv serve`` process runs on a fresh data directory per workload group
and is driven over loopback by separate load-generator processes
(tools/bench_worker.py, Trio, one connection per concurrent client). Two
ceilings are measured in the same run: the same 1 MiB batches through bare
in-process sqlite3 (storage), and a purerpc echo server driven by the same
load generators at the same concurrency (transport). Results go to stdout as a
table and to bench-results/<timestamp>.json; progress goes to stderr.

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
from bench_procs import Child, Sampler, Usage, busy_elsewhere, watch
from bench_report import BASELINES, CEILING, WORKLOADS, Result, compute_ratios, percentiles, table
from bench_worker import BATCH_ENTRIES, batch_pairs, bench_value

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


def _modes() -> dict[str, Settings]:
    full = {
        "batch-upsert": (1, 4),
        "single-upsert": (1, 16, 64),
        "get": (1, 16, 64),
        "get-zipf": (16,),
        "mix": (16,),
    }
    smoke = {
        "batch-upsert": (1,),
        "single-upsert": (1, 4),
        "get": (1, 4),
        "get-zipf": (4,),
        "mix": (4,),
    }
    return {
        "full": Settings("full", duration=8.0, warmup=2.0, preload=1_000_000, concurrency=full),
        "quick": Settings("quick", duration=1.5, warmup=0.5, preload=20_000, concurrency=full),
        "smoke": Settings("smoke", duration=0.3, warmup=0.1, preload=2_000, concurrency=smoke),
    }


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- servers and load generators ------------------------------------------------


@contextmanager
def mkv_server(
    settings: Settings, scratch: Path, name: str, pipeline: str | None = None
) -> Iterator[tuple[Child, str]]:
    """``mkv serve`` on a fresh data directory, stopped and deleted afterwards.

    Args:
        pipeline: the default partition's pipeline; None for ``settings.pipeline``.
    """
    pipeline = pipeline if pipeline is not None else settings.pipeline
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    with open(scratch / f"{name}-stderr.log", "wb") as log:
        server = Child(
            "mkv serve",
            [
                *(sys.executable, "-m", "mkv.cli.server", "serve", "--data-dir", str(data_dir)),
                *("--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"),
                *("--default-store", settings.store, "--log-level", "WARNING"),
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


def sqlite_baseline(settings: Settings, scratch: Path) -> Result:
    """mkv's batches straight into SQLite, configured as mkv's store is.

    Only the transactions are timed (throughput is keys over the summed time
    of the transactions): this is what the disk and SQLite allow when a batch
    is ready the moment the previous one commits.
    """
    conn = sqlite3.connect(scratch / "baseline.sqlite3", isolation_level=None)
    try:
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
        name="sqlite",
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


# -- the plan ---------------------------------------------------------------------


def run_suite(settings: Settings, only: set[str], scratch: Path) -> dict[str, Any]:
    results: list[Result] = []
    conc = {w: c for w, c in settings.concurrency.items() if w in only}
    echo_conc = sorted({c for w, cs in conc.items() if CEILING[w] == "echo" for c in cs})
    if not echo_conc and only & {"echo", "rpc-echo"}:
        echo_conc = sorted({c for w in WORKLOADS[1:] for c in settings.concurrency[w]})
    echoes = [e for e in ("echo", "rpc-echo") if e in only or conc.keys() - {"batch-upsert"}]
    runs = sum(map(len, conc.values())) + len(echo_conc) * len(echoes)
    runs += "batch-upsert" in conc or "sqlite" in only
    runs += len(conc.get("single-upsert", ()))  # the fsync-each baseline
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

    def announce(name: str, concurrency: int) -> None:
        progress(f"[{next(step)}/{runs}] {name} c={concurrency}")

    if "batch-upsert" in conc or "sqlite" in only:
        announce("sqlite baseline", 1)
        report(sqlite_baseline(settings, scratch))

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
        reads = [w for w in ("get", "get-zipf", "mix") if w in conc]
        if reads:
            with mkv_server(settings, scratch, "reads") as (server, address):
                progress(f"preloading {settings.preload:,} keys")
                preload_seconds = pool.preload(address, settings.preload)
                progress(f"   preloaded in {preload_seconds:.1f} s")
                # mix runs last: it is the only one that rewrites preloaded keys.
                for name in reads:
                    for c in conc[name]:
                        announce(name, c)
                        spec = {
                            "kind": "mix" if name == "mix" else "get",
                            "zipf": name == "get-zipf",
                            "addr": address,
                            "seed": c,
                            "keyspace": settings.preload,
                        }
                        report(run_load(pool, name, spec, c, settings, server))
    finally:
        pool.close()
    compute_ratios(results)
    return {
        "preload": {"keys": settings.preload, "seconds": preload_seconds},
        "results": [attrs.asdict(r) for r in results],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI-sized: short runs, 20k keys")
    size.add_argument("--smoke", action="store_true", help="smallest: for the smoke test")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS + BASELINES,
        metavar="WORKLOAD",
        help=f"run only these (ceilings they need still run): {', '.join(WORKLOADS + BASELINES)}",
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
    }
    settings = attrs.evolve(settings, **{k: v for k, v in overrides.items() if v is not None})
    only = set(args.only or WORKLOADS + BASELINES)
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
    progress(f"done in {report['seconds']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
