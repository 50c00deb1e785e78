"""The reorder window: asynchronous stages finish in any order, results leave in order.

Like TCP's sliding window: each admitted item takes the next ticket; stages
complete (or fail) tickets in any order; only the contiguous run of finished
tickets at the head of the window is released, so results come out strictly in
admission order. Released, not completed, is what frees room: an item sitting
finished behind a slow one still counts against the capacity, which is what
keeps memory bounded. A failed item is released in its turn carrying its
error, so it neither holds up later items nor disappears.

`ReorderWindow` is the sans-I/O core (no Trio); `OrderedWindow` is the thin
Trio layer on top, where a full window makes `admit` wait (backpressure on the
partition's inbox) and the releaser waits for the head to finish.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, cast

import attrs
import trio

__all__ = [
    "OrderedWindow",
    "OrderedWindowStatistics",
    "Released",
    "ReorderWindow",
    "TicketError",
    "WindowFull",
    "WindowStatistics",
]

T = TypeVar("T")
R = TypeVar("R")


class WindowFull(Exception):
    """`ReorderWindow.admit` was called with `capacity` items in flight."""


class TicketError(LookupError):
    """A ticket was completed or failed that is not awaiting an outcome."""


@attrs.frozen
class Released(Generic[T, R]):
    """One item leaving the window, in its turn, with its outcome.

    Exactly one of ``result`` (when ``error`` is None) and ``error`` holds.
    """

    ticket: int
    item: T
    result: R | None
    error: Exception | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> R:
        """Return the result, or raise the error the item failed with."""
        if self.error is not None:
            raise self.error
        # ``result`` is ``R | None`` only so that a failed item can leave it
        # empty; R may itself include None, so there is nothing to check here.
        return cast(R, self.result)


@attrs.frozen
class WindowStatistics:
    in_flight: int  # admitted, not yet released (finished ones included)
    capacity: int
    released_total: int
    failed_total: int  # released with an error
    max_in_flight: int  # high-water mark


@attrs.define
class _Slot(Generic[T, R]):
    item: T
    done: bool = False
    result: R | None = None
    error: Exception | None = None


class ReorderWindow(Generic[T, R]):
    """Sans-I/O sliding window of in-flight items, released in admission order.

    Args:
        capacity: the most items in flight (admitted, not released) at once.

    Raises:
        ValueError: ``capacity`` is below 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        # _slots[i] holds ticket _head + i; tickets are never reused, so a late
        # or duplicate completion can always be told apart from a live one.
        self._slots: deque[_Slot[T, R]] = deque()
        self._head = 0
        self._released_total = 0
        self._failed_total = 0
        self._max_in_flight = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    @property
    def is_full(self) -> bool:
        return len(self._slots) >= self._capacity

    @property
    def has_ready(self) -> bool:
        """Whether `pop_ready` would return anything (the head has finished)."""
        return bool(self._slots) and self._slots[0].done

    def admit(self, item: T) -> int:
        """Take ``item`` into the window.

        Returns:
            Its ticket: 0 for the first item ever admitted, then 1, 2, ...

        Raises:
            WindowFull: ``capacity`` items are in flight; release some first.
        """
        if self.is_full:
            raise WindowFull(f"reorder window full ({self._capacity} in flight)")
        ticket = self._head + len(self._slots)
        self._slots.append(_Slot(item))
        self._max_in_flight = max(self._max_in_flight, len(self._slots))
        return ticket

    def complete(self, ticket: int, result: R) -> None:
        """Record ``ticket``'s result; it leaves when every earlier ticket has.

        Raises:
            TicketError: ``ticket`` was never admitted, or already has an outcome.
        """
        self._finish(ticket, result, None)

    def fail(self, ticket: int, error: Exception) -> None:
        """Record that ``ticket`` failed; it leaves in its turn carrying ``error``.

        Raises:
            TicketError: ``ticket`` was never admitted, or already has an outcome.
        """
        self._finish(ticket, None, error)

    def fail_pending(self, error: Exception) -> int:
        """Fail every admitted item that has no outcome yet, e.g. at a shutdown deadline.

        Returns:
            How many items were failed. A later `complete` of one raises TicketError.
        """
        pending = [slot for slot in self._slots if not slot.done]
        for slot in pending:
            slot.done, slot.error = True, error
        return len(pending)

    def pop_ready(self) -> list[Released[T, R]]:
        """Remove and return the finished items at the head, in ticket order.

        Returns:
            The contiguous run of finished items (possibly empty): one batch a
            releaser may apply at once. Their room in the window is free again.
        """
        ready: list[Released[T, R]] = []
        while self._slots and self._slots[0].done:
            slot = self._slots.popleft()
            ready.append(Released(self._head, slot.item, slot.result, slot.error))
            self._head += 1
            if slot.error is not None:
                self._failed_total += 1
        self._released_total += len(ready)
        return ready

    def statistics(self) -> WindowStatistics:
        return WindowStatistics(
            in_flight=len(self._slots),
            capacity=self._capacity,
            released_total=self._released_total,
            failed_total=self._failed_total,
            max_in_flight=self._max_in_flight,
        )

    def _finish(self, ticket: int, result: R | None, error: Exception | None) -> None:
        if ticket < 0 or ticket >= self._head + len(self._slots):
            raise TicketError(f"ticket {ticket} was never admitted")
        if ticket < self._head:
            raise TicketError(f"ticket {ticket} was already released")
        slot = self._slots[ticket - self._head]
        if slot.done:
            raise TicketError(f"ticket {ticket} already has a result or an error")
        slot.done, slot.result, slot.error = True, result, error


@attrs.frozen
class OrderedWindowStatistics:
    in_flight: int
    capacity: int
    released_total: int
    failed_total: int
    max_in_flight: int
    tasks_waiting_admit: int  # producers held back by a full window
    tasks_waiting_released: int
    closed: bool


class OrderedWindow(Generic[T, R]):
    """`ReorderWindow` for Trio tasks: admit waits for room, the releaser waits for results.

    Meant for one producer (the partition task) and one releaser; more of
    either work, but a woken producer may lose its slot to one that never
    waited. After `close`, the releaser gets every item already admitted, then
    `trio.EndOfChannel`.

    Args:
        capacity: the most items in flight at once; see `ReorderWindow`.
    """

    def __init__(self, capacity: int) -> None:
        self._window: ReorderWindow[T, R] = ReorderWindow(capacity)
        self._room = trio.lowlevel.ParkingLot()  # producers waiting for a release
        self._ready = trio.lowlevel.ParkingLot()  # releasers waiting for the head
        self._closed = False

    async def admit(self, item: T) -> int:
        """Take ``item`` into the window, waiting while it is full.

        Cancelled while waiting, nothing was admitted and no ticket was taken.

        Raises:
            trio.ClosedResourceError: the window is closed, or was closed while waiting.
        """
        # Trio's checkpoint discipline: always a schedule point, and if we are
        # cancelled the item was not admitted.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            ticket = self.admit_nowait(item)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return ticket
        while True:
            await self._room.park()
            try:
                return self.admit_nowait(item)
            except trio.WouldBlock:
                continue  # another producer took the room first

    def admit_nowait(self, item: T) -> int:
        """Like `admit`, but raise `trio.WouldBlock` instead of waiting."""
        if self._closed:
            raise trio.ClosedResourceError("reorder window is closed")
        if self._window.is_full:
            raise trio.WouldBlock
        return self._window.admit(item)

    def complete(self, ticket: int, result: R) -> None:
        """See `ReorderWindow.complete`; wakes the releaser if the head is done."""
        self._window.complete(ticket, result)
        self._wake_releaser()

    def fail(self, ticket: int, error: Exception) -> None:
        """See `ReorderWindow.fail`; wakes the releaser if the head is done."""
        self._window.fail(ticket, error)
        self._wake_releaser()

    def fail_pending(self, error: Exception) -> int:
        """See `ReorderWindow.fail_pending`: after it, the releaser can drain without waiting."""
        count = self._window.fail_pending(error)
        self._wake_releaser()
        return count

    async def released(self) -> list[Released[T, R]]:
        """Wait until the head has finished, then take the finished run, in order.

        Raises:
            trio.EndOfChannel: closed and everything admitted has been released.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            batch = self.released_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return batch
        while True:
            await self._ready.park()
            try:
                return self.released_nowait()
            except trio.WouldBlock:
                continue

    def released_nowait(self) -> list[Released[T, R]]:
        """Like `released`, but raise `trio.WouldBlock` instead of waiting."""
        batch = self._window.pop_ready()
        if batch:
            # One waiting producer per freed slot: waking all would only make
            # the rest find the window full again.
            self._room.unpark(count=len(batch))
            return batch
        if self._closed and not self._window.in_flight:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def _wake_releaser(self) -> None:
        # Only the head finishing makes anything releasable; a later ticket
        # finishing early just waits in its slot.
        if self._window.has_ready:
            self._ready.unpark_all()

    def close(self) -> None:
        """Refuse new items; the releaser ends once everything admitted is released.

        Items in flight still need `complete` or `fail` (or `fail_pending`),
        otherwise the releaser waits for them forever. Idempotent.
        """
        self._closed = True
        self._room.unpark_all()  # they find it closed and raise
        self._ready.unpark_all()  # it may be empty already: EndOfChannel

    def statistics(self) -> OrderedWindowStatistics:
        core = self._window.statistics()
        return OrderedWindowStatistics(
            in_flight=core.in_flight,
            capacity=core.capacity,
            released_total=core.released_total,
            failed_total=core.failed_total,
            max_in_flight=core.max_in_flight,
            tasks_waiting_admit=self._room.statistics().tasks_waiting,
            tasks_waiting_released=self._ready.statistics().tasks_waiting,
            closed=self._closed,
        )

    def __aiter__(self) -> OrderedWindow[T, R]:
        return self

    async def __anext__(self) -> list[Released[T, R]]:
        """Each batch `released` returns; iteration stops at `trio.EndOfChannel`."""
        try:
            return await self.released()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
