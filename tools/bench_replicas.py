"""Replication's cost: R = 3 (``replicate:sync``) against R = 1, same run.

    python tools/bench_replicas.py              # 3 rounds of 5 s per load
    python tools/bench_replicas.py --smoke      # seconds: a smoke test

One etcd and three ``mkv serve`` nodes in cluster mode, started here. Two
partitions, both led by node 0: ``r3`` (keys ``a...``) with three replicas
and ``r1`` (keys ``z...``) with one. The same writers (one ``mkv.Client``,
``--writers`` tasks) drive single-key upserts, then 1 MiB batches (64 keys
of 16 KiB), against each partition in turn, alternating which goes first
from round to round so that drift of a shared machine falls on both. The
report: each load's throughput and p50/p99 latency per partition (median
over rounds), r3 over r1 as ratios; and the CPU time of a follower (nodes 1
and 2 lead nothing, so their CPU during an r3 run is following) per
replicated write against the leader's, from /proc.

This is a measuring tool: nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import bench_etcd
import trio
from bench_procs import Child, cpu_seconds

import mkv

_LISTENING = re.compile(r"mkv: (data|control) plane listening on (\S+)")
BATCH_KEYS = 64
BATCH_VALUE = 16 * 1024 - 32


@contextmanager
def node(scratch: Path, name: str, etcd: str) -> Iterator[tuple[Child, str, str]]:
    """A cluster node; yields it, its data and its control address."""
    with open(scratch / f"{name}-stderr.log", "wb") as log:
        child = Child(
            name,
            [
                *(sys.executable, "-m", "mkv.cli.server", "serve"),
                *("--data-dir", str(scratch / name)),
                *("--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"),
                *("--etcd", f"http://{etcd}", "--cluster", "bench", "--lease-ttl", "5"),
                *("--log-level", "WARNING"),
            ],
            stderr=log,
        )
    try:
        found: dict[str, str] = {}
        while len(found) < 2:
            match = child.wait_for(_LISTENING, timeout=60)
            found[match[1]] = match[2]
        yield child, found["data"], found["control"]
    finally:
        child.stop()


async def _setup(data: Sequence[str], control: str, ids: Sequence[str]) -> None:
    async with mkv.AdminClient.connect(control) as admin:
        await admin.remove_partition("default")
        await admin.add_partition(partition_id="r3", start=b"a", end=b"b", node=ids[0], replicas=3)
        await admin.add_partition(partition_id="r1", start=b"z", node=ids[0], replicas=1)
    async with mkv.Client.connect(*data) as db:
        with trio.fail_after(60):
            while True:
                try:
                    await db.upsert({b"a-probe": b"1", b"z-probe": b"1"})
                    return
                except mkv.MkvError:
                    await trio.sleep(0.2)


async def _load(
    data: Sequence[str], prefix: bytes, kind: str, seconds: float, writers: int
) -> tuple[int, list[float]]:
    """Writes acknowledged, and each one's latency (s)."""
    latencies: list[float] = []
    stop = trio.current_time() + seconds

    async def writer(n: int) -> None:
        i = 0
        while trio.current_time() < stop:
            i += 1
            if kind == "single":
                batch = {prefix + b"-s%d-%d" % (n, i % 1000): b"v%d" % i}
            else:
                batch = {
                    prefix + b"-b%d-%d-%03d" % (n, i % 20, j): b"x" * BATCH_VALUE
                    for j in range(BATCH_KEYS)
                }
            began = time.perf_counter()
            await db.upsert(batch)
            latencies.append(time.perf_counter() - began)

    async with mkv.Client.connect(*data) as db, trio.open_nursery() as nursery:
        for n in range(writers if kind == "single" else max(1, writers // 8)):
            nursery.start_soon(writer, n)
    return len(latencies), latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run(rounds: int, seconds: float, writers: int, scratch: Path) -> dict[str, Any]:
    binary, version = bench_etcd.find()
    if binary is None:
        raise SystemExit(f"bench_replicas: {version}")
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        kind: {"r3": [], "r1": []} for kind in ("single", "batch")
    }
    with bench_etcd.etcd_server(binary, scratch) as (_, etcd), ExitStack() as stack:
        nodes = [stack.enter_context(node(scratch, f"n{i}", etcd)) for i in range(3)]
        ids = [(scratch / f"n{i}" / "node-id").read_text().strip() for i in range(3)]
        data = [d for _, d, _ in nodes]
        trio.run(_setup, data, nodes[0][2], ids)
        for r in range(rounds):
            order = ("r3", "r1") if r % 2 == 0 else ("r1", "r3")
            for kind in ("single", "batch"):
                for part in order:
                    prefix = b"a" if part == "r3" else b"z"
                    cpu0 = [cpu_seconds(child.pid) for child, _, _ in nodes]
                    began = time.monotonic()
                    count, latencies = trio.run(_load, data, prefix, kind, seconds, writers)
                    took = time.monotonic() - began
                    cpu = [
                        cpu_seconds(child.pid) - c
                        for (child, _, _), c in zip(nodes, cpu0, strict=True)
                    ]
                    results[kind][part].append(
                        {
                            "ops_per_s": count / took,
                            "p50_ms": _pct(latencies, 0.5) * 1000,
                            "p99_ms": _pct(latencies, 0.99) * 1000,
                            "leader_cpu_us": cpu[0] / max(1, count) * 1e6,
                            "follower_cpu_us": statistics.mean(cpu[1:]) / max(1, count) * 1e6,
                        }
                    )
                    print(
                        f"round {r} {kind:6} {part}: {count / took:8.1f} writes/s "
                        f"p99 {_pct(latencies, 0.99) * 1000:.1f} ms",
                        file=sys.stderr,
                    )
    summary: dict[str, Any] = {"etcd": version, "rounds": rounds, "seconds": seconds}
    for kind, parts in results.items():
        med = {
            part: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            for part, runs in parts.items()
        }
        summary[kind] = {
            **med,
            "throughput_r3_over_r1": med["r3"]["ops_per_s"] / med["r1"]["ops_per_s"],
            "p99_r3_over_r1": med["r3"]["p99_ms"] / max(1e-9, med["r1"]["p99_ms"]),
            "follower_over_leader_cpu": med["r3"]["follower_cpu_us"]
            / max(1e-9, med["r3"]["leader_cpu_us"]),
        }
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"{'load':8} {'R':3} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'leader CPU us/w':>16} {'follower CPU us/w':>18}"
    ]
    for kind in ("single", "batch"):
        for part in ("r1", "r3"):
            m = summary[kind][part]
            lines.append(
                f"{kind:8} {part[1]:3} {m['ops_per_s']:10.1f} {m['p50_ms']:8.1f} "
                f"{m['p99_ms']:8.1f} {m['leader_cpu_us']:16.0f} {m['follower_cpu_us']:18.0f}"
            )
        s = summary[kind]
        lines.append(
            f"{kind:8} R=3/R=1: throughput {s['throughput_r3_over_r1']:.2f}x, p99 "
            f"{s['p99_r3_over_r1']:.2f}x; follower CPU per replicated write "
            f"{s['follower_over_leader_cpu']:.2f}x the leader's"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="one short round")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.writers = 1, 1.0, 4
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as scratch:
        summary = run(args.rounds, args.seconds, args.writers, Path(scratch))
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
