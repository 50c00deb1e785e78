"""Two builds of mkv measured side by side, in alternating slices (A/B).

On a shared or virtual machine the CPU's speed drifts: the same build measured
minutes apart can differ by more than a change does (docs/performance.md,
"The client's share, frames and wake-ups"). So this measures two source trees
in the same minutes: each side runs its own ``mkv serve`` and its own load
process, both with that tree's code (a change to the server or the client
shows), and the loads take turns, one slice each, A then B, ``--slices``
times. The report gives each side's median and the median of the paired
ratios B/A (each B slice over the A slice just before it), with their range.

    git worktree add /tmp/before HEAD~1
    python tools/bench_ab.py /tmp/before . --op put --concurrency 64
    python tools/bench_ab.py /tmp/before . --op get --slices 32
    python tools/bench_ab.py /tmp/before . --op spread --partitions 64

Loads (one ``mkv.Client`` per side, shared by ``--concurrency`` tasks, so
small calls go on its session; 100-byte values): ``put``, single-key upserts
over 100 keys per task; ``get``, linearizable gets of keys written first;
``spread``, single-key upserts of random keys, which ``--partitions`` spreads
over that many partitions. Prints a table and, with ``--json``, writes every
slice there; progress goes to stderr. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench_procs import Child

TOOLS = Path(__file__).resolve().parent
VALUE = b"v" * 100
KEYS_PER_TASK = 100
_LISTENING = re.compile(r"mkv: data plane listening on (\S+)")


def progress(text: str) -> None:
    print(f"bench-ab: {text}", file=sys.stderr, flush=True)


# -- the load process (run with one side's tree on PYTHONPATH) ------------------


async def _load(args: argparse.Namespace) -> None:
    """Connect, warm up, say ready, then run the slices this side was given
    (at ``start + (2 i + side) * slice`` on the wall clock) and print them."""
    import trio

    import mkv

    async with mkv.Client.connect(args.load) as db:
        active = trio.Event()
        count = 0

        async def task(i: int) -> None:
            nonlocal count
            rng = random.Random(i)
            keys = [b"ab-%03d-%03d" % (i, k) for k in range(KEYS_PER_TASK)]
            if args.op == "get":
                await db.upsert({key: VALUE for key in keys})
            n = 0
            while True:
                await active.wait()
                if args.op == "get":
                    await db.get(keys[n % KEYS_PER_TASK])
                elif args.op == "put":
                    await db.upsert({keys[n % KEYS_PER_TASK]: VALUE})
                else:
                    await db.upsert({rng.randbytes(16): VALUE})
                n += 1
                count += 1

        async with trio.open_nursery() as nursery:
            for i in range(args.concurrency):
                nursery.start_soon(task, i)
            active.set()
            await trio.sleep(args.warmup)
            active = trio.Event()
            print(json.dumps({"ready": True}), flush=True)
            start = json.loads(await trio.to_thread.run_sync(sys.stdin.readline))["start"]
            ops: list[float] = []
            cpu_us: list[float] = []
            for i in range(args.slices):
                await trio.sleep(max(0.0, start + (2 * i + args.side) * args.slice - time.time()))
                count = 0
                cpu = time.process_time()
                active.set()
                await trio.sleep(args.slice)
                active = trio.Event()
                ops.append(count / args.slice)
                cpu_us.append((time.process_time() - cpu) / max(count, 1) * 1e6)
            nursery.cancel_scope.cancel()
        print(json.dumps({"ops": ops, "client_cpu_us": cpu_us}), flush=True)


# -- the orchestrator ----------------------------------------------------------


def _side(
    tree: Path, name: str, scratch: Path, args: argparse.Namespace, children: list[Child]
) -> tuple[Child, Child]:
    """Start a side's server and load process, both on ``tree``'s code; each
    joins ``children`` as soon as it runs, so the caller stops it whatever
    fails next (the server that never says where it listens, too)."""
    # Imported here: the load process runs this file with the other tree's
    # mkv, which these helpers of this tree need not match.
    from bench_data import spread_ranges, write_catalog
    from bench_procs import Child

    env = {"PYTHONPATH": str(tree.resolve())}
    data = scratch / name
    if args.partitions > 1:
        write_catalog(data, spread_ranges(args.partitions))
    with open(scratch / f"{name}-server.log", "wb") as log:
        server = Child(
            f"{name}'s mkv serve",
            [
                *(sys.executable, "-m", "mkv.cli.server", "serve", "--data-dir", str(data)),
                *("--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"),
                *("--log-level", "WARNING"),
            ],
            stderr=log,
            env=env,
        )
    children.append(server)
    address = server.wait_for(_LISTENING, timeout=60)[1]
    load = Child(
        f"{name}'s load",
        [
            *(sys.executable, str(TOOLS / "bench_ab.py"), "--load", address),
            *("--op", args.op, "--concurrency", str(args.concurrency)),
            *("--slices", str(args.slices), "--slice", str(args.slice)),
            *("--warmup", str(args.warmup), "--side", "0" if name == "A" else "1"),
        ],
        env=env,
    )
    children.append(load)
    return server, load


def _summary(ops: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ops), "min": min(ops), "max": max(ops)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench_procs import cpu_seconds

    scratch = Path(tempfile.mkdtemp(prefix="bench-ab-", dir=args.dir))
    children: list[Child] = []
    try:
        sides = {}
        for name, tree in (("A", args.a), ("B", args.b)):
            server, load = _side(Path(tree), name, scratch, args, children)
            sides[name] = (server, load)
        for _, load in sides.values():
            load.receive(timeout=120)  # ready: connected and warmed up
        start = time.time() + 1.0
        for _, load in sides.values():
            load.send({"start": start})
        # Each server's CPU over its own slices, sampled at their edges.
        server_cpu: dict[str, list[float]] = {"A": [], "B": []}
        for i in range(args.slices):
            for offset, name in enumerate(("A", "B")):
                begin = start + (2 * i + offset) * args.slice
                time.sleep(max(0.0, begin - time.time()))
                before = cpu_seconds(sides[name][0].pid)
                time.sleep(max(0.0, begin + args.slice - time.time()))
                server_cpu[name].append(cpu_seconds(sides[name][0].pid) - before)
        timeout = 2 * args.slices * args.slice + 60
        results = {name: load.receive(timeout=timeout) for name, (_, load) in sides.items()}
    finally:
        for child in reversed(children):  # each load before its server
            child.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report: dict[str, Any] = {
        "op": args.op,
        "concurrency": args.concurrency,
        "partitions": args.partitions,
        "slice_seconds": args.slice,
        "trees": {"A": str(args.a), "B": str(args.b)},
    }
    for name in ("A", "B"):
        ops = results[name]["ops"]
        report[name] = {
            "ops": ops,
            "client_cpu_us": results[name]["client_cpu_us"],
            "server_cpu_us": [
                cpu / max(rate * args.slice, 1) * 1e6
                for cpu, rate in zip(server_cpu[name], ops, strict=True)
            ],
            **_summary(ops),
        }
    ratios = [b / a for a, b in zip(report["A"]["ops"], report["B"]["ops"], strict=True) if a]
    report["b_over_a"] = {**_summary(ratios), "pairs": ratios}
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['op']} c={report['concurrency']} partitions={report['partitions']}, "
        f"{len(report['A']['ops'])} slices of {report['slice_seconds']} s each",
        f"{'side':<5} {'median ops/s':>13} {'range':>17} "
        f"{'client CPU/op':>14} {'server CPU/op':>14}",
    ]
    for name in ("A", "B"):
        side = report[name]
        lines.append(
            f"{name:<5} {side['median']:>13,.0f} {side['min']:>8,.0f}-{side['max']:<8,.0f} "
            f"{statistics.median(side['client_cpu_us']):>11,.0f} µs "
            f"{statistics.median(side['server_cpu_us']):>11,.0f} µs"
        )
    ratio = report["b_over_a"]
    lines.append(
        f"B/A, median of the pairs: {ratio['median']:.3f} "
        f"(range {ratio['min']:.3f}-{ratio['max']:.3f})"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", nargs="?", help="source tree of build A (the baseline)")
    parser.add_argument("b", nargs="?", help="source tree of build B")
    parser.add_argument("--op", choices=("put", "get", "spread"), default="put")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--slice", type=float, default=1.0, help="seconds a slice")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before")
    parser.add_argument("--dir", default=None, help="scratch directory (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, help="write every slice here")
    # The load process's own arguments (tools/bench_ab.py runs itself).
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        import trio

        trio.run(_load, args)
        return
    if not (args.a and args.b):
        parser.error("name the two source trees, A and B")
    for tree in (args.a, args.b):
        if not (Path(tree) / "mkv" / "__init__.py").is_file():
            parser.error(f"{tree} is not a source tree of mkv (no mkv/__init__.py)")
    progress(f"A = {args.a}, B = {args.b}: {args.op}, {args.slices} slices each")
    report = run(args)
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
