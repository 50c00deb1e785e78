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
``prefill_sqlite_partition`` writes a large partition straight to disk, for
tests and benchmarks that need gigabytes without waiting for a server to take
them in.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mkv.client.admin import AdminClient
from mkv.client.data import Client
from mkv.client.unwrap import unwrap_single_exception
from mkv.node.catalog import Catalog, CatalogEntry
from mkv.node.config import Config
from mkv.node.server import Node
from mkv.pipeline import default_pipeline
from mkv.router import KeyRange
from mkv.store import SQLITE_FILE
from mkv.store.sqlite import create_layout

__all__ = [
    "mkv_admin",
    "mkv_client",
    "mkv_node",
    "prefill_key",
    "prefill_sqlite_partition",
    "running_node",
]

_PREFILL_ROWS_PER_COMMIT = 50_000


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


def prefill_key(i: int) -> bytes:
    """Key number ``i`` written by ``prefill_sqlite_partition``."""
    return b"fill:%010d" % i


def prefill_sqlite_partition(
    data_dir: Path, *, keys: int, value_size: int, partition_id: str = "default", seed: int = 0
) -> None:
    """Create ``data_dir`` holding one SQLite partition that owns every key and
    holds ``keys`` keys (``prefill_key(i)``, written at seq ``i + 1``) with
    values of ``value_size`` pseudo-random bytes; blocking.

    The store's file is written directly, in the store's layout, so a
    gigabyte takes seconds, not the minutes a server would need to take it
    in. Start a node on ``data_dir`` afterwards.

    Raises:
        FileExistsError: ``data_dir`` already holds a catalog.
    """
    catalog_path = data_dir / "catalog.json"
    if catalog_path.exists():
        raise FileExistsError(catalog_path)
    directory = data_dir / "partitions" / partition_id
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    # Values are slices of one random block: distinct enough that SQLite
    # cannot share pages, and no time spent generating bytes.
    block = rng.randbytes(value_size + 4096)
    conn = sqlite3.connect(directory / SQLITE_FILE, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        create_layout(conn)
        for first in range(0, keys, _PREFILL_ROWS_PER_COMMIT):
            rows = range(first, min(keys, first + _PREFILL_ROWS_PER_COMMIT))
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO kv (key, value, seq, ts) VALUES (?, ?, ?, 0)",
                ((prefill_key(i), block[i % 4096 : i % 4096 + value_size], i + 1) for i in rows),
            )
            conn.execute("COMMIT")
        conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (keys,))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    entry = CatalogEntry(partition_id, KeyRange(b"", None), "sqlite", default_pipeline("sqlite"))
    Catalog(partitions=[entry], map_version=1).save(catalog_path)
