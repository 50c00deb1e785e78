"""Restore benchmark: how long AddPartition takes to restore a snapshot of N keys.

    python tools/bench_restore.py                      # 1M keys of 100 bytes
    python tools/bench_restore.py --keys 10000 --runs 1  # smoke

1. A SQLite partition of ``--keys`` keys with ``--value-size``-byte values is
   written straight to disk in the store's layout
   (``mkv.testing.prefill_sqlite_partition``).
2. ``mkv serve`` on that data directory takes a ``Snapshot`` of it; the
   partition is then removed, so the snapshot's range is free.
3. For each store kind in ``--kinds``, ``--runs`` times: ``AddPartition``
   with the snapshot, timed from the call to its answer (everything restore
   does: copy and checks, building the store, opening it, the catalog), and
   the partition removed again.

Prints a table to stdout and, with ``--json``, writes the numbers there;
progress goes to stderr. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from bench_snapshot import server

import mkv
from mkv.testing import prefill_sqlite_partition


def progress(text: str) -> None:
    print(f"bench-restore: {text}", file=sys.stderr, flush=True)


async def measure(control_addr: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"restores": {}}
    async with mkv.AdminClient.connect(control_addr) as admin:
        operation_id = await admin.snapshot("default", "bench")
        done = await admin.wait_operation(operation_id, poll_interval=0.05)
        assert done.snapshot is not None
        results["snapshot_bytes"] = done.snapshot.manifest.size
        await admin.remove_partition("default")
        for kind in args.kinds:
            seconds = []
            for run in range(args.runs):
                began = time.perf_counter()
                info = await admin.add_partition(
                    partition_id="restored", snapshot=done.snapshot.manifest_path, store=kind
                )
                seconds.append(time.perf_counter() - began)
                assert info.key_count == args.keys, info
                progress(f"restore into {kind} {run + 1}: {seconds[-1]:.2f} s")
                await admin.remove_partition("restored")
            results["restores"][kind] = seconds
    return results


def report(results: dict[str, Any]) -> None:
    print(f"keys                {results['keys']:>12}")
    print(f"snapshot file       {results['snapshot_bytes'] / 1e6:>12.1f} MB")
    for kind, seconds in results["restores"].items():
        best = min(seconds)
        print(
            f"restore into {kind:<7}{best:>12.2f} s best of {len(seconds)}   "
            f"{results['keys'] / best / 1e3:.0f}k keys/s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1M)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes a value (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="restores of each kind (default 3)")
    parser.add_argument(
        "--kinds", nargs="+", default=["sqlite", "memory"], help="store kinds to restore into"
    )
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mkv-bench-restore-", dir=args.dir))
    try:
        data_dir = scratch / "data"
        progress(f"writing {args.keys} keys of {args.value_size} bytes straight to disk")
        prefill_sqlite_partition(data_dir, keys=args.keys, value_size=args.value_size)
        results: dict[str, Any] = {"keys": args.keys, "value_size": args.value_size}
        with server(data_dir, scratch / "server-stderr.log") as (_, control_addr):
            results.update(trio.run(measure, control_addr, args))
        report(results)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
