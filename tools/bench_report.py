"""Results of tools/bench.py: records, percentiles, ratios to the ceilings, the table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from bench_procs import Usage

WORKLOADS = ("batch-upsert", "single-upsert", "get", "get-zipf", "mix")
BASELINES = ("sqlite", "echo", "rpc-echo", "fsync-each")
# What each workload's figure is divided by: the storage ceiling for batches,
# the purerpc echo for single calls (and, as a second figure, the echo through
# mkv's own RPC layer).
CEILING = {"batch-upsert": "sqlite"} | {w: "echo" for w in WORKLOADS[1:]}


@attrs.define
class Result:
    name: str
    kind: str  # "workload" or "baseline"
    concurrency: int
    unit: str  # "keys/s" or "ops/s"
    throughput: float
    ops: int
    keys: int
    seconds: float
    latency_ms: dict[str, float]
    usage: Usage
    errors: int = 0
    first_error: str | None = None
    baseline: str | None = None
    ratio: float | None = None
    # Over the echo through mkv.rpc.RpcServer at the same concurrency: what
    # routing, the partition task and the store cost, gRPC aside.
    rpc_ratio: float | None = None
    # Single upserts only: over the same load with one fsync per request
    # (wal:always,group=off): what group commit buys.
    group_commit_ratio: float | None = None


def percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/p99.9 (nearest rank), mean and max, in milliseconds."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "mean": 0.0, "max": 0.0}

    def rank(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    mean = 1000 * sum(ordered) / len(ordered)
    return {"p50": rank(0.50), "p99": rank(0.99), "p999": rank(0.999), "mean": mean, "max": rank(1)}


def compute_ratios(results: list[Result]) -> None:
    """Each workload's figure over its ceilings' (echoes at the same concurrency)."""
    sqlite = next((r for r in results if r.name == "sqlite"), None)
    echo = {r.concurrency: r for r in results if r.name == "echo"}
    rpc_echo = {r.concurrency: r for r in results if r.name == "rpc-echo"}
    fsync_each = {r.concurrency: r for r in results if r.name == "fsync-each"}
    for r in results:
        if r.kind != "workload":
            continue
        ceiling = sqlite if CEILING[r.name] == "sqlite" else echo.get(r.concurrency)
        if ceiling is not None and ceiling.throughput > 0:
            r.baseline = ceiling.name if ceiling.name == "sqlite" else f"echo c={r.concurrency}"
            r.ratio = r.throughput / ceiling.throughput
        rpc = rpc_echo.get(r.concurrency) if CEILING[r.name] == "echo" else None
        if rpc is not None and rpc.throughput > 0:
            r.rpc_ratio = r.throughput / rpc.throughput
        each = fsync_each.get(r.concurrency) if r.name == "single-upsert" else None
        if each is not None and each.throughput > 0:
            r.group_commit_ratio = r.throughput / each.throughput


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        "workload",
        "conc",
        "throughput",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "srv CPU%",
        "srv RSS MB",
        "cli CPU%",
        "other CPU%",
        "vs ceiling",
        "vs rpc-echo",
        "vs fsync-each",
    )
    rows = [header]
    for r in results:
        lat, use = r["latency_ms"], r["usage"]
        ratio = f"{r['ratio']:.2f} x {r['baseline']}" if r["ratio"] is not None else ""
        if r["errors"]:
            ratio += f" ({r['errors']} errors)"
        rows.append(
            (
                r["name"] + (" (ceiling)" if r["kind"] == "baseline" else ""),
                str(r["concurrency"]),
                f"{r['throughput']:,.0f} {r['unit']}",
                f"{lat['p50']:.2f}",
                f"{lat['p99']:.2f}",
                f"{lat['p999']:.2f}",
                f"{use['server_cpu_pct']:.0f}",
                f"{use['server_rss_mb']:.0f}",
                f"{use['client_cpu_pct']:.0f}",
                f"{use['other_cpu_pct']:.0f}",
                ratio,
                f"{r['rpc_ratio']:.2f}" if r["rpc_ratio"] is not None else "",
                f"{r['group_commit_ratio']:.2f}" if r.get("group_commit_ratio") else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    # Text columns to the left, numbers to the right.
    left = {0, len(header) - 3}
    lines = [
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
