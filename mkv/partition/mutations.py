"""Read-then-write decisions: conditions and counters. Sans-I/O.

A partition decides these in its one task, in sequence order, against the
state every earlier write leaves behind (``current``: the writes still in
flight, then the store), so they need no locks and replay needs no decisions:
what reaches the log is already the plain puts and deletes they decided on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import attrs

from mkv.errors import FailedPreconditionError, shown
from mkv.store.base import Item

__all__ = [
    "COUNTER_MAX",
    "COUNTER_MIN",
    "Condition",
    "Failure",
    "add_deltas",
    "decode_counter",
    "encode_counter",
    "first_failure",
]

COUNTER_MIN = -(2**63)
COUNTER_MAX = 2**63 - 1
# Canonical decimal only: what encode_counter writes, so every counter has one form.
_COUNTER = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")

# A key's state as the write being decided sees it (None: absent).
Current = Callable[[bytes], Item | None]


@attrs.frozen
class Condition:
    """What must hold of a key before a conditional write; at most one test is set."""

    # The sequence number of the key's current value; 0: the key must not exist.
    seq: int | None = None
    # The key's current value (so the key must exist).
    value: bytes | None = None

    def holds(self, item: Item | None) -> bool:
        if self.seq is not None:
            return (0 if item is None else item.seq) == self.seq
        if self.value is not None:
            return item is not None and item.value == self.value
        return True


@attrs.frozen
class Failure:
    """The first condition that did not hold, and the key's state then."""

    key: bytes
    item: Item | None


def first_failure(
    conditions: Sequence[tuple[bytes, Condition]], current: Current
) -> Failure | None:
    """Check every condition against the state before the write; None if all hold."""
    for key, condition in conditions:
        item = current(key)
        if not condition.holds(item):
            return Failure(key, item)
    return None


def decode_counter(key: bytes, value: bytes) -> int:
    """Raises:
    FailedPreconditionError: ``value`` is not a counter.
    """
    if _COUNTER.fullmatch(value) is None or value == b"-0":
        raise FailedPreconditionError(
            f"The value of key '{shown(key)}' is not a counter (a decimal 64-bit integer)."
        )
    number = int(value)
    if not COUNTER_MIN <= number <= COUNTER_MAX:
        raise FailedPreconditionError(
            f"The value of key '{shown(key)}' is not a counter (it is out of 64-bit range)."
        )
    return number


def encode_counter(number: int) -> bytes:
    return b"%d" % number


def add_deltas(
    deltas: Sequence[tuple[bytes, int]], current: Current
) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """Apply ``deltas`` in order to counters (a missing key counts as 0).

    Returns:
        The puts that store the new values (one per key, its last value), and
        the new value after each delta, in order.

    Raises:
        FailedPreconditionError: a key holds something that is not a counter,
            or a sum leaves the signed 64-bit range; nothing is to be applied.
    """
    numbers: dict[bytes, int] = {}
    values: list[int] = []
    for key, delta in deltas:
        if key not in numbers:
            item = current(key)
            numbers[key] = 0 if item is None else decode_counter(key, item.value)
        number = numbers[key] + delta
        if not COUNTER_MIN <= number <= COUNTER_MAX:
            raise FailedPreconditionError(
                f"Incrementing key '{shown(key)}' by {delta} would overflow "
                "a signed 64-bit counter."
            )
        numbers[key] = number
        values.append(number)
    return [(key, encode_counter(number)) for key, number in numbers.items()], values
