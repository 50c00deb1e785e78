"""Keeps one HTTP/2 connection from stalling the node or filling its memory.

purerpc reads up to 1 MiB at a time and has h2 parse all of it before any
other task runs: 60,000 PING frames in one turn of the event loop, while
every other client waits. It buffers the answers to them (PING and SETTINGS
acknowledgements) without bound for a peer that never reads, grants every
connection a 1 GiB receive window, and is never told that a client reset a
stream (the call waits on, and its buffered request bytes stay). A
``ConnectionGuard`` sits between the socket and purerpc and fixes each:

- Fair turns: it hands purerpc at most ``frames_per_turn`` frames, then lets
  other tasks run (``trio.lowlevel.checkpoint``).
- Flood budgets: frames that do no work and stream resets spend from token
  buckets; a connection that overspends gets GOAWAY ENHANCE_YOUR_CALM and is
  closed (as the servers patched for CVE-2019-9512/9515/9518 and
  CVE-2023-44487 do).
- Unsent output: over ``connection_output_bytes``, the connection is not
  read until its peer reads; a peer that reads nothing for
  ``output_stall_timeout`` is disconnected, not buffered for.
- Request memory: bytes received and not yet read by their calls are
  counted per stream, per connection and node-wide (``RequestMemory``):
  ``RpcServer`` refuses new calls unless the node has room for one more
  request, and a call whose bytes take its connection over
  ``connection_buffer_bytes`` or the node over its budget is reset
  REFUSED_STREAM; a reset stream's call is cancelled and its bytes released
  at once.
- Vouched answers (``mkv.rpc.vouch``): the checks of the answers put into
  the connection since its last write run again right before the write; if
  one fails (the node's lease ran out while the answer waited, a pause), the
  connection is ended instead, as bytes in HTTP/2's buffer cannot be taken
  back one answer at a time.

The sans-I/O counting is in ``mkv.rpc.connection_limits``.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import h2.errors
import h2.events
import h2.exceptions
import h2.utilities
import trio
from purerpc.grpc_socket import GRPCSocket

from mkv.errors import MkvError
from mkv.rpc.connection_limits import (
    ConnectionBuffers,
    ConnectionLimits,
    Frame,
    FrameScanner,
    FrameType,
    RequestMemory,
)
from mkv.rpc.ratelimit import TokenBucket
from mkv.rpc.vouch import Voucher

__all__ = ["ConnectionGuard", "EnhanceYourCalm"]

log = logging.getLogger(__name__)

# Read from the socket this much at most at a time (purerpc asks for 1 MiB).
_READ_BYTES = 64 * 1024
# Output is written in pieces of this size, each of which must get out within
# the stall timeout: a peer reading nothing is noticed whatever the backlog.
_WRITE_BYTES = 64 * 1024
# Closed streams h2 remembers per connection (see ``attach``).
_CLOSED_STREAMS_KEPT = 4096
# How long a connection being ended for abuse has to take its GOAWAY.
_GOAWAY_TIMEOUT = 1.0
# At most one warning about connections ended for abuse this often (s).
_CALM_LOG_INTERVAL = 10.0
_calmed = 0
_next_calm_log = -math.inf


class EnhanceYourCalm(Exception):
    """A connection overspent a budget; it was sent GOAWAY and is ended."""


class _PeerNotReading(anyio.BrokenResourceError):
    """The peer read nothing of the output waiting for it for too long."""


class AnswerWithdrawn(anyio.BrokenResourceError):
    """An answer waiting in the connection's buffer may no longer leave."""


class ConnectionGuard(anyio.abc.ByteStream):
    """The byte stream purerpc reads and writes one connection through.

    Args:
        transport: the connection (TCP or TLS).
        limits: what the connection may do.
        memory: the node's request memory, shared by its connections.
        peer: the client's address, for logs.
    """

    def __init__(
        self,
        transport: anyio.abc.ByteStream,
        limits: ConnectionLimits,
        memory: RequestMemory,
        peer: str,
    ) -> None:
        self._transport = transport
        self.limits = limits
        self.peer = peer
        self.buffers = ConnectionBuffers(memory)
        now = trio.current_time()
        self._idle = TokenBucket(limits.idle_frame_rate, limits.idle_frame_burst, now)
        self._resets = TokenBucket(limits.reset_rate, limits.reset_burst, now)
        self._scanner = FrameScanner()
        self._pending = bytearray()
        self._unsent = 0  # bytes handed to send() and not yet written
        self._written = trio.Event()
        self._h2: Any = None  # h2.connection.H2Connection, once attached
        self._grpc_socket: GRPCSocket | None = None
        self._calls: dict[int, trio.CancelScope] = {}
        self._reset_early: set[int] = set()
        self._write_timeout = limits.output_stall_timeout
        self._writing: trio.CancelScope | None = None  # the piece being written
        # The checks of vouched answers put into the connection since the
        # writer last took its buffer (see ``send``).
        self._vouchers: list[Voucher] = []

    # -- hooks into purerpc --------------------------------------------------

    def attach(self, grpc_socket: GRPCSocket) -> None:
        """Hook into the purerpc connection built on this stream (before it
        is entered: its first frames carry the connection window)."""
        self._grpc_socket = grpc_socket
        connection = grpc_socket._grpc_connection
        self._h2 = h2_connection = connection.h2_connection
        # h2 remembers how each of the last 65,536 closed streams ended: 8 MB
        # on every connection that served that many calls. It needs only the
        # recent ones (to ignore late frames of a stream it reset).
        h2_connection._closed_streams = h2.utilities.SizeLimitDict(size_limit=_CLOSED_STREAMS_KEPT)

        data_received = connection._data_received
        acknowledge = connection.acknowledge_received_data

        def _data_received(event: h2.events.DataReceived) -> Any:
            if event.stream_id not in connection.message_read_buffers:
                # Its call ended or was shed (earlier in this same batch,
                # perhaps): purerpc would fail the connection on it. Its
                # bytes go straight back to the connection window.
                with suppress(h2.exceptions.ProtocolError):
                    h2_connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                return []
            self.buffers.received(event.stream_id, event.flow_controlled_length)
            # Not a smaller connection window: purerpc acknowledges bytes
            # only once their message is whole, so a window smaller than
            # all its streams' windows deadlocks a client that sends many
            # large requests at once (grpcio interleaves them).
            if self.buffers.node.over or self.buffers.total > self.limits.connection_buffer_bytes:
                self._shed(event.stream_id)
                return []
            return data_received(event)

        def acknowledge_received_data(stream_id: int, flow_controlled_length: int) -> None:
            # A released stream's bytes were given back when it was released.
            if self.buffers.consumed(stream_id, flow_controlled_length):
                acknowledge(stream_id, flow_controlled_length)

        def _stream_reset(event: h2.events.StreamReset) -> list[object]:
            self._stream_reset(event.stream_id)
            return []

        connection._data_received = _data_received
        connection.acknowledge_received_data = acknowledge_received_data
        connection._stream_reset = _stream_reset

    @contextmanager
    def call(self, stream_id: int) -> Iterator[trio.CancelScope]:
        """The scope a call runs in: cancelled if its client resets it. On
        exit the call's unread request bytes are released."""
        scope = trio.CancelScope()
        if stream_id in self._reset_early:
            self._reset_early.discard(stream_id)
            scope.cancel()
        self._calls[stream_id] = scope
        try:
            with scope:
                yield scope
        finally:
            del self._calls[stream_id]
            self.release(stream_id)

    def release(self, stream_id: int) -> None:
        """Drop what a finished or reset call still buffers, and give its
        unread bytes back to the connection's window."""
        if self._grpc_socket is not None:
            self._grpc_socket._grpc_connection.message_read_buffers.pop(stream_id, None)
        held = self.buffers.release(stream_id)
        if held and self._h2 is not None:
            # On a closed stream h2 credits only the connection window,
            # which is what the peer needs back.
            with suppress(h2.exceptions.ProtocolError):  # the connection is closed
                self._h2.acknowledge_received_data(held, stream_id)
            self._flush()

    async def close(self) -> None:
        """The connection ended: release everything it still counts, and
        once much has been freed node-wide, give it back to the OS."""
        for stream_id in self.buffers.stream_ids():
            self.release(stream_id)
        self._reset_early.clear()
        if self.buffers.node.should_trim() and _malloc_trim is not None:
            # A few ms over a large heap: on a thread, and shielded so that
            # a connection ended by shutdown still does it.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_malloc_trim, 0)

    def _shed(self, stream_id: int) -> None:
        """Refuse a call whose request bytes took the node over its memory
        budget: reset REFUSED_STREAM (clients know that nothing was done and
        that they may retry), its call cancelled, its bytes released."""
        if self._h2 is not None:
            with suppress(h2.exceptions.ProtocolError):  # closed already
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        self._stream_reset(stream_id)

    def _stream_reset(self, stream_id: int) -> None:
        scope = self._calls.get(stream_id)
        if scope is not None:
            scope.cancel()
        elif self._grpc_socket is not None and stream_id in self._grpc_socket._streams:
            # Opened in this very batch: its call has not started yet.
            self._reset_early.add(stream_id)
        self.release(stream_id)

    _over_budget: str | None = None

    # -- the byte stream purerpc uses ----------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._over_budget is not None:
            await self._calm(self._over_budget)
        while True:
            if self._pending:
                await trio.lowlevel.checkpoint()
                count, frames = self._scanner.take(self._pending, self.limits.frames_per_turn)
                if count:
                    self._count(frames)
                    data = bytes(self._pending[:count])
                    del self._pending[:count]
                    return data
            await self._wait_for_output_room()
            self._pending += await self._transport.receive(_READ_BYTES)

    def _count(self, frames: list[Frame]) -> None:
        now = trio.current_time()
        for frame in frames:
            if frame.idle and self._idle.take(now):
                self._over_budget = f"{_type_name(frame)} frames"
            elif frame.type == FrameType.RST_STREAM and self._resets.take(now):
                # Counted here, not when h2 reports a reset: a reset of a
                # stream h2 has forgotten is not reported, but costs as much.
                self._over_budget = "stream resets"
        # Once over: the frames of this turn are still handed on (they are
        # bounded), and the next receive ends the connection.

    async def _wait_for_output_room(self) -> None:
        """Stop reading while too much output waits for the peer."""
        limit = self.limits.connection_output_bytes
        with trio.move_on_after(self.limits.output_stall_timeout):
            while self._backlog() > limit:
                self._flush()
                await self._written.wait()
        if self._backlog() > limit:
            # Nothing more is written to it either: the connection ends now,
            # not after a last wait for its writer.
            self._stop_writing()
            raise _PeerNotReading(
                f"{self.peer} read none of {self._backlog()} bytes waiting for it"
            )

    def _backlog(self) -> int:
        buffered = len(self._h2._data_to_send) if self._h2 is not None else 0
        return buffered + self._unsent

    def vouch(self, voucher: Voucher) -> None:
        """An answer just went into the connection: ``voucher`` must still
        pass when its bytes are written."""
        self._vouchers.append(voucher)

    def _check_vouchers(self, vouchers: list[Voucher]) -> None:
        for voucher in vouchers:
            try:
                voucher()
            except MkvError as exc:
                self._stop_writing()
                raise AnswerWithdrawn(
                    f"an answer to {self.peer} may no longer leave ({exc.message}); "
                    "ending the connection instead"
                ) from exc

    async def send(self, item: bytes) -> None:
        # purerpc's writer took ``item`` from the connection in the step that
        # called this: the answers vouched for so far are in it (and perhaps
        # some of a message still being put in; checking those too is only
        # stricter).
        vouchers, self._vouchers = self._vouchers, []
        view = memoryview(item)  # pieces without copies
        self._unsent = len(view)
        try:
            for start in range(0, len(view), _WRITE_BYTES):
                # Before each piece: a write that waited for the peer may
                # resume after a deadline.
                self._check_vouchers(vouchers)
                piece = view[start : start + _WRITE_BYTES]
                with trio.move_on_after(self._write_timeout) as waited:
                    self._writing = waited
                    await self._transport.send(piece)  # type: ignore[arg-type]
                if waited.cancelled_caught:
                    raise _PeerNotReading(f"{self.peer} stopped reading")
                self._unsent -= len(piece)
                self._wake_reader()
        finally:
            self._writing = None
            self._unsent = 0
            self._wake_reader()

    def _stop_writing(self) -> None:
        self._write_timeout = 0.0
        if self._writing is not None:
            self._writing.cancel()

    def _wake_reader(self) -> None:
        self._written.set()
        self._written = trio.Event()

    async def send_eof(self) -> None:
        await self._transport.send_eof()

    async def aclose(self) -> None:
        await self._transport.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._transport.extra_attributes

    # -- ending an abusive connection ----------------------------------------

    async def _calm(self, reason: str) -> None:
        global _calmed, _next_calm_log
        _calmed += 1
        # Throttled: an attacker that reconnects must not flood the log too.
        if trio.current_time() >= _next_calm_log:
            _next_calm_log = trio.current_time() + _CALM_LOG_INTERVAL
            log.warning(
                "ended a connection from %s: too many %s (%d connections ended so)",
                self.peer,
                reason,
                _calmed,
            )
        # The GOAWAY goes out through purerpc's writer, behind what is
        # already queued; a peer that does not read it is closed anyway.
        self._write_timeout = _GOAWAY_TIMEOUT
        if self._h2 is not None:
            with suppress(h2.exceptions.ProtocolError):  # closed already
                self._h2.close_connection(
                    error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                    additional_data=f"too many {reason}".encode(),
                )
            self._flush()
            with trio.move_on_after(_GOAWAY_TIMEOUT):
                while self._backlog():
                    await self._written.wait()
        self._stop_writing()
        raise EnhanceYourCalm(f"{self.peer} sent too many {reason}")

    def _flush(self) -> None:
        if self._grpc_socket is not None:
            self._grpc_socket._socket._flush_event.set()


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_malloc_trim = _find_malloc_trim()


def _type_name(frame: Frame) -> str:
    try:
        name = FrameType(frame.type).name
    except ValueError:
        return f"type {frame.type:#x}"
    return f"empty {name}" if name in ("DATA", "HEADERS", "CONTINUATION") else name
