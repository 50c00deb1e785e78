"""tools/bench_ab.py still runs end to end: two trees, alternating slices.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.tool_runs import run_tool

REPO = Path(__file__).resolve().parents[1]


async def test_bench_ab_smoke_run_reports_both_sides_and_their_ratio(tmp_path: Path) -> None:
    with trio.fail_after(120):
        report, done = await run_tool(
            "bench_ab.py",
            *(str(REPO), str(REPO), "--op", "get", "--concurrency", "2"),
            *("--slices", "2", "--slice", "0.3", "--warmup", "0.2", "--dir", str(tmp_path)),
            json_out=tmp_path / "ab.json",
        )
    for side in ("A", "B"):
        assert len(report[side]["ops"]) == 2, side
        assert min(report[side]["ops"]) > 0, side
        assert min(report[side]["server_cpu_us"]) > 0, side
    assert len(report["b_over_a"]["pairs"]) == 2
    assert "B/A, median of the pairs" in done.stdout.decode()
