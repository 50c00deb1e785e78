"""The leader's in-sync set bookkeeping for replicated partitions (sans-I/O, issue 16).

Per follower: the durable seq it last reported and when it last had
everything the leader had logged. The commit seq is the minimum of the
leader's own synced seq and every ISR member's durable seq (rule 3 of
../shared/docs/cluster.md: acknowledged means durable on the whole ISR). A
member that has not caught up for ``lag_timeout`` is a laggard: the caller
removes it in etcd first and only then calls :meth:`InSyncSet.set_isr`, so no
write is committed without it before etcd says it is out. A replica outside
the ISR whose durable seq reaches the commit seq may be added back. Times are
the caller's monotonic clock, in seconds.
"""

from __future__ import annotations

import attrs

__all__ = ["FollowerProgress", "InSyncSet"]


@attrs.define
class FollowerProgress:
    durable_seq: int = 0
    caught_up_at: float = 0.0  # the last time it had everything logged
    # Whether it has reported at all to this leader: one that never fetched
    # has reached no commit seq (not even 0) and is not added back.
    reported: bool = False


class InSyncSet:
    def __init__(
        self,
        leader: str,
        replicas: tuple[str, ...],
        isr: frozenset[str],
        *,
        min_isr: int,
        lag_timeout: float,
        now: float,
    ) -> None:
        if min_isr < 1:
            raise ValueError("min_isr must be at least 1")
        self.leader = leader
        self.min_isr = min_isr
        self.lag_timeout = lag_timeout
        self._logged_seq = 0
        self._synced_seq = 0
        self._followers: dict[str, FollowerProgress] = {}
        self.replicas: tuple[str, ...] = ()
        self.isr: frozenset[str] = frozenset()
        self.set_replicas(replicas, now)
        self.set_isr(isr, now)

    def set_replicas(self, replicas: tuple[str, ...], now: float) -> None:
        self.replicas = replicas
        followers = [node for node in replicas if node != self.leader]
        self._followers = {
            node: self._followers.get(node) or FollowerProgress(caught_up_at=now)
            for node in followers
        }

    def set_isr(self, isr: frozenset[str], now: float) -> None:
        """The ISR as etcd now holds it (the leader is always counted in it)."""
        for node in isr - self.isr:
            if node in self._followers:
                # Joining starts its lag clock afresh: it was caught up to be added.
                self._followers[node].caught_up_at = now
        self.isr = frozenset(isr) | {self.leader}

    def logged(self, seq: int) -> None:
        """The leader appended up to ``seq`` to its log."""
        self._logged_seq = max(self._logged_seq, seq)

    def synced(self, seq: int) -> None:
        """The leader's own log is durable up to ``seq``."""
        self._synced_seq = max(self._synced_seq, seq)
        self.logged(seq)

    def reported(self, node: str, durable_seq: int, now: float) -> None:
        """A follower said it has everything up to ``durable_seq`` durable."""
        progress = self._followers.get(node)
        if progress is None:
            return  # not a replica (any more): its reports count for nothing
        progress.durable_seq = max(progress.durable_seq, durable_seq)
        progress.reported = True
        if progress.durable_seq >= self._logged_seq:
            progress.caught_up_at = now

    def durable_seq(self, node: str) -> int:
        if node == self.leader:
            return self._synced_seq
        progress = self._followers.get(node)
        return progress.durable_seq if progress else 0

    @property
    def commit_seq(self) -> int:
        seqs = [self._synced_seq]
        seqs += [p.durable_seq for n, p in self._followers.items() if n in self.isr]
        return min(seqs)

    def admits_writes(self) -> bool:
        """min_isr: with fewer members in sync, writes are refused at admission."""
        return len(self.isr) >= self.min_isr

    def laggards(self, now: float) -> frozenset[str]:
        """ISR followers that have not caught up for ``lag_timeout``."""
        return frozenset(
            node
            for node, progress in self._followers.items()
            if node in self.isr
            and progress.durable_seq < self._logged_seq
            and now - progress.caught_up_at >= self.lag_timeout
        )

    def rejoiners(self) -> frozenset[str]:
        """Followers outside the ISR whose durable seq reached the commit seq."""
        commit = self.commit_seq
        return frozenset(
            node
            for node, progress in self._followers.items()
            if node not in self.isr and progress.reported and progress.durable_seq >= commit
        )

    def lag(self, node: str, now: float) -> tuple[int, float]:
        """(records, seconds) the follower is behind the leader's log."""
        progress = self._followers[node]
        records = max(0, self._logged_seq - progress.durable_seq)
        return records, (0.0 if records == 0 else now - progress.caught_up_at)
