"""Blocking work (SQLite writes, log appends, fsync) off the event loop, in order.

A partition wants its store jobs, and its log's jobs, run strictly one at a
time and in the order submitted; ``trio.to_thread`` would hand each call to
whichever cached thread is free, with no order between them. Giving every
partition threads of its own keeps order but costs a sleeping thread woken
(and a GIL hand-off) per job, and 64 partitions then have 128 threads
(docs/performance.md measures what that costs).

So a node has one :class:`WorkerPool`: a few threads, and a :class:`Lane`
(a serial queue) per user of it (a partition's store, a partition's log). A
lane with work waits in the pool's ready queue; an idle thread takes the
lane at its head, runs *one* of its jobs, and puts the lane back at the tail
if it has more. A lane is in the ready queue or on a thread, never both and
never on two threads, so its jobs run one at a time and in order, on
whichever thread took it. A slow job therefore holds one thread: the other
lanes go on on the rest (invariant 4), and ``size`` slow lanes at once are
what it takes to make the others wait.

:class:`WorkerThread` is a lane on a private pool of one thread: what code
that has no node's pool to hand (tools, direct uses in tests) runs on.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import outcome
import trio

__all__ = ["DEFAULT_POOL_SIZE", "Lane", "SerialWorker", "WorkerPool", "WorkerThread"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], Callable[[outcome.Outcome[Any]], None]]

# Enough that one slow partition (which holds at most two threads: its
# store's lane and its log's) leaves most of them to the rest, few enough
# that a busy node finds a thread already awake rather than waking one per
# job; measured in docs/performance.md ("The node-wide pool").
DEFAULT_POOL_SIZE = min(16, (os.cpu_count() or 1) + 4)


class SerialWorker(Protocol):
    """What a partition needs of a worker: jobs run one at a time, in order."""

    async def run_sync(self, fn: Callable[[], T]) -> T: ...

    async def stop(self) -> None: ...


class WorkerPool:
    """A fixed set of threads running the jobs of many lanes, each lane in order.

    Args:
        size: how many threads; at least 1.
        name: the threads' name prefix (``py-spy`` and ``top -H`` show it).
    """

    def __init__(self, size: int = DEFAULT_POOL_SIZE, name: str = "mkv-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one thread, not {size}")
        self.size = size
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        # Lanes that have a job and are on no thread, oldest first.
        self._ready: collections.deque[Lane] = collections.deque()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self, name: str) -> Lane:
        """A new serial queue on this pool (one per partition store or log)."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        return Lane(self, name)

    def _submit(self, lane: Lane, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            lane._jobs.append(job)
            if not lane._scheduled:
                # Not queued and on no thread: it becomes ready. A lane on a
                # thread is put back by that thread once its job is done, so
                # it never runs on two threads at once.
                lane._scheduled = True
                self._ready.append(lane)
                self._work.notify()

    def _loop(self) -> None:
        lock, ready = self._lock, self._ready
        while True:
            with lock:
                while not ready:
                    if self._closed:
                        return
                    self._work.wait()
                lane = ready.popleft()
                fn, deliver = lane._jobs.popleft()
            # The submitter's Trio run may have ended (it cannot while it
            # waits, but a thread of a shared pool must outlive any caller).
            with contextlib.suppress(trio.RunFinishedError):
                deliver(outcome.capture(fn))
            with lock:
                if lane._jobs:
                    # One job a turn, then to the back: a lane with a long
                    # queue does not keep a thread from the others.
                    ready.append(lane)
                else:
                    lane._scheduled = False

    async def aclose(self) -> None:
        """Finish every job already submitted, then end the threads."""
        with self._lock:
            self._closed = True
            self._work.notify_all()

        def join() -> None:
            for thread in self._threads:
                thread.join()

        await trio.to_thread.run_sync(join)


class Lane:
    """A serial queue on a :class:`WorkerPool`: its jobs run one at a time, in order."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self.name = name
        self._pool = pool
        self._jobs: collections.deque[_Job] = collections.deque()
        # In the pool's ready queue or on a thread (guarded by the pool's lock).
        self._scheduled = False
        self._stopped = False

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on a pool thread, after this lane's earlier jobs, and
        return (or raise) what it does.

        Not cancellable once submitted: a transaction that was handed to SQLite
        finishes, and the caller learns how, so no write's fate is unknown.
        """
        if self._stopped:
            raise RuntimeError(f"worker lane {self.name} is stopped")
        return await self._run(fn)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            mailbox = _MAILBOX.get()
        except LookupError:
            mailbox = _Mailbox(trio.lowlevel.current_trio_token())
            _MAILBOX.set(mailbox)
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome[Any]) -> None:
            mailbox.post(task, result)

        self._pool._submit(self, (fn, deliver))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    async def stop(self) -> None:
        """Let queued work finish; accept no more. The pool's threads stay."""
        self._stopped = True
        await self._run(lambda: None)


class _Mailbox:
    """Where the pool's threads hand results back to one Trio run: the jobs
    that finish while the event loop is busy wake it once, not once each.

    ``TrioToken.run_sync_soon`` writes to the loop's wake-up socket on every
    call. With 64 partitions each finishing its own small log and store jobs,
    that was a system call and a wake-up per job (docs/performance.md, "64
    partitions against one").
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._results: list[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]] = []
        # A drain is queued on the loop and has not started yet.
        self._armed = False

    def post(self, task: trio.lowlevel.Task, result: outcome.Outcome[Any]) -> None:
        """Hand ``result`` to ``task`` (from any thread).

        Raises:
            trio.RunFinishedError: the Trio run has ended.
        """
        with self._lock:
            self._results.append((task, result))
            if self._armed:
                return  # the queued drain takes this one too
            self._armed = True
        self._token.run_sync_soon(self._drain)

    def _drain(self) -> None:
        with self._lock:
            results, self._results = self._results, []
            self._armed = False
        for task, result in results:
            trio.lowlevel.reschedule(task, result)


# The mailbox of the current Trio run, made by its first job.
_MAILBOX: trio.lowlevel.RunVar[_Mailbox] = trio.lowlevel.RunVar("mkv_worker_mailbox")


class WorkerThread:
    """Runs synchronous functions one at a time on a thread of its own."""

    def __init__(self, name: str) -> None:
        self._pool = WorkerPool(1, name)
        self._lane = self._pool.lane(name)

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """As :meth:`Lane.run_sync`."""
        return await self._lane.run_sync(fn)

    async def stop(self) -> None:
        """Let queued work finish, then end the thread."""
        await self._lane.stop()
        await self._pool.aclose()
