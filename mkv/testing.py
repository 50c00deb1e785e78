"""Helpers for testing code that uses mkv, and a pytest plugin.

The plugin is registered by entry point, so installing mkv is enough. With
pytest-trio (``trio_mode = true``), a test asks for a fixture::

    async def test_profile_is_saved(mkv_client):
        await save_profile(mkv_client, user="ada")
        assert await mkv_client.get(b"profile:ada") is not None

Fixtures:
    mkv_node:   an in-process mkv ``Node`` on free ports with a temporary data dir.
    mkv_client: an ``mkv.Client`` connected to ``mkv_node``.
    mkv_admin:  an ``mkv.AdminClient`` connected to ``mkv_node``.

Outside pytest, ``running_node`` does the same as an async context manager.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mkv.admin import AdminClient
from mkv.client import Client
from mkv.config import Config
from mkv.server import Node
from mkv.unwrap import unwrap_single_exception

__all__ = ["mkv_admin", "mkv_client", "mkv_node", "running_node"]


@asynccontextmanager
async def running_node(data_dir: Path | None = None, **settings: Any) -> AsyncIterator[Node]:
    """Run a node on 127.0.0.1 with free ports until the block ends.

    Args:
        data_dir: where the node keeps its data; a temporary directory
            (removed afterwards) when None.
        settings: any other ``Config`` field, e.g. ``default_store="memory"``.
    """
    settings.setdefault("data_addr", "127.0.0.1:0")
    settings.setdefault("control_addr", "127.0.0.1:0")
    with tempfile.TemporaryDirectory(prefix="mkv-") as tmp:
        config = Config(data_dir=data_dir or Path(tmp), **settings)
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                node: Node = await nursery.start(Node(config).run)
                try:
                    yield node
                finally:
                    node.stop()


@pytest.fixture
async def mkv_node(tmp_path: Path) -> AsyncIterator[Node]:
    """An in-process mkv node, one SQLite partition owning every key."""
    async with running_node(tmp_path / "mkv-data") as node:
        yield node


@pytest.fixture
async def mkv_client(mkv_node: Node) -> AsyncIterator[Client]:
    async with Client.connect(mkv_node.data_address) as client:
        yield client


@pytest.fixture
async def mkv_admin(mkv_node: Node) -> AsyncIterator[AdminClient]:
    async with AdminClient.connect(mkv_node.control_address) as admin:
        yield admin
