"""Malformed request headers answered on their own stream, not by losing the
connection.

purerpc turns a request's headers into a call inside the connection's reader
task; a malformed header (a ``grpc-timeout`` of ``abc``, a ``:path`` without
a slash, a ``content-type`` that is not gRPC, a request with no body)
raises there and ends the connection without a GOAWAY or a status, losing
every other call on it. ``screen_requests`` checks the headers first
(``mkv.request_headers``): a malformed request becomes a ``RejectedRequest``
call, which the server answers at once with ``answer_rejection``
(trailers-only), then reads and drops whatever body follows, as for any
early answer.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import h2.events
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpc_socket import GRPCSocket
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.status import StatusCode

from mkv.request_headers import Rejection, check_request_headers

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
