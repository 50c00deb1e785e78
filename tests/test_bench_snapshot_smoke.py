"""tools/bench_snapshot.py still runs end to end on a tiny partition.

Only that the tool works and reports every figure is checked, never how fast
anything is: timings on a shared machine say nothing about a change.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench_snapshot.py"


async def test_bench_snapshot_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    with trio.fail_after(120):
        done = await trio.run_process(
            [
                *(sys.executable, str(BENCH), "--size", "4MiB", "--runs", "1"),
                *("--duration", "0.3", "--warmup", "0.1", "--concurrency", "2"),
                *("--dir", str(tmp_path), "--json", str(out)),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(out.read_text())
    assert results["database_bytes"] >= 4 * 1024 * 1024 * 0.8
    for name in ("bare_mb_s", "snapshot_mb_s", "snapshot_loaded_mb_s", "throughput_ratio"):
        assert results[name] > 0, name
    assert results["upserts_without"]["ops"] > 0
    assert results["upserts_during"]["latency_ms"]["p99"] >= 0
    assert len(results["server_phases"]) == 2, "the server logged both snapshots"
    assert "p99 during / without" in done.stdout.decode()
    # The scratch directory is cleaned up.
    assert os.listdir(tmp_path) == ["bench.json"]
