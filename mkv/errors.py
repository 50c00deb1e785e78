"""Every error mkv raises, in one shallow hierarchy.

Each error carries the gRPC status code it travels as, so the server maps
errors to statuses in one place (``mkv.rpc``) and the client maps them back
(``error_for_status``). Messages are one sentence for a person; they go on the
wire, so they never hold values, stack traces or reprs.
"""

from __future__ import annotations

from typing import ClassVar

from purerpc.grpclib.status import StatusCode

__all__ = [
    "AlreadyExistsError",
    "BadNodeError",
    "InternalError",
    "InvalidArgumentError",
    "MkvError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StorageError",
    "UnavailableError",
    "error_for_status",
    "shown",
]


class MkvError(Exception):
    """Root of every mkv error."""

    code: ClassVar[StatusCode] = StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(MkvError):
    """The request is malformed: the caller must change it."""

    code = StatusCode.INVALID_ARGUMENT


class ResourceExhaustedError(MkvError):
    """The request is over a limit (size, key length)."""

    code = StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(MkvError):
    """The server cannot take the request now (overload, shutdown, connection lost).

    Retryable: nothing was applied.
    """

    code = StatusCode.UNAVAILABLE


class PermissionDeniedError(MkvError):
    """The request is well formed but not allowed (a pipeline filter refused it)."""

    code = StatusCode.PERMISSION_DENIED


class NotFoundError(MkvError):
    """No such partition."""

    code = StatusCode.NOT_FOUND


class AlreadyExistsError(MkvError):
    """A partition with that id exists, or its range overlaps another."""

    code = StatusCode.ALREADY_EXISTS


class InternalError(MkvError):
    """The server failed in a way that is not the caller's fault; details are in its log."""

    code = StatusCode.INTERNAL


class StorageError(InternalError):
    """The state store failed (disk full, I/O error, corrupt file)."""


class BadNodeError(MkvError):
    """No partition on the node owns the key, even after refreshing the partition map.

    Raised by the client only: on the wire this is ``Status.BAD_NODE`` in the
    response, not a gRPC error.
    """

    code = StatusCode.FAILED_PRECONDITION


def shown(text: str | bytes, limit: int = 40) -> str:
    """Caller input as it may appear in an error message: one printable line, bounded.

    Messages travel in gRPC trailers (clients cap their size) and end up in
    terminals and logs, so control characters are escaped and length is capped.
    """
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "backslashreplace")
    head = text[: limit + 1]
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    if len(text) > limit or len(printable) > limit:
        return printable[: limit - 3] + "..."
    return printable


_BY_CODE: dict[StatusCode, type[MkvError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        ResourceExhaustedError,
        UnavailableError,
        NotFoundError,
        PermissionDeniedError,
        AlreadyExistsError,
        InternalError,
    )
}


def error_for_status(code: StatusCode, message: str) -> MkvError:
    """The typed error a client raises for a gRPC status that is not OK."""
    cls = _BY_CODE.get(code, MkvError)
    return cls(message or code.name)
