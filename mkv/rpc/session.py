"""Sessions: many small unary requests multiplexed on one bidirectional call.

A unary call costs purerpc a new HTTP/2 stream, its headers and their HPACK
in pure Python; a message on an open stream costs a fraction of that. A
session carries requests tagged with a client-chosen ``id``, runs each with
the very handler (and deadline rules) its unary method runs, and answers
each as it completes, in any order. One request's error is that request's
answer; the session goes on.

Bounds (what one session may hold, whatever its client does):

- ``max_in_flight`` requests, and ``max_in_flight_bytes`` of them (the
  requests' own bytes; one request alone may always run), run at once. Both
  are in the session's first message, so a client can stay within them; a
  request over either is answered at once with RESOURCE_EXHAUSTED (refused,
  not queued: nothing was done).
- Answers not yet sent, refusals included, plus requests running, are at
  most ``2 * max_in_flight``, and the answers' bytes at most about
  ``max_in_flight_bytes`` plus what the running requests answer: past that
  the call's request stream is not read, and what the client goes on
  sending is bounded by the connection's buffer (``ConnectionGuard``: the
  stream is reset beyond it).
- Answers go out one at a time through the server's ``send`` (flow control
  with ``stream_stall_timeout``): a client that stops reading is ended with
  RESOURCE_EXHAUSTED, its running requests cancelled (outcome unknown).

The message convention (``SessionRequest``/``SessionResponse`` in
data.proto): a request has ``id``, ``timeout_ms`` and a oneof ``request``
whose field names are the keys of ``Multiplexed.handlers``; an answer has
``id`` and either the field of the same name or ``error``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from google.protobuf.message import Message
from purerpc.grpclib.status import Status, StatusCode

from mkv.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    MkvError,
    ResourceExhaustedError,
)
from mkv.rpc.requests import RequestStream
from mkv.rpc.types import Handler, Multiplexed, RpcObserver
from mkv.rpc.vouch import Voucher, current_voucher

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "SessionCall", "apply_unary", "run_session"]

log = logging.getLogger("mkv.rpc")

_OK = Status(StatusCode.OK)
_INTERNAL = Status(StatusCode.INTERNAL, "Internal error; the server log has details.")

# Requests one session runs at once, unless the node is configured otherwise.
DEFAULT_MAX_IN_FLIGHT = 256

# Sends one message (vouched for by the voucher, if any), or returns the
# status to end the call with (the client stopped reading, or the voucher
# failed before the message started); as ``RpcServer._send``.
Send = Callable[[Message, Voucher | None], Awaitable[Status | None]]
# Sends several messages at once if flow control takes them all now (True),
# else sends nothing (False); as ``mkv.rpc.flow_control.send_if_room``.
SendAll = Callable[[list[Message]], Awaitable[bool]]
# An answer waiting in the outbox: the message, its size, its voucher and
# its request's id (to answer with the voucher's error instead).
_Outgoing = tuple[Message, int, Voucher | None, int]


async def apply_unary(handler: Handler, request: Message, deadline: float) -> Message:
    """Run a unary handler under a deadline: the one rule for unary calls and
    session requests alike.

    Raises:
        DeadlineExceededError: the deadline had passed before the request
            was handed over (nothing was done), or passed while waiting for
            its outcome (unknown).
        MkvError: as the handler raises.
    """
    if trio.current_time() >= deadline:
        raise DeadlineExceededError(
            "The deadline passed before the request could be applied; nothing was done."
        )
    with trio.move_on_at(deadline):
        return await handler(request)
    raise DeadlineExceededError(
        "The deadline passed while waiting for the outcome, which is unknown."
    )


@attrs.frozen
class SessionCall:
    """A session call, ready to run: what ``RpcServer._call`` hands back."""

    service: str
    method: str  # service/method, for the log
    requests: RequestStream
    handler: Multiplexed
    # When the whole call must be over (its grpc-timeout), on Trio's clock.
    deadline: float


class _Session:
    def __init__(
        self,
        call: SessionCall,
        send: Send,
        send_all: SendAll,
        status_of: Callable[[MkvError], Status],
        *,
        max_in_flight: int,
        max_in_flight_bytes: int,
        deadline_cap: float,
        stopping: trio.CancelScope,
        observer: RpcObserver | None,
    ) -> None:
        self._call = call
        self._observer = observer
        self._send = send
        self._send_all = send_all
        self._status_of = status_of
        self._limit = max_in_flight
        self._byte_limit = max_in_flight_bytes
        self._cap = deadline_cap
        self._stopping = stopping
        response_type: Any = call.handler.response_type
        self._response_type = response_type
        # The type of the answers' ``error`` field.
        self._error_type: Any = type(response_type().error)
        self._running = 0
        self._running_bytes = 0
        self._unsent = 0
        self._unsent_bytes = 0
        # Set whenever an answer went out or a request finished: room to read.
        self._room = trio.Event()
        # How the call ends once every answer is out (OK: the client closed).
        self._ending = Status(StatusCode.OK)

    async def run(self) -> Status:
        first = self._response_type(
            id=0, max_in_flight=self._limit, max_in_flight_bytes=self._byte_limit
        )
        if stalled := await self._send(first, None):
            return stalled
        answers, outbox = trio.open_memory_channel[_Outgoing](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, answers, nursery)
            status = await self._write(outbox)
            # Stalled: what still runs has nobody to answer (outcome unknown).
            nursery.cancel_scope.cancel()
        return status

    async def _write(self, outbox: trio.MemoryReceiveChannel[_Outgoing]) -> Status:
        async with outbox:
            async for first in outbox:
                # Every answer already due goes out in one write, packed into
                # as few frames as allowed: a write per answer was a quarter
                # of the event loop's time, and a frame each cost both sides
                # purerpc's and h2's per-frame work (docs/performance.md,
                # "Sessions" and "The client's share, frames and wake-ups").
                due = [first]
                while True:
                    try:
                        due.append(outbox.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if all(voucher is None for _, _, voucher, _ in due) and await self._send_all(
                    [answer for answer, _, _, _ in due]
                ):
                    self._sent(due)
                    continue
                # One by one: a voucher checked as each leaves, or a window
                # that does not take them all now.
                for answer, size, voucher, request_id in due:
                    if voucher is not None:
                        # The answer waited in the outbox: it leaves only if
                        # its check passes now (``mkv.rpc.vouch``).
                        try:
                            voucher()
                        except MkvError as exc:
                            answer, voucher = self._error(request_id, exc), None
                    if stalled := await self._send(answer, voucher):
                        return stalled
                    self._sent([(answer, size, voucher, request_id)])
        return self._ending

    def _sent(self, answers: list[_Outgoing]) -> None:
        self._unsent -= len(answers)
        self._unsent_bytes -= sum(size for _, size, _, _ in answers)
        self._room.set()

    async def _read(
        self, answers: trio.MemorySendChannel[_Outgoing], nursery: trio.Nursery
    ) -> None:
        # Each request's task holds a clone of ``answers``: the writer's loop
        # ends once the reader and every request are done.
        async with answers:
            with self._stopping, trio.move_on_at(self._call.deadline) as timed:
                try:
                    await self._read_requests(answers, nursery)
                except MkvError as exc:
                    # An envelope that cannot be read names no id to answer:
                    # the session ends with its status, after the answers due.
                    self._ending = self._status_of(exc)
            if timed.cancelled_caught:
                self._ending = Status(
                    StatusCode.DEADLINE_EXCEEDED, "The session's deadline passed, so it was ended."
                )
            elif self._stopping.cancelled_caught:
                self._ending = Status(
                    StatusCode.UNAVAILABLE, "The server is shutting down; open a new session."
                )

    async def _read_requests(
        self, answers: trio.MemorySendChannel[_Outgoing], nursery: trio.Nursery
    ) -> None:
        requests = self._call.requests
        handlers = self._call.handler.handlers
        while True:
            while (
                self._running + self._unsent >= 2 * self._limit
                or self._unsent_bytes >= self._byte_limit
            ):
                # Not read: HTTP/2 and the connection's buffer bound the rest.
                self._room = trio.Event()
                await self._room.wait()
            try:
                request: Any = await requests.__anext__()
            except StopAsyncIteration:
                return
            kind = request.WhichOneof("request")
            if kind is None or kind not in handlers:
                self._answer_error(
                    answers,
                    request.id,
                    InvalidArgumentError(
                        "A session request must carry one of: " + ", ".join(handlers) + "."
                    ),
                )
            elif self._running >= self._limit:
                self._answer_error(
                    answers,
                    request.id,
                    ResourceExhaustedError(
                        f"The session has {self._limit} requests in flight, its limit; "
                        "wait for answers before sending more. Nothing was done."
                    ),
                )
            elif self._running and self._running_bytes + request.ByteSize() > self._byte_limit:
                self._answer_error(
                    answers,
                    request.id,
                    ResourceExhaustedError(
                        f"The session's requests in flight would exceed {self._byte_limit} "
                        "bytes, its limit; wait for answers before sending more. "
                        "Nothing was done."
                    ),
                )
            elif not self._answered_now(answers, request, kind):
                self._running += 1
                size = request.ByteSize()
                self._running_bytes += size
                nursery.start_soon(self._serve, request, kind, size, answers.clone())

    def _answered_now(
        self, answers: trio.MemorySendChannel[_Outgoing], request: Any, kind: str
    ) -> bool:
        """Answer ``request`` here, with no task, if its kind has an immediate
        path (``Multiplexed.immediate``) and that path answers it at once.

        A task, its deadline scope and a checkpoint were about a tenth of a
        session Get's CPU on the server (docs/performance.md, "Answered
        without a task"). Observed and logged as ``_serve`` does; the request
        runs in a copy of the reader's context, so what it notes for the
        request log (its partition) stays its own.
        """
        now = self._call.handler.immediate.get(kind)
        if now is None:
            return False
        started = time.perf_counter()
        context = contextvars.copy_context()
        status = _OK
        try:
            response = context.run(now, getattr(request, kind))
            if response is None:
                return False  # it must wait: a task of its own runs it
            answer = self._response_type(id=request.id, **{kind: response})
        except Exception as exc:
            status, answer = self._failed(request.id, kind, exc)
        if (observer := self._observer) is not None:
            method = self._call.handler.handlers[kind][0]
            service = self._call.service
            observer.call_started(service, method)
            context.run(
                observer.call_finished, service, method, status, time.perf_counter() - started
            )
        self._post(answers, answer, request.id)
        return True

    def _answer_error(
        self, answers: trio.MemorySendChannel[_Outgoing], request_id: int, exc: MkvError
    ) -> None:
        self._post(answers, self._error(request_id, exc), request_id)

    def _post(
        self,
        answers: trio.MemorySendChannel[_Outgoing],
        answer: Message,
        request_id: int,
        voucher: Voucher | None = None,
    ) -> None:
        """Queue an answer for the writer (bounded by the reader's checks)."""
        size = answer.ByteSize()
        self._unsent += 1
        self._unsent_bytes += size
        # Closed once the writer ended the call (a stalled client): nobody to tell.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            answers.send_nowait((answer, size, voucher, request_id))

    def _failed(self, request_id: int, kind: str, exc: Exception) -> tuple[Status, Message]:
        """The status and the answer of a request whose handler raised ``exc``:
        an MkvError's own, anything else INTERNAL (and logged)."""
        if isinstance(exc, MkvError):
            status = self._status_of(exc)
            return status, self._error(request_id, exc, status)
        log.error("%s: a %s request failed", self._call.method, kind, exc_info=exc)
        answer: Message = self._response_type(
            id=request_id,
            error=self._error_type(
                code=_INTERNAL.status_code.value, message=_INTERNAL.status_message
            ),
        )
        return _INTERNAL, answer

    def _error(self, request_id: int, exc: MkvError, status: Status | None = None) -> Message:
        status = status or self._status_of(exc)
        retry_after = 0.0
        for name, value in getattr(status, "trailers", ()):
            if name == "retry-after":
                retry_after = float(value)
        answer: Message = self._response_type(
            id=request_id,
            error=self._error_type(
                code=status.status_code.value,
                message=status.status_message,
                retry_after=retry_after,
            ),
        )
        return answer

    async def _serve(
        self,
        request: Any,
        kind: str,
        size: int,
        answers: trio.MemorySendChannel[_Outgoing],
    ) -> None:
        async with answers:
            budget = min(request.timeout_ms / 1000 if request.timeout_ms else math.inf, self._cap)
            deadline = min(trio.current_time() + budget, self._call.deadline)
            method, handler = self._call.handler.handlers[kind]
            # Observed as its unary call would be (this task's context holds
            # the partition it is routed to, for the request log).
            observer, service = self._observer, self._call.service
            started = time.perf_counter()
            if observer is not None:
                observer.call_started(service, method)
            status = _OK
            voucher: Voucher | None = None
            try:
                response = await apply_unary(handler, getattr(request, kind), deadline)
                answer = self._response_type(id=request.id, **{kind: response})
                # The handler ran in this task: its voucher, if any, is here.
                voucher = current_voucher()
            except Exception as exc:
                status, answer = self._failed(request.id, kind, exc)
            finally:
                self._running -= 1
                self._running_bytes -= size
                self._room.set()
                if observer is not None:
                    observer.call_finished(service, method, status, time.perf_counter() - started)
            self._post(answers, answer, request.id, voucher)


async def run_session(
    call: SessionCall,
    send: Send,
    send_all: SendAll,
    status_of: Callable[[MkvError], Status],
    *,
    max_in_flight: int,
    max_in_flight_bytes: int,
    deadline_cap: float | None,
    stopping: trio.CancelScope,
    observer: RpcObserver | None = None,
) -> Status:
    """Serve a session until its client closes its side and every answer is
    out; the status to end the call with.

    Args:
        send: sends one answer under flow control (``RpcServer._send``).
        send_all: sends several at once if the windows take them now.
        status_of: the status an MkvError travels as.
        deadline_cap: the longest one request may run (as a unary call).
        stopping: cancelled when the server stops: the session reads no more
            requests, answers those in flight, and ends UNAVAILABLE.
    """
    session = _Session(
        call,
        send,
        send_all,
        status_of,
        max_in_flight=max_in_flight,
        max_in_flight_bytes=max_in_flight_bytes,
        deadline_cap=math.inf if deadline_cap is None else deadline_cap,
        stopping=stopping,
        observer=observer,
    )
    return await session.run()
