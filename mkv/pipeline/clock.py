"""A partition's hybrid logical clock, and the stage that stamps writes with it.

A timestamp is one unsigned 64-bit integer::

    bits 63..16  physical: milliseconds since the Unix epoch (UTC), 48 bits
    bits 15..0   logical: a counter within that millisecond, 16 bits

so timestamps compare as plain integers, fit a protobuf ``uint64``, and read
as wall time when split. 48 bits of milliseconds last until the year 10889;
a store that keeps them in SQLite's signed ``INTEGER`` is fine until 6429.

The clock hands out values strictly greater than every value it handed out or
observed before. When the wall clock is ahead it uses wall time with a zero
counter; otherwise (the wall clock stalled within a millisecond, stepped back,
or the clock was restored from a log written while the wall clock was ahead)
it adds one to the last value. Adding one to a counter at 0xFFFF carries into
the physical part: the clock borrows the next millisecond and runs slightly
ahead of the wall until the wall catches up. That takes 65,536 writes in one
millisecond, so in practice only a wall clock set back makes it happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from mkv.errors import InternalError, InvalidArgumentError, shown
from mkv.records import Write
from mkv.units import format_utc_millis

if TYPE_CHECKING:
    from mkv.pipeline.base import Recovered, StageContext

__all__ = [
    "LOGICAL_BITS",
    "MAX_PHYSICAL_MS",
    "MAX_TIMESTAMP",
    "ClockStatistics",
    "HybridClock",
    "TimestampStage",
    "format_timestamp",
    "join_timestamp",
    "split_timestamp",
    "wall_ms",
]

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_PHYSICAL_MS = (1 << (64 - LOGICAL_BITS)) - 1
MAX_TIMESTAMP = (1 << 64) - 1


def wall_ms() -> int:
    """The system's wall clock in milliseconds since the Unix epoch."""
    # time_ns, not time(): a float loses sub-millisecond precision past 2255
    # and rounds unpredictably on the way to an int.
    return time.time_ns() // 1_000_000


def join_timestamp(physical_ms: int, logical: int = 0) -> int:
    """The timestamp for ``physical_ms`` milliseconds and counter ``logical``.

    Raises:
        ValueError: either part is outside its bits.
    """
    if not 0 <= physical_ms <= MAX_PHYSICAL_MS:
        raise ValueError(f"physical time {physical_ms} ms does not fit in 48 bits")
    if not 0 <= logical <= _LOGICAL_MASK:
        raise ValueError(f"logical counter {logical} does not fit in {LOGICAL_BITS} bits")
    return (physical_ms << LOGICAL_BITS) | logical


def split_timestamp(timestamp: int) -> tuple[int, int]:
    """``(physical_ms, logical)`` of a timestamp.

    Raises:
        ValueError: ``timestamp`` is not an unsigned 64-bit integer.
    """
    _check_range(timestamp)
    return timestamp >> LOGICAL_BITS, timestamp & _LOGICAL_MASK


def format_timestamp(timestamp: int) -> str:
    """A timestamp for people: ``2024-05-01T12:00:00.123Z``, then ``/3`` when the
    logical counter is not zero (``/`` reads as neither a time zone nor a fraction).

    Raises:
        ValueError: ``timestamp`` is not an unsigned 64-bit integer.
    """
    physical, logical = split_timestamp(timestamp)
    text = format_utc_millis(physical)
    return f"{text}/{logical}" if logical else text


def _check_range(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp} is not an unsigned 64-bit integer")


@attrs.frozen
class ClockStatistics:
    # The largest timestamp handed out or observed.
    last: int
    # How far the clock runs ahead of the wall clock, in milliseconds: more
    # than a few means the wall clock was set back, or was ahead before a restart.
    ahead_ms: int
    # Calls to now() that could not use wall time and counted instead.
    logical_ticks: int


@attrs.define
class HybridClock:
    """A monotonic clock for one partition; see the module docstring.

    Not thread-safe: a partition calls it from its one task.

    Args:
        wall: milliseconds since the epoch; tests inject a fake.
        last: the largest timestamp from before a restart (from the log or
            the store), so that the clock resumes after it even if the wall
            clock is now behind.
    """

    _wall: Callable[[], int] = wall_ms
    _last: int = attrs.field(default=0)
    _logical_ticks: int = attrs.field(default=0, init=False)

    @_last.validator
    def _check_last(self, _: object, value: int) -> None:
        _check_range(value)

    @property
    def last(self) -> int:
        """The largest timestamp handed out or observed so far."""
        return self._last

    def now(self) -> int:
        """A timestamp strictly greater than every one before it.

        Raises:
            InternalError: the clock has reached ``MAX_TIMESTAMP`` (the year
                10889, or a corrupt log fed to ``observe``).
        """
        # Clamped: a wall clock before 1970 or past the 48 bits must not make
        # the clock fail; monotonicity comes from ``_last`` anyway.
        wall = min(max(self._wall(), 0), MAX_PHYSICAL_MS)
        candidate = wall << LOGICAL_BITS
        if candidate > self._last:
            timestamp = candidate
        else:
            # Plain +1: a counter at 0xFFFF carries into the physical bits,
            # which borrows the next millisecond.
            timestamp = self._last + 1
            self._logical_ticks += 1
            if timestamp > MAX_TIMESTAMP:
                raise InternalError("The partition's clock has reached its largest value.")
        self._last = timestamp
        return timestamp

    def observe(self, timestamp: int) -> None:
        """Make every later ``now()`` greater than ``timestamp`` (one seen in a
        log being replayed, or from another node).

        A timestamp far in the future drags the clock there; a clock must
        never go back, so the caller decides whether to trust its source.

        Raises:
            ValueError: ``timestamp`` is not an unsigned 64-bit integer.
        """
        _check_range(timestamp)
        self._last = max(self._last, timestamp)

    def statistics(self) -> ClockStatistics:
        wall = min(max(self._wall(), 0), MAX_PHYSICAL_MS)
        return ClockStatistics(
            last=self._last,
            ahead_ms=max((self._last >> LOGICAL_BITS) - wall, 0),
            logical_ticks=self._logical_ticks,
        )


@attrs.frozen
class TimestampStage:
    """Stamps each write with the partition clock's ``now()``.

    Put it first: a write refused by a later stage has used a timestamp that
    nobody sees, which is harmless (timestamps need not be dense), whereas a
    filter before it would see ``timestamp == 0``.
    """

    clock: HybridClock = attrs.field(factory=HybridClock)
    # A class attribute, not a field: the pipeline's stage protocol reads ``name``.
    name = "timestamp"

    def process(self, write: Write) -> Write:
        return attrs.evolve(write, timestamp=self.clock.now())

    @classmethod
    def from_spec(cls, argument: str, context: StageContext | None = None) -> TimestampStage:
        """The stage for spec ``timestamp``; ``restore`` then moves its clock
        past what the partition recovered.

        Raises:
            InvalidArgumentError: an argument was given (the stage takes none).
        """
        if argument:
            raise InvalidArgumentError(
                f"The timestamp stage takes no argument; got '{shown(argument)}'."
            )
        return cls(HybridClock())

    def restore(self, recovered: Recovered) -> None:
        """Never stamp at or before a timestamp given out before a restart."""
        self.clock.observe(recovered.last_timestamp)
