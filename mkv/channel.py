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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.abc
import h2.errors
import h2.exceptions
import trio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoSocket
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.exceptions import GRPCError, RpcFailedError
from purerpc.wrappers import extract_message_from_singleton_stream, send_single_message_client

from mkv.errors import UnavailableError, error_for_status
from mkv.purerpc_compat import close_call, tolerate_late_frames
from mkv.unwrap import unwrap_single_exception
from mkv.wire import Address, parse_address

__all__ = ["Channel", "open_channel"]

M = TypeVar("M", bound=Message)

log = logging.getLogger(__name__)

# What a broken or closed connection raises, from the socket up through h2.
_CONNECTION_ERRORS = (
    OSError,
    GRPCError,
    h2.exceptions.ProtocolError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

# Responses are bounded by requests (1 MiB) except PartitionMap and lists,
# which stay far below this.
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class _ClientSocket(GRPCProtoSocket):  # type: ignore[misc]  # purerpc is untyped
    """purerpc's client connection, telling the channel when its reader ends.

    purerpc's reader just returns when the server goes away, leaving every
    call in flight waiting forever for an answer.
    """

    def __init__(self, config: GRPCConfiguration, sock: anyio.abc.SocketStream) -> None:
        super().__init__(config, sock)
        tolerate_late_frames(self)
        self.lost = False

    async def _reader_thread(self) -> None:
        try:
            await super()._reader_thread()
        finally:
            self.fail_pending()

    def fail_pending(self) -> None:
        """Wake every call still waiting: its queue ends, so it reads EndOfStream."""
        self.lost = True
        for stream in list(self._streams.values()):
            stream._incoming_events[0].close()


class Channel:
    def __init__(self, address: Address) -> None:
        self.address = address
        self._socket: _ClientSocket | None = None
        self._closing = trio.Event()

    async def _hold(
        self, sock: anyio.abc.SocketStream, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Own the connection in a task of its own.

        purerpc runs its reader and writer in a task group around whoever
        enters the socket; held here, a connection that breaks fails the calls
        in flight (UNAVAILABLE) instead of cancelling the user's code.
        """
        config = GRPCConfiguration(client_side=True, max_message_length=_MAX_RESPONSE_BYTES)
        grpc_socket = _ClientSocket(config, sock)
        try:
            async with sock, grpc_socket:
                self._socket = grpc_socket
                task_status.started()
                await self._closing.wait()
        except* _CONNECTION_ERRORS as group:
            log.debug("connection to %s lost: %r", self.address, group.exceptions)
        finally:
            grpc_socket.fail_pending()

    async def unary(self, service: str, method: str, request: Message, response_type: type[M]) -> M:
        """Make one unary call.

        Raises:
            MkvError: the server answered a non-OK status (typed by its code).
            UnavailableError: the connection failed or was lost.
        """
        grpc_socket = self._socket
        if grpc_socket is None or grpc_socket.lost:
            raise UnavailableError(f"The connection to mkv at {self.address} is closed.")
        try:
            stream = await grpc_socket.start_request(
                "http", service, method, request.DESCRIPTOR.full_name, str(self.address)
            )
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        stream.expect_message_type(response_type)
        try:
            await send_single_message_client(stream, request)
            response: M = await extract_message_from_singleton_stream(stream)
            return response
        except RpcFailedError as exc:
            raise error_for_status(exc.status.status_code, exc.status.status_message) from None
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        finally:
            close_call(stream, h2.errors.ErrorCodes.CANCEL)

    def _lost(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"Lost the connection to mkv at {self.address} ({type(exc).__name__}); "
            "the outcome of this call is unknown."
        )


@asynccontextmanager
async def open_channel(address: str | Address) -> AsyncIterator[Channel]:
    """Connect to ``address`` (``HOST:PORT``).

    Raises:
        UnavailableError: nothing answers there.
    """
    if not isinstance(address, Address):
        address = parse_address(address)
    try:
        sock = await anyio.connect_tcp(address.host, address.port)
    except OSError as exc:
        raise UnavailableError(
            f"Cannot connect to mkv at {address}: {exc.strerror or exc}."
        ) from None
    channel = Channel(address)
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(channel._hold, sock)
            try:
                yield channel
            finally:
                channel._closing.set()
