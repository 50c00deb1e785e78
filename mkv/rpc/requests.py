"""Reading a call's request: its metadata, its one message (a unary call) or
its messages (a bidirectional one), parsed into the method's type with every
failure an ``MkvError`` that ``mkv.rpc.server`` maps to a status."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping

from google.protobuf.message import DecodeError, Message
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpclib.events import RequestReceived

from mkv.errors import InvalidArgumentError, ResourceExhaustedError, UnimplementedError
from mkv.rpc.purerpc_compat import CompressedMessage, OversizedMessage

__all__ = [
    "RequestStream",
    "call_metadata",
    "current_metadata",
    "one_message",
    "parse_request",
    "set_current_metadata",
]

# The metadata of the call a handler runs for: each call runs in a task of its
# own, so a handler that must know how it was called (a forwarded control
# call, ``mkv-forwarded``) reads it here rather than every handler taking it.
_current: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "mkv_call_metadata", default=None
)


def set_current_metadata(metadata: Mapping[str, str]) -> None:
    """Record the metadata of the call the current task runs."""
    _current.set(metadata)


def current_metadata() -> Mapping[str, str]:
    """The metadata of the call the current task runs (names lower-cased)."""
    return _current.get() or {}


def call_metadata(event: RequestReceived) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in event.custom_metadata}


def parse_request(
    request_type: type[Message], body: bytes | OversizedMessage | CompressedMessage, limit: int
) -> Message:
    """The request message in ``body``.

    Raises:
        ResourceExhaustedError: it was over ``limit`` bytes.
        UnimplementedError: it was compressed.
        InvalidArgumentError: it is not a ``request_type`` message.
    """
    if isinstance(body, OversizedMessage):
        raise ResourceExhaustedError(
            f"The request is {body.length} bytes; the limit is {limit} bytes, so split the batch."
        )
    if isinstance(body, CompressedMessage):
        raise UnimplementedError(
            "This server does not accept compressed requests; send them uncompressed."
        )
    try:
        return request_type.FromString(body)
    except DecodeError:
        name = request_type.DESCRIPTOR.full_name
        raise InvalidArgumentError(f"The request body is not a valid {name} message.") from None


async def one_message(stream: GRPCProtoStream) -> bytes | OversizedMessage | CompressedMessage:
    """The single request message of a unary call: its bytes, or a marker of
    one too large (discarded as it arrives) or compressed.

    Raises:
        InvalidArgumentError: no message, or more than one.
    """
    body = await stream.receive_message()
    if isinstance(body, OversizedMessage | CompressedMessage):
        return body  # answered at once; the rest is discarded as it arrives
    if body is None or await stream.receive_message() is not None:
        raise InvalidArgumentError("A unary call takes exactly one request message.")
    assert isinstance(body, bytes)
    return body


class RequestStream:
    """The request messages of a bidirectional call, parsed, as an async iterator.

    A class rather than an async generator, so a handler that stops reading
    leaves nothing for the garbage collector to finalize.

    Raises (while iterating): as ``parse_request``.
    """

    def __init__(self, stream: GRPCProtoStream, request_type: type[Message], limit: int) -> None:
        self._stream = stream
        self._request_type = request_type
        self._limit = limit

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Message:
        body = await self._stream.receive_message()
        if body is None:
            raise StopAsyncIteration
        return parse_request(self._request_type, body, self._limit)
