"""Sending response messages under HTTP/2 flow control without deadlock.

A client grants window (per stream and per connection) as it reads, and most
clients (grpc-js, nghttp2, h2) only send WINDOW_UPDATE once they have read
about half of a window. So the window a server sees can sit just below what
it was, for good, until the server sends more: a sender that waits for "enough"
window before it starts (a whole message, or a whole initial window) can wait
forever with a client that reads everything. grpcio hides this, as it grows its
windows; grpc-js keeps HTTP/2's default 65,535 bytes.

The rule here: send what the windows allow, in chunks of
min(stream window, connection window, frame size), never waiting for room
for a whole message; before a message starts, wait at most for a part of
the window a client has shown it grants (see ``send_message``), and in the
middle of one only while nothing at all can be sent. A client that stops
reading is detected by silence: no window for ``stall_timeout``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import trio
from google.protobuf.message import Message
from purerpc.grpc_proto import GRPCProtoStream

from mkv.errors import MkvError
from mkv.rpc.purerpc_compat import send_messages

__all__ = [
    "Stalled",
    "Withdrawn",
    "fits_send_window",
    "send_if_room",
    "send_message",
    "sendable",
]

# gRPC's framing before each message: a compression flag and a 4-byte length.
_PREFIX = struct.Struct(">?I")


class Stalled(Exception):
    """The client granted no window for the stall timeout.

    Attributes:
        sent: how many bytes of the framed message went out before it stalled
            (0: the call can still end with a status; more: only a reset can
            end it, the message being cut off).
    """

    def __init__(self, sent: int) -> None:
        super().__init__(f"no flow-control window after {sent} bytes")
        self.sent = sent


class Withdrawn(Exception):
    """The message's check failed before one of its chunks (``sent`` bytes
    out: 0, the call can still end with ``error``'s status; more, only a
    reset can end it)."""

    def __init__(self, sent: int, error: MkvError) -> None:
        super().__init__(f"withdrawn after {sent} bytes: {error}")
        self.sent = sent
        self.error = error


def sendable(stream: GRPCProtoStream) -> int:
    """How many bytes ``stream`` may send in its next DATA frame: the least of
    its own window, the connection's and the peer's largest frame."""
    frame: int = stream._grpc_connection.h2_connection.max_outbound_frame_size
    return min(_window(stream), frame)


def fits_send_window(stream: GRPCProtoStream, message_bytes: int) -> bool:
    """Whether flow control lets ``stream`` send the whole message now, so
    that sending it cannot wait."""
    return _window(stream) >= message_bytes + _PREFIX.size


async def send_if_room(stream: GRPCProtoStream, messages: list[Message]) -> bool:
    """Send ``messages`` at once, packed into as few DATA frames as allowed
    (``send_messages``), if the windows take them all now, so that sending
    cannot wait. False: the windows do not, and nothing was sent.
    """
    payloads = [message.SerializeToString() for message in messages]
    if _window(stream) < sum(map(len, payloads)) + _PREFIX.size * len(payloads):
        return False
    await send_messages(stream, payloads)
    return True


async def send_message(
    stream: GRPCProtoStream,
    message: Message,
    *,
    stall_timeout: float,
    check: Callable[[], None] | None = None,
) -> None:
    """Send one (uncompressed) message on ``stream`` as the windows open.

    Before the message starts, it waits for room for the whole message or
    for a quarter of the widest window this stream has been granted,
    whichever is less: a client that grants window as it reads (at half its
    window, or a quarter, as clients do) always comes back to that much, and
    a client that stopped reading is then usually found at a message
    boundary, where the call can still end with a status. Once started, the
    message goes out whenever any window is open.

    ``check``, if given, runs before each chunk goes into the connection
    (a vouched answer, ``mkv.rpc.vouch``: the windows may open long after
    the message was ready).

    Raises:
        Stalled: the client gave no room for ``stall_timeout``, before or in
            the middle of the message.
        Withdrawn: ``check`` raised.
    """
    body = message.SerializeToString()
    data = memoryview(_PREFIX.pack(False, len(body)) + body)
    h2_connection = stream._grpc_connection.h2_connection
    deadline = trio.current_time() + stall_timeout
    while _window(stream) < min(len(data), _widest(stream) // _PART):
        await _wait_for_update(stream, deadline, sent=0)
    sent = 0
    while sent < len(data):
        deadline = trio.current_time() + stall_timeout
        while (room := sendable(stream)) <= 0:
            await _wait_for_update(stream, deadline, sent)
        if check is not None:
            try:
                check()
            except MkvError as exc:
                raise Withdrawn(sent, exc) from exc
        chunk = data[sent : sent + room]
        h2_connection.send_data(stream._stream_id, chunk.tobytes())
        sent += len(chunk)
        await stream._socket.flush()


# The part of the widest window seen that a message waits for before it starts.
_PART = 4


def _window(stream: GRPCProtoStream) -> int:
    """The stream's send window (its own and the connection's, whichever is
    less), remembering the widest seen."""
    window: int = stream._grpc_connection.h2_connection.local_flow_control_window(stream._stream_id)
    stream._mkv_widest_window = max(window, _widest(stream))
    return window


def _widest(stream: GRPCProtoStream) -> int:
    widest: int = getattr(stream, "_mkv_widest_window", 0)
    return widest


async def _wait_for_update(stream: GRPCProtoStream, deadline: float, sent: int) -> None:
    """Wait for a WINDOW_UPDATE for this stream or its connection (or new
    SETTINGS), until ``deadline``: the stall timeout counts from the last
    progress, not from each wake-up.

    Raises:
        Stalled: the deadline passed.
    """
    with trio.move_on_at(deadline):
        await stream._wait_flow_control_update()
        return
    raise Stalled(sent)
