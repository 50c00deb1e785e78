"""Answers that may leave the node only while a condition still holds.

A cluster node may answer for a partition only while it leads it under a
lease whose deadline has not passed (docs/cluster.md, safety rule 5). A
handler checks that when its answer is ready, but the answer then waits
before its bytes reach the socket: in a session's outbox, for flow-control
window, in purerpc's connection buffer until its writer task runs. A process
paused (SIGSTOP, a stall of the whole machine) in any of those places sends
the answer when it resumes, long after the deadline.

So a handler *vouches* for its answer with a check (``vouch``), and the
server runs the check again at each step where the answer is handed on:
before it goes into the HTTP/2 connection (an answer that fails is replaced
by the check's error), and at the socket write itself
(``ConnectionGuard.send``: answers already in the connection's buffer cannot
be taken back, so a failure there ends the connection, and its client knows
it has no answer). The check reads the clock when it runs, so whatever ran
before a pause counts for nothing after it. Only a pause between the last
check and the write system call itself, in one synchronous step, can still
let an answer out late: no user-space server can close that.

Each call (each session request) runs in a task of its own, so the check
travels in a context variable rather than through every handler's signature.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

__all__ = ["Voucher", "current_voucher", "vouch"]

# Raises an MkvError (UNAVAILABLE) once the answer may no longer leave.
Voucher = Callable[[], None]

_current: contextvars.ContextVar[Voucher | None] = contextvars.ContextVar(
    "mkv_answer_voucher", default=None
)


def vouch(check: Voucher | None) -> None:
    """The answers of the call the current task runs may leave only while
    ``check()`` returns (for a stream, every later message too, until
    vouched again; None: no check)."""
    _current.set(check)


def current_voucher() -> Voucher | None:
    """The check the current task's call vouched with, if any."""
    return _current.get()
