"""When this node serves each partition: intervals for its log (sans-I/O).

A node serves a partition while it leads it under its current lease and the
lease's deadline has not passed (the data plane's gate, docs/cluster.md).
``ServingIntervals`` turns what the node sees (the partitions it leads, with
their epochs, and its lease deadline) into the starts and stops of those
intervals, so that each node logs them and a test can check from the logs
alone that no two nodes ever served one partition at the same time (safety
rule 5; issue 16's "etcd down" test).

An interval ended by the deadline stops at the deadline itself, whether or
not anything noticed then (the node may have been paused, or idle): the gate
refused every request from that moment, so that is when serving stopped.
All times are one monotonic clock's (``trio.current_time()``); the caller
turns them into wall-clock times for the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

__all__ = ["ServingChange", "ServingIntervals"]

# Why an interval stopped.
DEADLINE = "lease deadline passed"
LEASE_GONE = "lease gone"
NOT_LED = "no longer led here"


@attrs.frozen
class ServingChange:
    """This node started (``started``) or stopped serving ``partition`` at ``at``."""

    partition: str
    epoch: int
    at: float
    started: bool
    why: str = ""


@attrs.define
class ServingIntervals:
    # partition id -> (epoch, start) of the intervals open now.
    _open: dict[str, tuple[int, float]] = attrs.field(factory=dict)
    # The deadline as of the last observation.
    _deadline: float = -math.inf

    def serving(self) -> dict[str, int]:
        """The partitions served now (as last observed), with their epochs."""
        return {pid: epoch for pid, (epoch, _) in self._open.items()}

    def observe(self, mine: Mapping[str, int], deadline: float, now: float) -> list[ServingChange]:
        """What changed since the last call, given the partitions led here
        under the current lease (id -> epoch) and the lease deadline, at ``now``.

        Call it whenever either may have changed, and before a renewal moves
        the deadline on (so that a deadline that passed before the renewal
        ends the intervals then, leaving the gap in which the gate refused).
        """
        changes: list[ServingChange] = []

        def stop(pid: str, at: float, why: str) -> None:
            epoch, since = self._open.pop(pid)
            changes.append(ServingChange(pid, epoch, max(since, at), False, why))

        if self._deadline <= now:
            # The deadline known until now passed: every interval ended then.
            for pid in sorted(self._open):
                stop(pid, self._deadline, DEADLINE)
        valid = now < deadline
        for pid in sorted(self._open):
            if not valid:
                # The deadline was taken back (the lease is known to be gone).
                stop(pid, now, LEASE_GONE)
            elif mine.get(pid) != self._open[pid][0]:
                stop(pid, now, NOT_LED)
        if valid:
            for pid in sorted(mine):
                if pid not in self._open:
                    self._open[pid] = (mine[pid], now)
                    changes.append(ServingChange(pid, mine[pid], now, True))
        self._deadline = deadline
        return changes
