"""gRPC serving on a listener mkv owns, with errors mapped in one place.

purerpc's ``Server`` binds every interface with ``SO_REUSEPORT`` (a second
server on the port starts silently and steals traffic), never closes its
listener, and answers any handler exception with ``CANCELLED`` and
``repr(sys.exc_info())``. So mkv binds the configured address itself and
drives purerpc's HTTP/2 connection code (``GRPCProtoSocket``) from its own
accept loop, and every request passes through ``RpcServer._call``, the one
place where a request body is parsed and an outcome becomes a gRPC status.

Request bodies reach us as raw bytes (no message type is registered with
purerpc), so a body that fails to parse is ours to answer: INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs
import h2.errors
import h2.exceptions
import trio
from google.protobuf.message import DecodeError, Message
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.exceptions import GRPCError
from purerpc.grpclib.status import Status, StatusCode

from mkv.errors import MkvError
from mkv.purerpc_compat import (
    OversizedMessage,
    bound_messages,
    close_call,
    tolerate_late_frames,
    wait_for_send_window,
)
from mkv.wire import MAX_REQUEST_BYTES, Address

__all__ = ["Handler", "RpcObserver", "RpcServer", "ServerStream"]

log = logging.getLogger(__name__)

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


# Responses may be a little larger than requests (a Get of a value that
# filled a whole request, plus its sequence number and partition id).
_RESPONSE_HEADROOM = 64 * 1024
# What a call that ends in an exception (its client went away, or the server
# is stopping) before its status was sent is reported as to the observer.
_LOST = Status(StatusCode.CANCELLED, "The call ended before its status was sent.")
# How long an answered call may go on sending before it is reset.
_DISCARD_TIMEOUT = 5.0
# How long a response stream may wait for its client to read (HTTP/2 flow
# control) before it is ended: a stalled reader holds no more than this.
STREAM_STALL_TIMEOUT = 30.0


@attrs.frozen
class Method:
    request_type: type[Message]
    handler: Handler | ServerStream


class RpcServer:
    """Serves one gRPC service on one address until ``stop()``.

    Args:
        service: the full service name (``mkv.v1.DataPlane``).
        methods: method name → (request message type, handler).
        address: where to listen; port 0 picks a free port.
    """

    def __init__(
        self,
        service: str,
        methods: Mapping[str, tuple[type[Message], Handler | ServerStream]],
        address: Address,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        drain_timeout: float = 10.0,
        stream_stall_timeout: float = STREAM_STALL_TIMEOUT,
        observer: RpcObserver | None = None,
    ) -> None:
        self.service = service
        self.observer = observer
        self._methods = {name: Method(t, h) for name, (t, h) in methods.items()}
        self.address = address
        self.max_request_bytes = max_request_bytes
        self.drain_timeout = drain_timeout
        self.stream_stall_timeout = stream_stall_timeout
        # One per response stream in progress: a stopping server ends them
        # (they may never end on their own) while unary calls drain.
        self._streams: set[trio.CancelScope] = set()
        self._config = GRPCConfiguration(
            client_side=False, max_message_length=max_request_bytes + _RESPONSE_HEADROOM
        )
        self._accepting = trio.CancelScope()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, report the bound address, serve until ``stop()``, then drain.

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        # One listener per resolved address ("localhost" may give IPv4 and
        # IPv6), all on the same port, none with SO_REUSEPORT: a taken port
        # fails here with EADDRINUSE instead of sharing traffic.
        try:
            multi = await anyio.create_tcp_listener(
                local_host=self.address.host, local_port=self.address.port
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.address}: {exc.strerror or exc}"
            ) from exc
        async with multi:
            port = multi.extra(anyio.abc.SocketAttribute.local_port)
            self.address = Address(self.address.host, port)
            async with trio.open_nursery() as connections:
                task_status.started(self.address)
                with self._accepting:
                    async with trio.open_nursery() as accepting:
                        for listener in multi.listeners:
                            accepting.start_soon(self._accept, listener, connections)
                await multi.aclose()
                # Requests already received get their answers; then the idle
                # connections are closed.
                with trio.move_on_after(self.drain_timeout):
                    await self._idle.wait()
                connections.cancel_scope.cancel()

    async def _accept(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], connections: trio.Nursery
    ) -> None:
        assert isinstance(listener, anyio.abc.SocketListener)
        while True:
            stream = await listener.accept()
            connections.start_soon(self._serve_connection, stream)

    def stop(self) -> None:
        """Stop accepting and end response streams (UNAVAILABLE: resume
        elsewhere); ``run`` returns once in-flight requests are answered."""
        self._accepting.cancel()
        for scope in self._streams:
            scope.cancel()

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with (
                stream,
                GRPCProtoSocket(self._config, stream) as grpc_socket,
                trio.open_nursery() as nursery,
            ):
                tolerate_late_frames(grpc_socket)
                bound_messages(grpc_socket, self.max_request_bytes)
                async for grpc_stream in grpc_socket.listen():
                    nursery.start_soon(self._serve_stream, grpc_stream)
                # The peer is gone: nobody is left to answer, and a response
                # stream waiting for news would otherwise wait forever.
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A peer that breaks the protocol or vanishes costs only its own
            # connection.
            log.debug("connection closed: %r", exc)

    async def _serve_stream(self, stream: GRPCProtoStream) -> None:
        try:
            await self._answer(stream)
            await self._discard_rest(stream)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            h2.exceptions.ProtocolError,
            GRPCError,
        ) as exc:
            # The client reset the call or dropped the connection: only this
            # call is lost, and the client knows it has no answer.
            log.debug("client went away mid-call: %r", exc)
        finally:
            close_call(stream, h2.errors.ErrorCodes.NO_ERROR)

    async def _answer(self, stream: GRPCProtoStream) -> None:
        """Read the request, run the handler, send the answer: an in-flight call."""
        self._in_flight += 1
        self._idle = trio.Event() if self._in_flight == 1 else self._idle
        observer, method, started = self.observer, "", 0.0
        outcome = _LOST
        try:
            await stream.start_response()
            event = await stream.receive_event()
            if observer is not None:
                started = time.perf_counter()
                served = (
                    isinstance(event, RequestReceived)
                    and event.service_name == self.service
                    and event.method_name in self._methods
                )
                method = event.method_name if served else "unknown"
                observer.call_started(self.service, method)
            status, response = await self._call(stream, event)
            if isinstance(response, _Streaming):
                status = await self._send_stream(stream, response)
            elif response is not None:
                await stream.send_message(response)
            await stream.close(status)
            outcome = status
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            if observer is not None and method:
                observer.call_finished(self.service, method, outcome, time.perf_counter() - started)

    async def _discard_rest(self, stream: GRPCProtoStream) -> None:
        """Read and drop what the client still sends after an early answer.

        An error can be answered before the request was read to its end. A
        reset would stop the client sending, but grpcio reports a reset that
        follows the answer as INTERNAL; so the rest is read (bounded in time)
        and the call ends the ordinary way.
        """
        with trio.move_on_after(_DISCARD_TIMEOUT):
            while stream.end_stream_event is None:
                await stream.receive_event()

    async def _send_stream(self, stream: GRPCProtoStream, call: _Streaming) -> Status:
        """Send what a streaming handler yields; the status to end the call with."""
        scope = trio.CancelScope()
        self._streams.add(scope)
        try:
            with scope:
                async with aclosing(call.responses) as responses:
                    async for message in responses:
                        with trio.move_on_after(self.stream_stall_timeout) as waited:
                            await wait_for_send_window(stream, message.ByteSize())
                        if waited.cancelled_caught:
                            return Status(
                                StatusCode.RESOURCE_EXHAUSTED,
                                "The client stopped reading this stream, so the server ended it.",
                            )
                        await stream.send_message(message)
            if scope.cancelled_caught:
                return Status(
                    StatusCode.UNAVAILABLE, "The server is shutting down; reconnect and resume."
                )
        except MkvError as exc:
            return Status(exc.code, exc.message)
        except Exception:
            log.exception("%s/%s failed", self.service, call.method)
            return Status(StatusCode.INTERNAL, "Internal error; the server log has details.")
        finally:
            self._streams.discard(scope)
        return Status(StatusCode.OK)

    async def _call(
        self, stream: GRPCProtoStream, event: object
    ) -> tuple[Status, Message | _Streaming | None]:
        """Parse, dispatch and map the outcome to a status: the one place that does."""
        if not isinstance(event, RequestReceived):
            return Status(StatusCode.INTERNAL, "Expected request headers."), None
        method = self._methods.get(event.method_name)
        if event.service_name != self.service or method is None:
            return (
                Status(
                    StatusCode.UNIMPLEMENTED,
                    f"Method {event.service_name}/{event.method_name} is not served on this port.",
                ),
                None,
            )
        try:
            body = await _one_message(stream)
            if isinstance(body, OversizedMessage):
                return (
                    Status(
                        StatusCode.RESOURCE_EXHAUSTED,
                        f"The request is {body.length} bytes; the limit is "
                        f"{self.max_request_bytes} bytes, so split the batch.",
                    ),
                    None,
                )
            try:
                request = method.request_type.FromString(body)
            except DecodeError:
                name = method.request_type.DESCRIPTOR.full_name
                raise _BadBody(f"The request body is not a valid {name} message.") from None
            if isinstance(method.handler, ServerStream):
                # Errors before the first response still come back as a status.
                return Status(StatusCode.OK), _Streaming(
                    event.method_name, method.handler.handler(request)
                )
            response = await method.handler(request)
        except _BadBody as exc:
            return Status(StatusCode.INVALID_ARGUMENT, str(exc)), None
        except MkvError as exc:
            return Status(exc.code, exc.message), None
        except Exception:
            log.exception("%s/%s failed", event.service_name, event.method_name)
            return Status(StatusCode.INTERNAL, "Internal error; the server log has details."), None
        return Status(StatusCode.OK), response


@attrs.frozen
class _Streaming:
    method: str
    responses: AsyncGenerator[Message, None]


class _BadBody(Exception):
    """The request body is not what the method takes; the message says how."""


async def _one_message(stream: GRPCProtoStream) -> bytes | OversizedMessage:
    """The single request message of a unary call: its bytes, or that it was too large."""
    body = await stream.receive_message()
    if isinstance(body, OversizedMessage):
        return body  # answered at once; the rest is discarded as it arrives
    if body is None or await stream.receive_message() is not None:
        raise _BadBody("A unary call takes exactly one request message.")
    assert isinstance(body, bytes)
    return body
