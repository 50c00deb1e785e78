"""Move benchmark: a partition moved between two nodes under load (docs/replication.md).

    python tools/bench_move.py              # 1M keys
    python tools/bench_move.py --quick      # 100k keys
    python tools/bench_move.py --keys 20000 --duration 0.5   # smoke
    python tools/bench_move.py --keys 20000 --value-bytes 1048576 --hot-keys 32
                                            # under 1 MiB writes: does the copy converge?

1. A partition of ``--keys`` keys (100-byte values) is written straight to
   disk in the store's layout (``mkv.testing.prefill_sqlite_partition``).
2. Two nodes start in this process (one Trio loop, real gRPC on loopback
   between them: the target fetches over the source's control port);
   ``--concurrency`` clients write single upserts to existing keys for
   ``--duration`` seconds: p99 before.
3. ``move_partition`` while the writers go on, following BAD_NODE hints to
   the target: the time from the start of the move to the target serving,
   the copy rate, the cut-over (from the fence to the target serving: the
   writers' pause), and the writers' p99 during the move as a ratio to
   before, and their worst latency across the cut-over.

Everything shares one process, so one core: the copy and the writers
compete for it (on separate machines each node has its own). Prints a
table and, with ``--json``, writes the numbers there; progress goes to
stderr. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from bench_split import before_and_during, writers_line

from mkv.client.channel import Channel, open_channel
from mkv.node.replication import move_partition
from mkv.testing import prefill_key, prefill_sqlite_partition, running_node
from mkv.v1 import data_pb2
from mkv.wire import DATA_SERVICE

VALUE_SIZE = 100


def progress(text: str) -> None:
    print(f"bench-move: {text}", file=sys.stderr, flush=True)


async def upsert(channels: dict[str, Channel], where: list[str], key: bytes, value: bytes) -> None:
    """One upsert, re-routed by BAD_NODE hints (``where[0]``: the node tried first)."""
    request = data_pb2.UpsertRequest(entries=[data_pb2.Entry(key=key, value=value)])
    while True:
        response = await channels[where[0]].unary(
            DATA_SERVICE, "Upsert", request, data_pb2.UpsertResponse
        )
        if response.status == data_pb2.OK:
            return
        if response.status != data_pb2.BAD_NODE:
            raise RuntimeError(f"upsert answered {response.status}")
        owner = response.hint.owner.address
        where[0] = owner or next(a for a in channels if a != where[0])
        if not owner:
            await trio.sleep(0.001)


async def writers(
    channels: dict[str, Channel],
    first: str,
    keys: list[bytes],
    concurrency: int,
    until: trio.Event,
    value_size: int = VALUE_SIZE,
) -> list[tuple[float, float]]:
    """(end time, latency) of each single upsert from ``concurrency`` clients."""
    done: list[tuple[float, float]] = []
    value = b"w" * value_size

    async def loop(n: int) -> None:
        where = [first]
        i = n
        while not until.is_set():
            began = time.perf_counter()
            await upsert(channels, where, keys[i % len(keys)], value)
            end = time.perf_counter()
            done.append((end, end - began))
            i += concurrency

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(loop, n)
    return done


async def measure(data_dir: Path, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    step = max(1, args.keys // 2000)
    keys = [prefill_key(i) for i in range(0, args.keys, step)][: args.hot_keys]
    results: dict[str, Any] = {}
    async with (
        running_node(data_dir, replica_grace=5.0) as source,
        running_node(scratch / "target", replica_grace=5.0) as target,
        open_channel(source.data_address) as to_source,
        open_channel(target.data_address) as to_target,
    ):
        await target.registry.remove("default")
        channels = {str(source.data_address): to_source, str(target.data_address): to_target}
        stop = trio.Event()
        ops: dict[str, list[tuple[float, float]]] = {}
        async with trio.open_nursery() as nursery:

            async def load() -> None:
                ops["writers"] = await writers(
                    channels,
                    str(source.data_address),
                    keys,
                    args.concurrency,
                    stop,
                    args.value_bytes,
                )

            nursery.start_soon(load)
            await trio.sleep(args.warmup)
            before_from = time.perf_counter()
            await trio.sleep(args.duration)
            before_to = time.perf_counter()
            progress(f"moving {args.keys} keys")
            moved = await move_partition(
                source.registry,
                target.registry,
                "default",
                source_address=source.control_address,
                target_data_address=target.data_address,
            )
            during_to = time.perf_counter()
            await trio.sleep(0.2)
            stop.set()
        cut_start = during_to - moved.cut_over_seconds
        results["move_seconds"] = moved.seconds
        results["snapshots"] = moved.snapshots
        results["keys_per_second"] = args.keys / moved.seconds
        results["cut_over_ms"] = moved.cut_over_seconds * 1000
        results["final_seq"] = moved.final_seq
        results.update(before_and_during(ops, before_from, before_to, during_to))
        across = [lat for end, lat in ops["writers"] if end >= cut_start and end - lat <= during_to]
        results["max_write_across_cut_over_ms"] = max(across, default=0.0) * 1000
        stats = await moved.partition.store_stats()
        results["target_keys"] = stats.key_count
    return results


def report(results: dict[str, Any]) -> None:
    print(f"keys                               {results['keys']:>10}")
    print(f"move, start to target serving      {results['move_seconds']:10.2f} s")
    print(f"snapshots streamed                 {results['snapshots']:>10}")
    print(f"copy rate                          {results['keys_per_second']:10.0f} keys/s")
    print(f"cut-over, fence to serving         {results['cut_over_ms']:10.0f} ms")
    print(f"writers' worst across the cut-over {results['max_write_across_cut_over_ms']:10.0f} ms")
    print(writers_line("writers", results["writers"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1M)")
    parser.add_argument("--quick", action="store_true", help="100k keys")
    parser.add_argument("--concurrency", type=int, default=4, help="writers (default 4)")
    parser.add_argument(
        "--value-bytes",
        type=int,
        default=VALUE_SIZE,
        help=f"each write's value (default {VALUE_SIZE})",
    )
    parser.add_argument(
        "--hot-keys", type=int, default=2000, help="keys the writers cycle through (default 2000)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured before")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()
    if args.quick:
        args.keys = 100_000

    scratch = Path(tempfile.mkdtemp(prefix="mkv-bench-move-", dir=args.dir))
    try:
        data_dir = scratch / "source"
        progress(f"writing {args.keys} keys of {VALUE_SIZE} bytes straight to disk")
        prefill_sqlite_partition(data_dir, keys=args.keys, value_size=VALUE_SIZE)
        results: dict[str, Any] = {
            "keys": args.keys,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
        }
        results.update(trio.run(measure, data_dir, scratch, args))
        report(results)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
