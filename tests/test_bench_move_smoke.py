"""tools/bench_move.py still runs end to end on a small partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_move_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    with trio.fail_after(120):
        results, done = await run_tool(
            "bench_move.py",
            *("--keys", "20000", "--duration", "0.3", "--warmup", "0.1"),
            *("--concurrency", "2", "--dir", str(tmp_path)),
            json_out=tmp_path / "bench.json",
        )
    assert results["move_seconds"] > 0
    assert results["keys_per_second"] > 0
    assert results["cut_over_ms"] > 0
    assert results["writers"]["before"]["ops"] > 0
    assert results["writers"]["during"]["latency_ms"]["p99"] >= 0
    assert results["target_keys"] == 20000
    assert "ratio" in done.stdout.decode()
    assert os.listdir(tmp_path) == ["bench.json"]
