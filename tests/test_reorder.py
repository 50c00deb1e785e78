"""The reorder window: results leave in admission order, the window stays bounded.

The core (`ReorderWindow`) is checked by Hypothesis over random window sizes,
item counts, completion orders and failures, with no Trio involved; the Trio
layer (`OrderedWindow`) under `autojump_clock`, where stage latencies are fake
time and "was blocked" is a time we can assert.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from mkv.pipeline.reorder import (
    OrderedWindow,
    Released,
    ReorderWindow,
    TicketError,
    WindowFull,
)

# Every Trio test runs under this deadline (fake seconds): under the autojump
# clock a missed wakeup then fails at once with TooSlowError instead of hanging.
DEADLOCK = 1000


class StageError(Exception):
    """What a failing stage raises in these tests."""


# -- the sans-I/O core ---------------------------------------------------------


@given(capacity=st.integers(1, 8), count=st.integers(0, 40), data=st.data())
def test_every_item_released_once_in_admission_order_with_its_own_outcome(
    capacity: int, count: int, data: st.DataObject
) -> None:
    window: ReorderWindow[str, str] = ReorderWindow(capacity)
    tickets: dict[int, str] = {}  # ticket -> item
    pending: list[int] = []  # admitted, no outcome yet
    errors: dict[int, StageError] = {}
    released: list[Released[str, str]] = []

    # Every step makes progress (one admit, one outcome or one non-empty
    # release), so the loop ends; and some step is always possible until
    # everything is released.
    while len(released) < count:
        steps = []
        if len(tickets) < count:
            if window.is_full:
                with pytest.raises(WindowFull):
                    window.admit("refused")
            else:
                steps.append("admit")
        if pending:
            steps.append("finish")
        if window.has_ready:
            steps.append("release")
        step = data.draw(st.sampled_from(steps))
        if step == "admit":
            item = f"item-{len(tickets)}"
            ticket = window.admit(item)
            assert ticket == len(tickets)
            tickets[ticket] = item
            pending.append(ticket)
        elif step == "finish":
            ticket = pending.pop(data.draw(st.integers(0, len(pending) - 1)))
            if data.draw(st.booleans()):
                errors[ticket] = StageError(ticket)
                window.fail(ticket, errors[ticket])
            else:
                window.complete(ticket, f"result-{ticket}")
        else:
            was_full = window.is_full
            batch = window.pop_ready()
            assert batch
            released.extend(batch)
            if was_full:
                assert not window.is_full  # a release frees room at once
        assert window.in_flight <= capacity
        assert window.in_flight == len(tickets) - len(released)

    assert [r.ticket for r in released] == list(range(count))
    for r in released:
        assert r.item == tickets[r.ticket]
        if r.ticket in errors:
            assert r.error is errors[r.ticket]
            assert r.result is None
        else:
            assert r.ok
            assert r.unwrap() == f"result-{r.ticket}"
    stats = window.statistics()
    assert stats.in_flight == 0
    assert stats.released_total == count
    assert stats.failed_total == len(errors)
    assert stats.max_in_flight <= capacity


@given(finished=st.lists(st.booleans(), min_size=1, max_size=12))
def test_pop_ready_takes_exactly_the_finished_run_at_the_head(finished: list[bool]) -> None:
    window: ReorderWindow[int, int] = ReorderWindow(len(finished))
    for i, done in enumerate(finished):
        window.admit(i)
        if done:
            window.complete(i, i)
    run = finished.index(False) if False in finished else len(finished)

    assert [r.ticket for r in window.pop_ready()] == list(range(run))
    assert window.pop_ready() == []  # nothing more until the gap is filled
    assert window.in_flight == len(finished) - run


def test_full_window_refuses_then_admits_after_a_release() -> None:
    window: ReorderWindow[str, None] = ReorderWindow(2)
    window.admit("a")
    window.admit("b")
    window.complete(1, None)
    assert window.pop_ready() == []  # "b" is done but waits behind "a"
    with pytest.raises(WindowFull):
        window.admit("c")  # finished-but-unreleased items still take room
    window.complete(0, None)
    assert len(window.pop_ready()) == 2
    assert window.admit("c") == 2


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReorderWindow(capacity)


def test_outcome_for_a_ticket_not_awaiting_one_is_an_error() -> None:
    window: ReorderWindow[str, str] = ReorderWindow(4)
    window.admit("a")
    window.admit("b")
    window.complete(1, "B")
    with pytest.raises(TicketError, match="already has"):
        window.fail(1, StageError())
    with pytest.raises(TicketError, match="never admitted"):
        window.complete(2, "C")
    with pytest.raises(TicketError, match="never admitted"):
        window.complete(-1, "?")
    window.complete(0, "A")
    window.pop_ready()
    with pytest.raises(TicketError, match="already released"):
        window.complete(0, "A")
    # The refused calls changed nothing.
    stats = window.statistics()
    assert (stats.in_flight, stats.released_total, stats.failed_total) == (0, 2, 0)


def test_fail_pending_gives_every_unfinished_item_the_error() -> None:
    window: ReorderWindow[str, str] = ReorderWindow(4)
    for item in "abc":
        window.admit(item)
    window.complete(1, "B")
    shutdown = StageError("shutting down")

    assert window.fail_pending(shutdown) == 2
    released = window.pop_ready()
    assert [(r.item, r.result, r.error) for r in released] == [
        ("a", None, shutdown),
        ("b", "B", None),
        ("c", None, shutdown),
    ]
    with pytest.raises(StageError):
        released[0].unwrap()


# -- the Trio layer ------------------------------------------------------------


async def collect(window: OrderedWindow[int, int], into: list[Released[int, int]]) -> None:
    """The releaser: take batches until the window is closed and drained."""
    async for batch in window:
        into.extend(batch)


@pytest.mark.parametrize("seed", range(5))
async def test_stages_finishing_out_of_order_are_released_in_admission_order(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(DEADLOCK):
        rng = random.Random(seed)
        window: OrderedWindow[int, int] = OrderedWindow(capacity=4)
        finished: list[int] = []
        released: list[Released[int, int]] = []

        async def stage(ticket: int, item: int) -> None:
            await trio.sleep(rng.uniform(0.1, 2.0))
            finished.append(ticket)
            window.complete(ticket, item * 10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, window, released)
            for item in range(30):
                ticket = await window.admit(item)
                nursery.start_soon(stage, ticket, item)
                assert window.statistics().in_flight <= 4
            window.close()

        assert finished != sorted(finished)  # the stages really did race
        assert [(r.ticket, r.item, r.result) for r in released] == [
            (i, i, i * 10) for i in range(30)
        ]
        assert window.statistics().max_in_flight == 4


async def test_full_window_blocks_admit_until_the_releaser_frees_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=2)
        admitted_at: dict[str, float] = {}

        async def producer() -> None:
            for item in "abc":
                await window.admit(item)
                admitted_at[item] = trio.current_time()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            await trio.sleep(1)
            assert list(admitted_at) == ["a", "b"]
            assert window.statistics().tasks_waiting_admit == 1
            window.complete(0, "A")
            await trio.sleep(1)
            assert "c" not in admitted_at  # completed, but room is freed by release
            assert [r.result for r in await window.released()] == ["A"]
        assert admitted_at["c"] == start + 2
        assert window.statistics().tasks_waiting_admit == 0


@pytest.mark.parametrize("fails_first", [True, False])
async def test_failed_stage_is_released_in_its_turn_and_later_items_proceed(
    fails_first: bool, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[int, int] = OrderedWindow(capacity=3)
        released: list[Released[int, int]] = []
        error = StageError("disk full")

        async def stage(ticket: int, item: int) -> None:
            if item == 2:
                await trio.sleep(0.1 if fails_first else 5)
                window.fail(ticket, error)
            else:
                await trio.sleep(1 + (7 - item) * 0.1)  # later items finish first
                window.complete(ticket, item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, window, released)
            for item in range(8):
                nursery.start_soon(stage, await window.admit(item), item)
            window.close()

        assert [r.item for r in released] == list(range(8))
        assert [r.error for r in released] == [None, None, error, None, None, None, None, None]
        assert [r.result for r in released if r.ok] == [0, 1, 3, 4, 5, 6, 7]
        assert window.statistics().failed_total == 1


async def test_close_drains_what_is_in_flight_then_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=4)
        for item in "abc":
            await window.admit(item)
        window.close()
        with pytest.raises(trio.ClosedResourceError):
            await window.admit("late")

        async def finish_later() -> None:
            for ticket, result in [(2, "C"), (0, "A"), (1, "B")]:
                await trio.sleep(1)
                window.complete(ticket, result)

        start = trio.current_time()
        batches: list[list[str | None]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish_later)
            async for batch in window:
                batches.append([r.result for r in batch])

        assert batches == [["A"], ["B", "C"]]
        assert trio.current_time() == start + 3  # it waited for the last one, then ended
        with pytest.raises(trio.EndOfChannel):
            await window.released()


async def test_close_wakes_a_blocked_admit_with_closed_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=1)
        await window.admit("a")

        async def close_soon() -> None:
            await trio.sleep(1)
            window.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await window.admit("b")
        stats = window.statistics()
        assert (stats.in_flight, stats.tasks_waiting_admit, stats.closed) == (1, 0, True)


async def test_cancelled_admit_leaves_the_window_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=1)
        assert await window.admit("a") == 0
        with trio.move_on_after(1) as scope:
            await window.admit("b")
        assert scope.cancelled_caught
        stats = window.statistics()
        assert (stats.in_flight, stats.tasks_waiting_admit) == (1, 0)

        window.complete(0, "A")
        assert [r.item for r in await window.released()] == ["a"]
        # The cancelled admit took no ticket: the next one follows on without a gap.
        assert await window.admit("c") == 1
        window.complete(1, "C")
        assert [(r.ticket, r.item) for r in await window.released()] == [(1, "c")]


async def test_cancelled_wait_for_results_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=2)
        await window.admit("a")
        with trio.move_on_after(1):
            await window.released()
        window.complete(0, "A")
        assert [r.result for r in await window.released()] == ["A"]


async def test_fail_pending_lets_shutdown_finish_by_a_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=4)
        for item in "abc":
            await window.admit(item)
        window.complete(0, "A")
        window.close()
        released: list[Released[str, str]] = []
        with trio.move_on_after(5):  # "b" and "c" are stuck in a stage
            async for batch in window:
                released.extend(batch)
        shutdown = StageError("shutting down")
        assert window.fail_pending(shutdown) == 2
        async for batch in window:
            released.extend(batch)

        assert [(r.item, r.error) for r in released] == [
            ("a", None),
            ("b", shutdown),
            ("c", shutdown),
        ]
        with pytest.raises(TicketError):
            window.complete(1, "too late")


async def test_close_ends_a_releaser_waiting_on_an_empty_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLOCK):
        window: OrderedWindow[str, str] = OrderedWindow(capacity=2)
        released: list[Released[str, str]] = []

        async def releaser() -> None:
            async for batch in window:
                released.extend(batch)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(releaser)
            await window.admit("a")
            window.complete(0, "A")
            await trio.sleep(1)
            assert window.statistics().tasks_waiting_released == 1
            window.close()
        assert [r.result for r in released] == ["A"]
        assert trio.current_time() == start + 1  # ended at close, not at the deadline


async def test_admit_and_released_are_checkpoints_that_honour_cancellation() -> None:
    window: OrderedWindow[str, str] = OrderedWindow(capacity=2)
    with trio.testing.assert_checkpoints():
        await window.admit("a")
    window.complete(0, "A")
    with trio.testing.assert_checkpoints():
        await window.released()
    with trio.CancelScope() as scope:
        scope.cancel()
        await window.admit("b")
    # Cancelled before it could wait: trio's rule is that it then did nothing.
    assert window.statistics().in_flight == 0
    assert window.admit_nowait("c") == 1
