"""tools/bench.py still runs end to end: every workload and ceiling yields numbers.

Only that the tool works is checked, never how fast anything is: timings on a
shared CI machine say nothing about a change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench.py"
WORKLOADS = {"batch-upsert", "single-upsert", "get", "get-zipf", "mix"}
BASELINES = {"sqlite", "echo", "rpc-echo", "fsync-each"}


async def test_bench_smoke_mode_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(out.read_text())["results"]

    assert {r["name"] for r in results} == WORKLOADS | BASELINES
    for r in results:
        assert r["throughput"] > 0, r
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        assert set(r["latency_ms"]) >= {"p50", "p99", "p999"}, r
    for r in results:
        if r["name"] in WORKLOADS:
            assert r["ratio"] is not None, r
            assert r["ratio"] > 0, r
            assert r["baseline"] in {"sqlite"} | {f"echo c={r['concurrency']}"}, r
            if r["name"] != "batch-upsert":
                assert r["rpc_ratio"] is not None, r
            if r["name"] == "single-upsert":
                assert r["group_commit_ratio"] is not None, r
    # The table went to stdout too, one line per result under its header.
    assert len(done.stdout.decode().strip().splitlines()) == len(results) + 2
