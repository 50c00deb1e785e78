"""How long to wait before retrying a failed upload: exponential, capped, jittered."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

import attrs

from mkv.sidecar.errors import DestinationError, SidecarStopped

__all__ = ["RetryPolicy", "retrying"]

log = logging.getLogger("mkv.sidecar")
T = TypeVar("T")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """At most ``attempts`` tries of one upload, with "full jitter" waits between them.

    The wait before retry ``n`` (1 for the first retry) is uniform in
    ``[0, min(max_delay, base_delay * 2**(n-1))]``: the cap bounds a pass,
    and the jitter keeps many sidecars whose storage came back at the same
    moment from retrying in lockstep.
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based)."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        # min() before the power would overflow only after ~1000 retries; clamp the exponent.
        return float(min(self.max_delay, self.base_delay * 2 ** min(retry - 1, 60)))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """A jittered wait before retry number ``retry`` (1-based)."""
        return (rng or random).uniform(0.0, self.ceiling(retry))


def retrying(
    policy: RetryPolicy,
    stop: threading.Event,
    what: str,
    action: Callable[[], T],
    rng: random.Random | None = None,
) -> T:
    """``action()``, tried up to ``policy.attempts`` times while it raises a retryable error.

    Args:
        what: names the action in log lines ("upload of p1/p1-7.sqlite3").

    Raises:
        DestinationError: the last failure, or the first one that is not retryable.
        SidecarStopped: ``stop`` was set while waiting to retry.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except DestinationError as exc:
            if not exc.retryable or attempt == policy.attempts:
                raise
            delay = policy.delay(attempt, rng)
            log.warning(
                "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                what,
                attempt,
                policy.attempts,
                delay,
                exc.message,
            )
            if stop.wait(delay):
                raise SidecarStopped from None
    raise AssertionError("unreachable: the last attempt returns or raises")
