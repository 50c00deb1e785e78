"""Keeping an etcd lease, and knowing until when it is certainly held.

A node may act on what its lease stands for (serving the partitions it
leads) only until its deadline (docs/cluster.md, safety rule 5). etcd starts
a renewed TTL when it receives the keepalive, which is after the node sent
it, so ``sent_at + ttl`` never ends later than etcd's own expiry as measured
by a clock running at etcd's rate; ``margin`` absorbs the difference in clock
rates and the time the node takes to stop. ``LeaseClock`` is that rule with
no I/O; ``keep_lease`` is the Trio task that renews and feeds it.
"""

from __future__ import annotations

import logging
import math

import attrs
import trio

from mkv.etcd.client import Etcd
from mkv.etcd.errors import EtcdUnavailable, LeaseNotFound

__all__ = ["LeaseClock", "keep_lease"]

log = logging.getLogger("mkv.etcd")


@attrs.define
class LeaseClock:
    """Until when a lease is certainly held, on ``trio.current_time()``'s clock.

    Holds nothing until the first ``renewed`` (feed it the grant too: the
    time the LeaseGrant was sent and the TTL granted).
    """

    margin: float
    deadline: float = -math.inf

    def renewed(self, sent_at: float, ttl: float) -> None:
        """A keepalive (or the grant) sent at ``sent_at`` was answered with ``ttl``.

        An answer that arrives late never moves the deadline back.
        """
        self.deadline = max(self.deadline, sent_at + ttl - self.margin)

    def valid(self, now: float) -> bool:
        """Whether the lease is certainly still held at ``now``."""
        return now < self.deadline

    def remaining(self, now: float) -> float:
        """Seconds until the deadline (negative once it passed)."""
        return self.deadline - now

    def expire(self) -> None:
        """Forget the lease (it is known to be gone)."""
        self.deadline = -math.inf


async def keep_lease(
    etcd: Etcd,
    lease_id: int,
    ttl: float,
    clock: LeaseClock,
    *,
    interval: float | None = None,
) -> None:
    """Renew ``lease_id`` every ``interval`` seconds (``ttl / 3``) for as long
    as the task runs, moving ``clock``'s deadline on with every answer.

    When etcd cannot be reached the task keeps trying (on the next endpoint,
    over a new stream) and the clock runs out on its own: the caller checks
    ``clock.valid`` before acting. Returns never; cancel it to stop.

    Raises:
        LeaseNotFound: the lease is gone (expired or revoked): the caller
            registers again under a new lease. The clock is expired first.
    """
    interval = ttl / 3 if interval is None else interval
    if interval <= 0:
        raise ValueError(f"the keepalive interval must be positive, not {interval}")
    while True:
        attempt = trio.current_time()
        try:
            async with etcd.keepalive(lease_id) as keeper:
                while True:
                    sent_at = trio.current_time()
                    granted = await keeper.renew()
                    clock.renewed(sent_at, granted)
                    await trio.sleep_until(sent_at + interval)
        except LeaseNotFound:
            clock.expire()
            raise
        except EtcdUnavailable as exc:
            log.warning(
                "cannot renew etcd lease %x (%.1f s left): %s",
                lease_id,
                clock.remaining(trio.current_time()),
                exc.message,
            )
            # At once after a failure that took a while (a silent endpoint:
            # the next one is tried), but not in a hot loop when every
            # endpoint refuses connections at once.
            await trio.sleep_until(attempt + min(interval, 1.0))
