"""What a pipeline stage is.

A partition's pipeline is an ordered list of stages a write passes on its
way to the store. Synchronous stages (stamping, filtering, sanitizing) run
one write at a time in the partition's task, in arrival order, and may change
the write or refuse it by raising an ``MkvError``. Asynchronous stages (the
write-ahead log, replication) may take time and may finish writes out of
order; the partition's reorder window puts results back in order before
anything is applied or answered. Synchronous stages come first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import trio

from mkv.pipeline.write import Write

__all__ = ["AsyncStage", "Recovered", "Restorable", "StageContext", "SyncStage"]


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


@attrs.frozen
class StageContext:
    """What a stage factory may use to build its stage for one partition."""

    partition_id: str
    # The partition's own directory: a stage keeps its files under it.
    directory: Path


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
class AsyncStage(Protocol):
    name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Do the stage's background work; report started when ``process`` may be
        called; return after ``close`` once in-flight writes are finished."""
        ...

    async def process(self, write: Write) -> None:
        """Return when the stage is done with ``write`` (for a log: durable).

        Raises:
            MkvError: the write failed in this stage.
        """
        ...

    def close(self) -> None:
        """No more ``process`` calls will come."""
        ...
