"""What the blocking client costs per call, next to the async client under Trio and asyncio.

    python tools/bench_blocking.py [--calls 3000] [--threads 8]

A node runs in a subprocess (so it does not share this process's GIL); the
same sequential ``get`` of one key is timed through ``mkv.Client`` under
Trio, under asyncio, through ``mkv.connect`` (the blocking client) from one
thread, and from several threads at once (throughput); and the hop to a
blocking client's loop thread alone, with no call behind it. The blocking
client's overhead is its time per call minus the Trio client's: the hop to
its event-loop thread and back.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import trio

import mkv
from mkv.testing import node_in_thread

KEY = b"bench:key"


def serve() -> None:
    """The node's process: print its data address, run until stdin closes."""
    with node_in_thread(default_store="memory") as node:
        print(node.data_address, flush=True)
        sys.stdin.read()


async def async_gets(address: str, calls: int) -> float:
    async with mkv.Client.connect(address) as db:
        await db.get(KEY)  # warm up: connect, partition map
        started = time.perf_counter()
        for _ in range(calls):
            await db.get(KEY)
        return time.perf_counter() - started


def blocking_gets(address: str, calls: int, threads: int) -> float:
    with mkv.connect(address) as db:
        db.get(KEY)

        def run() -> None:
            for _ in range(calls // threads):
                db.get(KEY)

        workers = [threading.Thread(target=run) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - started


def hop_only(calls: int) -> float:
    """The hop alone: a call that does nothing, through a blocking client's loop thread."""
    from mkv.client.blocking import _LoopThread  # the client's own, no gRPC behind it

    async def nothing() -> None:
        pass

    loop = _LoopThread("mkv-bench-hop")
    try:
        started = time.perf_counter()
        for _ in range(calls):
            loop.call(nothing)
        return time.perf_counter() - started
    finally:
        loop.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    node = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert node.stdout is not None
        address = node.stdout.readline().decode().strip()
        with mkv.connect(address) as db:
            db.upsert({KEY: b"x" * 100})
        calls: int = args.calls
        runs: list[tuple[str, Callable[[], float]]] = [
            ("async, Trio", lambda: trio.run(async_gets, address, calls)),
            ("async, asyncio", lambda: asyncio.run(async_gets(address, calls))),
            ("blocking, 1 thread", lambda: blocking_gets(address, calls, 1)),
            (
                f"blocking, {args.threads} threads",
                lambda: blocking_gets(address, calls, args.threads),
            ),
            ("hop only (no call)", lambda: hop_only(calls)),
        ]
        results = {}
        for name, run in runs:
            seconds = min(run() for _ in range(3))
            results[name] = seconds / calls * 1e6
            print(f"{name:24} {results[name]:7.1f} µs/call {calls / seconds:8.0f} calls/s")
        overhead = results["blocking, 1 thread"] - results["async, Trio"]
        print(f"blocking overhead per call (1 thread, vs async Trio): {overhead:.1f} µs")
    finally:
        node.communicate(timeout=30)


if __name__ == "__main__":
    main()
