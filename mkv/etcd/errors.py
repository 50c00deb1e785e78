"""The errors the etcd client raises, and how etcd's gRPC statuses map to them."""

from __future__ import annotations

from typing import ClassVar

from purerpc.grpclib.status import StatusCode

from mkv.errors import MkvError

__all__ = [
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "LeaseNotFound",
    "error_for_etcd_status",
]


class EtcdError(MkvError):
    """Any failure talking to etcd."""

    code: ClassVar[StatusCode] = StatusCode.UNKNOWN


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the deadline, a stream went silent, or a
    connection was lost.

    Unlike ``mkv.errors.UnavailableError`` the outcome of a write is unknown:
    the caller re-reads before deciding (a Txn guarded by a revision makes a
    blind retry safe).
    """

    code = StatusCode.UNAVAILABLE


class EtcdCompacted(EtcdError):
    """A read or watch asked for a revision etcd has compacted away."""

    code = StatusCode.OUT_OF_RANGE

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        # The oldest revision still readable (0 when etcd did not say).
        self.compact_revision = compact_revision


class LeaseNotFound(EtcdError):
    """The lease expired, was revoked, or never existed."""

    code = StatusCode.NOT_FOUND


# etcd answers these codes when the member cannot serve now (no leader, a
# timeout inside raft, shutting down): another member may.
_UNAVAILABLE_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED})


def error_for_etcd_status(code: int, message: str, endpoint: str) -> EtcdError:
    """The error for a non-OK status etcd answered (its messages are stable
    strings such as ``etcdserver: requested lease not found``)."""
    text = f"etcd at {endpoint} answered {StatusCode(code).name}: {message}"
    if code == StatusCode.NOT_FOUND and "lease not found" in message:
        return LeaseNotFound(text)
    if code == StatusCode.OUT_OF_RANGE and "compacted" in message:
        return EtcdCompacted(text)
    if code in _UNAVAILABLE_CODES:
        return EtcdUnavailable(text)
    return EtcdError(text)
