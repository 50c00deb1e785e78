"""tools/bench.py still runs end to end: every workload and ceiling yields numbers.

Only that the tool works is checked, never how fast anything is: timings on a
shared CI machine say nothing about a change.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.tool_runs import run_tool

WORKLOADS = {
    "batch-upsert",
    "single-upsert",
    "get",
    "get-zipf",
    "mix",
    "partitions",
    "session-upsert",
    "session-get",
}
BASELINES = {
    "sqlite",
    "sqlite-tuned",
    "echo",
    "rpc-echo",
    "fsync-each",
    "one-partition",
    "unary-upsert",
    "unary-get",
}
FIGURES = {"memory-rss", "sqlite-rss", "restart", "replay"}


async def test_bench_smoke_mode_reports_every_workload(tmp_path: Path) -> None:
    with trio.fail_after(180):
        report, done = await run_tool("bench.py", "--smoke", json_out=tmp_path / "bench.json")
    results = report["results"]

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
            expected = {
                "sqlite",
                f"echo c={r['concurrency']}",
                f"one-partition c={r['concurrency']}",
                # Sessions against the same client's unary calls, same run.
                f"unary-upsert c={r['concurrency']}",
                f"unary-get c={r['concurrency']}",
            }
            assert r["baseline"] in expected, r
            if r["name"] not in {"batch-upsert", "partitions", "session-upsert", "session-get"}:
                assert r["rpc_ratio"] is not None, r
            if r["name"] == "single-upsert":
                assert r["group_commit_ratio"] is not None, r
    figures = report["figures"]
    assert {f["name"] for f in figures} == FIGURES
    for f in figures:
        # Replay is a start-up less an empty node's: with the smoke test's
        # few records that difference is noise, and may be below zero.
        if f["name"] == "replay":
            assert f["detail"]["start_s"] > 0, f
            assert f["detail"]["records"] == 2_000, f
        else:
            assert f["value"] > 0, f
        assert f["target"], f
    restart = next(f for f in figures if f["name"] == "restart")
    # Every size's node started and found the last key it was built with.
    assert [s["keys"] for s in restart["detail"]["sizes"]] == [2_000, 8_000]
    assert all(s["first_get_s"] > 0 and s["rss_mb"] > 0 for s in restart["detail"]["sizes"])
    # The tables went to stdout too: one line per result or figure under two
    # headers and their rules, with a blank line between the tables.
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == len(results) + 2 + 1 + len(figures) + 2
