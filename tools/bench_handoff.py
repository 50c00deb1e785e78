"""What a hand-off to a partition's worker thread costs, in CPU and wall time.

64 Trio tasks each send empty jobs to ``mkv.worker.WorkerThread``s: first all
to one thread, then each to a thread of its own (a node of 64 lightly loaded
partitions, as mkv ran before the node-wide pool). The difference is the
price of waking a sleeping thread and passing the GIL back and forth for
every job (docs/performance.md, the 64 partitions target). Last, each task to
a lane of its own on a ``WorkerPool`` of the default size, as a node now
runs them.

    python tools/bench_handoff.py [--jobs N]
"""

from __future__ import annotations

import argparse
import resource
import time

import trio

from mkv.worker import DEFAULT_POOL_SIZE, Lane, WorkerPool, WorkerThread

TASKS = 64


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(threads: int, jobs: int) -> tuple[float, float]:
    """CPU and wall seconds per hand-off with ``TASKS`` tasks over ``threads`` threads."""
    workers = [WorkerThread(f"handoff-{i}") for i in range(threads)]

    async def send(worker: WorkerThread, count: int) -> None:
        for _ in range(count):
            await worker.run_sync(lambda: None)

    cpu, wall = _cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(TASKS):
            nursery.start_soon(send, workers[i % threads], jobs // TASKS)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    for worker in workers:
        await worker.stop()
    return cpu / jobs, wall / jobs


async def measure_pool(size: int, jobs: int) -> tuple[float, float]:
    """As ``measure``, each task with a lane of its own on a pool of ``size`` threads."""
    pool = WorkerPool(size, "handoff-pool")
    lanes = [pool.lane(f"lane-{i}") for i in range(TASKS)]

    async def send(lane: Lane, count: int) -> None:
        for _ in range(count):
            await lane.run_sync(lambda: None)

    cpu, wall = _cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for lane in lanes:
            nursery.start_soon(send, lane, jobs // TASKS)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    await pool.aclose()
    return cpu / jobs, wall / jobs


async def main(jobs: int) -> None:
    for threads in (1, TASKS):
        cpu, wall = await measure(threads, jobs)
        print(
            f"{TASKS} tasks, {threads:2d} thread(s): "
            f"{cpu * 1e6:5.0f} us CPU, {wall * 1e6:5.0f} us wall per hand-off"
        )
    for size in sorted({3, DEFAULT_POOL_SIZE, 16}):
        cpu, wall = await measure_pool(size, jobs)
        print(
            f"{TASKS} tasks, {TASKS} lanes on a pool of {size:2d}: "
            f"{cpu * 1e6:5.0f} us CPU, {wall * 1e6:5.0f} us wall per hand-off"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6400)
    trio.run(main, parser.parse_args().jobs)
