"""Checking a gRPC request's HTTP/2 headers before anything acts on them.

Sans-I/O: ``check_request_headers`` takes the header list of one request and
returns what to answer when it is malformed (``Rejection``), or None. Its
rules follow the gRPC over HTTP/2 spec (doc/PROTOCOL-HTTP2.md):

- ``:method`` POST, ``:scheme`` http or https, ``te: trailers``;
- ``:path`` ``/Service/Method``: any other shape is UNIMPLEMENTED, as an
  unknown method is;
- ``content-type`` ``application/grpc`` or ``application/grpc+proto`` (with
  parameters, if any): anything else is HTTP 415, so that a plain HTTP
  client does not take a gRPC error (HTTP 200) for success; the answer still
  carries a grpc-status, which gRPC clients must prefer to the HTTP status;
- ``grpc-timeout``: 1 to 8 ASCII digits and a unit (H M S m u n);
- each of these at most once, and ``-bin`` metadata valid base64.

Why here: purerpc parses request headers inside the connection's reader,
where any error (an ``int()`` of ``abc``, a path without a slash) ends the
whole connection with no GOAWAY and no status, killing every other call on
it. ``mkv.rpc.request_screen`` runs this check first and answers the one stream.

``grpc_timeout`` is the client side: the ``grpc-timeout`` a number of
seconds travels as, within the spec's 8 digits.
"""

from __future__ import annotations

import binascii
import datetime
import math
import re
from collections.abc import Sequence

import attrs
from purerpc.grpclib.status import StatusCode

__all__ = [
    "MAX_TIMEOUT_DIGITS",
    "Rejection",
    "check_request_headers",
    "grpc_timeout",
    "parse_timeout",
]

# The spec's TimeoutValue: "positive integer as ASCII string of at most 8 digits".
MAX_TIMEOUT_DIGITS = 8
_TIMEOUT = re.compile(rb"([0-9]{1,%d})([HMSmun])" % MAX_TIMEOUT_DIGITS)
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# application/grpc, optionally +proto, optionally ;parameters. Other
# subtypes (+json, a custom codec) name an encoding mkv does not speak.
_CONTENT_TYPE = re.compile(r"application/grpc(\+proto)?(\s*;.*)?", re.IGNORECASE | re.DOTALL)
# Path → "/" Service-Name "/" method name; neither part empty nor with a slash.
_PATH = re.compile(r"/[^/]+/[^/]+")
# Headers purerpc reads as one value; a second copy would crash its parser.
_SINGLE = (
    ":method",
    ":scheme",
    ":path",
    ":authority",
    "te",
    "content-type",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-message-type",
    "user-agent",
)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")


@attrs.frozen
class Rejection:
    """How to answer a request whose headers are malformed: on its own stream,
    at once (trailers-only), before its body is read.

    Attributes:
        code: the grpc-status.
        message: the grpc-message, for the client and the server log.
        http_status: the HTTP status; 200 unless the request is not gRPC at all.
    """

    code: StatusCode
    message: str
    http_status: int = 200


def parse_timeout(value: str) -> float:
    """Seconds in a ``grpc-timeout`` value.

    Raises:
        ValueError: it is not 1 to 8 ASCII digits followed by H, M, S, m, u or n.
    """
    match = _TIMEOUT.fullmatch(value.encode("utf-8", "replace"))
    if match is None:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2].decode()]


def grpc_timeout(seconds: float) -> datetime.timedelta:
    """The timeout to hand purerpc so that the ``grpc-timeout`` it writes
    stays within 8 digits.

    purerpc writes whole seconds as ``<n>S`` and anything else as
    microseconds, ``<n>u``: 100 s and more with a fraction would take 9 or
    more digits, which servers that follow the spec refuse (mkv's own
    included). Such a timeout is rounded up to whole seconds, a rounding
    far below what a deadline that long can mean; shorter ones keep their
    microseconds (rounded up, never to zero from a positive value). Past
    99,999,999 s (over three years) the header says that much.
    """
    seconds = max(seconds, 0.0)
    micros = math.ceil(seconds * 1e6)
    if micros < 10**MAX_TIMEOUT_DIGITS:
        return datetime.timedelta(microseconds=micros)
    whole = min(math.ceil(seconds), 10**MAX_TIMEOUT_DIGITS - 1)
    return datetime.timedelta(seconds=whole)


def check_request_headers(headers: Sequence[tuple[str, str]]) -> Rejection | None:
    """What to answer a request with these headers, or None if they are well formed."""
    seen: dict[str, str] = {}
    for name, value in headers:
        if name in _SINGLE and name in seen:
            return Rejection(StatusCode.INVALID_ARGUMENT, f"The header {name} is repeated.")
        seen.setdefault(name, value)
        if name.endswith("-bin") and not _is_base64(value):
            return Rejection(
                StatusCode.INVALID_ARGUMENT, f"The binary metadata {name} is not valid base64."
            )
    if seen.get(":method") != "POST":
        return Rejection(
            StatusCode.UNIMPLEMENTED, "gRPC calls use the HTTP method POST.", http_status=405
        )
    content_type = seen.get("content-type", "")
    if not _CONTENT_TYPE.fullmatch(content_type):
        return Rejection(
            StatusCode.INVALID_ARGUMENT,
            f"The content-type {content_type!r} is not served: only application/grpc (+proto) is.",
            http_status=415,
        )
    if seen.get(":scheme") not in ("http", "https"):
        return Rejection(StatusCode.INVALID_ARGUMENT, "The :scheme must be http or https.")
    path = seen.get(":path", "")
    if not _PATH.fullmatch(path):
        return Rejection(
            StatusCode.UNIMPLEMENTED, f"No method is served at the path {path[:100]!r}."
        )
    if seen.get("te") != "trailers":
        # The spec's way of detecting a proxy that would drop the trailers
        # that carry every call's status.
        return Rejection(StatusCode.INVALID_ARGUMENT, "The header te: trailers is required.")
    timeout = seen.get("grpc-timeout")
    if timeout is not None:
        try:
            parse_timeout(timeout)
        except ValueError:
            return Rejection(
                StatusCode.INVALID_ARGUMENT,
                f"The grpc-timeout {timeout[:40]!r} is malformed: it must be 1 to "
                f"{MAX_TIMEOUT_DIGITS} digits and a unit (H, M, S, m, u or n).",
            )
    return None


def _is_base64(value: str) -> bool:
    # Unpadded, as gRPC sends it (purerpc adds the padding back), and
    # possibly several values joined by commas.
    for part in value.split(","):
        data = part.strip().rstrip("=")
        if not _BASE64.fullmatch(data) or len(data) % 4 == 1:
            return False
        try:
            binascii.a2b_base64(data + "=" * (-len(data) % 4))
        except binascii.Error:
            return False
    return True
