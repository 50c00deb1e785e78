"""The partition clock never goes backwards, whatever the wall clock does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mkv.errors import InternalError, InvalidArgumentError
from mkv.pipeline.base import Recovered, StageContext, SyncStage
from mkv.pipeline.clock import (
    MAX_PHYSICAL_MS,
    MAX_TIMESTAMP,
    HybridClock,
    TimestampStage,
    format_timestamp,
    join_timestamp,
    split_timestamp,
)
from mkv.records import Write

HOUR_MS = 3_600_000
# 2024-05-01T12:00:00Z
MAY_2024_MS = 1_714_564_800_000

physical = st.integers(0, MAX_PHYSICAL_MS)
logical = st.integers(0, 0xFFFF)
timestamps = st.integers(0, MAX_TIMESTAMP)


class FakeWall:
    """A wall clock the test sets by hand."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_wall_time_is_used_when_it_moves_forward() -> None:
    wall = FakeWall(MAY_2024_MS)
    clock = HybridClock(wall)
    assert clock.now() == join_timestamp(MAY_2024_MS, 0)
    wall.ms += 5
    assert clock.now() == join_timestamp(MAY_2024_MS + 5, 0)
    wall.ms += HOUR_MS  # a jump forward is taken as it is
    assert clock.now() == join_timestamp(MAY_2024_MS + 5 + HOUR_MS, 0)


def test_stalled_wall_clock_counts_logically() -> None:
    clock = HybridClock(FakeWall(MAY_2024_MS))
    stamps = [clock.now() for _ in range(3)]
    assert [split_timestamp(t) for t in stamps] == [(MAY_2024_MS, n) for n in range(3)]
    assert clock.statistics().logical_ticks == 2


def test_wall_clock_stepping_back_does_not_move_the_clock_back() -> None:
    wall = FakeWall(MAY_2024_MS)
    clock = HybridClock(wall)
    before = clock.now()
    wall.ms -= HOUR_MS
    after = [clock.now() for _ in range(3)]
    assert before < after[0] < after[1] < after[2]
    assert split_timestamp(after[-1]) == (MAY_2024_MS, 3)
    assert clock.statistics().ahead_ms == HOUR_MS
    # Once the wall clock passes the clock again, wall time is used again.
    wall.ms = MAY_2024_MS + 1
    assert clock.now() == join_timestamp(MAY_2024_MS + 1, 0)
    assert clock.statistics().ahead_ms == 0


def test_restart_with_wall_clock_set_back_an_hour_resumes_after_last() -> None:
    wall = FakeWall(MAY_2024_MS)
    first = HybridClock(wall)
    issued = [first.now() for _ in range(10)]
    # The restarted clock knows only what was persisted, and the wall is an hour behind.
    second = HybridClock(FakeWall(MAY_2024_MS - HOUR_MS), last=first.last)
    assert second.now() > max(issued)


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    clock = HybridClock(FakeWall(MAY_2024_MS), last=join_timestamp(MAY_2024_MS, 0xFFFF))
    assert split_timestamp(clock.now()) == (MAY_2024_MS + 1, 0)
    assert split_timestamp(clock.now()) == (MAY_2024_MS + 1, 1)


def test_observe_moves_past_a_later_timestamp_and_ignores_an_earlier_one() -> None:
    clock = HybridClock(FakeWall(MAY_2024_MS))
    seen = join_timestamp(MAY_2024_MS + 10, 7)
    clock.observe(seen)
    clock.observe(join_timestamp(MAY_2024_MS - 10, 0))
    assert clock.now() == seen + 1


def test_a_clock_at_its_largest_value_refuses_rather_than_wrapping() -> None:
    clock = HybridClock(FakeWall(MAY_2024_MS), last=MAX_TIMESTAMP)
    with pytest.raises(InternalError, match="largest value"):
        clock.now()
    assert clock.last == MAX_TIMESTAMP


@pytest.mark.parametrize("wall_ms", [-5, MAX_PHYSICAL_MS + 10])
def test_wall_readings_outside_48_bits_are_clamped(wall_ms: int) -> None:
    clock = HybridClock(FakeWall(wall_ms))
    first, second = clock.now(), clock.now()
    assert 0 <= first < second <= MAX_TIMESTAMP


@pytest.mark.parametrize("bad", [-1, MAX_TIMESTAMP + 1])
def test_out_of_range_timestamps_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        HybridClock(last=bad)
    with pytest.raises(ValueError, match="64-bit"):
        HybridClock().observe(bad)
    with pytest.raises(ValueError, match="64-bit"):
        split_timestamp(bad)


@given(st.lists(physical, min_size=1, max_size=60), timestamps)
def test_now_is_strictly_increasing_and_follows_the_wall(readings: list[int], last: int) -> None:
    wall = FakeWall(0)
    clock = HybridClock(wall, last=last)
    previous = last
    for reading in readings:
        wall.ms = reading
        try:
            stamp = clock.now()
        except InternalError:
            # Only reachable from a restored ``last`` within a few ticks of the top.
            assert previous == MAX_TIMESTAMP
            return
        # Exactly the hybrid rule: wall time when ahead, one more than before otherwise.
        assert stamp == max(join_timestamp(reading, 0), previous + 1)
        previous = stamp


@given(
    st.lists(
        st.tuples(st.integers(-2 * HOUR_MS, 2 * HOUR_MS), st.integers(1, 5)),
        min_size=1,
        max_size=20,
    )
)
def test_restarts_with_a_wandering_wall_clock_never_go_back(
    steps: list[tuple[int, int]],
) -> None:
    """Each step: move the wall clock by an offset, restart from the persisted
    ``last``, and take a few timestamps."""
    wall = FakeWall(MAY_2024_MS)
    last = 0
    issued: list[int] = []
    for offset, count in steps:
        wall.ms += offset
        clock = HybridClock(wall, last=last)
        issued += [clock.now() for _ in range(count)]
        last = clock.last
    assert issued == sorted(set(issued))


@given(physical, logical)
def test_join_and_split_round_trip(physical_ms: int, counter: int) -> None:
    assert split_timestamp(join_timestamp(physical_ms, counter)) == (physical_ms, counter)


@given(timestamps, timestamps)
def test_timestamps_order_as_physical_then_logical(a: int, b: int) -> None:
    assert join_timestamp(*split_timestamp(a)) == a
    assert (a < b) == (split_timestamp(a) < split_timestamp(b))


@pytest.mark.parametrize(
    ("physical_ms", "counter"), [(-1, 0), (MAX_PHYSICAL_MS + 1, 0), (0, 1 << 16)]
)
def test_join_refuses_parts_that_do_not_fit(physical_ms: int, counter: int) -> None:
    with pytest.raises(ValueError, match="fit"):
        join_timestamp(physical_ms, counter)


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (join_timestamp(MAY_2024_MS + 123, 0), "2024-05-01T12:00:00.123Z"),
        (join_timestamp(MAY_2024_MS + 999, 3), "2024-05-01T12:00:00.999Z/3"),
        (join_timestamp(MAX_PHYSICAL_MS, 1), f"{MAX_PHYSICAL_MS}ms/1"),
    ],
)
def test_format_timestamp_for_people(timestamp: int, text: str) -> None:
    assert format_timestamp(timestamp) == text


def test_timestamp_stage_stamps_increasing_times_and_keeps_the_rest() -> None:
    stage = TimestampStage(HybridClock(FakeWall(MAY_2024_MS)))
    write = Write(puts=[(b"k", b"v")], deletes=[b"d"], seq=4)
    first, second = stage.process(write), stage.process(write)
    assert 0 < first.timestamp < second.timestamp
    assert (first.puts, first.deletes, first.seq) == (write.puts, write.deletes, write.seq)
    assert write.timestamp == 0  # the input is never changed
    assert isinstance(stage, SyncStage)
    assert stage.name == "timestamp"


def test_timestamp_stage_resumes_after_the_recovered_timestamp() -> None:
    recovered = join_timestamp(MAX_PHYSICAL_MS - 1, 0)  # far ahead of any real wall clock
    stage = TimestampStage.from_spec("", StageContext("p1", Path()))
    stage.restore(Recovered(last_seq=9, last_timestamp=recovered))
    assert stage.process(Write()).timestamp == recovered + 1


def test_timestamp_stage_takes_no_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="no argument"):
        TimestampStage.from_spec("fast")
