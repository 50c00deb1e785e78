"""tools/bench_restore.py still runs end to end on a small partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.tool_runs import run_tool


async def test_bench_restore_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    with trio.fail_after(120):
        results, done = await run_tool(
            "bench_restore.py",
            *("--keys", "2000", "--runs", "1", "--dir", str(tmp_path)),
            json_out=tmp_path / "bench.json",
        )
    assert results["keys"] == 2000
    assert results["snapshot_bytes"] > 0
    assert set(results["restores"]) == {"sqlite", "memory"}
    assert all(len(s) == 1 and s[0] > 0 for s in results["restores"].values())
    assert "restore into sqlite" in done.stdout.decode()
    # The scratch directory is cleaned up.
    assert os.listdir(tmp_path) == ["bench.json"]
