"""One gRPC connection from a client to an mkv port, with errors made typed.

Shared by ``mkv.Client`` (data plane) and ``mkv.AdminClient`` (control plane).
It drives purerpc's HTTP/2 code directly rather than through purerpc's
channel and generated stubs, because those never close the socket nor the
per-call memory streams (each left to the garbage collector, with a
``ResourceWarning``); here the connection and every call are closed when done.
Every failure comes out as an ``mkv.errors`` exception.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import h2.errors
import h2.exceptions
from google.protobuf.message import Message
from purerpc.grpclib.events import ResponseEnded
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.grpclib.status import StatusCode
from purerpc.wrappers import extract_message_from_singleton_stream, send_single_message_client

from mkv.client.unwrap import unwrap_single_exception
from mkv.errors import UnavailableError, error_for_status
from mkv.rpc.client_socket import CONNECTION_ERRORS, ClientSocket, hold_connection
from mkv.rpc.purerpc_compat import close_call
from mkv.rpc.request_headers import grpc_timeout as wire_timeout
from mkv.rpc.tls import handshake_failure
from mkv.wire import Address, parse_address

__all__ = ["Channel", "NotSentError", "open_channel"]

M = TypeVar("M", bound=Message)

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.channel")


# What a broken or closed connection raises, from the socket up through h2.
class NotSentError(UnavailableError):
    """The call could not be started (the node could not be dialled, or the
    connection failed before the request was sent): certainly not applied,
    so even a write may be sent again (``mkv.client.nodes.Rerouting``)."""


class Channel:
    """Calls to one address over one connection at a time: a lost connection
    fails the calls in flight (their outcome is unknown), and the next call
    dials again."""

    def __init__(
        self,
        address: Address,
        task_group: anyio.abc.TaskGroup,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self._task_group = task_group
        # Sent with every call (the authorization token).
        self._metadata = tuple(metadata)
        self._ssl_context = ssl_context
        self._scheme = "http" if ssl_context is None else "https"
        self._socket: ClientSocket | None = None
        self._dialing = anyio.Lock()
        self._closing = anyio.Event()

    async def connect(self) -> None:
        """Dial now unless connected.

        Raises:
            UnavailableError: nothing answers at the address, or the channel is closed.
        """
        await self._connected()

    async def _connected(self) -> ClientSocket:
        grpc_socket = self._socket
        if grpc_socket is not None and not grpc_socket.lost:
            return grpc_socket
        async with self._dialing:
            if self._closing.is_set():
                raise UnavailableError(f"The connection to mkv at {self.address} is closed.")
            if self._socket is None or self._socket.lost:
                sock: anyio.abc.ByteStream
                try:
                    if self._ssl_context is None:
                        sock = await anyio.connect_tcp(self.address.host, self.address.port)
                    else:
                        sock = await anyio.connect_tcp(
                            self.address.host,
                            self.address.port,
                            tls=True,
                            ssl_context=self._ssl_context,
                            tls_standard_compatible=False,
                        )
                except ssl.SSLError as exc:
                    raise NotSentError(handshake_failure(self.address, exc)) from None
                except OSError as exc:
                    raise NotSentError(
                        f"Cannot connect to mkv at {self.address}: {exc.strerror or exc}."
                    ) from None
                await self._task_group.start(self._hold, sock)
            assert self._socket is not None
            return self._socket

    async def _hold(
        self, sock: anyio.abc.ByteStream, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Own the connection in a task of its own, until it ends or the channel closes.

        purerpc runs its reader and writer in a task group around whoever
        enters the socket; held here, a connection that breaks fails the calls
        in flight (UNAVAILABLE) instead of cancelling the user's code.
        """
        await hold_connection(
            sock,
            closing=self._closing,
            opened=self._opened,
            log=log,
            name=str(self.address),
            task_status=task_status,
        )

    def _opened(self, grpc_socket: ClientSocket) -> None:
        self._socket = grpc_socket

    def close(self) -> None:
        self._closing.set()

    @property
    def closed(self) -> bool:
        """Closed by its owner (not merely disconnected): no call will dial again."""
        return self._closing.is_set()

    async def unary(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        grpc_timeout: float | None = None,
    ) -> M:
        """Make one unary call.

        Args:
            grpc_timeout: seconds, sent as the call's ``grpc-timeout``: the server does not
                apply a request whose deadline passed, and answers
                DEADLINE_EXCEEDED.

        Raises:
            MkvError: the server answered a non-OK status (typed by its code).
            UnavailableError: the connection failed or was lost.
        """
        stream = await self._start_call(service, method, request, response_type, grpc_timeout)
        try:
            await send_single_message_client(stream, request)
            response: M = await extract_message_from_singleton_stream(stream)
            return response
        except RpcFailedError as exc:
            raise error_for_status(
                exc.status.status_code,
                exc.status.status_message,
                retry_after=_retry_after(stream.end_stream_event),
            ) from None
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        finally:
            close_call(stream, h2.errors.ErrorCodes.CANCEL)

    @asynccontextmanager
    async def open_stream(
        self, service: str, method: str, request: Message, response_type: type[M]
    ) -> AsyncIterator[ResponseStream[M]]:
        """Start one server-streaming call; its responses are read from the
        yielded stream. Leaving the block early cancels the call.

        Raises:
            UnavailableError: the connection failed or was lost.
        """
        stream = await self._start_call(service, method, request, response_type)
        try:
            try:
                await send_single_message_client(stream, request)
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
            yield ResponseStream(self, stream)
        finally:
            close_call(stream, h2.errors.ErrorCodes.CANCEL)

    async def start_bidi(
        self, service: str, method: str, request_type: type[Message], response_type: type[M]
    ) -> Any:
        """Start a bidirectional call: its purerpc stream, to ``send_message``
        and ``receive_message`` on (``close_call`` it when done).

        Raises:
            UnavailableError: the connection failed or was lost.
        """
        return await self._start_call(service, method, request_type(), response_type)

    def spawn(self, task: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        """Run ``task`` in the channel's task group: it must end when the
        connection does (the channel waits for it on close)."""
        self._task_group.start_soon(task, *args)

    def close_call(self, stream: Any) -> None:
        """End a call started with ``start_bidi`` (a reset if still open)."""
        close_call(stream, h2.errors.ErrorCodes.CANCEL)

    async def _start_call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[Message],
        grpc_timeout: float | None = None,
    ) -> Any:
        """Open one call on the connection (dialling first if needed)."""
        grpc_socket = await self._connected()
        try:
            stream = await grpc_socket.start_request(
                self._scheme,
                service,
                method,
                request.DESCRIPTOR.full_name,
                str(self.address),
                # Within the spec's 8 digits (purerpc would write 100.5 s as 9).
                timeout=None if grpc_timeout is None else wire_timeout(grpc_timeout),
                custom_metadata=self._metadata,
            )
        except CONNECTION_ERRORS as exc:
            # The request's message goes after its headers: none of it left.
            raise NotSentError(
                f"Lost the connection to mkv at {self.address} ({type(exc).__name__}) "
                "before the call was sent."
            ) from exc
        stream.expect_message_type(response_type)
        return stream

    def _lost(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"Lost the connection to mkv at {self.address} ({type(exc).__name__}); "
            "the outcome of this call is unknown."
        )


class ResponseStream(Generic[M]):
    """The responses of one server-streaming call, as an async iterator.

    A class, not an async generator, so that a caller may stop reading at
    any point without leaving a generator for the garbage collector.

    Raises (while iterating):
        MkvError: the server ended the stream with a non-OK status.
        UnavailableError: the connection was lost mid-stream.
    """

    def __init__(self, channel: Channel, stream: Any) -> None:
        self._channel = channel
        self._stream = stream

    def __aiter__(self) -> ResponseStream[M]:
        return self

    async def __anext__(self) -> M:
        try:
            response: M | None = await self._stream.receive_message()
        except CONNECTION_ERRORS as exc:
            raise self._channel._lost(exc) from exc
        if response is not None:
            return response
        ended = self._stream.end_stream_event
        if not isinstance(ended, ResponseEnded):
            raise self._channel._lost(EOFError("the stream ended without a status"))
        if ended.status.status_code != StatusCode.OK:
            raise error_for_status(ended.status.status_code, ended.status.status_message)
        raise StopAsyncIteration


@asynccontextmanager
async def open_channel(
    address: str | Address,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Channel]:
    """Connect to ``address`` (``HOST:PORT``); calls dial again after a lost connection.

    Args:
        metadata: sent with every call (``mkv.rpc.auth.authorization_metadata``).
        ssl_context: connect over TLS with it (``mkv.rpc.tls.client_context``).

    Raises:
        UnavailableError: nothing answers there, or the TLS handshake failed.
    """
    if not isinstance(address, Address):
        address = parse_address(address)
    with unwrap_single_exception():
        async with anyio.create_task_group() as task_group:
            channel = Channel(address, task_group, metadata=metadata, ssl_context=ssl_context)
            try:
                await channel.connect()
                yield channel
            finally:
                channel.close()


def _retry_after(ended: object) -> float | None:
    """The seconds of a ``retry-after`` trailer (a rate limit's hint), if any."""
    for name, value in getattr(ended, "custom_metadata", ()):
        if name == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None
