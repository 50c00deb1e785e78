"""tools/bench_snapshot.py still runs end to end on a tiny partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_snapshot_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    with trio.fail_after(120):
        results, done = await run_tool(
            "bench_snapshot.py",
            *("--size", "4MiB", "--runs", "1", "--duration", "0.3", "--warmup", "0.1"),
            *("--concurrency", "2", "--dir", str(tmp_path)),
            json_out=tmp_path / "bench.json",
        )
    assert results["database_bytes"] >= 4 * 1024 * 1024 * 0.8
    for name in ("bare_mb_s", "snapshot_mb_s", "snapshot_loaded_mb_s", "throughput_ratio"):
        assert results[name] > 0, name
    assert results["upserts_without"]["ops"] > 0
    assert results["upserts_during"]["latency_ms"]["p99"] >= 0
    assert len(results["server_phases"]) == 2, "the server logged both snapshots"
    assert "p99 during / without" in done.stdout.decode()
    # The scratch directory is cleaned up.
    assert os.listdir(tmp_path) == ["bench.json"]
