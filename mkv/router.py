"""Key ranges and the router that maps a key to the partition owning it.

Pure code, no I/O: the registry builds a new immutable ``Router`` whenever the
set of partitions changes, so a request in flight keeps routing against one
consistent map.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

import attrs

from mkv.errors import AlreadyExistsError, InvalidArgumentError, shown

__all__ = ["KeyRange", "Router", "format_key"]


@attrs.frozen(order=False)
class KeyRange:
    """The keys ``start <= key < end``; ``end is None`` means unbounded."""

    start: bytes
    end: bytes | None

    @classmethod
    def from_wire(cls, start: bytes, end: bytes) -> KeyRange:
        """Build a range from its protobuf form, where an empty ``end`` is unbounded.

        Raises:
            InvalidArgumentError: ``end`` is not after ``start``.
        """
        rng = cls(start, end or None)
        if rng.end is not None and rng.end <= rng.start:
            raise InvalidArgumentError(
                f"Range end {format_key(rng.end)} must be greater than start "
                f"{format_key(rng.start)} (an empty end means unbounded)."
            )
        return rng

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        return self.start <= key and (self.end is None or key < self.end)

    def overlaps(self, other: KeyRange) -> bool:
        starts_before_other_ends = other.end is None or self.start < other.end
        ends_after_other_starts = self.end is None or other.start < self.end
        return starts_before_other_ends and ends_after_other_starts

    def __str__(self) -> str:
        end = "∞" if self.end is None else format_key(self.end)
        return f"[{format_key(self.start)}, {end})"


def format_key(key: bytes) -> str:
    """A short, printable form of a key boundary for messages and tables."""
    return shown(key) if key else "''"


@attrs.frozen
class Router:
    """Maps keys to partition ids over sorted, non-overlapping ranges."""

    # Parallel lists sorted by start: bisect over starts, then check the end.
    _starts: Sequence[bytes]
    _ranges: Sequence[tuple[KeyRange, str]]
    version: int

    @classmethod
    def build(cls, owned: Iterable[tuple[KeyRange, str]], version: int) -> Router:
        """Build a router from ``(range, partition_id)`` pairs.

        Raises:
            AlreadyExistsError: two ranges overlap.
        """
        ranges = sorted(owned, key=lambda item: item[0].start)
        for (left, left_id), (right, right_id) in itertools.pairwise(ranges):
            if left.overlaps(right):
                raise AlreadyExistsError(
                    f"Range {right} of partition {right_id!s} overlaps range {left} "
                    f"of partition {left_id!s}."
                )
        return cls([r.start for r, _ in ranges], ranges, version)

    def lookup(self, key: bytes) -> str | None:
        """The id of the partition owning ``key``, or None when no partition does."""
        index = bisect.bisect_right(self._starts, key) - 1
        if index < 0:
            return None
        rng, partition_id = self._ranges[index]
        return partition_id if key in rng else None

    def lookup_span(self, low: bytes, high: bytes) -> str | None:
        """The one partition owning every key in ``[low, high]``, or None when none owns any.

        Raises:
            InvalidArgumentError: the keys belong to more than one partition, or
                only some of them have an owner.
        """
        owner = self.lookup(low)
        if owner is not None and self.lookup(high) == owner:
            return owner  # ranges are contiguous, so every key between is owned too
        touched = self.conflicts(KeyRange(low, high + b"\0"))
        if not touched:
            return None
        raise InvalidArgumentError(
            f"The keys span {'partitions ' if len(touched) > 1 else 'partition '}"
            f"{', '.join(pid for _, pid in touched)} and unowned keys or several partitions; "
            "send one request per partition (the PartitionMap method lists them)."
        )

    def conflicts(self, rng: KeyRange) -> list[tuple[KeyRange, str]]:
        """Every owned range that overlaps ``rng``."""
        return [(r, pid) for r, pid in self._ranges if r.overlaps(rng)]

    @property
    def ranges(self) -> Sequence[tuple[KeyRange, str]]:
        return self._ranges
