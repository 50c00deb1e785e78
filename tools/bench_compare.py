"""Runs of tools/bench.py side by side, as Markdown: each figure and its ratio per run.

    python tools/bench_compare.py bench-results/a.json bench-results/b.json

On a shared machine one run says little; the spread of a few does. Each cell
is ``throughput (ratio to its baseline)``; the memory, restart and replay
figures follow, one row each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cell(result: dict[str, Any]) -> str:
    unit = "k keys/s" if result["unit"] == "keys/s" else " ops/s"
    value = result["throughput"] / (1000 if result["unit"] == "keys/s" else 1)
    ratio = f" ({result['ratio']:.2f}x)" if result.get("ratio") is not None else ""
    return f"{value:,.0f}{unit}{ratio}"


def compare(runs: list[dict[str, Any]]) -> str:
    header = ["workload", "conc", *(r["started"] for r in runs), "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys: list[tuple[str, int]] = []
    for run in runs:
        for r in run["results"]:
            if (r["name"], r["concurrency"]) not in keys:
                keys.append((r["name"], r["concurrency"]))
    for name, conc in keys:
        cells, target = [], ""
        for run in runs:
            found = [r for r in run["results"] if (r["name"], r["concurrency"]) == (name, conc)]
            cells.append(_cell(found[0]) if found else "")
            if found and found[0].get("target"):
                target = found[0]["target"]
        lines.append("| " + " | ".join([name, str(conc), *cells, target]) + " |")
    figures: list[str] = []
    for run in runs:
        figures += [f["name"] for f in run.get("figures", []) if f["name"] not in figures]
    for name in figures:
        cells, target = [], ""
        for run in runs:
            found = [f for f in run.get("figures", []) if f["name"] == name]
            cells.append(f"{found[0]['value']:,.2f} {found[0]['unit']}" if found else "")
            target = found[0]["target"] if found else target
        lines.append("| " + " | ".join([name, "", *cells, target]) + " |")
    loads = [f"{r['host'].get('busy_before_pct', 0):.0f}%" for r in runs]
    lines.append("")
    lines.append("CPU used by other processes before each run: " + ", ".join(loads))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files written by bench.py")
    args = parser.parse_args()
    print(compare([json.loads(path.read_text()) for path in args.runs]))


if __name__ == "__main__":
    main()
