"""Work-arounds for traits of purerpc 0.8, in one place (see docs/design.md).

- Each call's event queue is never closed, and a call that ends early stays in
  the connection's table, where a late frame for it kills the connection:
  ``close_call`` and ``tolerate_late_frames``. The reader looks a call up,
  then yields before queuing its event: a call that ends (is reset, times
  out) in between closed its queue, which would kill the connection too.
- A message over the connection's size limit raises inside the HTTP/2 reader
  and drops the whole connection, after buffering up to that limit:
  ``bound_messages`` turns it into an ``OversizedMessage`` the server answers
  with RESOURCE_EXHAUSTED, discarding the body as it arrives.
- A compressed request message is decompressed without a bound on the output
  (a few KiB of gzip can become gigabytes): ``bound_messages`` also turns it
  into a ``CompressedMessage``, never decompressed, which the server refuses.
- Every connection advertises 65,536 concurrent streams:
  ``limit_concurrent_streams`` advertises the server's own limit instead.
- A stream sends each message as DATA frames of its own: ``send_messages``
  packs several small messages into one frame (HTTP/2 and gRPC allow it),
  which is what makes a session's many small messages cheap to send.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import attrs
import h2.errors
import h2.exceptions
import h2.settings
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpc_socket import GRPCSocket, GRPCStreamState
from purerpc.grpclib.buffers import MessageReadBuffer, MessageWriteBuffer
from purerpc.grpclib.exceptions import MessageTooLargeError

__all__ = [
    "CompressedMessage",
    "OversizedMessage",
    "bound_messages",
    "close_call",
    "close_remaining_calls",
    "limit_concurrent_streams",
    "send_messages",
    "tolerate_late_frames",
]


class _Discard:
    async def send(self, event: object) -> None:
        pass


class _EndedCall:
    """Stands in for a call that already ended: late frames for it go nowhere."""

    _incoming_events = (_Discard(), None)

    def _close_remote(self) -> None:
        pass


_ENDED_CALL = _EndedCall()


class _LateSafeSend:
    """A call's event queue's sending end, which drops events that arrive
    after the call closed its queue."""

    def __init__(self, send: Any) -> None:
        self._send = send

    async def send(self, event: object) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._send.send(event)

    def close(self) -> None:
        self._send.close()


class _CallTable(dict[int, Any]):
    """purerpc's table of calls on a connection, tolerant of frames that arrive
    for a call after mkv ended it (purerpc would raise and drop the connection)."""

    def __missing__(self, stream_id: int) -> _EndedCall:
        return _ENDED_CALL

    def __setitem__(self, stream_id: int, stream: Any) -> None:
        send, receive = stream._incoming_events
        stream._incoming_events = (_LateSafeSend(send), receive)
        super().__setitem__(stream_id, stream)


async def send_messages(stream: Any, payloads: list[bytes]) -> None:
    """Send serialized messages on ``stream`` in as few DATA frames as its
    window and frame size allow, as purerpc's ``send_message`` sends one.

    A frame per message costs the sender a buffer, a frame and a flush each,
    and the receiver a frame to parse each (docs/performance.md, "The
    client's share, frames and wake-ups").

    Raises:
        MessageTooLargeError: a message is over the connection's limit
            (nothing was sent).
    """
    connection, stream_id = stream._grpc_connection, stream._stream_id
    buffer = MessageWriteBuffer(
        connection.config.message_encoding, connection.config.max_message_length
    )
    for payload in payloads:
        buffer.write_message(payload)
    while buffer:
        window = connection.flow_control_window(stream_id)
        if window <= 0:
            await stream._wait_flow_control_update()
            continue
        connection.send_data(stream_id, buffer.data_to_send(min(window, len(buffer))))
        await stream._socket.flush()


def tolerate_late_frames(grpc_socket: GRPCSocket) -> None:
    """Let ``close_call`` end calls early on this connection without killing it."""
    grpc_socket._streams = _CallTable(grpc_socket._streams)


def close_call(
    stream: GRPCProtoStream, reset_code: h2.errors.ErrorCodes, *, always_reset: bool = False
) -> None:
    """Release what purerpc keeps per call, which it never releases itself.

    purerpc leaves each call's event queue open (the garbage collector closes
    it, with a ResourceWarning), and keeps a call that ended early (cancelled,
    or answered before its request was read) in its table of calls. Such a
    call is forgotten, and reset unless the peer has finished sending
    (``CANCEL`` from a client; a server first reads the rest, see
    ``RpcServer``); any frame still in flight for it is dropped (see
    ``tolerate_late_frames``). ``always_reset``: reset even so (a response
    cut off mid-message can end no other way).
    """
    if stream.state is not GRPCStreamState.CLOSED:
        if stream.end_stream_event is None or always_reset:
            connection = stream._grpc_connection.h2_connection
            with contextlib.suppress(h2.exceptions.ProtocolError):
                connection.reset_stream(stream.stream_id, reset_code)
            # Wakes the writer task to send the reset; no checkpoint, so this
            # is safe in a cancelled scope.
            stream._socket._flush_event.set()
        stream._grpc_socket._streams.pop(stream.stream_id, None)
    send, receive = stream._incoming_events
    send.close()
    receive.close()


def close_remaining_calls(grpc_socket: GRPCSocket) -> None:
    """Release the calls a dead connection still holds.

    purerpc allocates a call (and its event queue) before handing it over,
    across a checkpoint: a connection ended at that moment leaves a call that
    no task owns, whose queue only the garbage collector would close.
    """
    for stream in list(grpc_socket._streams.values()):
        send, receive = stream._incoming_events
        send.close()
        receive.close()
    grpc_socket._streams.clear()


@attrs.frozen
class OversizedMessage:
    """Stands for a request message over the limit, which was not kept."""

    length: int


@attrs.frozen
class CompressedMessage:
    """Stands for a compressed request message, which was not decompressed."""

    length: int


@attrs.frozen
class _Discarded:
    """Bytes of an oversized message dropped as they arrived; reading this acks them."""


class _BoundedReadBuffer(MessageReadBuffer):  # type: ignore[misc]  # purerpc is untyped
    """purerpc's message reader, except that a message over the limit becomes
    an ``OversizedMessage`` and its bytes are dropped, never buffered, and a
    compressed message becomes a ``CompressedMessage``."""

    # purerpc's parser state, reset here after an oversized message's header.
    _compressed_flag: bool | None
    _message_length: int | None
    _flow_controlled_length: int | None

    def __init__(self, message_encoding: str | None, max_message_length: int) -> None:
        super().__init__(message_encoding, max_message_length)
        self._skip = 0

    def data_received(self, data: bytes, flow_controlled_length: int | None = None) -> None:
        if flow_controlled_length is None:
            flow_controlled_length = len(data)
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            whole = dropped == len(data)
            # The peer's flow-control window is acknowledged when the call
            # reads this marker, so a discarded body does not stall it.
            self._messages.append((_Discarded(), flow_controlled_length if whole else dropped))
            if whole:
                return
            data, flow_controlled_length = data[dropped:], flow_controlled_length - dropped
        super().data_received(data, flow_controlled_length)

    def decompress(self, data: bytes) -> CompressedMessage:
        # Called by purerpc's parser for a message whose compressed flag is
        # set, whatever the call's grpc-encoding (none at all included).
        return CompressedMessage(len(data))

    def _parse_one_message(self) -> tuple[Any, int]:
        try:
            return super()._parse_one_message()  # type: ignore[no-any-return]
        except MessageTooLargeError:
            assert self._message_length is not None
            length = self._message_length
            kept, flow = self._buffer.popleft_flowcontrol(min(len(self._buffer), length))
            self._skip = length - len(kept)
            flow += self._flow_controlled_length or 0
            self._compressed_flag = self._message_length = self._flow_controlled_length = None
            return OversizedMessage(length), flow


class _BoundedBuffers(dict[int, Any]):
    """The connection's per-call message readers, made bounded as purerpc adds them."""

    def __init__(self, max_length: int) -> None:
        super().__init__()
        self._max_length = max_length

    def __setitem__(self, stream_id: int, buffer: Any) -> None:
        if type(buffer) is MessageReadBuffer:
            buffer = _BoundedReadBuffer(buffer._message_encoding, self._max_length)
        super().__setitem__(stream_id, buffer)


def bound_messages(grpc_socket: GRPCSocket, max_length: int) -> None:
    """Messages over ``max_length`` on this connection become ``OversizedMessage``."""
    grpc_socket._grpc_connection.message_read_buffers = _BoundedBuffers(max_length)


def limit_concurrent_streams(grpc_socket: GRPCSocket, limit: int) -> None:
    """Advertise ``limit`` as this connection's SETTINGS_MAX_CONCURRENT_STREAMS.

    Must be called before the connection is entered (its first SETTINGS
    frame carries the value). h2 enforces it: a peer that opens more streams
    than that breaks the protocol, and its connection is ended (GOAWAY);
    grpcio and other well-behaved clients queue their calls instead.
    """
    connection = grpc_socket._grpc_connection
    connection.h2_connection.local_settings = h2.settings.Settings(
        client=False,
        initial_values={
            **{code: connection.h2_connection.local_settings[code] for code in _OUR_SETTINGS},
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit,
        },
    )


# The settings purerpc sets on every connection, kept when one is changed.
_OUR_SETTINGS = (
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE,
    h2.settings.SettingCodes.MAX_FRAME_SIZE,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE,
)
