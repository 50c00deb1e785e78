"""Shared fixtures. The in-process node fixtures come from mkv.testing (our plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.grpcio_stubs import GrpcioStubs, generate_stubs
from tests.processes import ServerProcess

# pytester: tests/test_testing_plugin.py runs our pytest plugin in fresh pytest runs.
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> GrpcioStubs:
    """grpcio stubs generated from protos/ once per run (see tests/grpcio_stubs.py)."""
    return generate_stubs(tmp_path_factory.mktemp("grpcio-stubs"))


@pytest.fixture
async def server_process(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A real ``mkv serve`` subprocess on free ports, stopped (or killed) afterwards."""
    process = ServerProcess(tmp_path / "mkv-data")
    await process.start()
    try:
        yield process
    finally:
        await process.kill()
