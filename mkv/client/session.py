"""The client's side of DataPlane.Session: concurrent small calls on one stream.

A unary call costs purerpc a new HTTP/2 stream and its headers; a message on
an open stream a fraction of that. ``SessionMux`` keeps one Session call
open per connection (opened on first use, opened again after it ends), tags
each request with an id, and hands each answer to the task waiting for it.
It keeps within the bounds the server advertises in the session's first
message (requests and their bytes in flight), so a request is never refused
for them.

A request whose session ends before its answer arrives raises
``SessionLostError`` (an ``UnavailableError``): its outcome is unknown, as
for a unary call whose connection was lost; the caller decides whether to
retry (reads) or to report it (writes).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import anyio.abc
from google.protobuf.message import Message
from purerpc.grpclib.events import ResponseEnded
from purerpc.grpclib.status import StatusCode

from mkv.client.channel import Channel
from mkv.errors import MkvError, UnavailableError, error_for_status
from mkv.rpc.purerpc_compat import send_messages
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE

__all__ = ["SessionLostError", "SessionMux"]

log = logging.getLogger("mkv.client")


class SessionLostError(UnavailableError):
    """The session ended before this request's answer came: its outcome is unknown."""


class _Waiter:
    __slots__ = ("answer", "done", "error", "payload", "sent", "size")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload  # the serialized SessionRequest
        self.size = len(payload)  # counted against the session's budget
        self.done = anyio.Event()
        self.answer: pb.SessionResponse | None = None
        self.error: MkvError | None = None
        # Handed to the connection: from then on, its outcome is the server's.
        self.sent = False


class _Session:
    """One open Session call: its stream, the requests awaiting answers."""

    def __init__(self, stream: Any, limit: int, byte_limit: int) -> None:
        self.stream = stream
        self.slots = anyio.Semaphore(limit)
        # Bytes of requests in flight, within the server's budget (0: none).
        self.byte_limit = byte_limit
        self.bytes = 0
        # Made by a request waiting for bytes to be freed; set (and dropped)
        # when an answer frees some, or the session ends. Only then: an event
        # per answer was a tenth of the client's CPU per request.
        self.freed: anyio.Event | None = None
        self.pending: dict[int, _Waiter] = {}
        # Requests not yet sent, and the writer's wake-up: the writer sends
        # all that queued while it last waited in one go (``_write``).
        self.outgoing: list[_Waiter] = []
        self.wake = anyio.Event()
        self.ended: MkvError | None = None


class SessionMux:
    """Multiplexes small data-plane requests onto one Session per connection."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._session: _Session | None = None
        self._opening = anyio.Lock()
        self._ids = itertools.count(1)
        # Requests sent on sessions so far (tests and the benchmark check it).
        self.sent = 0

    async def call(self, kind: str, request: Message) -> Any:
        """Send ``request`` as the session request field ``kind`` (``"get"``...)
        and return the matching response message.

        Raises:
            MkvError: the request's own error (as its unary call would raise).
            SessionLostError: the session ended after the request was sent.
            UnavailableError: no session could be opened.
        """
        message = pb.SessionRequest()
        getattr(message, kind).CopyFrom(request)
        while True:
            session = await self._open()
            await session.slots.acquire()
            # The slot is given back when the answer arrives (by the reader), not
            # when this task stops waiting: the server counts the request until then.
            message.id = request_id = next(self._ids)
            waiter = _Waiter(message.SerializeToString())
            while (
                session.byte_limit
                and session.bytes
                and session.bytes + waiter.size > session.byte_limit
                and session.ended is None
            ):
                if session.freed is None:
                    session.freed = anyio.Event()
                await session.freed.wait()
            # Taken before any await: tasks woken together must not all see
            # the same room (one answer freed it once).
            session.bytes += waiter.size
            if session.ended is not None:
                continue  # ended before this request went out: safe on a new one
            session.pending[request_id] = waiter
            session.outgoing.append(waiter)
            session.wake.set()
            await waiter.done.wait()
            if waiter.sent or waiter.answer is not None:
                break
            # The session ended before the request went out: safe on a new one.
        self.sent += 1
        if waiter.error is not None:
            raise waiter.error
        answer = waiter.answer
        assert answer is not None
        if answer.WhichOneof("response") == "error":
            error = answer.error
            raise error_for_status(
                StatusCode(error.code), error.message, retry_after=error.retry_after or None
            )
        return getattr(answer, kind)

    async def _open(self) -> _Session:
        session = self._session
        if session is not None and session.ended is None:
            return session
        async with self._opening:
            session = self._session
            if session is not None and session.ended is None:
                return session
            stream = await self._channel.start_bidi(
                DATA_SERVICE, "Session", pb.SessionRequest, pb.SessionResponse
            )
            try:
                first = await stream.receive_message()
                if first is None:
                    # Refused before any request was sent (a token, a memory
                    # limit): the status the unary call would have got.
                    ended = stream.end_stream_event
                    if (
                        isinstance(ended, ResponseEnded)
                        and ended.status.status_code != StatusCode.OK
                    ):
                        raise error_for_status(
                            ended.status.status_code, ended.status.status_message
                        )
                    raise self._lost(EOFError("the session ended before it began"))
            except MkvError:
                self._channel.close_call(stream)
                raise
            except BaseException as exc:
                self._channel.close_call(stream)
                if not isinstance(exc, Exception):
                    raise  # cancelled
                raise self._lost(exc) from exc
            session = self._session = _Session(
                stream, max(1, first.max_in_flight), first.max_in_flight_bytes
            )
            self._channel.spawn(self._read, session)
            self._channel.spawn(self._write, session)
            return session

    async def _write(self, session: _Session) -> None:
        """Send the requests callers queue, until the session ends.

        Callers queue and go on to wait; this task runs once they have, and
        sends every request queued meanwhile in one write, as few HTTP/2
        frames (``send_messages``). One ``send_message`` each, under a lock,
        was about a sixth of the client's CPU per request.
        """
        try:
            while session.ended is None:
                await session.wake.wait()
                session.wake = anyio.Event()
                while session.outgoing and session.ended is None:
                    batch, session.outgoing = session.outgoing, []
                    for waiter in batch:
                        waiter.sent = True
                    await send_messages(session.stream, [w.payload for w in batch])
        except Exception as exc:
            # The connection broke mid-send: the requests may have gone out.
            self._end(session, self._lost(exc))
        finally:
            # Also when cancelled (the channel closing): nothing may wait on.
            self._end(session, self._lost(EOFError("the client closed")))

    async def _read(self, session: _Session) -> None:
        """Hand each answer to its waiter until the session ends."""
        stream = session.stream
        error: MkvError = self._lost(EOFError("the client closed"))
        try:
            while True:
                answer = await stream.receive_message()
                if answer is None:
                    error = _end_error(stream, "The session ended.")
                    break
                waiter = session.pending.pop(answer.id, None)
                if waiter is None:
                    continue  # not ours (a server bug); nothing waits for it
                session.slots.release()
                session.bytes -= waiter.size
                if session.freed is not None:
                    session.freed.set()
                    session.freed = None
                waiter.answer = answer
                waiter.done.set()
        except Exception as exc:
            error = self._lost(exc)
        finally:
            # Also when cancelled (the channel closing): nothing may wait on.
            self._end(session, error)

    def _end(self, session: _Session, error: MkvError) -> None:
        """Fail every request still waiting on ``session``; the next call opens another."""
        if session.ended is None:
            session.ended = error
            log.debug("session to %s ended: %s", self._channel.address, error)
        for waiter in session.pending.values():
            # One never sent is asked again on a new session by its caller.
            if waiter.sent:
                waiter.error = session.ended
            waiter.done.set()
        session.pending.clear()
        session.outgoing.clear()
        session.wake.set()  # the writer ends
        if session.freed is not None:
            session.freed.set()
        self._channel.close_call(session.stream)

    def _lost(self, exc: BaseException) -> SessionLostError:
        return SessionLostError(
            f"Lost the session to mkv at {self._channel.address} ({type(exc).__name__}); "
            "the outcome of this request is unknown."
        )


def _end_error(stream: Any, default: str) -> SessionLostError:
    """What a session's end means for the requests it leaves unanswered."""
    ended = stream.end_stream_event
    if isinstance(ended, ResponseEnded) and ended.status.status_code != StatusCode.OK:
        message = ended.status.status_message
        return SessionLostError(f"{message} The outcome of this request is unknown.")
    return SessionLostError(f"{default} The outcome of this request is unknown.")
