"""Shared fixtures. The in-process node fixtures come from mkv.testing (our plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.etcd import VERSIONS, EtcdProcess, etcd_binary, etcd_cluster
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


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    """A real etcd (3.4 when installed, else 3.5) on free ports, stopped afterwards."""
    process = EtcdProcess(etcd_binary(), tmp_path / "etcd-data")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture(params=VERSIONS)
async def etcd_each(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    """A real etcd of each version installed (tests run once per version)."""
    process = EtcdProcess(etcd_binary(request.param), tmp_path / "etcd-data")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def etcd3(tmp_path: Path) -> AsyncIterator[list[EtcdProcess]]:
    """Three members of one etcd cluster (3.4 when installed, else 3.5)."""
    members = await etcd_cluster(etcd_binary(), tmp_path)
    try:
        yield members
    finally:
        for member in members:
            await member.stop()
