"""tools/bench_split.py still runs end to end on a small partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_split_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    with trio.fail_after(120):
        results, done = await run_tool(
            "bench_split.py",
            *("--keys", "20000", "--duration", "0.3", "--warmup", "0.1"),
            *("--concurrency", "2", "--dir", str(tmp_path)),
            json_out=tmp_path / "bench.json",
        )
    assert results["split_seconds"] > 0
    assert results["cut_over_ms_server"] > 0
    for side in ("staying", "moving"):
        assert results[side]["before"]["ops"] > 0, side
        assert results[side]["during"]["latency_ms"]["p99"] >= 0, side
    assert sum(results["key_counts"].values()) >= 20000
    assert results["key_counts"]["upper"] == 10000
    assert "ratio" in done.stdout.decode()
    assert os.listdir(tmp_path) == ["bench.json"]
