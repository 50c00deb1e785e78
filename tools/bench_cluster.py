"""Cluster mode's cost: server CPU per request against single-node mode, same run.

    python tools/bench_cluster.py               # 5 rounds of 6 s runs at concurrency 16
    python tools/bench_cluster.py --smoke       # seconds: for the smoke test

Two ``mkv serve`` processes run side by side for the whole run: one
single-node, one in cluster mode (``--etcd``, one node, its own etcd started
here; the node leads every partition). The same load generators
(tools/bench_worker.py, one ``mkv.Client`` with its session per load process)
drive single-key Get and durable Upsert against each in turn, alternating
which mode goes first from round to round so that drift of a shared machine
falls on both. Each run's figure is the server process's CPU time (user +
system of every thread, from /proc, as tools/bench.py samples it) over the
requests it answered; the report gives each mode's median over the rounds and
cluster over single, against issue 15's budget (routing and leases cost at
most 5%). etcd's own CPU is not counted: it is another process, and what it
does for the node (keepalives every third of the lease) is not per request.

This is a measuring tool: nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import bench_etcd
import trio
from bench import RESULTS_DIR, Pool, Settings, _modes, mkv_server, progress, run_load
from bench_procs import busy_elsewhere
from bench_report import Result

import mkv

_CLUSTER_NODE = re.compile(r"mkv: node (\S+) of cluster (\S+)")
BUDGET = 1.05  # issue 15: routing and leases cost at most 5% more CPU a request
OPS = ("get", "upsert")


def cpu_us_per_op(result: Result) -> float:
    """Server CPU over the measured window, per request answered in it."""
    return result.usage.server_cpu_pct / 100 * result.seconds / max(1, result.ops) * 1e6


def _spec(op: str, address: str, settings: Settings, seed: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"addr": address, "seed": seed, "shared": True, "session": True}
    if op == "get":
        return spec | {"kind": "get", "keyspace": settings.preload}
    return spec | {"kind": "single"}


async def _serving(address: object, within: float = 30.0) -> None:
    """Wait until the cluster node leads its partition: it campaigns and
    commits its epoch-start record after it says it runs, and the preload
    must not race that."""
    with trio.fail_after(within):
        async with mkv.Client.connect(str(address)) as client:
            while True:
                try:
                    await client.get(b"bench-cluster-probe")
                    return
                except (mkv.BadNodeError, mkv.UnavailableError):
                    await trio.sleep(0.1)


def run(settings: Settings, rounds: int, concurrency: int, scratch: Path) -> dict[str, Any]:
    binary, version = bench_etcd.find()
    if binary is None:
        raise SystemExit(f"bench_cluster: {version}")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: {op: [] for op in OPS} for mode in ("single", "cluster")
    }
    pool = Pool(settings.clients)
    try:
        with bench_etcd.etcd_server(binary, scratch) as (_, etcd_address):
            cluster_settings = attrs.evolve(
                settings,
                server_args=(
                    *settings.server_args,
                    *("--etcd", f"http://{etcd_address}", "--cluster", "bench"),
                    *("--advertise-addr", "127.0.0.1"),
                ),
            )
            with (
                mkv_server(settings, scratch, "single") as single,
                mkv_server(cluster_settings, scratch, "cluster") as cluster,
            ):
                servers = {"single": single, "cluster": cluster}
                # Said after the listening line; proves the node runs in cluster mode.
                node_id, cluster_name = cluster[0].wait_for(_CLUSTER_NODE, timeout=30).groups()
                trio.run(_serving, cluster[1])
                for mode, (_, address) in servers.items():
                    progress(f"preloading {settings.preload:,} keys into the {mode} node")
                    pool.preload(address, settings.preload)
                step = 0
                for number in range(rounds):
                    # Alternate which mode goes first, so a trend of the machine
                    # (a neighbour starting a test run) falls on both.
                    order = ("single", "cluster") if number % 2 == 0 else ("cluster", "single")
                    for op in OPS:
                        for mode in order:
                            step += 1
                            server, address = servers[mode]
                            progress(f"[{step}/{rounds * 4}] round {number + 1}: {mode} {op}")
                            spec = _spec(op, address, settings, seed=1000 * number + step)
                            result = run_load(pool, op, spec, concurrency, settings, server)
                            per_op = cpu_us_per_op(result)
                            progress(
                                f"   {result.throughput:,.0f} ops/s, server CPU "
                                f"{result.usage.server_cpu_pct:.0f}%, {per_op:.0f} us/request"
                                + (
                                    f", {result.errors} errors: {result.first_error}"
                                    if result.errors
                                    else ""
                                )
                            )
                            runs[mode][op].append(attrs.asdict(result) | {"cpu_us_per_op": per_op})
    finally:
        pool.close()
    summary = {}
    for op in OPS:
        single = statistics.median(r["cpu_us_per_op"] for r in runs["single"][op])
        cluster = statistics.median(r["cpu_us_per_op"] for r in runs["cluster"][op])
        ratio = cluster / single
        summary[op] = {
            "single_cpu_us_per_op": single,
            "cluster_cpu_us_per_op": cluster,
            "ratio": ratio,
            "single_ops_s": statistics.median(r["throughput"] for r in runs["single"][op]),
            "cluster_ops_s": statistics.median(r["throughput"] for r in runs["cluster"][op]),
            "errors": sum(r["errors"] for m in runs.values() for r in m[op]),
            "met": ratio <= BUDGET,
        }
    return {
        "etcd": {"binary": str(binary), "version": version},
        "cluster_node": {"id": node_id, "cluster": cluster_name},
        "summary": summary,
        "runs": runs,
    }


def table(summary: dict[str, Any], concurrency: int) -> str:
    rows = [("op", "conc", "single us/req", "cluster us/req", "cluster/single", "ops/s s|c", "")]
    for op, s in summary.items():
        rows.append(
            (
                op,
                str(concurrency),
                f"{s['single_cpu_us_per_op']:.0f}",
                f"{s['cluster_cpu_us_per_op']:.0f}",
                f"{s['ratio']:.3f}",
                f"{s['single_ops_s']:,.0f} | {s['cluster_ops_s']:,.0f}",
                f"<= {BUDGET:.2f}: " + ("met" if s["met"] else "MISSED"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds: for the smoke test")
    parser.add_argument("--rounds", type=int, help="rounds of both modes (default 5; smoke 1)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 6)")
    parser.add_argument("--preload", type=int, help="keys the Gets read (default 20,000)")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    base = _modes()["smoke" if args.smoke else "full"]
    settings = attrs.evolve(
        base,
        duration=args.duration or (base.duration if args.smoke else 6.0),
        warmup=base.warmup if args.smoke else 1.0,
        preload=args.preload or (base.preload if args.smoke else 20_000),
    )
    rounds = args.rounds or (1 if args.smoke else 5)
    concurrency = 4 if args.smoke and args.concurrency == 16 else args.concurrency
    started = datetime.now()
    begin = time.monotonic()
    busy_before = busy_elsewhere(0.5)
    if busy_before > 20:
        progress(f"warning: other processes use {busy_before:.0f}% CPU; expect noise")
    with tempfile.TemporaryDirectory(prefix="mkv-bench-cluster-") as scratch:
        results = run(settings, rounds, concurrency, Path(scratch))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": time.monotonic() - begin,
        "rounds": rounds,
        "concurrency": concurrency,
        "settings": attrs.asdict(settings),
        "budget": BUDGET,
        "host": {"cpus": len(os.sched_getaffinity(0)), "busy_before_pct": busy_before},
        **results,
    }
    path = args.json or RESULTS_DIR / f"cluster-{started:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["summary"], concurrency))
    progress(f"done in {report['seconds']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
