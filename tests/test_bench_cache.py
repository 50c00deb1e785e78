"""tools/bench_cache.py still runs and reports every workload (never how fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench_cache.py"


async def test_bench_cache_smoke_mode_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"miss", "hit", "hit-absent", "sqlite", "dict", "zipf", "memory"}
    for name in ("miss", "hit", "hit-absent", "sqlite", "dict", "zipf"):
        assert results[name]["reads"] > 0
        assert results[name]["latency_us"]["p50"] > 0
    assert 0 < results["zipf"]["hit_ratio"] < 1
    # The charged size is an upper estimate of the memory really used.
    assert results["memory"]["traced_per_charged"] <= 1
