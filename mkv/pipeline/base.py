"""What a pipeline stage is.

A partition's pipeline is an ordered list of stages a write passes on its
way to the store. Synchronous stages (stamping, filtering, sanitizing) run
one write at a time in the partition's task, in arrival order, and may change
the write or refuse it by raising an ``MkvError``. Asynchronous stages (the
write-ahead log, replication) may take time and may finish writes out of
order; writes enter each asynchronous stage in sequence order, and the
partition's reorder window puts results back in order before anything is
applied or answered. Synchronous stages come first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import trio

from mkv.errors import MkvError
from mkv.records import Write
from mkv.worker import WorkerPool

__all__ = [
    "UNOBSERVED",
    "AsyncStage",
    "Gating",
    "Recovered",
    "Restorable",
    "StageContext",
    "StageObserver",
    "SyncStage",
]


@attrs.frozen
class Recovered:
    """What a restarted partition knows before it serves: numbering resumes after it."""

    last_seq: int = 0
    last_timestamp: int = 0

    def later(self, other: Recovered) -> Recovered:
        """What both the store and the log have seen."""
        return Recovered(
            max(self.last_seq, other.last_seq), max(self.last_timestamp, other.last_timestamp)
        )


class StageObserver(Protocol):
    """Told of what stages measure (for metrics); handed to stages in their context.

    Stages report here rather than import the metrics module: the pipeline
    then needs nothing of whoever listens (docs/architecture.md). Called from
    a stage's worker thread, so an observer must be thread-safe and quick.
    """

    def wal_synced(self, seconds: float, writes: int) -> None:
        """One fsync of a write-ahead log took ``seconds`` and made ``writes`` durable."""
        ...


class _Unobserved:
    def wal_synced(self, seconds: float, writes: int) -> None:
        pass


# Measurements go nowhere: for stages built outside a node (tests, tools).
UNOBSERVED: StageObserver = _Unobserved()


@attrs.frozen
class StageContext:
    """What a stage factory may use to build its stage for one partition."""

    partition_id: str
    # The partition's own directory: a stage keeps its files under it.
    directory: Path
    observer: StageObserver = UNOBSERVED
    # The node's thread pool, for a stage's blocking work in order (the log's
    # lane); None: a stage that needs a thread starts its own.
    workers: WorkerPool | None = None
    # The partition's last applied seq, asked when needed (a stage that keeps
    # writes until the store has them: the replicate stage's tail).
    applied_seq: Callable[[], int] = lambda: 0


@runtime_checkable
class SyncStage(Protocol):
    name: str

    def process(self, write: Write) -> Write:
        """Return the write, changed or not, or raise an ``MkvError`` to refuse it."""
        ...


@runtime_checkable
class Restorable(Protocol):
    """A stage with state that must carry on from before a restart (a clock)."""

    def restore(self, recovered: Recovered) -> None: ...


@runtime_checkable
class Gating(Protocol):
    """An asynchronous stage that may refuse writes before they are numbered
    (so nothing is logged: the replicate stage below min_isr) and that holds
    writes it must fail when the partition closes."""

    def admission(self) -> MkvError | None:
        """Why writes are refused now, or None."""
        ...

    def abandon(self, error: MkvError) -> None:
        """Fail every write the stage holds with ``error``; admit nothing more."""
        ...


@runtime_checkable
class AsyncStage(Protocol):
    name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Do the stage's background work; report started when ``submit`` may be
        called; return after ``close`` once in-flight writes are finished."""
        ...

    def submit(self, write: Write) -> Awaitable[None]:
        """Take ``write``; the returned awaitable finishes when the stage is done
        with it (for a log: durable), or raises an ``MkvError`` if it failed.

        The partition submits writes in sequence order (a log appends them in
        that order); their awaitables may finish in any order. ``submit``
        itself may raise an ``MkvError`` to refuse a write at once.
        """
        ...

    def close(self) -> None:
        """No more ``submit`` calls will come."""
        ...


@runtime_checkable
class Notifying(Protocol):
    """An asynchronous stage that can say when it is done with a write by a
    call instead of an awaitable. A partition whose only asynchronous stage
    is one (``timestamp wal``, the single-node default) then runs no task and
    no event per write (docs/performance.md, "The log's completion")."""

    def submit_notify(self, write: Write, done: Callable[[MkvError | None], None]) -> None:
        """As ``AsyncStage.submit``, but ``done`` is called once, from one of
        the stage's own tasks, with None or the write's error; it must not
        block or raise. ``submit_notify`` itself raises an ``MkvError`` to
        refuse a write at once (``done`` is then never called)."""
        ...
