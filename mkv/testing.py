"""Helpers for testing code that uses mkv, and a pytest plugin.

The plugin is registered by entry point, so installing mkv is enough. A test
asks for a fixture::

    async def test_profile_is_saved(mkv_client):
        await save_profile(mkv_client, user="ada")
        assert await mkv_client.get(b"profile:ada") is not None

The async fixtures work under pytest-trio (``trio_mode = true``, or
``@pytest.mark.trio``), anyio's plugin (``@pytest.mark.anyio``, Trio or
asyncio) and pytest-asyncio (``asyncio_mode = auto``); a test that no plugin
runs fails with one line saying what to set. Under Trio the node runs in the
test's own event loop (so a test may reach into it); under asyncio it runs in
a thread of its own, since the node itself needs Trio.

Fixtures:
    mkv_node:   an mkv ``Node`` on free ports with a temporary data dir.
    mkv_client: an ``mkv.Client`` connected to ``mkv_node``.
    mkv_admin:  an ``mkv.AdminClient`` connected to ``mkv_node``.

Outside pytest (pytest need not even be installed), ``running_node`` runs a
node as an async context manager under Trio, and ``node_in_thread`` runs one
on a thread of its own as a plain context manager, for asyncio programs,
blocking clients and scripts. ``prefill_sqlite_partition`` writes a large
partition straight to disk, for tests and benchmarks that need gigabytes
without waiting for a server to take them in.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import sniffio
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
    "node_for_this_loop",
    "node_in_thread",
    "prefill_key",
    "prefill_sqlite_partition",
    "running_node",
]

_PREFILL_ROWS_PER_COMMIT = 50_000

T = TypeVar("T")


@asynccontextmanager
async def running_node(data_dir: Path | None = None, **settings: Any) -> AsyncIterator[Node]:
    """Run a node on 127.0.0.1 with free ports until the block ends (under Trio).

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


class _NodeThread:
    """A node run by ``running_node`` in a Trio event loop on a thread of its own."""

    def __init__(self, data_dir: Path | None, settings: dict[str, Any]) -> None:
        self._data_dir = data_dir
        self._settings = settings
        self._started = threading.Event()
        self._node: Node | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="mkv-test-node", daemon=True)

    def start(self) -> Node:
        self._thread.start()
        self._started.wait()
        if self._node is None:
            self._thread.join()
            assert self._error is not None
            raise self._error
        return self._node

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            # RunFinishedError: the node ended by itself (its error is raised below).
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # handed to the thread that started the node
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        async with running_node(self._data_dir, **self._settings) as node:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._node = node
            self._started.set()
            await self._stop.wait()


@contextmanager
def node_in_thread(data_dir: Path | None = None, **settings: Any) -> Iterator[Node]:
    """``running_node`` on a thread of its own, as a plain context manager.

    For code that is not under Trio: asyncio programs, the blocking client,
    scripts. The node's addresses (``node.data_address``,
    ``node.control_address``) may be read from any thread; anything else of
    the node belongs to its thread.

    Raises:
        Whatever stopped the node from starting, or ended it early.
    """
    thread = _NodeThread(data_dir, settings)
    node = thread.start()
    try:
        yield node
    finally:
        thread.stop()


@asynccontextmanager
async def node_for_this_loop(data_dir: Path | None = None, **settings: Any) -> AsyncIterator[Node]:
    """A node for the running event loop: in it under Trio, in a thread otherwise."""
    if sniffio.current_async_library() == "trio":
        async with running_node(data_dir, **settings) as node:
            yield node
        return
    thread = _NodeThread(data_dir, settings)
    # Starting takes a moment of disk work: not on the caller's event loop.
    node = await anyio.to_thread.run_sync(thread.start)
    try:
        yield node
    finally:
        await anyio.to_thread.run_sync(thread.stop)


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


@asynccontextmanager
async def _in_one_task(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit ``manager`` in one task, even where a fixture's setup
    and teardown run in two tasks (pytest-asyncio): a client holds an anyio
    task group, whose cancel scope must be left by the task that entered it."""
    if sniffio.current_async_library() != "asyncio":
        async with manager as value:
            yield value
        return
    import asyncio  # only under asyncio, which is then loaded already

    entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold() -> None:
        try:
            async with manager as value:
                entered.set_result(value)
                await release.wait()
        except BaseException as exc:
            if entered.done():
                raise
            entered.set_exception(exc)  # raised by the fixture's setup below

    holder = asyncio.create_task(hold())
    try:
        yield await entered
    finally:
        release.set()
        await holder


# The fixtures and the check need pytest; everything above does not.
try:
    import pytest
except ModuleNotFoundError:
    pytest = None  # type: ignore[assignment]

# The most specific first: a test that asks for mkv_client is told about mkv_client.
_ASYNC_FIXTURES = ("mkv_client", "mkv_admin", "mkv_node")

if pytest is not None:

    @pytest.fixture
    async def mkv_node(tmp_path: Path) -> AsyncIterator[Node]:
        """An mkv node, one SQLite partition owning every key: in the test's
        event loop under Trio, on a thread of its own under asyncio."""
        async with node_for_this_loop(tmp_path / "mkv-data") as node:
            yield node

    @pytest.fixture
    async def mkv_client(mkv_node: Node) -> AsyncIterator[Client]:
        async with _in_one_task(Client.connect(mkv_node.data_address)) as client:
            yield client

    @pytest.fixture
    async def mkv_admin(mkv_node: Node) -> AsyncIterator[AdminClient]:
        async with _in_one_task(AdminClient.connect(mkv_node.control_address)) as admin:
            yield admin

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item: pytest.Item) -> None:
        """Fail a test that uses mkv's async fixtures where no plugin would run
        them, with one line saying what to set (not a bare AssertionError
        from inside a fixture nobody awaited)."""
        used = [name for name in _ASYNC_FIXTURES if name in getattr(item, "fixturenames", ())]
        if used:
            problem = _async_runner_problem(item)
            if problem is not None:
                pytest.fail(f"{used[0]} is an async fixture, but {problem}", pytrace=False)

    def _async_runner_problem(item: pytest.Item) -> str | None:
        """Why no plugin will run this test's async fixtures, or None if one will."""
        if item.get_closest_marker("trio") is not None:
            return None  # pytest-trio: trio_mode = true, or @pytest.mark.trio
        if "anyio_backend" in getattr(item, "fixturenames", ()):
            return None  # anyio's plugin: @pytest.mark.anyio
        manager = item.config.pluginmanager
        if manager.hasplugin("asyncio") and item.get_closest_marker("asyncio") is not None:
            if item.config.getini("asyncio_mode") == "auto":
                return None
            return (
                "pytest-asyncio runs only its own fixtures in strict mode: "
                "set asyncio_mode = auto (or use @pytest.mark.anyio)"
            )
        return (
            "no plugin runs this test: set trio_mode = true (pytest-trio), "
            "or mark it @pytest.mark.trio, @pytest.mark.anyio, "
            "or set asyncio_mode = auto (pytest-asyncio)"
        )
