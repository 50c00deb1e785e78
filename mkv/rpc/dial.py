"""One bidirectional call from a node to another node, on a connection of its own.

Node-to-node streams (a follower fetching a partition from its leader,
``mkv.node.replication``) cannot use ``mkv.client`` (the node must not
import the client), so this drives purerpc's client directly, as
``mkv/client/channel.py`` does: the call and the connection are closed when
the block is left, late frames are tolerated, and, because purerpc
surfaces nothing when the peer stops answering (a stopped or cut-off node
keeps the TCP connection open), every send and receive has a deadline and
silence past it fails the call.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import h2.errors
import h2.exceptions
from google.protobuf.message import Message
from purerpc.grpclib.events import ResponseEnded
from purerpc.grpclib.status import StatusCode

from mkv.errors import MkvError, UnavailableError, error_for_status
from mkv.rpc.client_socket import CONNECTION_ERRORS, ClientSocket
from mkv.rpc.purerpc_compat import close_call
from mkv.wire import Address

__all__ = ["BidiCall", "call_unary", "open_bidi"]

M = TypeVar("M", bound=Message)


class BidiCall(Generic[M]):
    """Both directions of one streaming call; every wait has a deadline."""

    def __init__(self, stream: Any, address: Address, name: str, timeout: float) -> None:
        self._stream = stream
        self._address = address
        self._name = name
        self.timeout = timeout

    async def send(self, message: Message) -> None:
        """Raises:
        UnavailableError: the connection was lost, or the send waited too long.
        """
        with anyio.move_on_after(self.timeout):
            try:
                await self._stream.send_message(message)
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
            return
        raise UnavailableError(
            f"{self._address} took no message on {self._name} for {self.timeout:g} s."
        )

    async def done_sending(self) -> None:
        """Half-close: tell the peer no more messages come (a unary call's end)."""
        with anyio.move_on_after(self.timeout):
            try:
                await self._stream.close()
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc

    async def receive(self) -> M:
        """The next message, within ``timeout``: silence is a failure.

        Raises:
            MkvError: the peer ended the call with a non-OK status (typed by its code).
            UnavailableError: nothing came in time, the connection was lost,
                or the call ended without a message.
        """
        with anyio.move_on_after(self.timeout):
            try:
                response: M | None = await self._stream.receive_message()
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
            if response is not None:
                return response
            ended = self._stream.end_stream_event
            if isinstance(ended, ResponseEnded) and ended.status.status_code != StatusCode.OK:
                raise error_for_status(ended.status.status_code, ended.status.status_message)
            raise UnavailableError(f"{self._address} ended {self._name} unexpectedly.")
        raise UnavailableError(
            f"{self._address} sent nothing on {self._name} for {self.timeout:g} s; "
            "the stream is taken as dead."
        )

    def _lost(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"Lost the connection to {self._address} on {self._name} ({type(exc).__name__})."
        )


@asynccontextmanager
async def open_bidi(
    address: Address,
    service: str,
    method: str,
    request_type: type[Message],
    response_type: type[M],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    silence: float = 10.0,
) -> AsyncIterator[BidiCall[M]]:
    """Connect to ``address`` and start one bidirectional call; leaving the
    block cancels the call and closes the connection. ``silence``: seconds
    any one wait (to connect, send or receive) may last before the call fails.

    Raises:
        UnavailableError: nothing answers there in time.
    """
    name = f"{service}/{method}"
    timeout = silence
    sock: anyio.abc.ByteStream
    try:
        with anyio.fail_after(timeout):
            if ssl_context is None:
                sock = await anyio.connect_tcp(address.host, address.port)
            else:
                sock = await anyio.connect_tcp(
                    address.host,
                    address.port,
                    tls=True,
                    ssl_context=ssl_context,
                    tls_standard_compatible=False,
                )
    except TimeoutError:
        raise UnavailableError(f"{address} accepted no connection within {timeout:g} s.") from None
    except OSError as exc:
        raise UnavailableError(f"Cannot connect to {address}: {exc.strerror or exc}.") from None
    grpc_socket = ClientSocket(sock)
    async with sock, grpc_socket:
        try:
            with anyio.fail_after(timeout):
                stream = await grpc_socket.start_request(
                    "http" if ssl_context is None else "https",
                    service,
                    method,
                    request_type.DESCRIPTOR.full_name,
                    str(address),
                    custom_metadata=tuple(metadata),
                )
        except TimeoutError:
            raise UnavailableError(f"{address} did not start {name} in {timeout:g} s.") from None
        except CONNECTION_ERRORS as exc:
            raise UnavailableError(f"Lost the connection to {address} ({exc!r}).") from exc
        stream.expect_message_type(response_type)
        try:
            yield BidiCall(stream, address, name, timeout)
        finally:
            close_call(stream, h2.errors.ErrorCodes.CANCEL)


async def call_unary(
    address: Address,
    service: str,
    method: str,
    request: Message,
    response_type: type[M],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    silence: float = 10.0,
) -> M:
    """One unary call on a connection of its own (on the wire a unary call is
    a stream of one message each way, ended by the client's half-close).

    Raises:
        MkvError: the peer's error, typed by its status code.
        UnavailableError: nothing answered in time, or the connection was lost.
    """
    try:
        async with open_bidi(
            address,
            service,
            method,
            type(request),
            response_type,
            metadata=metadata,
            ssl_context=ssl_context,
            silence=silence,
        ) as call:
            await call.send(request)
            await call.done_sending()
            return await call.receive()
    except BaseExceptionGroup as group:
        # purerpc's connection tasks wrap what ended the call.
        raise _first(group, address) from None


def _first(group: BaseExceptionGroup[BaseException], address: Address) -> BaseException:
    """What ended a call, out of the groups purerpc's connection tasks wrap it in."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if isinstance(first, MkvError):
        return first
    return UnavailableError(f"The call to {address} failed ({first!r}).")
