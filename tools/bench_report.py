"""Results of tools/bench.py: records, percentiles, ratios to the ceilings, the table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from bench_procs import Usage

WORKLOADS = (
    "batch-upsert",
    "single-upsert",
    "get",
    "get-zipf",
    "mix",
    "partitions",
    "session-upsert",
    "session-get",
    "grpcio-upsert",
    "grpcio-get",
)
BASELINES = (
    "sqlite",
    "sqlite-tuned",
    "echo",
    "rpc-echo",
    "fsync-each",
    "one-partition",
    "unary-upsert",
    "unary-get",
    "etcd-put",
    "etcd-get",
)
# Measured once each, not as a load: memory and start-up (see tools/bench.py).
FIGURES = ("memory-rss", "sqlite-rss", "restart", "replay")
# What each workload's figure is divided by: the storage ceiling for batches,
# the purerpc echo for single calls (and, as a second figure, the echo through
# mkv's own RPC layer); 64 partitions against one under the same load.
# The session workloads (one mkv.Client shared by a load process's tasks,
# its calls on one DataPlane.Session) over the same client with session=False.
# mkv's Upsert and Get called through grpc.aio (grpcio-*) are over etcd's put
# and linearizable get through the same client, same run.
CEILING = {
    "batch-upsert": "sqlite",
    "partitions": "one-partition",
    "session-upsert": "unary-upsert",
    "session-get": "unary-get",
    "grpcio-upsert": "etcd-put",
    "grpcio-get": "etcd-get",
} | {w: "echo" for w in ("single-upsert", "get", "get-zipf", "mix")}
# mkv against etcd in the same run (issue 17): each of these is also divided
# by this etcd figure at the same concurrency (throughput, p50 and p99).
VERSUS_ETCD = {
    "session-upsert": "etcd-put",
    "session-get": "etcd-get",
    "grpcio-upsert": "etcd-put",
    "grpcio-get": "etcd-get",
}
# Issue 17's targets against etcd, through mkv.Client (session):
# (workload, concurrency) → (least throughput ratio or None, most p50 ratio
# or None, most own p99/p50 or None).
ETCD_TARGETS: dict[tuple[str, int], tuple[float | None, float | None, float | None]] = {
    ("session-upsert", 64): (1.0, None, None),
    ("session-upsert", 16): (0.8, None, None),
    ("session-get", 64): (1.0, None, 3.0),
    ("session-get", 1): (None, 1.5, None),
}
# Issue 7's targets: workload → (concurrency or None for any, least ratio to
# the ceiling, most p99/p50 or None).
TARGETS: dict[str, tuple[int | None, float, float | None]] = {
    "batch-upsert": (None, 0.5, None),
    "get": (16, 0.8, 3.0),
    "single-upsert": (64, 0.6, None),
    "partitions": (None, 0.9, None),
}


def target_of(name: str, concurrency: int) -> tuple[float, float | None] | None:
    """The (ratio, p99/p50) target of a workload at a concurrency, if it has one."""
    target = TARGETS.get(name)
    if target is None or target[0] not in (None, concurrency):
        return None
    return target[1], target[2]


@attrs.define
class Figure:
    """A figure measured once, with its target: memory, restart and replay."""

    name: str
    value: float
    unit: str
    target: str  # said for a person, e.g. "<= 300 MB at 1M keys"
    met: bool | None  # None: the run was too small to tell
    detail: dict[str, Any] = attrs.Factory(dict)


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
    # Over the echo through mkv.rpc.server.RpcServer at the same concurrency: what
    # routing, the partition task and the store cost, gRPC aside.
    rpc_ratio: float | None = None
    # Single upserts only: over the same load with one fsync per request
    # (wal:always,group=off): what group commit buys.
    group_commit_ratio: float | None = None
    # Batched upserts only: over SQLite driven as mkv's store drives it
    # (16 KiB pages, many rows a statement), a ceiling mkv cannot beat.
    tuned_ratio: float | None = None
    # Over etcd's put or linearizable get at the same concurrency, same run
    # (VERSUS_ETCD): throughput, and p50 and p99 latency (mkv's over etcd's:
    # below 1 is faster).
    etcd_ratio: float | None = None
    etcd_p50_ratio: float | None = None
    etcd_p99_ratio: float | None = None
    # Issue 7's target for this figure (issue 17's against etcd for the
    # session workloads), and whether this run met it.
    target: str | None = None
    met: bool | None = None


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
    tuned = next((r for r in results if r.name == "sqlite-tuned"), None)
    rpc_echo = {r.concurrency: r for r in results if r.name == "rpc-echo"}
    fsync_each = {r.concurrency: r for r in results if r.name == "fsync-each"}
    runs = {(r.name, r.concurrency): r for r in results}
    for r in results:
        if r.kind != "workload":
            continue
        name = CEILING[r.name]
        ceiling = sqlite if name == "sqlite" else runs.get((name, r.concurrency))
        if ceiling is not None and ceiling.throughput > 0:
            r.baseline = (
                f"{ceiling.name} c={r.concurrency}" if ceiling.name != "sqlite" else "sqlite"
            )
            r.ratio = r.throughput / ceiling.throughput
        target = target_of(r.name, r.concurrency)
        if target is not None:
            ratio, spread = target
            r.target = f">= {ratio:.2f}x" + (f", p99 <= {spread:.0f}x p50" if spread else "")
            if r.ratio is not None:
                p50, p99 = r.latency_ms["p50"], r.latency_ms["p99"]
                r.met = r.ratio >= ratio and (spread is None or p99 <= spread * p50)
        rpc = rpc_echo.get(r.concurrency) if CEILING[r.name] == "echo" else None
        if rpc is not None and rpc.throughput > 0:
            r.rpc_ratio = r.throughput / rpc.throughput
        if r.name == "batch-upsert" and tuned is not None and tuned.throughput > 0:
            r.tuned_ratio = r.throughput / tuned.throughput
        each = fsync_each.get(r.concurrency) if r.name == "single-upsert" else None
        if each is not None and each.throughput > 0:
            r.group_commit_ratio = r.throughput / each.throughput
        etcd = runs.get((VERSUS_ETCD.get(r.name, ""), r.concurrency))
        if etcd is not None and etcd.throughput > 0:
            r.etcd_ratio = r.throughput / etcd.throughput
            if etcd.latency_ms["p50"] > 0 and etcd.latency_ms["p99"] > 0:
                r.etcd_p50_ratio = r.latency_ms["p50"] / etcd.latency_ms["p50"]
                r.etcd_p99_ratio = r.latency_ms["p99"] / etcd.latency_ms["p99"]
        _etcd_target(r)


def _etcd_target(r: Result) -> None:
    """Issue 17's target against etcd, for the session workloads that have one."""
    goal = ETCD_TARGETS.get((r.name, r.concurrency))
    if goal is None:
        return
    ratio, p50, spread = goal
    parts = []
    if ratio is not None:
        parts.append(f">= {ratio:.1f}x etcd")
    if p50 is not None:
        parts.append(f"p50 <= {p50:.1f}x etcd's")
    if spread is not None:
        parts.append(f"p99 <= {spread:.0f}x p50")
    r.target = ", ".join(parts)
    if r.etcd_ratio is None or r.etcd_p50_ratio is None:
        return  # no etcd in this run: not measured
    lat = r.latency_ms
    r.met = (
        (ratio is None or r.etcd_ratio >= ratio)
        and (p50 is None or r.etcd_p50_ratio <= p50)
        and (spread is None or lat["p99"] <= spread * lat["p50"])
    )


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
        "vs sqlite-tuned",
        "vs etcd (p50, p99)",
        "target",
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
                f"{r['tuned_ratio']:.2f}" if r.get("tuned_ratio") else "",
                _versus_etcd(r),
                _target(r.get("target"), r.get("met")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    # Text columns to the left, numbers to the right.
    left = {0, len(header) - 6, len(header) - 2, len(header) - 1}
    lines = [
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _versus_etcd(r: dict[str, Any]) -> str:
    if r.get("etcd_ratio") is None:
        return ""
    if r.get("etcd_p50_ratio") is None:
        return f"{r['etcd_ratio']:.2f}"
    return f"{r['etcd_ratio']:.2f} ({r['etcd_p50_ratio']:.2f}, {r['etcd_p99_ratio']:.2f})"


def _target(target: str | None, met: bool | None) -> str:
    if target is None:
        return ""
    return f"{target}: " + {True: "met", False: "MISSED", None: "not measured"}[met]


def figures_table(figures: Sequence[dict[str, Any]]) -> str:
    """Memory, restart and replay figures, one line each, with their targets."""
    rows = [("figure", "value", "target", "")]
    for f in figures:
        shown = {True: "met", False: "MISSED", None: "too small a run to tell"}[f["met"]]
        rows.append((f["name"], f"{f['value']:,.2f} {f['unit']}", f["target"], shown))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
