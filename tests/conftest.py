"""Shared fixtures. The in-process node fixtures come from mkv.testing (our plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.processes import ServerProcess


@pytest.fixture
async def server_process(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A real ``mkv serve`` subprocess on free ports, stopped (or killed) afterwards."""
    process = ServerProcess(tmp_path / "mkv-data")
    await process.start()
    try:
        yield process
    finally:
        await process.kill()
