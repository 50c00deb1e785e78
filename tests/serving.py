"""Serving intervals from the nodes' own logs (issue 16: "no two nodes ever
serve the same partition at the same time, checked from the nodes' logs").

Each node (started with ``--log-format json``) logs ``serving_start`` and
``serving_stop`` with the wall-clock time ``at`` and the epoch
(mkv/cluster/serving.py); a partition fenced for a move (``fenced``) serves
nothing until ``unfenced``, whatever its leadership says. All test processes
share one clock, so the intervals of all nodes can be compared directly.

A log line is input from another process: a serving event that does not
parse is an error here, not skipped.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["Interval", "assert_disjoint", "covering", "intervals", "logged_at", "parse_events"]

SERVING = ("serving_start", "serving_stop", "fenced", "unfenced", "node_starting")


@attrs.frozen
class Interval:
    node: str
    partition: str
    epoch: int
    start: float
    # math.inf: still serving when the log ended (or killed while serving).
    stop: float
    why: str = ""

    def __str__(self) -> str:
        stop = "..." if math.isinf(self.stop) else f"{self.stop:.3f}"
        return f"{self.node} {self.partition}@{self.epoch} [{self.start:.3f}, {stop}] {self.why}"


@attrs.frozen
class Event:
    node: str
    kind: str
    partition: str
    epoch: int
    at: float
    why: str = ""
    # Its line in the node's log: the order of events within one millisecond.
    line: int = 0


def _wall(stamp: str) -> float:
    """The JSON log's ``time`` (RFC 3339, UTC, milliseconds) as a Unix time."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def parse_events(node: str, log: str) -> list[Event]:
    """The serving events of one node's JSON log (other lines are skipped).

    Raises:
        ValueError: a serving event without its fields.
    """
    events: list[Event] = []
    for number, line in enumerate(log.splitlines(), 1):
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by kill -9
        kind = record.get("event")
        if kind not in SERVING:
            continue
        try:
            if kind in ("fenced", "unfenced", "node_starting"):
                # Logged once the fence holds (every earlier request answered),
                # or once it is lifted, or as a (re)started process begins:
                # the log line's own time, to the ms.
                at = _wall(str(record["time"]))
                epoch = 0
            else:
                at = float(record["at"])
                epoch = int(record["epoch"])
            events.append(
                Event(
                    node,
                    kind,
                    str(record.get("partition", "")),
                    epoch,
                    at,
                    str(record.get("why", "")),
                    number,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{node}'s log line {number} is a bad {kind} event: {line}") from exc
    return events


def intervals(logs: Mapping[str, str]) -> dict[str, list[Interval]]:
    """Every partition's serving intervals, from each node's log (node -> text).

    A node serves a partition from ``serving_start`` to ``serving_stop``,
    less the time it was fenced. An interval never stopped (the log ends
    while serving, as after kill -9) runs to infinity.
    """
    out: dict[str, list[Interval]] = defaultdict(list)
    for node, log in logs.items():
        for interval in _node_intervals(node, parse_events(node, log)):
            out[interval.partition].append(interval)
    return {pid: sorted(found, key=lambda i: i.start) for pid, found in out.items()}


def _order(event: Event) -> tuple[int, int]:
    """Events in the order they happened on their node: by time, to the
    millisecond (``fenced``, ``unfenced`` and ``node_starting`` carry their
    log line's time, cut to the ms), and within one millisecond in log
    order. By exact times a ``serving_stop`` at .786196 went after the
    ``unfenced`` logged after it at .786(000), so a transfer's old leader
    seemed to serve again for those 0.2 ms, at its old epoch, after the new
    leader began (the R = 3 network cut soak, round 17)."""
    # Rounded to the µs first: a ms time read back as a float may be a hair
    # below its millisecond.
    return math.floor(round(event.at * 1000, 3)), event.line


def _node_intervals(node: str, events: list[Event]) -> list[Interval]:
    out: list[Interval] = []
    led: dict[str, tuple[int, float]] = {}  # partition -> (epoch, since)
    fenced: set[str] = set()

    def close(pid: str, at: float, why: str) -> None:
        if pid in led and pid not in fenced:
            epoch, since = led[pid]
            out.append(Interval(node, pid, epoch, since, at, why))

    for event in sorted(events, key=_order):
        pid = event.partition
        if event.kind == "node_starting":
            # A new process: the one before was killed (kill -9 logs no
            # stop) and served at most until now.
            for open_pid in list(led):
                close(open_pid, event.at, "killed; restarted")
            led.clear()
            fenced.clear()
        elif event.kind == "serving_start":
            # Still open: the node was killed (kill -9 logs no stop) and has
            # started again. It served at most until then.
            close(pid, event.at, "killed; restarted")
            led[pid] = (event.epoch, event.at)
        elif event.kind == "serving_stop":
            close(pid, event.at, event.why)
            led.pop(pid, None)
        elif event.kind == "fenced":
            close(pid, event.at, "fenced")
            fenced.add(pid)
        else:
            fenced.discard(pid)
            if pid in led:
                led[pid] = (led[pid][0], event.at)
    for pid in led:
        close(pid, math.inf, "log ended")
    return out


def assert_disjoint(found: Mapping[str, Iterable[Interval]]) -> None:
    """No two nodes' intervals for one partition overlap."""
    for pid, each in found.items():
        ordered = sorted(each, key=lambda i: i.start)
        # Pairwise: a few dozen intervals a partition at most.
        for n, earlier in enumerate(ordered):
            for later in ordered[n + 1 :]:
                if earlier.node != later.node and later.start < earlier.stop:
                    raise AssertionError(
                        f"partition {pid} was served by two nodes at once:\n  {earlier}\n  {later}"
                    )


def covering(found: Mapping[str, Iterable[Interval]], partition: str, at: float) -> Interval | None:
    """The interval in which ``partition`` was served at wall time ``at``, if any."""
    for interval in found.get(partition, ()):
        if interval.start <= at <= interval.stop:
            return interval
    return None


def logged_at(log: str, event: str) -> list[float]:
    """The wall times of one node's JSON log lines with ``event`` (lines
    that are not JSON, a traceback's, are skipped)."""
    found = []
    for line in log.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(_wall(str(record["time"])))
    return found
