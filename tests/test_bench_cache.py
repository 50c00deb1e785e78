"""tools/bench_cache.py still runs and reports every workload (never how fast)."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_cache_smoke_mode_reports_every_workload(tmp_path: Path) -> None:
    with trio.fail_after(60):
        report, _ = await run_tool("bench_cache.py", "--smoke", json_out=tmp_path / "bench.json")
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == {"miss", "hit", "hit-absent", "sqlite", "dict", "zipf", "memory"}
    for name in ("miss", "hit", "hit-absent", "sqlite", "dict", "zipf"):
        assert results[name]["reads"] > 0
        assert results[name]["latency_us"]["p50"] > 0
    assert 0 < results["zipf"]["hit_ratio"] < 1
    # The charged size is an upper estimate of the memory really used.
    assert results["memory"]["traced_per_charged"] <= 1
