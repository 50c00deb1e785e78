"""tools/bench_merge.py still runs end to end on a small right partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_merge_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    with trio.fail_after(120):
        results, done = await run_tool(
            "bench_merge.py",
            *("--keys", "20000", "--duration", "0.3", "--warmup", "0.1"),
            *("--concurrency", "2", "--dir", str(tmp_path)),
            json_out=tmp_path / "bench.json",
        )
    assert results["merge_seconds"] > 0
    assert results["cut_over_ms_server"] > 0
    for side in ("left", "right"):
        assert results[side]["before"]["ops"] > 0, side
        assert results[side]["during"]["latency_ms"]["p99"] >= 0, side
    # The left partition's 1,000 keys and the right one's, in the survivor.
    assert results["key_counts"] == {"default": 21000}
    assert "ratio" in done.stdout.decode()
    assert os.listdir(tmp_path) == ["bench.json"]
