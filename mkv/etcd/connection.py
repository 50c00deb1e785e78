"""One HTTP/2 connection to one etcd endpoint, where every call and stream
has a deadline.

purerpc's client is driven directly, as ``mkv/client/channel.py`` does for
mkv's own ports (closing every call, tolerating late frames), and extended
to bidirectional streams. What this adds for etcd: purerpc surfaces nothing
when the peer stops answering (a SIGSTOPped or partitioned etcd keeps the
TCP connection open), so every wait here is bounded, and a connection that
stayed silent past a deadline is dropped: every call and stream on it fails
with ``EtcdUnavailable`` and the next call dials again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import h2.errors
import h2.exceptions
from google.protobuf.message import DecodeError, Message
from purerpc.grpclib.events import ResponseEnded
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.grpclib.status import StatusCode
from purerpc.wrappers import extract_message_from_singleton_stream, send_single_message_client

from mkv.etcd.errors import EtcdError, EtcdUnavailable, error_for_etcd_status
from mkv.rpc.client_socket import CONNECTION_ERRORS, ClientSocket, hold_connection
from mkv.rpc.purerpc_compat import close_call
from mkv.rpc.request_headers import grpc_timeout as wire_timeout
from mkv.wire import Address

__all__ = ["BidiStream", "Connection", "NotSent", "parse_endpoint"]

log = logging.getLogger("mkv.etcd")

M = TypeVar("M", bound=Message)


class NotSent(EtcdUnavailable):
    """The endpoint could not be reached: the request certainly was not
    applied, so even a write may be tried on another endpoint."""


def parse_endpoint(text: str) -> Address:
    """``http://HOST:PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6).

    Raises:
        EtcdError: another scheme (TLS to etcd is not supported), or not of that form.
    """
    rest = text.removeprefix("http://")
    if "://" in rest:
        raise EtcdError(f"etcd endpoint {text!r}: only http:// endpoints are supported.")
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise EtcdError(f"etcd endpoint {text!r} is not of the form http://HOST:PORT.")
    return Address(host.removeprefix("[").removesuffix("]"), int(port))


class Connection:
    """Calls to one etcd endpoint over one connection at a time."""

    def __init__(
        self, address: Address, task_group: anyio.abc.TaskGroup, *, timeout: float
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._task_group = task_group
        self._socket: ClientSocket | None = None
        self._dialing = anyio.Lock()
        self._closing = anyio.Event()

    def __str__(self) -> str:
        return str(self.address)

    async def _connected(self) -> ClientSocket:
        grpc_socket = self._socket
        if grpc_socket is not None and not grpc_socket.lost:
            return grpc_socket
        async with self._dialing:
            if self._closing.is_set():
                raise NotSent(f"The connection to etcd at {self.address} is closed.")
            if self._socket is None or self._socket.lost:
                try:
                    with anyio.fail_after(self.timeout):
                        sock = await anyio.connect_tcp(self.address.host, self.address.port)
                except TimeoutError:
                    raise NotSent(
                        f"etcd at {self.address} did not accept a connection "
                        f"within {self.timeout:g} s."
                    ) from None
                except OSError as exc:
                    raise NotSent(
                        f"Cannot connect to etcd at {self.address}: {exc.strerror or exc}."
                    ) from None
                await self._task_group.start(self._hold, sock)
            assert self._socket is not None
            return self._socket

    async def _hold(
        self, sock: anyio.abc.ByteStream, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Own the connection in a task of its own until it ends, is dropped
        or the client closes: a broken connection fails the calls on it
        instead of cancelling the caller's code."""
        await hold_connection(
            sock,
            closing=self._closing,
            opened=self._opened,
            log=log,
            name=f"etcd at {self.address}",
            task_status=task_status,
        )

    def _opened(self, grpc_socket: ClientSocket) -> None:
        self._socket = grpc_socket

    def close(self) -> None:
        self._closing.set()

    def _drop(self, grpc_socket: ClientSocket) -> None:
        """Give up on a connection after a call or stream on it timed out,
        if nothing at all arrived on it for the whole deadline: it may be
        dead without a reset (a stopped or cut-off peer), and every call on
        it would wait. One slow answer on a connection that is otherwise
        talking (a watch's progress notices) fails only its own call."""
        quiet = anyio.current_time() - grpc_socket.heard
        if not grpc_socket.lost and quiet >= self.timeout:
            log.info(
                "etcd at %s sent nothing for %.1f s; dropping the connection", self.address, quiet
            )
            grpc_socket.fail_pending()

    def _silent(self, what: str) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"etcd at {self.address} did not answer {what} within {self.timeout:g} s; "
            "the outcome is unknown."
        )

    def _garbled(self, what: str) -> EtcdError:
        return EtcdError(
            f"etcd at {self.address} answered {what} with a message that does not parse."
        )

    def _lost(self, exc: BaseException) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"Lost the connection to etcd at {self.address} ({type(exc).__name__}); "
            "the outcome is unknown."
        )

    async def unary(self, service: str, method: str, request: Message, response_type: type[M]) -> M:
        """One call, answered within ``timeout`` seconds (also sent as its
        ``grpc-timeout``, so etcd gives up on it too).

        Raises:
            NotSent: the endpoint could not be reached; nothing was sent.
            EtcdUnavailable: no answer in time, or the connection was lost.
            EtcdError: etcd answered a non-OK status (typed by it).
        """
        grpc_socket = await self._connected()
        stream: Any = None
        with anyio.move_on_after(self.timeout) as scope:
            try:
                stream = await grpc_socket.start_request(
                    "http",
                    f"etcdserverpb.{service}",
                    method,
                    request.DESCRIPTOR.full_name,
                    str(self.address),
                    timeout=wire_timeout(self.timeout),
                )
                stream.expect_message_type(response_type)
                await send_single_message_client(stream, request)
                response: M = await extract_message_from_singleton_stream(stream)
                return response
            except RpcFailedError as exc:
                raise error_for_etcd_status(
                    exc.status.status_code, exc.status.status_message, str(self.address)
                ) from None
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
            except DecodeError:
                raise self._garbled(f"{service}.{method}") from None
            finally:
                if stream is not None:
                    close_call(stream, h2.errors.ErrorCodes.CANCEL)
        assert scope.cancelled_caught
        self._drop(grpc_socket)
        raise self._silent(f"{service}.{method}")

    @asynccontextmanager
    async def open_stream(
        self, service: str, method: str, request_type: type[Message], response_type: type[M]
    ) -> AsyncIterator[BidiStream[M]]:
        """Start one bidirectional call; leaving the block cancels it.

        Raises:
            NotSent: the endpoint could not be reached.
            EtcdUnavailable: the call could not be started in time.
        """
        grpc_socket = await self._connected()
        stream: Any = None
        with anyio.move_on_after(self.timeout):
            try:
                stream = await grpc_socket.start_request(
                    "http",
                    f"etcdserverpb.{service}",
                    method,
                    request_type.DESCRIPTOR.full_name,
                    str(self.address),
                )
            except CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
        if stream is None:
            self._drop(grpc_socket)
            raise self._silent(f"the start of {service}.{method}")
        stream.expect_message_type(response_type)
        try:
            yield BidiStream(self, grpc_socket, stream, f"{service}.{method}")
        finally:
            close_call(stream, h2.errors.ErrorCodes.CANCEL)


class BidiStream(Generic[M]):
    """Both directions of one streaming call; every receive has a deadline."""

    def __init__(self, connection: Connection, grpc_socket: ClientSocket, stream: Any, name: str):
        self._connection = connection
        self._socket = grpc_socket
        self._stream = stream
        self._name = name

    async def send(self, message: Message) -> None:
        """Send one message, within the connection's deadline.

        Raises:
            EtcdUnavailable: the connection was lost or the send blocked too long.
        """
        with anyio.move_on_after(self._connection.timeout):
            try:
                await self._stream.send_message(message)
            except CONNECTION_ERRORS as exc:
                raise self._connection._lost(exc) from exc
            return
        self._connection._drop(self._socket)
        raise self._connection._silent(f"a message on {self._name}")

    async def receive(self, within: float | None = None) -> M:
        """The next message, which must arrive within ``within`` seconds
        (the connection's deadline by default): silence is a failure.

        Raises:
            EtcdUnavailable: nothing arrived in time, the connection was lost,
                or the stream ended.
            EtcdError: etcd ended the stream with a non-OK status.
        """
        timeout = self._connection.timeout if within is None else within
        with anyio.move_on_after(timeout):
            try:
                response: M | None = await self._stream.receive_message()
            except CONNECTION_ERRORS as exc:
                raise self._connection._lost(exc) from exc
            except DecodeError:
                raise self._connection._garbled(self._name) from None
            if response is not None:
                return response
            ended = self._stream.end_stream_event
            if isinstance(ended, ResponseEnded) and ended.status.status_code != StatusCode.OK:
                raise error_for_etcd_status(
                    ended.status.status_code,
                    ended.status.status_message,
                    str(self._connection.address),
                )
            raise EtcdUnavailable(
                f"etcd at {self._connection.address} ended {self._name} unexpectedly."
            )
        raise self.silent(timeout)

    def silent(self, seconds: float) -> EtcdUnavailable:
        """Drop the connection after ``seconds`` of silence on this stream and
        return the error to raise: a peer that is stopped or cut off keeps
        the connection open and says nothing."""
        self._connection._drop(self._socket)
        return EtcdUnavailable(
            f"etcd at {self._connection.address} sent nothing on {self._name} "
            f"for {seconds:g} s; the stream is taken as dead."
        )
