"""What counting a request costs: mkv's request observers, per call.

    python tools/bench_metrics.py            # the observers alone
    python tools/bench_metrics.py --server   # and a real server's CPU per Get

Times what ``mkv.rpc.server`` adds to each call when metrics are on (two clock
reads, ``call_started`` and ``call_finished``), with the request log alone
(metrics off), and, for comparison, the same counting done with
prometheus_client's own ``Counter`` and ``Histogram`` (a lock per update),
with children cached per (method, status) as one would.

``--server`` reads these against what a call costs: it runs ``mkv serve``
with metrics off and on, alternately, sends sequential Gets, and divides
the server process's CPU time (user + system, from /proc) by the calls.
CPU time rather than throughput, because on a shared machine throughput
moves by more than the few percent being measured.

This is a measuring tool: nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from purerpc.grpclib.status import Status, StatusCode

import mkv
from mkv.observe.logs import RequestLog
from mkv.observe.metrics import LATENCY_BUCKETS, RequestMetrics

CALLS = 200_000
SERVICE = "mkv.v1.DataPlane"
OK = Status(StatusCode.OK)


def per_call(body: Callable[[], None], calls: int = CALLS) -> float:
    """Microseconds per call of ``body`` (best of three runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            body()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def hook(observer: RequestLog | RequestMetrics | None) -> Callable[[], None]:
    """What mkv.rpc.server._answer does per call with ``observer``."""

    def call() -> None:
        if observer is not None:
            started = time.perf_counter()
            observer.call_started(SERVICE, "Get")
        if observer is not None:
            observer.call_finished(SERVICE, "Get", OK, time.perf_counter() - started)

    return call


def prometheus_client_hook() -> Callable[[], None]:
    registry = CollectorRegistry()
    requests = Counter("r", "", ["service", "method", "code"], registry=registry)
    latency = Histogram("l", "", ["service", "method"], buckets=LATENCY_BUCKETS, registry=registry)
    children = {"OK": requests.labels(SERVICE, "Get", "OK")}
    histogram = latency.labels(SERVICE, "Get")

    def call() -> None:
        started = time.perf_counter()
        children["OK"].inc()
        histogram.observe(time.perf_counter() - started)

    return call


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def gets(address: str, calls: int) -> None:
    async with mkv.Client.connect(address) as client:
        await client.upsert({b"key": b"value" * 20})
        for _ in range(calls):
            await client.get(b"key")


def server_cpu_per_get(metrics: bool, calls: int) -> float:
    """Microseconds of server CPU per sequential Get, metrics on or off."""
    extra = ["--metrics-addr", "127.0.0.1:0"] if metrics else []
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mkv.cli.server", "serve", "--data-dir", data_dir),
                *("--data-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"),
                *("--log-level", "WARNING", *extra),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            address = ""
            while not address:
                line = server.stdout.readline()
                if match := re.match(r"mkv: data plane listening on (\S+)", line):
                    address = match[1]
            trio.run(gets, address, calls // 10)  # warm-up
            before = process_cpu_seconds(server.pid)
            trio.run(gets, address, calls)
            return (process_cpu_seconds(server.pid) - before) / calls * 1e6
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="store_true", help="also measure a real server")
    parser.add_argument("--calls", type=int, default=20_000, help="Gets per server run")
    parser.add_argument("--rounds", type=int, default=3, help="off/on server pairs")
    args = parser.parse_args()
    request_log = RequestLog()
    metrics = RequestMetrics(request_log)
    metrics.declare(SERVICE, "Get", streaming=False)
    baseline = per_call(hook(None))
    rows = [
        ("no observer (the loop itself)", baseline),
        ("request log only (metrics off)", per_call(hook(request_log))),
        ("mkv.observe.metrics.RequestMetrics + request log", per_call(hook(metrics))),
        ("prometheus_client Counter + Histogram", per_call(prometheus_client_hook())),
    ]
    for name, micros in rows:
        print(f"{name:45s} {micros:6.3f} µs/call  (+{micros - baseline:.3f})")
    if not args.server:
        return
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for metrics in (False, True):
            runs[metrics].append(server_cpu_per_get(metrics, args.calls))
    for metrics, cpu in runs.items():
        shown = ", ".join(f"{c:.1f}" for c in cpu)
        print(
            f"server CPU per Get, metrics {'on ' if metrics else 'off'}: {min(cpu):6.1f} µs "
            f"(best of {shown})"
        )
    print(f"difference of the best: {min(runs[True]) / min(runs[False]) - 1:+.1%}")


if __name__ == "__main__":
    main()
