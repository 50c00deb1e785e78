"""tools/bench_cluster.py still runs end to end: both modes, both ops, a ratio each.

Only that the tool works is checked, never the ratio it finds: CPU time on a
shared CI machine says nothing about a change.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.etcd import etcd_binary
from tests.tool_runs import run_tool


async def test_bench_cluster_smoke_run_reports_both_modes(tmp_path: Path) -> None:
    etcd_binary()  # skips (fails under CI=true) without an etcd
    with trio.fail_after(180):
        report, done = await run_tool("bench_cluster.py", "--smoke", json_out=tmp_path / "c.json")
    assert report["rounds"] == 1
    assert report["etcd"]["version"]
    # The second node really ran in cluster mode, on the tool's own etcd.
    assert report["cluster_node"]["cluster"] == "bench"
    assert report["cluster_node"]["id"]
    for op in ("get", "upsert"):
        summary = report["summary"][op]
        assert summary["errors"] == 0, summary
        assert summary["single_cpu_us_per_op"] > 0, summary
        assert summary["cluster_cpu_us_per_op"] > 0, summary
        assert summary["ratio"] > 0, summary
        for mode in ("single", "cluster"):
            (run,) = report["runs"][mode][op]
            assert run["ops"] > 0, run
            assert run["usage"]["server_cpu_pct"] > 0, run
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 2 + 2  # header, rule, get, upsert
    assert "cluster/single" in lines[0]
