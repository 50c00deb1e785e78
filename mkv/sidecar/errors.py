"""The sidecar's errors: a destination that failed, and a configuration it cannot use."""

from __future__ import annotations

from mkv.errors import InvalidArgumentError, UnavailableError

__all__ = ["DestinationError", "SidecarConfigError", "SidecarStopped"]


class DestinationError(UnavailableError):
    """Remote storage refused or failed a transfer.

    ``retryable`` is false for failures that waiting cannot fix (no such
    bucket, access denied, bad credentials): the sidecar gives up on them at
    once instead of backing off.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SidecarConfigError(InvalidArgumentError):
    """The command line or the state file asks for something the sidecar cannot do."""


class SidecarStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM) while a transfer ran; it was abandoned.

    Not an ``MkvError``: nothing failed, and an abandoned upload is resumed
    from the start by the next run (see docs/sidecar.md).
    """
