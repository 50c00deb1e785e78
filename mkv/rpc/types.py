"""What a service served by ``mkv.rpc.server.RpcServer`` is made of: handlers and
the markers of streaming ones, guards and what they see of a call, the
observer told of every call, and the server's statistics."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
from google.protobuf.message import Message
from purerpc.grpclib.status import Status

__all__ = [
    "AnyHandler",
    "BidiStream",
    "CallInfo",
    "Guard",
    "Handler",
    "Method",
    "Multiplexed",
    "RpcObserver",
    "RpcStatistics",
    "ServerStream",
]

Handler = Callable[[Any], Awaitable[Message]]


class RpcObserver(Protocol):
    """Told of every call (metrics, the request log); called on the event loop,
    so it must be quick. ``method`` is a method this server serves, or
    ``"unknown"``: never a name a client made up."""

    def call_started(self, service: str, method: str) -> None: ...

    def call_finished(self, service: str, method: str, status: Status, seconds: float) -> None: ...


@attrs.frozen
class ServerStream:
    """Marks a server-streaming method: ``handler(request)`` yields the responses."""

    handler: Callable[[Any], AsyncGenerator[Message, None]]


@attrs.frozen
class BidiStream:
    """Marks a bidirectional-streaming method: ``handler(requests)`` yields the
    responses while it reads the requests (an async iterator of messages)."""

    handler: Callable[[AsyncIterator[Any]], AsyncGenerator[Message, None]]


@attrs.frozen
class Multiplexed:
    """Marks a session method (``mkv.rpc.session``): a bidirectional call whose
    requests each carry an ``id``, a ``timeout_ms`` and one unary request in
    the oneof field named as a key of ``handlers``, and whose answers (of
    ``response_type``) carry the same ``id`` and that handler's response in
    the field of the same name, or an ``error``. Each request is observed
    (metrics, the request log) as a call of the unary method it names."""

    # Oneof field name → (the unary method's name, its handler).
    handlers: Mapping[str, tuple[str, Handler]]
    response_type: type[Message]
    # Oneof field name → a synchronous try at the same request: its response
    # when it can be had at once, without waiting for anything, else None
    # (the handler then runs). Same answers, errors included; it only spares
    # the request a task of its own.
    immediate: Mapping[str, Callable[[Any], Message | None]] = attrs.field(factory=dict)


@attrs.frozen
class CallInfo:
    """What a guard sees of a call before its body is read."""

    service: str
    method: str
    # Custom request metadata, by lower-case name (the last value of a repeated one).
    metadata: Mapping[str, str]
    # The client's address.
    peer: str


# Runs before a call of its service is read; raises an MkvError to refuse it.
Guard = Callable[[CallInfo], None]


@attrs.frozen
class RpcStatistics:
    connections: int
    calls_in_flight: int
    # The most calls that were in flight at once since the server started.
    peak_calls_in_flight: int
    # Connections closed at accept: their address had too many already.
    connections_refused: int


AnyHandler = Handler | ServerStream | BidiStream | Multiplexed


@attrs.frozen
class Method:
    request_type: type[Message]
    handler: AnyHandler
