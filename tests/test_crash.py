"""Crash safety, proved by kill -9 of a real server under load (see tests/crash.py).

CI runs 20 cycles with a fixed seed; `just soak` runs many more with a seed
it prints (MKV_SOAK_SEED=<seed> replays one).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from tests.crash import crash_cycles


async def test_kill_9_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with trio.fail_after(240):
        model = await crash_cycles(tmp_path / "data", cycles=12, seed=20261126)
    assert model.acks > 200, "the writers got real work done between kills"
    assert sum(model.batch_acknowledged.values()) > 0, "some 1 MiB batches were acknowledged"


@pytest.mark.slow
async def test_soak_kill_9(tmp_path: Path) -> None:
    seed = int(os.environ.get("MKV_SOAK_SEED") or random.randrange(2**32))
    cycles = int(os.environ.get("MKV_SOAK_CYCLES", "500"))
    print(f"soak: {cycles} kill -9 cycles, MKV_SOAK_SEED={seed}")
    with trio.fail_after(cycles * 10):
        await crash_cycles(tmp_path / "data", cycles=cycles, seed=seed)
