"""What one HTTP/2 connection may cost the node, decided without I/O.

The HTTP/2 floods of the 2019 advisories (CVE-2019-9512 ping flood,
CVE-2019-9515 settings flood, CVE-2019-9518 empty frames) and of 2023
(CVE-2023-44487, "rapid reset": open a stream, reset it at once) all send
frames that are cheap to send and cost the server work or memory, without
ever making a request. Nothing in HTTP/2 bounds how many of them a peer may
send, so servers count them. This module holds the pieces that count:

- ``FrameScanner`` finds frame boundaries and types in the raw bytes a
  connection receives, before the HTTP/2 library parses them, so that a
  connection's input can be handed on a bounded number of frames at a time
  and its frames counted by type.
- ``Frame.idle``: which frames do no work (PING, SETTINGS, PRIORITY, empty
  DATA...); they and stream resets each spend from a token bucket
  (``mkv.rpc.ratelimit``) per connection.
- ``RequestMemory`` / ``ConnectionBuffers``: the request bytes received but
  not yet read by their calls, per stream, per connection and node-wide.

``mkv.rpc.connection_guard`` applies them to a live connection.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "ConnectionBuffers",
    "ConnectionLimits",
    "Frame",
    "FrameScanner",
    "FrameType",
    "RequestMemory",
]

# RFC 9113 §3.4: what a client sends before its first frame.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
# Freed request bytes worth handing back to the OS (see ``should_trim``).
_TRIM_AFTER = 16 * 1024 * 1024
_END_STREAM = 0x1
_ACK = 0x1


class FrameType(enum.IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


@attrs.frozen
class Frame:
    """One frame's header: its type (possibly one HTTP/2 does not define),
    flags, stream and payload length."""

    type: int
    flags: int
    stream_id: int
    length: int

    @property
    def idle(self) -> bool:
        """Whether the frame asks for work but carries no request progress:
        what a flood is made of. WINDOW_UPDATE is not counted (clients send
        one for every few responses they read); HEADERS, non-empty DATA and
        RST_STREAM are bounded by other limits."""
        if self.type in (FrameType.PING, FrameType.SETTINGS, FrameType.PRIORITY):
            return True
        if self.type == FrameType.DATA:
            # An empty DATA frame that ends its stream is how a client ends
            # a request after its last message: progress, not a flood.
            return self.length == 0 and not self.flags & _END_STREAM
        if self.type in (FrameType.HEADERS, FrameType.CONTINUATION):
            return self.length == 0
        # GOAWAY, PUSH_PROMISE (a protocol error from a client anyway) and
        # frame types HTTP/2 does not define, which must be ignored.
        return self.type not in (FrameType.RST_STREAM, FrameType.WINDOW_UPDATE)


class FrameScanner:
    """Frame boundaries in a connection's incoming bytes, read as they arrive.

    It checks nothing (the HTTP/2 library does); it only knows where each
    frame starts, so a malformed stream is counted as whatever its bytes
    say until the library rejects it.

    Args:
        preface: the bytes start with the client preface (server side).
    """

    def __init__(self, *, preface: bool = True) -> None:
        self._skip = len(CLIENT_PREFACE) if preface else 0
        self._header = bytearray()

    def take(
        self, data: bytes | bytearray | memoryview, max_frames: int
    ) -> tuple[int, list[Frame]]:
        """How many leading bytes of ``data`` to hand on so that they start at
        most ``max_frames`` frames, and those frames.

        A frame's payload goes with its header as far as ``data`` has it; the
        bytes after the last frame's payload start the next call.
        """
        view = memoryview(data)
        offset, frames = 0, list[Frame]()
        while offset < len(view):
            if self._skip:
                step = min(self._skip, len(view) - offset)
                self._skip -= step
                offset += step
                continue
            if not self._header and len(frames) >= max_frames:
                break
            step = min(_FRAME_HEADER - len(self._header), len(view) - offset)
            self._header += view[offset : offset + step]
            offset += step
            if len(self._header) == _FRAME_HEADER:
                header = bytes(self._header)
                self._header.clear()
                length = int.from_bytes(header[0:3], "big")
                stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                frames.append(Frame(header[3], header[4], stream_id, length))
                self._skip = length
        return offset, frames


class RequestMemory:
    """Request bytes received on all of the node's connections and not yet
    read by their calls, against a budget.

    Args:
        limit: the budget in bytes: new calls are refused unless a whole
            request fits, and calls whose bytes go over it are reset.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._peak_since_trim = 0

    @property
    def over(self) -> bool:
        return self.used > self.limit

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more bytes fit the budget."""
        return self.used + count <= self.limit

    def add(self, count: int) -> None:
        self.used += count
        self.peak = max(self.peak, self.used)
        self._peak_since_trim = max(self._peak_since_trim, self.used)

    def should_trim(self) -> bool:
        """Whether enough was freed since the last time this said so that
        the allocator should be asked to give memory back to the OS.

        Request bytes arrive as thousands of 16 KiB pieces interleaved with
        longer-lived objects; freed, they leave holes that glibc keeps.
        """
        if self._peak_since_trim < _TRIM_AFTER or self.used * 4 > self._peak_since_trim:
            return False
        self._peak_since_trim = self.used
        return True


class ConnectionBuffers:
    """Request bytes received and not yet read, per stream, on one connection.

    A stream's bytes are released when its call ends or is reset; whatever
    its call did not read then has to be given back to the connection's flow
    control window (``release`` says how much).
    """

    def __init__(self, node: RequestMemory) -> None:
        self.node = node
        self.total = 0
        self._streams: dict[int, int] = {}

    def received(self, stream_id: int, count: int) -> None:
        self._streams[stream_id] = self._streams.get(stream_id, 0) + count
        self.total += count
        self.node.add(count)

    def consumed(self, stream_id: int, count: int) -> bool:
        """The call read ``count`` bytes; False if the stream was released
        already (its bytes were given back then)."""
        held = self._streams.get(stream_id)
        if held is None:
            return False
        count = min(count, held)
        self._streams[stream_id] = held - count
        self.total -= count
        self.node.add(-count)
        return True

    def release(self, stream_id: int) -> int | None:
        """Forget a stream; the bytes it still held (None: it held none)."""
        held = self._streams.pop(stream_id, None)
        if held is not None:
            self.total -= held
            self.node.add(-held)
        return held

    def stream_ids(self) -> list[int]:
        """The streams that hold (or held and were not released) bytes."""
        return list(self._streams)


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """What one connection may do before it is slowed, refused or ended
    (docs/security.md, "Connection limits").

    Attributes:
        frames_per_turn: frames read from one connection before the others
            get a turn.
        idle_frame_rate, idle_frame_burst: frames that do no work (PING,
            SETTINGS, PRIORITY, empty DATA, unknown types) a second, and at
            once; over that, the connection ends (GOAWAY ENHANCE_YOUR_CALM).
        reset_rate, reset_burst: the same for streams the client resets.
        connection_output_bytes: the most output a connection may have
            unsent; over it the connection is not read until its peer reads.
        output_stall_timeout: how long a peer may read nothing while output
            waits for it before the connection ends.
        connection_buffer_bytes: request bytes one connection may have
            buffered that its calls have not read; the call whose bytes go
            over it is reset (REFUSED_STREAM).
        request_buffer_bytes: the same across the node; besides, new calls
            are answered RESOURCE_EXHAUSTED unless a largest request fits.
    """

    frames_per_turn: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    idle_frame_rate: float = attrs.field(default=100.0, validator=attrs.validators.gt(0))
    idle_frame_burst: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    reset_rate: float = attrs.field(default=100.0, validator=attrs.validators.gt(0))
    reset_burst: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    connection_output_bytes: int = attrs.field(
        default=4 * 1024 * 1024, validator=attrs.validators.ge(64 * 1024)
    )
    output_stall_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    connection_buffer_bytes: int = attrs.field(
        default=8 * 1024 * 1024, validator=attrs.validators.ge(65535)
    )
    request_buffer_bytes: int = attrs.field(
        default=256 * 1024 * 1024, validator=attrs.validators.ge(0)
    )
