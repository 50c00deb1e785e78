"""Every error mkv raises, in one shallow hierarchy.

Each error carries the gRPC status code it travels as, so the server maps
errors to statuses in one place (``mkv.rpc.server``) and the client maps them back
(``error_for_status``). Messages are one sentence for a person; they go on the
wire, so they never hold values, stack traces or reprs.
"""

from __future__ import annotations

from typing import ClassVar

from purerpc.grpclib.status import StatusCode

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "BadNodeError",
    "CompactedError",
    "ConditionFailedError",
    "ConfigError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "MkvError",
    "MovedError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StorageError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "error_for_status",
    "leaves",
    "shown",
]


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message names it.

    Not an ``MkvError``: it never travels on the wire. Raised where settings
    are read (the node's configuration, token and certificate files on
    either side), so it lives here rather than with the node's settings.
    """


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
    """The request is over a limit (size, key length, a rate).

    Args:
        retry_after: seconds until a retry may succeed, when the limit is a
            rate (sent as the trailing metadata ``retry-after`` too).
    """

    code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(MkvError):
    """The server cannot take the request now (overload, shutdown, connection lost).

    Retryable: nothing was applied.
    """

    code = StatusCode.UNAVAILABLE


class PermissionDeniedError(MkvError):
    """The request is well formed but not allowed (a pipeline filter refused
    it, or the credentials it carries are wrong)."""

    code = StatusCode.PERMISSION_DENIED


class UnauthenticatedError(MkvError):
    """The request carries no credentials where the port requires a token."""

    code = StatusCode.UNAUTHENTICATED


class DeadlineExceededError(MkvError):
    """The caller's deadline passed: before the request was applied (nothing
    was), or while waiting for its outcome (unknown, as with any timeout)."""

    code = StatusCode.DEADLINE_EXCEEDED


class UnimplementedError(MkvError):
    """The server does not offer what the request needs (a method, compression)."""

    code = StatusCode.UNIMPLEMENTED


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


class MovedError(MkvError):
    """The key's range moved to another partition (a split or merge) after the
    request was routed; server-side only: the data plane answers it with
    ``BAD_NODE`` and a hint naming ``owner``, so the client re-routes."""

    # Should one ever reach the transport unanswered: retrying is right.
    code = StatusCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        owner: str = "",
        seq: int = 0,
        *,
        address: str = "",
        start: bytes = b"",
        end: bytes | None = None,
    ) -> None:
        super().__init__(message)
        # The partition that owns the range now, and the parent's last
        # sequence number before it moved (where a watch resumes there).
        self.owner = owner
        self.seq = seq
        # When the range moved to another node: that node's data address,
        # and the range that moved (the hint's ``owner``).
        self.address = address
        self.start = start
        self.end = end


class FailedPreconditionError(MkvError):
    """The key's current state does not allow the operation (an increment of a
    value that is not a counter, or one that would overflow); nothing was applied."""

    code = StatusCode.FAILED_PRECONDITION


class DataLossError(MkvError):
    """Data sent between nodes failed its check (a replicated snapshot whose
    SHA-256 does not match): it was refused, and nothing of it was used."""

    code = StatusCode.DATA_LOSS


class AbortedError(MkvError):
    """A conditional write or increment was decided against a write that then
    failed, so it was not applied either; retrying is safe."""

    code = StatusCode.ABORTED


class CompactedError(MkvError):
    """A watch asked for changes older than the partition still retains:
    read the current state with a scan, then watch from its sequence number."""

    code = StatusCode.OUT_OF_RANGE


class ConditionFailedError(MkvError):
    """A condition of a conditional write did not hold; nothing was applied.

    Raised by the client only: on the wire this is ``Status.CONDITION_FAILED``
    in the response, not a gRPC error.

    Attributes:
        key: the first key whose condition failed.
        current_seq: the sequence number of that key's current value (0: absent).
    """

    code = StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, key: bytes = b"", current_seq: int = 0) -> None:
        super().__init__(message)
        self.key = key
        self.current_seq = current_seq


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, nested groups flattened (nurseries nest them)."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in leaves(inner)]


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
        UnauthenticatedError,
        DeadlineExceededError,
        UnimplementedError,
        AlreadyExistsError,
        InternalError,
        FailedPreconditionError,
        AbortedError,
        CompactedError,
        DataLossError,
    )
}


def error_for_status(
    code: StatusCode, message: str, *, retry_after: float | None = None
) -> MkvError:
    """The typed error a client raises for a gRPC status that is not OK
    (``retry_after``: the server's ``retry-after`` trailer, if any)."""
    if code is StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(message or code.name, retry_after=retry_after)
    cls = _BY_CODE.get(code, MkvError)
    return cls(message or code.name)
