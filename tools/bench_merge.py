"""Merge benchmark: MergePartitions of a large right partition under load.

    python tools/bench_merge.py                    # right partition of 1M keys
    python tools/bench_merge.py --keys 20000 --duration 0.5   # smoke

1. A node with two SQLite partitions: ``default`` owns ``['', fill:)`` (a
   small store) and ``upper`` owns ``[fill:, ∞)`` with ``--keys`` keys of
   100 bytes, written straight to disk in the store's layout
   (``mkv.testing.prefill_sqlite_partition``).
2. ``mkv serve`` on it; ``--concurrency`` clients per side write single
   upserts, to keys of ``default`` ("left") and of ``upper`` ("right"), for
   ``--duration`` seconds: p99 before.
3. ``MergePartitions(default, upper)`` while the writers go on: the time from
   the call to the merge's end, how long both partitions refused or held
   requests at the cut-over (the server logs it), the longest single write
   during the merge, and the writers' p99 during the merge, per side, as a
   ratio to their p99 before, in the same run.

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
from bench_snapshot import server
from bench_split import VALUE_SIZE, before_and_during, follow, writers, writers_line

import mkv
from mkv.node.catalog import Catalog, CatalogEntry
from mkv.pipeline import default_pipeline
from mkv.router import KeyRange
from mkv.testing import prefill_key, prefill_sqlite_partition

# Every prefilled key starts with it (mkv.testing.prefill_key): the right
# partition's range starts there.
RIGHT_START = b"fill:"


def progress(text: str) -> None:
    print(f"bench-merge: {text}", file=sys.stderr, flush=True)


def prepare(data_dir: Path, keys: int) -> None:
    """Two partitions: a small ``default`` left of ``fill:``, ``upper`` with ``keys`` keys."""
    prefill_sqlite_partition(data_dir, keys=keys, value_size=VALUE_SIZE, partition_id="upper")
    (data_dir / "partitions" / "default").mkdir()
    pipeline = default_pipeline("sqlite")
    Catalog(
        partitions=[
            CatalogEntry("default", KeyRange(b"", RIGHT_START), "sqlite", pipeline),
            CatalogEntry("upper", KeyRange(RIGHT_START, None), "sqlite", pipeline),
        ],
        map_version=2,
    ).save(data_dir / "catalog.json")


async def measure(data_addr: str, control_addr: str, args: argparse.Namespace) -> dict[str, Any]:
    step = max(1, args.keys // 1000)
    left = [b"a/%06d" % i for i in range(1000)]
    right = [prefill_key(i) for i in range(0, args.keys, step)]
    results: dict[str, Any] = {}
    stop = trio.Event()
    ops: dict[str, list[tuple[float, float]]] = {}
    refused: dict[str, list[float]] = {"left": [], "right": []}
    async with mkv.Client.connect(data_addr) as client:
        for first in range(0, len(left), 100):
            await client.upsert({key: b"l" * VALUE_SIZE for key in left[first : first + 100]})
    async with mkv.AdminClient.connect(control_addr) as admin, trio.open_nursery() as nursery:

        async def load(name: str, keys: list[bytes]) -> None:
            ops[name] = await writers(data_addr, keys, args.concurrency, stop, refused[name])

        nursery.start_soon(load, "left", left)
        nursery.start_soon(load, "right", right)
        await trio.sleep(args.warmup)
        before_from = time.perf_counter()
        await trio.sleep(args.duration)
        before_to = time.perf_counter()
        operation_id = await admin.merge_partitions("default", "upper")
        seconds, cut_over_seen, during_to = await follow(admin, operation_id)
        stop.set()
    results["merge_seconds"] = seconds
    results["cut_over_seconds_polled"] = (
        None if cut_over_seen is None else during_to - cut_over_seen
    )
    results.update(before_and_during(ops, before_from, before_to, during_to))
    for name in ops:
        results[name]["refused"] = len(refused[name])
    async with mkv.AdminClient.connect(control_addr) as admin:
        parts = {p.id: p.key_count for p in await admin.list_partitions()}
    results["key_counts"] = parts
    return results


def report(results: dict[str, Any]) -> None:
    print(f"keys in the right partition        {results['keys']:>10}")
    print(f"merge, call to end                 {results['merge_seconds']:10.2f} s")
    server_ms = results["cut_over_ms_server"]
    shown = "n/a" if server_ms is None else f"{server_ms:.0f} ms"
    print(f"cut-over: both partitions paused   {shown:>10}   (as the server logged it)")
    polled = results["cut_over_seconds_polled"]
    shown = "n/a" if polled is None else f"{polled * 1000:.0f} ms"
    print(f"cut-over phase (polled, coarse)    {shown:>10}")
    for name in ("left", "right"):
        side = results[name]
        print(f"{writers_line(f'writers {name:<6}', side)}  refused {side['refused']}")
    print(f"key counts after                   {results['key_counts']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="right keys (default 1M)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients per side (default 4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured before")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mkv-bench-merge-", dir=args.dir))
    try:
        data_dir = scratch / "data"
        progress(f"writing {args.keys} keys of {VALUE_SIZE} bytes straight to disk")
        prepare(data_dir, args.keys)
        results: dict[str, Any] = {
            "keys": args.keys,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
        }
        log = scratch / "server-stderr.log"
        with server(data_dir, log) as (data_addr, control_addr):
            results.update(trio.run(measure, data_addr, control_addr, args))
        # The server logs how long the partitions were paused at the cut-over.
        took = re.findall(
            r"merge cut-over of \S+ into \S+ at seq \d+ took ([\d.]+) ms", log.read_text()
        )
        results["cut_over_ms_server"] = float(took[0]) if took else None
        report(results)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
