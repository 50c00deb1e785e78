"""Blocking clients for scripts, notebooks and threaded programs.

    with mkv.connect("127.0.0.1:7070") as db:
        db.upsert({b"user:1": b"ada"})
        assert db.get(b"user:1") == b"ada"
        for key, item in db.scan(b"user:", b"user;"):
            ...

``BlockingClient`` and ``BlockingAdminClient`` have the methods of
``mkv.Client`` and ``mkv.AdminClient``, with the same arguments, answers and
errors, minus ``await``. Each runs the async client on a Trio event loop in
a private daemon thread and hands calls to it (``trio.from_thread``), so:

- any number of threads may call one client at once (their calls run side by
  side on the loop, as concurrent tasks would); one scan or watch iterator
  belongs to one thread at a time;
- a client closes with its ``with`` block, on ``close()``, when it is
  garbage collected, or at interpreter exit, whichever comes first; calls
  after that (and a watch being read in another thread) raise
  ``UnavailableError``.

The thread is a daemon on purpose: interpreter exit waits for every
non-daemon thread *before* it runs ``atexit`` handlers, so a forgotten
client on a non-daemon thread would hang the exit instead of being closed by
its handler.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

import trio

from mkv.client.admin import AdminClient, NodeInfo, NodeStatus, OperationInfo, PartitionInfo
from mkv.client.data import Client, Key, KeyMap, PartitionRange, Value, WriteAck
from mkv.client.streams import Change, Watch
from mkv.errors import UnavailableError
from mkv.records import Item
from mkv.wire import DEFAULT_CONTROL_ADDR, Address

__all__ = ["BlockingAdminClient", "BlockingClient", "BlockingWatch", "connect"]

log = logging.getLogger("mkv.client")

T = TypeVar("T")
P = ParamSpec("P")
A = TypeVar("A", Client, AdminClient)


class _LoopThread:
    """A Trio event loop on a daemon thread, which other threads hand calls to.

    Calls go through ``trio.from_thread.run`` with the loop's token: about a
    third of the cost of an anyio portal's hop (tools/bench_blocking.py).
    """

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._token is None:
            self._thread.join()
            raise RuntimeError("The event loop thread of the mkv client did not start.") from (
                self._error
            )

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # handed to the thread that started the loop
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run ``function()`` on the loop and wait for its outcome.

        Raises:
            Whatever the call raised, unchanged.
            UnavailableError: the loop stopped (the client was closed) first.
        """
        if threading.current_thread() is self._thread:
            # From inside the loop (a callback such as on_progress): waiting
            # for the loop would wait forever.
            raise RuntimeError("A blocking mkv client cannot be called from its own event loop.")
        try:
            return trio.from_thread.run(function, trio_token=self._token)
        except (trio.Cancelled, trio.RunFinishedError):
            # Cancelled: the loop was stopping while the call ran.
            raise UnavailableError("The mkv client was closed.") from None

    def enter(self, manager: AbstractAsyncContextManager[T]) -> tuple[T, _Leave]:
        """Enter an async context manager in a task of its own on the loop (its
        cancel scopes must be left by the task that entered them); the
        returned ``_Leave`` exits it."""
        release = trio.Event()
        finished = trio.Event()
        failures: list[Exception] = []
        entered = False

        async def hold(*, task_status: trio.TaskStatus[T]) -> None:
            nonlocal entered
            try:
                async with manager as value:
                    entered = True
                    task_status.started(value)
                    await release.wait()
            except Exception as exc:
                if not entered:
                    raise  # to start(), and so to enter's caller
                failures.append(exc)  # to _Leave's caller, not the loop's nursery
            finally:
                finished.set()

        async def start() -> T:
            assert self._nursery is not None
            value: T = await self._nursery.start(hold)
            return value

        async def leave() -> None:
            release.set()
            await finished.wait()
            if failures:
                raise failures[0]

        return self.call(start), _Leave(self, leave)

    def stop(self) -> None:
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):  # stopped already
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join()

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread


class _Leave:
    """Leaves a context manager ``_LoopThread.enter`` entered."""

    def __init__(self, loop: _LoopThread, leave: Callable[[], Awaitable[None]]) -> None:
        self._loop = loop
        self._leave = leave

    def __call__(self) -> None:
        self._loop.call(self._leave)


def _shut(loop: _LoopThread, connection: _Leave) -> None:
    """Close the connection, then stop its loop (a weakref.finalize callback:
    it must not hold the client itself)."""
    if loop.in_loop:
        # Collected on the loop's own thread, which cannot wait for itself.
        threading.Thread(target=_shut, args=(loop, connection), daemon=True).start()
        return
    try:
        connection()
    except Exception:
        # Closing anyway: stopping the loop below ends the connection too.
        log.debug("closing a blocking client", exc_info=True)
    finally:
        loop.stop()


class _Blocking(Generic[A]):
    """What both blocking clients share: the loop, the connection, closing."""

    def __init__(self, open_async: AbstractAsyncContextManager[A], thread_name: str) -> None:
        self._loop = _LoopThread(thread_name)
        try:
            client, connection = self._loop.enter(open_async)
        except BaseException:
            self._loop.stop()
            raise
        self._async: A = client
        # Runs once: on close(), when collected, or at interpreter exit.
        self._finalizer: weakref.finalize[[_LoopThread, _Leave], Any]
        self._finalizer = weakref.finalize(self, _shut, self._loop, connection)

    def close(self) -> None:
        """Close the connection and stop the client's thread; safe to call
        more than once and from any thread."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _call(self, function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._finalizer.alive:
            raise UnavailableError("The mkv client is closed.")
        return self._loop.call(functools.partial(function, *args, **kwargs))

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_B = TypeVar("_B", bound="_Blocking[Any]")


class _BlockingScan:
    """``BlockingClient.scan``'s iterator: each page is fetched on the loop."""

    def __init__(self, owner: BlockingClient, scan: AsyncIterator[tuple[bytes, Item]]) -> None:
        self._owner = owner
        self._scan = scan
        # Two threads sharing one iterator take turns rather than interleave pages.
        self._lock = threading.Lock()

    def __iter__(self) -> _BlockingScan:
        return self

    def __next__(self) -> tuple[bytes, Item]:
        with self._lock:
            try:
                return self._owner._call(self._scan.__anext__)
            except StopAsyncIteration:
                raise StopIteration from None


class BlockingWatch:
    """``BlockingClient.watch``'s changes, as a plain iterator (see ``mkv.Client.watch``).

    Attributes:
        position: every change up to this sequence number has been handed out.
    """

    def __init__(self, owner: BlockingClient, watch: Watch) -> None:
        self._owner = owner
        self._watch = watch
        self._lock = threading.Lock()

    @property
    def position(self) -> int:
        return self._watch.position

    def __iter__(self) -> BlockingWatch:
        return self

    def __next__(self) -> Change:
        with self._lock:
            return self._owner._call(self._watch.__anext__)


class _WatchBlock:
    """The ``with`` block of ``BlockingClient.watch``: ends the watch's call on exit."""

    def __init__(self, owner: BlockingClient, opening: AbstractAsyncContextManager[Watch]) -> None:
        self._owner = owner
        self._opening = opening
        self._exit: _Leave | None = None

    def __enter__(self) -> BlockingWatch:
        if self._owner.closed:
            raise UnavailableError("The mkv client is closed.")
        watch, self._exit = self._owner._loop.enter(self._opening)
        return BlockingWatch(self._owner, watch)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._exit is not None
        if self._owner.closed:
            return  # the loop is gone, and the call with it
        try:
            self._exit()
        except UnavailableError:
            if not self._owner.closed:  # closed meanwhile by another thread
                raise


class BlockingClient(_Blocking[Client]):
    """``mkv.Client`` for code without an event loop. Use ``mkv.connect``
    (or ``BlockingClient.connect``), same arguments as ``mkv.Client.connect``."""

    @classmethod
    def connect(cls, *addresses: str | Address, **options: Any) -> BlockingClient:
        """Connect now; use in ``with``, or ``close()`` when done.

        Args:
            addresses: one node's or several seeds' ``HOST:PORT`` (or one
                comma-separated string), as ``mkv.Client.connect``.
            options: as ``mkv.Client.connect`` (token, token_file, tls, ca, cert, key, ...).

        Raises:
            UnavailableError: no seed answers, or the TLS handshake failed.
            ConfigError: a token or certificate file cannot be read.
        """
        return cls(Client.connect(*addresses, **options), "mkv-client")

    def get(self, key: Key) -> bytes | None:
        """The value stored under ``key``, or None. Linearizable."""
        return self._call(self._async.get, key)

    def get_item(self, key: Key) -> Item | None:
        """The value and its sequence number, or None when the key is absent."""
        return self._call(self._async.get_item, key)

    def batch_get(self, keys: Iterable[Key]) -> list[Item | None]:
        """Items of many keys, in the order asked (None where absent)."""
        return self._call(self._async.batch_get, list(keys))

    def scan(
        self,
        start: Key = b"",
        end: Key | None = None,
        *,
        keys_only: bool = False,
        page_size: int = 1000,
    ) -> Iterator[tuple[bytes, Item]]:
        """Keys in ``[start, end)`` with their items, a page at a time (as ``mkv.Client.scan``)."""
        return _BlockingScan(
            self, self._async.scan(start, end, keys_only=keys_only, page_size=page_size)
        )

    def watch(
        self, start: Key = b"", end: Key | None = None, *, from_seq: int = 0
    ) -> AbstractContextManager[BlockingWatch]:
        """Every mutation of keys in ``[start, end)`` after ``from_seq`` (as ``mkv.Client.watch``)::

        with db.watch(b"user:", b"user;", from_seq=seq) as changes:
            for change in changes:
                ...
        """
        return _WatchBlock(self, self._async.watch(start, end, from_seq=from_seq))

    def upsert(
        self,
        items: KeyMap[Value] | Iterable[tuple[Key, Value]],
        *,
        if_seq: KeyMap[int] | None = None,
        if_value: KeyMap[Value] | None = None,
    ) -> list[WriteAck]:
        """Store every key/value pair (as ``mkv.Client.upsert``)."""
        return self._call(self._async.upsert, items, if_seq=if_seq, if_value=if_value)

    def remove(
        self,
        *keys: Key,
        if_seq: KeyMap[int] | None = None,
        if_value: KeyMap[Value] | None = None,
    ) -> list[WriteAck]:
        """Remove ``keys`` (as ``mkv.Client.remove``)."""
        return self._call(self._async.remove, *keys, if_seq=if_seq, if_value=if_value)

    def increment(self, key: Key, delta: int = 1) -> int:
        """Add ``delta`` to the counter at ``key``; its new value."""
        return self._call(self._async.increment, key, delta)

    def increment_many(self, deltas: KeyMap[int] | Iterable[tuple[Key, int]]) -> list[int]:
        """Several increments, atomically (one partition)."""
        return self._call(self._async.increment_many, deltas)

    def partition_map(self) -> list[PartitionRange]:
        """The node's partitions, refreshed from the server."""
        return self._call(self._async.partition_map)


class BlockingAdminClient(_Blocking[AdminClient]):
    """``mkv.AdminClient`` for code without an event loop."""

    @classmethod
    def connect(
        cls, address: str | Address = DEFAULT_CONTROL_ADDR, **options: Any
    ) -> BlockingAdminClient:
        """Connect now, with the options of ``mkv.AdminClient.connect``."""
        return cls(AdminClient.connect(address, **options), "mkv-admin-client")

    def add_partition(
        self,
        *,
        start: bytes = b"",
        end: bytes | None = None,
        partition_id: str | None = None,
        store: str | None = None,
        pipeline: Sequence[str] | None = None,
        snapshot: str | None = None,
        node: str | None = None,
        replicas: int = 0,
    ) -> PartitionInfo:
        """Create a partition (as ``mkv.AdminClient.add_partition``)."""
        return self._call(
            self._async.add_partition,
            start=start,
            end=end,
            partition_id=partition_id,
            store=store,
            pipeline=pipeline,
            snapshot=snapshot,
            node=node,
            replicas=replicas,
        )

    def remove_partition(self, partition_id: str) -> PartitionInfo:
        return self._call(self._async.remove_partition, partition_id)

    def reopen_partition(self, partition_id: str) -> PartitionInfo:
        return self._call(self._async.reopen_partition, partition_id)

    def list_partitions(self) -> list[PartitionInfo]:
        return self._call(self._async.list_partitions)

    def list_nodes(self) -> list[NodeInfo]:
        """The cluster's nodes (as ``mkv.AdminClient.list_nodes``)."""
        return self._call(self._async.list_nodes)

    def move_partition(self, partition_id: str, node: str) -> str:
        """Start moving a partition to ``node`` (as ``mkv.AdminClient.move_partition``)."""
        return self._call(self._async.move_partition, partition_id, node)

    def transfer_leader(self, partition_id: str, node: str) -> PartitionInfo:
        """Make ``node`` the partition's leader (as ``mkv.AdminClient.transfer_leader``)."""
        return self._call(self._async.transfer_leader, partition_id, node)

    def drain_node(self, node: str) -> str:
        """Start moving every partition off ``node`` (as ``mkv.AdminClient.drain_node``)."""
        return self._call(self._async.drain_node, node)

    def node_status(self) -> NodeStatus:
        """The node's version, uptime, data directory and per-partition state."""
        return self._call(self._async.node_status)

    def snapshot(self, partition_id: str, path: str = "") -> str:
        return self._call(self._async.snapshot, partition_id, path)

    def split_partition(
        self, partition_id: str, at: bytes | str, *, new_id: str | None = None
    ) -> str:
        """Start splitting a partition at ``at`` (as ``mkv.AdminClient.split_partition``)."""
        return self._call(self._async.split_partition, partition_id, at, new_id=new_id)

    def merge_partitions(self, left: str, right: str) -> str:
        """Start merging ``right`` into ``left`` (as ``mkv.AdminClient.merge_partitions``)."""
        return self._call(self._async.merge_partitions, left, right)

    def get_operation(self, operation_id: str) -> OperationInfo:
        return self._call(self._async.get_operation, operation_id)

    def wait_operation(
        self,
        operation_id: str,
        *,
        on_progress: Callable[[OperationInfo], None] | None = None,
        poll_interval: float = 0.2,
    ) -> OperationInfo:
        """Poll until the operation finishes. ``on_progress`` runs on the
        client's thread: it must not call the client."""
        return self._call(
            self._async.wait_operation,
            operation_id,
            on_progress=on_progress,
            poll_interval=poll_interval,
        )


def connect(*addresses: str | Address, **options: Any) -> BlockingClient:
    """A blocking client of the data plane at ``addresses`` (one node, or a
    cluster's seeds): ``BlockingClient.connect``."""
    return BlockingClient.connect(*addresses, **options)
