"""One gRPC connection from a client to an mkv port, with errors made typed.

Shared by ``mkv.Client`` (data plane) and ``mkv.AdminClient`` (control plane).
It drives purerpc's HTTP/2 code directly rather than through purerpc's
channel and generated stubs, because those never close the socket nor the
per-call memory streams (each left to the garbage collector, with a
``ResourceWarning``); here the connection and every call are closed when done.
Every failure comes out as an ``mkv.errors`` exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoSocket
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.exceptions import GRPCError, RpcFailedError
from purerpc.wrappers import extract_message_from_singleton_stream, send_single_message_client

from mkv.errors import UnavailableError, error_for_status
from mkv.wire import Address, close_call, parse_address

__all__ = ["Channel", "open_channel"]

M = TypeVar("M", bound=Message)

# Responses are bounded by requests (1 MiB) except PartitionMap and lists,
# which stay far below this.
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class Channel:
    def __init__(self, grpc_socket: GRPCProtoSocket, address: Address) -> None:
        self._socket = grpc_socket
        self.address = address

    async def unary(self, service: str, method: str, request: Message, response_type: type[M]) -> M:
        """Make one unary call.

        Raises:
            MkvError: the server answered a non-OK status (typed by its code).
            UnavailableError: the connection failed or was lost.
        """
        try:
            stream = await self._socket.start_request(
                "http", service, method, request.DESCRIPTOR.full_name, str(self.address)
            )
        except (OSError, GRPCError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise self._lost(exc) from exc
        stream.expect_message_type(response_type)
        try:
            await send_single_message_client(stream, request)
            response: M = await extract_message_from_singleton_stream(stream)
            return response
        except RpcFailedError as exc:
            raise error_for_status(exc.status.status_code, exc.status.status_message) from None
        except (
            OSError,
            GRPCError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        ) as exc:
            raise self._lost(exc) from exc
        finally:
            close_call(stream)

    def _lost(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"Lost the connection to mkv at {self.address}: {exc or type(exc).__name__}."
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
    config = GRPCConfiguration(client_side=True, max_message_length=_MAX_RESPONSE_BYTES)
    async with sock, GRPCProtoSocket(config, sock) as grpc_socket:
        yield Channel(grpc_socket, address)
