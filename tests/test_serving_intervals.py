"""The serving intervals read from the nodes' logs (tests/serving.py), on
which every failover test's "never two nodes at once" rests."""

from __future__ import annotations

import json

from tests.serving import assert_disjoint, intervals


def _line(time: str, event: str, **fields: object) -> str:
    return json.dumps({"time": f"2026-12-06T02:56:{time}Z", "event": event, **fields})


def test_a_stop_logged_before_an_unfence_in_the_same_millisecond_stays_first() -> None:
    """A transfer's old leader: fenced, its key given up, its stop logged
    (exact time .786196), then unfenced (its line's time, cut to .786). In
    log order it serves nothing after the stop; by exact times the unfence
    came first and reopened its interval until the stop, after the new
    leader began at .778 (the R = 3 network cut soak, round 17). (Mutation:
    sorting by exact time again → two nodes at once.)"""
    at = 1796525812.0
    old = "\n".join(
        [
            _line("52.000", "serving_start", partition="a", epoch=169, at=at),
            _line("52.771", "fenced", partition="a"),
            _line("52.786", "serving_stop", partition="a", epoch=169, at=at + 0.786196, why="gone"),
            _line("52.786", "unfenced", partition="a"),
        ]
    )
    new = _line("52.778", "serving_start", partition="a", epoch=175, at=at + 0.778)
    found = intervals({"old": old, "new": new})
    assert_disjoint(found)
    assert [(i.node, i.epoch, i.why) for i in found["a"]] == [
        ("old", 169, "fenced"),
        ("new", 175, "log ended"),
    ]
