"""Split benchmark: SplitPartition of a large SQLite partition under load.

    python tools/bench_split.py                    # 1M keys
    python tools/bench_split.py --keys 20000 --duration 0.5   # smoke

1. A partition of ``--keys`` keys (100-byte values) is written straight to
   disk in the store's layout (``mkv.testing.prefill_sqlite_partition``).
2. ``mkv serve`` on it; ``--concurrency`` clients per side write single
   upserts to existing keys, half below the split key and half at or above
   it (the range that moves), for ``--duration`` seconds: p99 before.
3. ``SplitPartition`` at the middle key while the writers go on: the time
   from the call to the cut-over's end (the operation's end as the server
   reports it), how long the parent held its writes at the cut-over (the
   tail applied, the new store installed and opened, the catalog written:
   the server logs it), and the writers' p99 during the split, per side, as
   a ratio to their p99 before, in the same run.

Prints a table to stdout and, with ``--json``, writes the numbers there;
progress goes to stderr. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from bench_report import percentiles
from bench_snapshot import server

import mkv
from mkv.testing import prefill_key, prefill_sqlite_partition

VALUE_SIZE = 100


def progress(text: str) -> None:
    print(f"bench-split: {text}", file=sys.stderr, flush=True)


async def writers(
    address: str,
    keys: list[bytes],
    concurrency: int,
    until: trio.Event,
    refused: list[float] | None = None,
) -> list[tuple[float, float]]:
    """Single upserts of ``keys`` from ``concurrency`` clients until ``until``;
    (end time, latency) of each. With ``refused``, a write refused
    ``UNAVAILABLE`` (an operation that pauses the partition) is retried at
    once and timed from its first try, the time of each refusal going to
    ``refused``; without it, the refusal ends the run."""
    done: list[tuple[float, float]] = []
    value = b"w" * VALUE_SIZE

    async def loop(n: int) -> None:
        async with mkv.Client.connect(address) as client:
            i = n
            while not until.is_set():
                began = time.perf_counter()
                while True:
                    try:
                        await client.upsert({keys[i % len(keys)]: value})
                        break
                    except mkv.UnavailableError:
                        if refused is None:
                            raise
                        refused.append(time.perf_counter())
                        await trio.sleep(0.001)
                end = time.perf_counter()
                done.append((end, end - began))
                i += concurrency

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(loop, n)
    return done


async def follow(admin: mkv.AdminClient, operation_id: str) -> tuple[float, float | None, float]:
    """Poll the operation until it ends: its duration as the server reports
    it, when its cut-over phase was first seen (None: never), and when it
    was seen done.

    Raises:
        MkvError: the operation failed.
    """
    cut_over_seen: float | None = None
    while True:
        info = await admin.get_operation(operation_id)
        if info.phase == "cut-over" and cut_over_seen is None:
            cut_over_seen = time.perf_counter()
        if not info.running:
            break
        await trio.sleep(0.01)
    done_at = time.perf_counter()
    if info.error is not None:
        raise info.error
    assert info.finished is not None
    return info.finished - info.started, cut_over_seen, done_at


def before_and_during(
    ops: dict[str, list[tuple[float, float]]],
    before_from: float,
    before_to: float,
    during_to: float,
) -> dict[str, dict[str, Any]]:
    """Per group of writers: count and latency percentiles of the writes
    that ended before the operation and during it, and p99 during / before."""
    results: dict[str, dict[str, Any]] = {}
    for name, done in ops.items():
        before = [lat for end, lat in done if before_from <= end <= before_to]
        during = [lat for end, lat in done if before_to <= end <= during_to]
        side: dict[str, Any] = {
            "before": {"ops": len(before), "latency_ms": percentiles(before)},
            "during": {"ops": len(during), "latency_ms": percentiles(during)},
        }
        p99_before = side["before"]["latency_ms"]["p99"]
        p99_during = side["during"]["latency_ms"]["p99"]
        side["p99_ratio"] = p99_during / p99_before if p99_before else None
        results[name] = side
    return results


async def measure(data_addr: str, control_addr: str, args: argparse.Namespace) -> dict[str, Any]:
    middle = args.keys // 2
    at = prefill_key(middle)
    # Spread over each side, so writes touch pages all over the store.
    step = max(1, middle // 1000)
    low = [prefill_key(i) for i in range(0, middle, step)]
    high = [prefill_key(i) for i in range(middle, args.keys, step)]
    results: dict[str, Any] = {}
    stop = trio.Event()
    ops: dict[str, list[tuple[float, float]]] = {}
    async with mkv.AdminClient.connect(control_addr) as admin, trio.open_nursery() as nursery:

        async def load(name: str, keys: list[bytes]) -> None:
            ops[name] = await writers(data_addr, keys, args.concurrency, stop)

        nursery.start_soon(load, "staying", low)
        nursery.start_soon(load, "moving", high)
        await trio.sleep(args.warmup)
        before_from = time.perf_counter()
        await trio.sleep(args.duration)
        before_to = time.perf_counter()
        operation_id = await admin.split_partition("default", at, new_id="upper")
        seconds, cut_over_seen, during_to = await follow(admin, operation_id)
        stop.set()
    results["split_seconds"] = seconds
    results["cut_over_seconds_polled"] = (
        None if cut_over_seen is None else during_to - cut_over_seen
    )
    results.update(before_and_during(ops, before_from, before_to, during_to))
    async with mkv.AdminClient.connect(control_addr) as admin:
        parts = {p.id: p.key_count for p in await admin.list_partitions()}
    results["key_counts"] = parts
    return results


def writers_line(label: str, side: dict[str, Any]) -> str:
    """One line of a ``before_and_during`` summary: p99 before and during,
    the worst during, and the ratio (bench_merge and bench_move print theirs
    with it too)."""
    before, during = side["before"]["latency_ms"], side["during"]["latency_ms"]
    ratio = side["p99_ratio"]
    return (
        f"{label} p99 before {before['p99']:7.2f} ms  during {during['p99']:8.2f} ms"
        f"  max {during['max']:8.2f} ms  ratio {'n/a' if ratio is None else f'{ratio:.2f}x'}"
    )


def report(results: dict[str, Any]) -> None:
    print(f"keys                               {results['keys']:>10}")
    print(f"split, call to cut-over done       {results['split_seconds']:10.2f} s")
    server_ms = results["cut_over_ms_server"]
    shown = "n/a" if server_ms is None else f"{server_ms:.0f} ms"
    print(f"cut-over: parent's writes held     {shown:>10}   (as the server logged it)")
    polled = results["cut_over_seconds_polled"]
    shown = "n/a" if polled is None else f"{polled * 1000:.0f} ms"
    print(f"cut-over phase (polled, coarse)    {shown:>10}")
    for name in ("staying", "moving"):
        print(writers_line(f"writers {name:<8}", results[name]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1M)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients per side (default 4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured before")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mkv-bench-split-", dir=args.dir))
    try:
        data_dir = scratch / "data"
        progress(f"writing {args.keys} keys of {VALUE_SIZE} bytes straight to disk")
        prefill_sqlite_partition(data_dir, keys=args.keys, value_size=VALUE_SIZE)
        results: dict[str, Any] = {
            "keys": args.keys,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
        }
        log = scratch / "server-stderr.log"
        with server(data_dir, log) as (data_addr, control_addr):
            results.update(trio.run(measure, data_addr, control_addr, args))
        # The server logs how long the parent held its writes at the cut-over.
        took = re.findall(r"cut-over to \S+ at seq \d+ took ([\d.]+) ms", log.read_text())
        results["cut_over_ms_server"] = float(took[0]) if took else None
        report(results)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
