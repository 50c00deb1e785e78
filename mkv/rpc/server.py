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

One port serves several services (the plane's own, health, reflection);
each may have a guard (token, rate limit) that runs before the request body
is read. Every call honours its ``grpc-timeout`` (unary calls also a
server-side cap): a request whose deadline passed before it was handed to
its handler is not applied; one whose deadline passes while its handler
waits is answered DEADLINE_EXCEEDED, its outcome unknown (a write already
handed to a partition is not undone, as with any timeout).

The limits a connection lives under: SETTINGS_MAX_CONCURRENT_STREAMS,
connections per client address (more are closed at accept), a request size
(bigger ones are discarded as they arrive), no compressed requests (purerpc
would decompress without a bound), and a response that its client does not
read within ``stream_stall_timeout`` ends the call: a stalled client holds
at most one response per stream it opened. What a connection may cost beyond
that (frame floods, resets, unsent output, buffered request bytes) is bounded
by its ``ConnectionGuard`` (``mkv.rpc.connection_guard``); while the node's
buffered request bytes are over budget, new calls are refused.
"""

from __future__ import annotations

import collections
import logging
import math
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

import anyio
import anyio.abc
import anyio.streams.tls
import attrs
import h2.errors
import h2.exceptions
import trio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.exceptions import GRPCError
from purerpc.grpclib.status import Status, StatusCode

from mkv.errors import (
    DeadlineExceededError,
    MkvError,
    ResourceExhaustedError,
)
from mkv.rpc.connection_guard import ConnectionGuard
from mkv.rpc.connection_limits import ConnectionLimits, RequestMemory
from mkv.rpc.flow_control import (
    Stalled,
    Withdrawn,
    fits_send_window,
    send_if_room,
    send_message,
)
from mkv.rpc.purerpc_compat import (
    bound_messages,
    close_call,
    close_remaining_calls,
    limit_concurrent_streams,
    tolerate_late_frames,
)
from mkv.rpc.request_headers import Rejection
from mkv.rpc.request_screen import RejectedRequest, answer_rejection, screen_requests
from mkv.rpc.requests import (
    RequestStream,
    call_metadata,
    one_message,
    parse_request,
    set_current_metadata,
)
from mkv.rpc.session import DEFAULT_MAX_IN_FLIGHT, SessionCall, apply_unary, run_session
from mkv.rpc.types import (
    AnyHandler,
    BidiStream,
    CallInfo,
    Guard,
    Handler,
    Method,
    Multiplexed,
    RpcObserver,
    RpcStatistics,
    ServerStream,
)
from mkv.rpc.vouch import Voucher, current_voucher
from mkv.wire import MAX_REQUEST_BYTES, Address

__all__ = [
    "AnyHandler",
    "BidiStream",
    "CallInfo",
    "Guard",
    "Handler",
    "Method",
    "Multiplexed",
    "RpcObserver",
    "RpcServer",
    "RpcStatistics",
    "ServerStream",
]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.rpc")

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
# A session's requests in flight hold at most this many largest requests' bytes.
SESSION_REQUEST_BUDGET = 4
# Per connection, advertised in HTTP/2 SETTINGS; purerpc's own is 65,536.
MAX_CONCURRENT_STREAMS = 100
# Per client IP address, on each port; 0: no limit.
MAX_CONNECTIONS_PER_ADDRESS = 256
# At most one warning about refused connections this often, in seconds.
_REFUSAL_LOG_INTERVAL = 10.0
# How long a client has to finish its TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0


@attrs.frozen
class _Service:
    methods: dict[str, Method]
    guard: Guard | None


class RpcServer:
    """Serves gRPC services on one address until ``stop()``.

    Args:
        service: the full name of the port's main service (``mkv.v1.DataPlane``).
        methods: method name → (request message type, handler).
        address: where to listen; port 0 picks a free port.
        guard: runs before every call of ``service`` (see ``add_service``).
        deadline_cap: the longest a unary call may run, whatever its
            ``grpc-timeout``; None: only the client's deadline.
        ssl_context: serve TLS with it (server side, ALPN "h2"); None: plain TCP.
    """

    def __init__(
        self,
        service: str,
        methods: Mapping[str, tuple[type[Message], AnyHandler]],
        address: Address,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        drain_timeout: float = 10.0,
        stream_stall_timeout: float = STREAM_STALL_TIMEOUT,
        guard: Guard | None = None,
        deadline_cap: float | None = None,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        ssl_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
        observer: RpcObserver | None = None,
        connection_limits: ConnectionLimits | None = None,
        request_memory: RequestMemory | None = None,
        session_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.service = service
        self.observer = observer
        self._services: dict[str, _Service] = {}
        self.add_service(service, methods, guard=guard)
        self.address = address
        self.max_request_bytes = max_request_bytes
        self.drain_timeout = drain_timeout
        self.stream_stall_timeout = stream_stall_timeout
        self.deadline_cap = deadline_cap
        self.session_max_in_flight = session_max_in_flight
        self.max_concurrent_streams = max_concurrent_streams
        self.max_connections_per_address = max_connections_per_address
        self.ssl_context = ssl_context
        self.tls_handshake_timeout = tls_handshake_timeout
        self.connection_limits = connection_limits or ConnectionLimits()
        # Shared by the node's ports (see server.py): one memory budget.
        self.request_memory = request_memory or RequestMemory(
            self.connection_limits.request_buffer_bytes
        )
        self._connections: collections.Counter[str] = collections.Counter()
        self._refused = 0
        self._next_refusal_log = -math.inf
        self._rejected = 0
        self._next_rejection_log = -math.inf
        self._peak_in_flight = 0
        # One per response stream in progress: a stopping server ends them
        # (they may never end on their own) while unary calls drain.
        self._streams: set[trio.CancelScope] = set()
        self._config = GRPCConfiguration(
            client_side=False,
            max_message_length=max_request_bytes + _RESPONSE_HEADROOM,
            # Tells clients not to compress (compressed requests are refused).
            message_accept_encoding=["identity"],
        )
        self._accepting = trio.CancelScope()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    def add_service(
        self,
        name: str,
        methods: Mapping[str, tuple[type[Message], AnyHandler]],
        *,
        guard: Guard | None = None,
    ) -> None:
        """Serve another service on this port (before ``run``).

        Args:
            name: its full name (``grpc.health.v1.Health``).
            methods: method name → (request message type, handler).
            guard: called with each call's ``CallInfo`` before its body is
                read; an MkvError it raises is the call's answer.
        """
        self._services[name] = _Service({m: Method(t, h) for m, (t, h) in methods.items()}, guard)

    @property
    def service_names(self) -> list[str]:
        """The full names of the services served on this port."""
        return list(self._services)

    def statistics(self) -> RpcStatistics:
        return RpcStatistics(
            connections=self._connections.total(),
            calls_in_flight=self._in_flight,
            peak_calls_in_flight=self._peak_in_flight,
            connections_refused=self._refused,
        )

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
            peer = _peer_host(stream)
            limit = self.max_connections_per_address
            if limit and self._connections[peer] >= limit:
                # Closed before a byte is read: one address cannot hold more
                # than ``limit`` connections' worth of buffers and tasks.
                self._refused += 1
                # Throttled: a flood of refusals must not become a flood of logs.
                if trio.current_time() >= self._next_refusal_log:
                    self._next_refusal_log = trio.current_time() + _REFUSAL_LOG_INTERVAL
                    log.warning(
                        "refused a connection from %s: it has %d already (%d refused in all)",
                        peer,
                        limit,
                        self._refused,
                    )
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            self._connections[peer] += 1
            connections.start_soon(self._serve_connection, stream, peer)

    def stop(self) -> None:
        """Stop accepting and end response streams (UNAVAILABLE: resume
        elsewhere); ``run`` returns once in-flight requests are answered."""
        self._accepting.cancel()
        for scope in self._streams:
            scope.cancel()

    async def _serve_connection(self, stream: anyio.abc.SocketStream, peer: str) -> None:
        try:
            async with stream:
                transport: anyio.abc.ByteStream = stream
                if self.ssl_context is not None:
                    transport = await self._tls_handshake(stream, self.ssl_context)
                guard = ConnectionGuard(
                    transport, self.connection_limits, self.request_memory, peer
                )
                grpc_socket = GRPCProtoSocket(self._config, guard)
                guard.attach(grpc_socket)
                limit_concurrent_streams(grpc_socket, self.max_concurrent_streams)
                try:
                    async with grpc_socket, trio.open_nursery() as nursery:
                        tolerate_late_frames(grpc_socket)
                        bound_messages(grpc_socket, self.max_request_bytes)
                        screen_requests(grpc_socket)
                        async for grpc_stream in grpc_socket.listen():
                            nursery.start_soon(self._serve_guarded, grpc_stream, peer, guard)
                        # The peer is gone: nobody is left to answer, and a
                        # response stream waiting for news would otherwise
                        # wait forever.
                        nursery.cancel_scope.cancel()
                finally:
                    close_remaining_calls(grpc_socket)
                    await guard.close()
        except Exception as exc:
            # A peer that breaks the protocol, fails its TLS handshake or
            # vanishes costs only its own connection.
            log.debug("connection from %s closed: %r", peer, exc)
        finally:
            self._connections[peer] -= 1
            if self._connections[peer] <= 0:
                del self._connections[peer]

    async def _tls_handshake(
        self, stream: anyio.abc.SocketStream, context: ssl.SSLContext
    ) -> anyio.abc.ByteStream:
        """The TLS stream over ``stream``, once its handshake completed in time.

        Raises:
            trio.TooSlowError: the client did not finish the handshake in time.
            ssl.SSLError: the handshake failed (no or a wrong client certificate).
        """
        with trio.fail_after(self.tls_handshake_timeout):
            # standard_compatible=False: HTTP/2 ends its own connections, and
            # gRPC clients commonly close without a TLS close_notify.
            return await anyio.streams.tls.TLSStream.wrap(
                stream, server_side=True, ssl_context=context, standard_compatible=False
            )

    async def _serve_guarded(
        self, stream: GRPCProtoStream, peer: str, guard: ConnectionGuard
    ) -> None:
        # Where ``_send`` leaves the checks of vouched answers for the socket write.
        stream._mkv_guard = guard
        # Cancelled if the client resets the call; its buffers go on exit.
        with guard.call(stream.stream_id):
            await self._serve_stream(stream, peer)

    async def _serve_stream(self, stream: GRPCProtoStream, peer: str) -> None:
        try:
            await self._answer(stream, peer)
            await self._discard_rest(stream)
        except _Abandoned:
            log.debug("abandoned a call whose client stopped reading mid-message (%s)", peer)
            close_call(stream, h2.errors.ErrorCodes.CANCEL, always_reset=True)
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

    async def _answer(self, stream: GRPCProtoStream, peer: str) -> None:
        """Read the request, run the handler, send the answer: an in-flight call."""
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        self._idle = trio.Event() if self._in_flight == 1 else self._idle
        observer, observed_service, method, started = self.observer, self.service, "", 0.0
        outcome = _LOST
        try:
            event = await stream.receive_event()
            if observer is not None:
                started = time.perf_counter()
                service = event.service_name if isinstance(event, RequestReceived) else ""
                served = service in self._services and (
                    event.method_name in self._services[service].methods
                )
                # Never a name a client made up: unknown calls count against
                # the port's main service.
                observed_service = service if served else self.service
                method = event.method_name if served else "unknown"
                observer.call_started(observed_service, method)
            if isinstance(event, RejectedRequest):
                outcome = await self._reject(stream, event.rejection, peer)
                return
            await stream.start_response()
            status, response = await self._call(stream, event, peer)
            if isinstance(response, _Streaming):
                status = await self._send_stream(stream, response)
            elif isinstance(response, SessionCall):
                status = await self._run_session(stream, response)
            elif response is not None:
                # The handler ran in this task: its voucher, if any, is here.
                status = await self._send(stream, response, current_voucher()) or status
            await stream.close(status, custom_metadata=getattr(status, "trailers", ()))
            outcome = status
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            if observer is not None and method:
                observer.call_finished(
                    observed_service, method, outcome, time.perf_counter() - started
                )

    async def _reject(self, stream: GRPCProtoStream, rejection: Rejection, peer: str) -> Status:
        """Answer a call whose headers are malformed, on its stream alone; log it."""
        self._rejected += 1
        # Throttled: a client sending nothing but bad headers must not flood the log.
        if trio.current_time() >= self._next_rejection_log:
            self._next_rejection_log = trio.current_time() + _REFUSAL_LOG_INTERVAL
            log.warning(
                "answered a call from %s with malformed headers %s (HTTP %d): %s "
                "(%d such calls in all)",
                peer,
                rejection.code.name,
                rejection.http_status,
                rejection.message,
                self._rejected,
            )
        else:
            log.debug("malformed headers from %s: %s", peer, rejection.message)
        await answer_rejection(stream, rejection)
        return Status(rejection.code, rejection.message)

    async def _send(
        self, stream: GRPCProtoStream, message: Message, voucher: Voucher | None = None
    ) -> Status | None:
        """Send one response message unless its client stopped reading, or
        its ``voucher`` (``mkv.rpc.vouch``) no longer lets it leave.

        Returns:
            None once sent; a RESOURCE_EXHAUSTED status to end the call with
            when the client gave no room at all within
            ``stream_stall_timeout`` before the message started (trailers
            are not flow controlled); the voucher's error status when it
            failed before the message started.

        Raises:
            _Abandoned: the client stopped reading in the middle of a message,
                where only a reset can end the call.
        """
        check: Callable[[], None] | None = None
        if voucher is not None:
            guard: ConnectionGuard | None = getattr(stream, "_mkv_guard", None)

            def check() -> None:
                # Here, with nothing awaited before the bytes go into the
                # connection; and again at the socket write (the guard).
                voucher()
                if guard is not None:
                    guard.vouch(voucher)

        size = message.ByteSize()
        if fits_send_window(stream, size):
            # The whole message fits the window, so sending cannot wait: no
            # timeouts to arm (most answers, and a tenth of a Get's CPU).
            if check is not None:
                try:
                    check()
                except MkvError as exc:
                    return _status_of(exc)
            await stream.send_message(message)
            return None
        # Sent as the windows open, never waiting for room for the whole
        # message: a client with default windows grants more only after it
        # has read more (see mkv/rpc/flow_control.py).
        try:
            await send_message(
                stream, message, stall_timeout=self.stream_stall_timeout, check=check
            )
        except Stalled as stalled:
            if stalled.sent:
                raise _Abandoned from stalled
            return _STALLED
        except Withdrawn as withdrawn:
            if withdrawn.sent:
                raise _Abandoned from withdrawn
            return _status_of(withdrawn.error)
        return None

    async def _discard_rest(self, stream: GRPCProtoStream) -> None:
        """Read and drop what the client still sends after an early answer.

        An error can be answered before the request was read to its end. A
        reset would stop the client sending, but grpcio reports a reset that
        follows the answer as INTERNAL; so the rest is read (bounded in time)
        and the call ends the ordinary way.
        """
        if stream.end_stream_event is not None:
            return  # the usual case: the request was read to its end
        with trio.move_on_after(_DISCARD_TIMEOUT):
            while stream.end_stream_event is None:
                await stream.receive_event()

    async def _send_stream(self, stream: GRPCProtoStream, call: _Streaming) -> Status:
        """Send what a streaming handler yields; the status to end the call with."""
        scope = trio.CancelScope()
        self._streams.add(scope)
        try:
            with scope, trio.move_on_at(call.deadline) as timed:
                async with aclosing(call.responses) as responses:
                    async for message in responses:
                        # The generator ran in this task: its voucher is here.
                        if ended := await self._send(stream, message, current_voucher()):
                            return ended
            if timed.cancelled_caught:
                return Status(
                    StatusCode.DEADLINE_EXCEEDED, "The call's deadline passed, so it was ended."
                )
            if scope.cancelled_caught:
                return Status(
                    StatusCode.UNAVAILABLE, "The server is shutting down; reconnect and resume."
                )
        except MkvError as exc:
            return _status_of(exc)
        except _Abandoned:
            raise
        except Exception:
            log.exception("%s failed", call.method)
            return Status(StatusCode.INTERNAL, "Internal error; the server log has details.")
        finally:
            self._streams.discard(scope)
        return Status(StatusCode.OK)

    async def _run_session(self, stream: GRPCProtoStream, call: SessionCall) -> Status:
        """Serve a session (``mkv.rpc.session``); the status to end it with."""
        # Cancelled by stop(): the session stops reading and answers what it has.
        stopping = trio.CancelScope()
        self._streams.add(stopping)

        async def send(message: Message, voucher: Voucher | None) -> Status | None:
            return await self._send(stream, message, voucher)

        async def send_all(messages: list[Message]) -> bool:
            return await send_if_room(stream, messages)

        try:
            return await run_session(
                call,
                send,
                send_all,
                _status_of,
                max_in_flight=self.session_max_in_flight,
                # Four of the largest requests: a session may hold about as
                # many request bytes as a few unary calls, whatever its count.
                max_in_flight_bytes=SESSION_REQUEST_BUDGET * self.max_request_bytes,
                deadline_cap=self.deadline_cap,
                stopping=stopping,
                observer=self.observer,
            )
        finally:
            self._streams.discard(stopping)

    async def _call(
        self, stream: GRPCProtoStream, event: object, peer: str
    ) -> tuple[Status, Message | _Streaming | SessionCall | None]:
        """Guard, parse, dispatch and map the outcome to a status: the one place that does."""
        if not isinstance(event, RequestReceived):
            return Status(StatusCode.INTERNAL, "Expected request headers."), None
        service = self._services.get(event.service_name)
        method = service.methods.get(event.method_name) if service is not None else None
        if service is None or method is None:
            return (
                Status(
                    StatusCode.UNIMPLEMENTED,
                    f"Method {event.service_name}/{event.method_name} is not served on this port.",
                ),
                None,
            )
        if not self.request_memory.has_room(self.max_request_bytes):
            # Its body might not fit what the node may buffer; it is
            # discarded as it arrives instead (``_discard_rest``).
            return _MEMORY_EXHAUSTED, None
        streaming = isinstance(method.handler, ServerStream | BidiStream | Multiplexed)
        deadline = self._deadline(event, capped=not streaming)
        metadata = call_metadata(event)
        set_current_metadata(metadata)
        try:
            if service.guard is not None:
                service.guard(CallInfo(event.service_name, event.method_name, metadata, peer))
            if isinstance(method.handler, Multiplexed):
                return Status(StatusCode.OK), SessionCall(
                    event.service_name,
                    f"{event.service_name}/{event.method_name}",
                    RequestStream(stream, method.request_type, self.max_request_bytes),
                    method.handler,
                    deadline,
                )
            if isinstance(method.handler, BidiStream):
                requests = RequestStream(stream, method.request_type, self.max_request_bytes)
                return Status(StatusCode.OK), _Streaming(
                    f"{event.service_name}/{event.method_name}",
                    method.handler.handler(requests),
                    deadline,
                )
            with trio.move_on_at(deadline) as timed:
                request = parse_request(
                    method.request_type, await one_message(stream), self.max_request_bytes
                )
            if timed.cancelled_caught:
                raise DeadlineExceededError(
                    "The deadline passed before the request was read; nothing was done."
                )
            if isinstance(method.handler, ServerStream):
                if trio.current_time() >= deadline:
                    raise DeadlineExceededError(
                        "The deadline passed before the request could be applied; nothing was done."
                    )
                # Errors before the first response still come back as a status.
                return Status(StatusCode.OK), _Streaming(
                    f"{event.service_name}/{event.method_name}",
                    method.handler.handler(request),
                    deadline,
                )
            # The one rule for unary calls and session requests alike.
            response = await apply_unary(method.handler, request, deadline)
        except MkvError as exc:
            return _status_of(exc), None
        except Exception:
            log.exception("%s/%s failed", event.service_name, event.method_name)
            return Status(StatusCode.INTERNAL, "Internal error; the server log has details."), None
        return Status(StatusCode.OK), response

    def _deadline(self, event: RequestReceived, *, capped: bool) -> float:
        """When the call must be over, on Trio's clock: the client's
        ``grpc-timeout`` and, for a unary call, the server's cap."""
        budget = math.inf if event.timeout is None else event.timeout.total_seconds()
        if capped and self.deadline_cap is not None:
            budget = min(budget, self.deadline_cap)
        return trio.current_time() + budget


_MEMORY_EXHAUSTED = Status(
    StatusCode.RESOURCE_EXHAUSTED,
    "The server holds too many unfinished requests; retry later.",
)
_STALLED = Status(
    StatusCode.RESOURCE_EXHAUSTED, "The client stopped reading this call, so the server ended it."
)


class _TrailedStatus(Status):  # type: ignore[misc]  # purerpc is untyped
    """A status with trailing metadata (``retry-after``)."""

    def __init__(self, code: StatusCode, message: str, trailers: tuple[tuple[str, str], ...]):
        super().__init__(code, message)
        self.trailers = trailers


def _status_of(exc: MkvError) -> Status:
    """The status an MkvError travels as: its code and message, and for a
    rate limit the seconds to wait as ``retry-after`` (as in HTTP; purerpc
    refuses the reserved ``grpc-retry-pushback-ms``)."""
    if isinstance(exc, ResourceExhaustedError) and exc.retry_after is not None:
        seconds = f"{max(exc.retry_after, 0.001):.3f}"
        return _TrailedStatus(exc.code, exc.message, (("retry-after", seconds),))
    return Status(exc.code, exc.message)


class _Abandoned(Exception):
    """A call given up mid-message: its client stopped reading."""


@attrs.frozen
class _Streaming:
    method: str  # service/method
    responses: AsyncGenerator[Message, None]
    deadline: float


def _peer_host(stream: anyio.abc.SocketStream) -> str:
    address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    return str(address[0]) if isinstance(address, tuple) else str(address)
