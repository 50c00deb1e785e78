"""Malformed request headers answered on their own stream, not by losing the
connection.

purerpc turns a request's headers into a call inside the connection's reader
task; a malformed header (a ``grpc-timeout`` of ``abc``, a ``:path`` without
a slash, a ``content-type`` that is not gRPC, a request with no body)
raises there and ends the connection without a GOAWAY or a status, losing
every other call on it. ``screen_requests`` checks the headers first
(``mkv.rpc.request_headers``): a malformed request becomes a ``RejectedRequest``
call, which the server answers at once with ``answer_rejection``
(trailers-only), then reads and drops whatever body follows, as for any
early answer.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpc_socket import GRPCSocket
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.status import StatusCode

from mkv.rpc.request_headers import Rejection, check_request_headers

__all__ = ["RejectedRequest", "answer_rejection", "screen_requests"]

log = logging.getLogger(__name__)


class RejectedRequest(RequestReceived):  # type: ignore[misc]  # purerpc is untyped
    """A call whose headers were malformed: no service, no method, only the
    answer it is owed."""

    def __init__(self, stream_id: int, rejection: Rejection) -> None:
        super().__init__(stream_id, "http", "", "", "")
        self.rejection = rejection


def screen_requests(grpc_socket: GRPCSocket) -> None:
    """Check every request's headers on this connection before purerpc reads them.

    Must be called before the connection receives data. Requests that pass
    go on to purerpc unchanged, except that one whose headers end the stream
    (no body at all) is let through as a call without messages, which the
    server answers like any call missing its message (purerpc would drop
    the connection).
    """
    connection = grpc_socket._grpc_connection
    parse = connection._request_received

    def request_received(event: h2.events.RequestReceived) -> list[Any]:
        rejection = check_request_headers(event.headers)
        if rejection is None:
            # h2 also reports the end as its own StreamEnded event, which
            # purerpc turns into RequestEnded: nothing is lost by this.
            event.stream_ended = None
            try:
                return parse(event)  # type: ignore[no-any-return]
            except Exception as exc:  # whatever the check above did not foresee
                log.debug("purerpc refused request headers: %r", exc)
                rejection = Rejection(
                    StatusCode.INVALID_ARGUMENT, "The request headers are malformed."
                )
        # A reader for the body, so that it is acknowledged (flow control)
        # and its end is seen, though no handler will read it.
        connection.message_read_buffers[event.stream_id] = MessageReadBuffer(
            None, connection.config.max_message_length
        )
        return [RejectedRequest(event.stream_id, rejection)]

    connection._request_received = request_received
    _reset_malformed_http(grpc_socket)


def _reset_malformed_http(grpc_socket: GRPCSocket) -> None:
    """Reset the stream, not the connection, of a request h2 finds malformed.

    h2 checks HTTP/2's own header rules (lowercase names, no
    connection-specific headers, pseudo-headers first, UTF-8 here) and
    raises for the whole connection, which purerpc then drops without a
    GOAWAY. HTTP/2 makes a malformed request a stream error (RFC 9113,
    8.1.1): the stream is reset with PROTOCOL_ERROR and the others go on.
    Only once the headers were decoded and opened the stream, so the
    connection's HPACK state is intact; any other error (a header block
    that does not decode, too many streams, a bad stream id) still ends
    the connection.
    """
    h2_connection = grpc_socket._grpc_connection.h2_connection
    # h2 dispatches frames through a table of bound methods made at its
    # start (frame class → method), so the entry is replaced, not the method.
    table = h2_connection._frame_dispatch_table
    receive_headers = h2_connection._receive_headers_frame
    (headers_frame,) = (kind for kind, method in table.items() if method == receive_headers)

    def receive_headers_frame(frame: Any) -> Any:
        new = frame.stream_id not in h2_connection.streams
        try:
            return receive_headers(frame)
        except (h2.exceptions.ProtocolError, UnicodeDecodeError) as exc:
            if (
                not new
                or isinstance(exc, h2.exceptions.TooManyStreamsError)
                or frame.stream_id not in h2_connection.streams
            ):
                raise
            _throttled_warning("reset a request with malformed HTTP/2 headers: %s", exc)
            h2_connection.reset_stream(frame.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return [], []

    table[headers_frame] = receive_headers_frame


# At most one warning this often, in seconds: a client sending nothing but
# malformed requests must not flood the log (the rest go to debug).
_LOG_INTERVAL = 10.0
_next_warning = -math.inf


def _throttled_warning(message: str, *args: object) -> None:
    global _next_warning
    now = time.monotonic()
    if now >= _next_warning:
        _next_warning = now + _LOG_INTERVAL
        log.warning(message, *args)
    else:
        log.debug(message, *args)


async def answer_rejection(stream: GRPCProtoStream, rejection: Rejection) -> None:
    """Answer a rejected call: HTTP status, grpc-status and grpc-message in
    one HEADERS frame that ends the stream (a trailers-only response).

    purerpc's own trailers-only answer always says HTTP 200.
    """
    headers = [
        (":status", str(rejection.http_status)),
        ("content-type", "application/grpc"),
        ("grpc-status", str(rejection.code.value)),
        ("grpc-message", urllib.parse.quote(rejection.message, safe="")),
    ]
    stream._grpc_connection.h2_connection.send_headers(stream.stream_id, headers, end_stream=True)
    stream._close_local()
    await stream._socket.flush()
