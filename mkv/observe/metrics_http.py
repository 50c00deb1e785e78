"""The ``/metrics`` endpoint: a minimal HTTP/1.1 responder on a Trio listener.

Prometheus asks ``GET /metrics`` every few seconds; that is all this serves.
A web framework would be a large dependency for one route, and
prometheus_client's own server runs in a thread of its own and reads the
metrics from there. Each connection gets one answer and is closed (no
keep-alive to manage), a request head must arrive within
``REQUEST_TIMEOUT`` and fit in ``MAX_HEAD_BYTES``, and at most
``MAX_CONNECTIONS`` are served at once: a misbehaving client costs little.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from mkv.observe.logs import fields
from mkv.wire import Address

__all__ = ["CONTENT_TYPE", "MetricsServer", "parse_request_line"]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.metrics_http")

# The classic text format: every name mkv exports is valid in it, and every
# Prometheus version reads it (prometheus_client's default now names 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD_BYTES = 8192
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 16


@attrs.frozen
class Request:
    method: str
    path: str


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.x request head."""


def parse_request_line(head: bytes) -> Request:
    """The method and path (without query) of a request head. Sans-I/O.

    Raises:
        BadRequest: the head's first line is not ``METHOD TARGET HTTP/1.x``.
    """
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest("not an HTTP/1.x request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request line is not ASCII") from None
    return Request(method, target.split("?", 1)[0])


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class MetricsServer:
    """Serves ``render()`` at ``/metrics`` on ``address`` until cancelled.

    Args:
        address: where to listen; port 0 picks a free port.
        render: the exposition text, produced without blocking the event loop.
    """

    def __init__(self, address: Address, render: Callable[[], Awaitable[bytes]]) -> None:
        self.address = address
        self._render = render
        self._slots = trio.Semaphore(MAX_CONNECTIONS)

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, report the bound address, and serve until cancelled.

        Raises:
            OSError: the address cannot be bound.
        """
        try:
            listeners = await trio.open_tcp_listeners(self.address.port, host=self.address.host)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.address}: {exc.strerror or exc}"
            ) from exc
        sockname = listeners[0].socket.getsockname()
        self.address = Address(self.address.host, sockname[1])
        log.info(
            "serving metrics on http://%s/metrics",
            self.address,
            extra=fields(event="listening", service="metrics", address=str(self.address)),
        )
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)
            task_status.started(self.address)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                if self._slots.value == 0:
                    await stream.aclose()  # busy: the scraper retries next interval
                    continue
                await self._slots.acquire()
                nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await stream.send_all(await self._answer(stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics connection lost: %r", exc)
        finally:
            self._slots.release()

    async def _answer(self, stream: trio.SocketStream) -> bytes:
        head = b""
        while b"\r\n\r\n" not in head:
            if len(head) > MAX_HEAD_BYTES:
                return _response("431 Request Header Fields Too Large", b"")
            chunk = await stream.receive_some(MAX_HEAD_BYTES)
            if not chunk:
                return b""
            head += chunk
        try:
            request = parse_request_line(head)
        except BadRequest:
            return _response("400 Bad Request", b"")
        if request.path != "/metrics":
            return _response("404 Not Found", b"Not found; metrics are at /metrics.\n")
        if request.method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"")
        body = await self._render()
        answer = _response("200 OK", body, CONTENT_TYPE)
        return answer[: len(answer) - len(body)] if request.method == "HEAD" else answer
