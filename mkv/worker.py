"""A dedicated OS thread per partition for blocking work (SQLite writes, fsync).

``trio.to_thread`` would hand each call to whichever cached thread is free;
SQLite connections belong to the thread that opened them, and a partition
wants its writes strictly serialised, so each partition owns one thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["WorkerThread"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], Callable[[outcome.Outcome[Any]], None]]


class WorkerThread:
    """Runs synchronous functions one at a time on its own thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, deliver = job
            deliver(outcome.capture(fn))

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the thread and return (or raise) what it does.

        Not cancellable once submitted: a transaction that was handed to SQLite
        finishes, and the caller learns how, so no write's fate is unknown.
        """
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome[Any]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put((fn, deliver))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    async def stop(self) -> None:
        """Let queued work finish, then end the thread."""
        self._jobs.put(None)
        await trio.to_thread.run_sync(self._thread.join)
