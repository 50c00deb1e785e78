"""A bare HTTP/2 gRPC client on h2, for tests that must break the rules a real
client keeps: more streams than the server allows, compressed bodies that no
encoder would make, responses never read."""

from __future__ import annotations

import struct
import urllib.parse
from collections.abc import Mapping, Sequence

import h2.config
import h2.connection
import h2.events
import trio

__all__ = ["RawH2", "grpc_frame"]


def grpc_frame(body: bytes, *, compressed: bool = False) -> bytes:
    """One gRPC length-prefixed message."""
    return struct.pack(">?I", compressed, len(body)) + body


class RawH2:
    """One HTTP/2 connection, driven by hand.

    Args:
        stream: a connected socket.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.events: list[h2.events.Event] = []
        self.closed = False

    @classmethod
    async def connect(cls, address: str) -> RawH2:
        host, _, port = str(address).rpartition(":")
        client = cls(await trio.open_tcp_stream(host, int(port)))
        client.conn.initiate_connection()
        await client.flush()
        # The server's SETTINGS (and its connection window) before any call.
        await client.receive_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    def start_call(
        self,
        path: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        replace: Mapping[str, str | None] | None = None,
        end: bool = False,
    ) -> int:
        """Send a call's headers (not flushed); return its stream id.

        Args:
            replace: header name → the value to send instead of the usual
                one (None: leave the header out); names not sent by default
                are added.
            end: the headers end the request (no body at all).
        """
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = {
            ":method": "POST",
            ":scheme": "http",
            ":path": path,
            ":authority": "mkv",
            "te": "trailers",
            "content-type": "application/grpc",
            **(replace or {}),
        }
        self.conn.send_headers(
            stream_id,
            [*((n, v) for n, v in headers.items() if v is not None), *metadata],
            end_stream=end,
        )
        return stream_id

    async def call(
        self,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        replace: Mapping[str, str | None] | None = None,
        end: bool = True,
    ) -> int:
        """Start a call (``replace``: as in ``start_call``), send ``body``
        (already framed) and flush."""
        stream_id = self.start_call(path, metadata=metadata, replace=replace)
        self.conn.send_data(stream_id, body, end_stream=end)
        await self.flush()
        return stream_id

    async def receive(self) -> list[h2.events.Event]:
        """Read once from the socket; the events it gave (acked, so the server
        may send more). Sets ``closed`` at EOF."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset by the server
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
        await self.flush()
        self.events.extend(events)
        return list(events)

    async def receive_until(self, done: object) -> h2.events.Event:
        """Read until an event satisfies ``done`` (a predicate); return it."""
        assert callable(done)
        for event in self.events:
            if done(event):
                return event
        while not self.closed:
            for event in await self.receive():
                if done(event):
                    return event
        raise EOFError("the server closed the connection")

    async def status(self, stream_id: int) -> tuple[int, str]:
        """The grpc-status and grpc-message of a call, once its trailers arrive."""
        headers = await self.final_headers(stream_id)
        return int(headers["grpc-status"]), urllib.parse.unquote(headers.get("grpc-message", ""))

    async def final_headers(self, stream_id: int) -> dict[str, str]:
        """The headers that carry a call's grpc-status: its trailers, or the
        response headers of a trailers-only answer (with ``:status``)."""

        def ended(event: object) -> bool:
            return (
                isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived)
                and event.stream_id == stream_id
                and any(name == "grpc-status" for name, _ in event.headers)
            )

        event = await self.receive_until(ended)
        return dict(event.headers)  # type: ignore[attr-defined]

    async def response(self, stream_id: int) -> tuple[bytes, int, str]:
        """A call's response body (its DATA, gRPC framing included), then its
        grpc-status and grpc-message, once its trailers arrive. Data is
        acknowledged as it is read, as a client with default windows would."""
        code, message = await self.status(stream_id)
        body = b"".join(
            event.data
            for event in self.events
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id
        )
        return body, code, message

    async def aclose(self) -> None:
        await self.stream.aclose()
