"""Running a script of tools/ as a user would, for the tests that check it still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

TOOLS = Path(__file__).resolve().parents[1] / "tools"


async def run_tool(
    script: str, *args: str, json_out: Path
) -> tuple[Any, subprocess.CompletedProcess[bytes]]:
    """Run ``tools/<script> ARGS --json JSON_OUT``; its JSON report and the process.

    Fails the test if the script does not exit 0 (with its stderr); callers
    bound it with ``trio.fail_after``.
    """
    done = await trio.run_process(
        [sys.executable, str(TOOLS / script), *args, "--json", str(json_out)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(await trio.Path(json_out).read_text()), done
