"""A token bucket, sans I/O: the caller passes the time.

The control plane's calls (adding and removing partitions) are expensive and
rare; a bucket lets a burst of them through and then a steady rate, and tells
a refused caller how long to wait.
"""

from __future__ import annotations

import attrs

__all__ = ["TokenBucket"]


@attrs.define
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    Args:
        rate: tokens added per second (> 0).
        burst: the most tokens held, and so the largest burst let through (≥ 1).
        now: the time the bucket starts at, in seconds on the caller's clock.
    """

    rate: float = attrs.field(validator=attrs.validators.gt(0))
    burst: int = attrs.field(validator=attrs.validators.ge(1))
    now: float = 0.0
    _tokens: float = attrs.field(init=False)
    _updated: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._updated = self.now

    def take(self, now: float) -> float:
        """Take one token at time ``now``.

        Returns:
            0.0 when a token was taken; otherwise the seconds until one will be
            there (nothing is taken).
        """
        # A clock that steps back adds nothing rather than taking tokens away.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
