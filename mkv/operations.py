"""Long-running control-plane operations: started by one call, followed by GetOperation.

A snapshot of a large partition takes minutes, longer than a call should
stay open, so ``Snapshot`` answers at once with an operation id and the work
goes on in a task of the ``OperationRegistry``'s nursery (the node owns it).
The registry keeps every running operation and the last ``MAX_FINISHED``
finished ones, in memory only: ids are random, so an id from before a restart
is simply unknown (NOT_FOUND), never another operation.

The work reports progress from a thread with ``Operation.report``; one
attribute assignment, so a reader on the event loop never sees half of it.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import outcome
import trio

from mkv.errors import InternalError, MkvError, NotFoundError, UnavailableError, shown
from mkv.observe.logs import fields

__all__ = [
    "MAX_FINISHED",
    "Operation",
    "OperationRegistry",
    "OperationState",
    "Progress",
    "Stopped",
    "run_stoppable",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Finished operations kept for GetOperation; the oldest is forgotten first.
MAX_FINISHED = 256


class OperationState(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@attrs.frozen
class Progress:
    # "starting", then what the work calls its phases; "done" or "failed".
    phase: str = "starting"
    done: int = 0
    # 0 while unknown.
    total: int = 0
    unit: str = "bytes"


@attrs.define(eq=False)
class Operation:
    id: str
    kind: str
    partition_id: str
    state: OperationState = OperationState.RUNNING
    progress: Progress = Progress()
    result: Any = None
    error: MkvError | None = None
    started: float = attrs.field(factory=time.time)
    finished: float | None = None

    def report(self, phase: str, done: int, total: int, unit: str = "bytes") -> None:
        """Record progress; callable from any thread."""
        self.progress = Progress(phase, done, total, unit)


class Stopped(Exception):
    """Raised inside work run by ``run_stoppable`` once asked to stop."""


class OperationRegistry:
    """Runs operations in its own nursery; finds them by id.

    Args:
        max_finished: how many finished operations to remember.
    """

    def __init__(self, max_finished: int = MAX_FINISHED) -> None:
        self.max_finished = max_finished
        self._running: dict[str, Operation] = {}
        self._finished: OrderedDict[str, Operation] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host operations until ``close()``; then cancel those still running."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._closing.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def close(self) -> None:
        """Accept no more operations and cancel the running ones (they fail)."""
        self._closing.set()

    def start(
        self, kind: str, partition_id: str, work: Callable[[Operation], Awaitable[Any]]
    ) -> Operation:
        """Begin ``work(operation)`` in the background; its return value is the result.

        Raises:
            UnavailableError: the registry is closing (the server shuts down).
        """
        if self._nursery is None or self._closing.is_set():
            raise UnavailableError("The server is shutting down.")
        operation = Operation(id=secrets.token_hex(8), kind=kind, partition_id=partition_id)
        self._running[operation.id] = operation
        self._nursery.start_soon(self._run, operation, work, name=f"operation {operation.id}")
        return operation

    def get(self, operation_id: str) -> Operation:
        """Raises:
        NotFoundError: no running operation, and no recent finished one, has that id.
        """
        operation = self._running.get(operation_id) or self._finished.get(operation_id)
        if operation is None:
            raise NotFoundError(f"No operation with id {shown(operation_id)}.")
        return operation

    def running(self, kind: str, partition_id: str) -> Operation | None:
        """The running operation of ``kind`` on the partition, if there is one."""
        for operation in self._running.values():
            if operation.kind == kind and operation.partition_id == partition_id:
                return operation
        return None

    def running_ids(self) -> set[str]:
        return set(self._running)

    async def _run(self, operation: Operation, work: Callable[[Operation], Awaitable[Any]]) -> None:
        try:
            operation.result = await work(operation)
        except MkvError as exc:
            self._finish(operation, exc)
        except trio.Cancelled:
            self._finish(operation, UnavailableError("The server shut down during the operation."))
            raise
        except Exception:
            log.exception("operation %s (%s) failed", operation.id, operation.kind)
            self._finish(
                operation, InternalError("The operation failed; the server log has details.")
            )
        else:
            self._finish(operation, None)

    def _finish(self, operation: Operation, error: MkvError | None) -> None:
        operation.error = error
        operation.state = OperationState.DONE if error is None else OperationState.FAILED
        operation.report(
            operation.state.value,
            operation.progress.done,
            operation.progress.total,
            operation.progress.unit,
        )
        operation.finished = time.time()
        del self._running[operation.id]
        self._finished[operation.id] = operation
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)
        what = fields(
            event=f"operation_{operation.state.value}",
            operation=operation.id,
            kind=operation.kind,
            partition=operation.partition_id,
        )
        if error is None:
            log.info(
                "operation %s (%s of %s) done",
                operation.id,
                operation.kind,
                operation.partition_id,
                extra=what,
            )
        else:
            log.warning(
                "operation %s (%s of %s) failed: %s",
                operation.id,
                operation.kind,
                operation.partition_id,
                error.message,
                extra={**what, "code": error.code.name},
            )


async def run_stoppable(
    fn: Callable[[threading.Event], T],
    *,
    name: str = "mkv-operation",
    setup: Callable[[], None] | None = None,
) -> T:
    """Run ``fn(stop)`` in a thread of its own; if cancelled meanwhile, set
    ``stop`` and wait for ``fn`` to return (it should check ``stop`` often and
    raise ``Stopped``), so no thread outlives the operation that started it.

    A new thread, not one of Trio's cached ones, so ``setup`` (run in it
    first) may change it for good, e.g. lower its priority.
    """
    stop = threading.Event()
    finished = trio.Event()
    token = trio.lowlevel.current_trio_token()
    result: list[outcome.Outcome[T]] = []

    def body() -> None:
        if setup is not None:
            setup()
        result.append(outcome.capture(fn, stop))
        token.run_sync_soon(finished.set)

    threading.Thread(target=body, name=name, daemon=True).start()
    try:
        await finished.wait()
    finally:
        if not finished.is_set():
            stop.set()
            with trio.CancelScope(shield=True):
                await finished.wait()
    return result[0].unwrap()
