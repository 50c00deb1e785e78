"""Snapshot benchmark: a server's snapshot of a large SQLite partition, next to
the bare sqlite3 backup API on the same file, and what it does to writers.

    python tools/bench_snapshot.py                 # 1 GiB partition
    python tools/bench_snapshot.py --size 4GiB --runs 3
    python tools/bench_snapshot.py --size 8MiB --duration 0.5 --runs 1   # smoke

1. A partition of ``--size`` is written straight to disk in the store's
   layout (``mkv.testing.prefill_sqlite_partition``) and read once, so every
   copy below starts with the file in the page cache.
2. Ceiling: ``sqlite3.connect(file).backup(sqlite3.connect(copy))`` in this
   process, with SQLite's defaults (one step, synchronous=FULL, so it ends
   with an fsync of the copy): MB/s of the database file.
3. ``mkv serve`` on that data directory; ``Snapshot`` of the idle partition,
   timed from the call to the operation's end as the server reports it
   (capture, copy, fsync, SHA-256, rename, manifest): MB/s and the ratio to
   the ceiling (target at least 0.8).
4. Single upserts (100-byte values, ``--concurrency`` clients in this process,
   the partition's default pipeline: timestamp and wal with an fsync before
   each acknowledgement, group commit) for ``--duration`` seconds without a
   snapshot, then the same load while a snapshot runs: p99 latency of each
   and the ratio (target at most 2).

Prints a table to stdout and, with ``--json``, writes the numbers there;
progress goes to stderr. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from bench_report import percentiles

import mkv
from mkv.testing import prefill_sqlite_partition

_LISTENING = re.compile(r"mkv: (data|control) plane listening on (\S+)")
# Bytes a row of the store takes beyond its value, measured on 500-byte
# values (key, seq, ts, B-tree overhead): sizes the prefill to --size.
_ROW_OVERHEAD = 85
VALUE_SIZE = 500


def progress(text: str) -> None:
    print(f"bench-snapshot: {text}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?B?)?", text.strip(), re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 512MiB)")
    number, unit = float(match[1]), (match[2] or "").upper().rstrip("B").rstrip("I")
    return int(number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit])


# -- the pieces -------------------------------------------------------------------


def read_through(path: Path) -> None:
    """Read a file once so it sits in the page cache."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def bare_backup(source: Path, copy: Path) -> float:
    """Seconds for the sqlite3 backup API, defaults, source to a new file."""
    copy.unlink(missing_ok=True)
    started = time.perf_counter()
    src = sqlite3.connect(source)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    seconds = time.perf_counter() - started
    copy.unlink()
    return seconds


@contextmanager
def server(data_dir: Path, log: Path) -> Iterator[tuple[str, str]]:
    """``mkv serve`` on ``data_dir``; yields (data address, control address)."""
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mkv.cli.server", "serve", "--data-dir", str(data_dir),
             "--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0",
             "--log-level", "INFO"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )  # fmt: skip
    try:
        addresses: dict[str, str] = {}
        assert proc.stdout is not None
        while len(addresses) < 2:
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"mkv serve exited early; see {log}")
            if match := _LISTENING.search(line):
                addresses[match[1]] = match[2]
        yield addresses["data"], addresses["control"]
    finally:
        proc.terminate()
        proc.wait(timeout=120)


async def upserts(address: str, concurrency: int, until: trio.Event) -> list[tuple[float, float]]:
    """Single upserts from ``concurrency`` clients until ``until``; (end time, latency)."""
    done: list[tuple[float, float]] = []
    value = b"v" * 100

    async def client_loop(n: int) -> None:
        async with mkv.Client.connect(address) as client:
            i = 0
            while not until.is_set():
                key = b"bench:%02d:%08d" % (n, i)
                began = time.perf_counter()
                await client.upsert({key: value})
                end = time.perf_counter()
                done.append((end, end - began))
                i += 1

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(client_loop, n)
    return done


async def snapshot(admin: mkv.AdminClient, path: str) -> mkv.client.admin.OperationInfo:
    operation_id = await admin.snapshot("default", path)
    return await admin.wait_operation(operation_id, poll_interval=0.05)


async def measure(
    data_addr: str, control_addr: str, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {"idle_snapshots": []}
    async with mkv.AdminClient.connect(control_addr) as admin:
        for run in range(args.runs):
            info = await snapshot(admin, f"idle-{run}")
            assert info.snapshot is not None
            assert info.finished is not None
            seconds = info.finished - info.started
            results["idle_snapshots"].append(
                {"seconds": seconds, "size": info.snapshot.manifest.size}
            )
            progress(f"idle snapshot {run + 1}: {info.snapshot.manifest.size / seconds / 1e6:.0f}"
                     f" MB/s ({seconds:.2f} s)")  # fmt: skip
            shutil.rmtree(root / f"idle-{run}")

        # Writers alone, then writers with a snapshot running.
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            writes: list[list[tuple[float, float]]] = []

            async def load() -> None:
                writes.append(await upserts(data_addr, args.concurrency, stop))

            nursery.start_soon(load)
            await trio.sleep(args.warmup)
            quiet_from = time.perf_counter()
            await trio.sleep(args.duration)
            quiet_to = time.perf_counter()
            info = await snapshot(admin, "loaded")
            loaded_to = time.perf_counter()
            stop.set()
        assert info.snapshot is not None
        assert info.finished is not None
        shutil.rmtree(root / "loaded")
        ops = writes[0]
        quiet = [latency for end, latency in ops if quiet_from <= end <= quiet_to]
        during = [latency for end, latency in ops if quiet_to <= end <= loaded_to]
        results["loaded_snapshot"] = {
            "seconds": info.finished - info.started,
            "size": info.snapshot.manifest.size,
        }
        results["upserts_without"] = {
            "ops": len(quiet),
            "ops_per_s": len(quiet) / (quiet_to - quiet_from),
            "latency_ms": percentiles(quiet),
        }
        results["upserts_during"] = {
            "ops": len(during),
            "ops_per_s": len(during) / (loaded_to - quiet_to),
            "latency_ms": percentiles(during),
        }
    return results


def report(results: dict[str, Any]) -> None:
    bare = min(results["bare_backup_seconds"])
    size = results["database_bytes"]
    idle = min(s["seconds"] for s in results["idle_snapshots"])
    loaded = results["loaded_snapshot"]["seconds"]
    without = results["upserts_without"]["latency_ms"]
    during = results["upserts_during"]["latency_ms"]
    results["bare_mb_s"] = size / bare / 1e6
    results["snapshot_mb_s"] = size / idle / 1e6
    results["snapshot_loaded_mb_s"] = size / loaded / 1e6
    results["throughput_ratio"] = bare / idle
    results["p99_ratio"] = during["p99"] / without["p99"] if without["p99"] else None
    print(f"database file                      {size / 1e6:10.1f} MB")
    print(f"sqlite3 backup API (ceiling)       {results['bare_mb_s']:10.1f} MB/s   best of "
          f"{len(results['bare_backup_seconds'])}")  # fmt: skip
    print(f"mkv Snapshot, idle partition       {results['snapshot_mb_s']:10.1f} MB/s   "
          f"{results['throughput_ratio']:.2f}x the ceiling (target >= 0.8)")  # fmt: skip
    print(f"mkv Snapshot, under upserts        {results['snapshot_loaded_mb_s']:10.1f} MB/s")
    for name, latency in (("without a snapshot", without), ("during the snapshot", during)):
        key = "upserts_without" if name.startswith("without") else "upserts_during"
        print(f"single upserts {name:<20}{results[key]['ops_per_s']:10.0f} ops/s   "
              f"p50 {latency['p50']:.2f} ms  p99 {latency['p99']:.2f} ms  "
              f"max {latency['max']:.2f} ms")  # fmt: skip
    ratio = results["p99_ratio"]
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    print(f"p99 during / without               {shown:>10}        (target <= 2)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="partition size to build (default 1GiB)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=2, help="idle snapshots and bare backups")
    parser.add_argument("--concurrency", type=int, default=4, help="upsert clients (default 4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of quiet upserts")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mkv-bench-snapshot-", dir=args.dir))
    try:
        data_dir = scratch / "data"
        keys = max(1, args.size // (VALUE_SIZE + _ROW_OVERHEAD))
        progress(f"writing {keys} keys of {VALUE_SIZE} bytes straight to disk")
        began = time.perf_counter()
        prefill_sqlite_partition(data_dir, keys=keys, value_size=VALUE_SIZE)
        database = data_dir / "partitions" / "default" / "store.sqlite3"
        size = database.stat().st_size
        progress(f"{size / 1e6:.0f} MB in {time.perf_counter() - began:.1f} s")
        read_through(database)
        results: dict[str, Any] = {
            "database_bytes": size,
            "keys": keys,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "bare_backup_seconds": [],
        }
        for run in range(args.runs):
            seconds = bare_backup(database, scratch / "bare-copy.sqlite3")
            results["bare_backup_seconds"].append(seconds)
            progress(f"bare backup {run + 1}: {size / seconds / 1e6:.0f} MB/s ({seconds:.2f} s)")
        log = scratch / "server-stderr.log"
        with server(data_dir, log) as (data_addr, control_addr):
            results.update(trio.run(measure, data_addr, control_addr, args, data_dir / "snapshots"))
        # The server logs where each snapshot's time went.
        results["server_phases"] = re.findall(r"snapshot of \S+ at seq .*", log.read_text())
        for line in results["server_phases"]:
            progress(line)
        report(results)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
