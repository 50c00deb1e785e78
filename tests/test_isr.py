"""The leader's in-sync set bookkeeping (sans-I/O, issue 16)."""

from __future__ import annotations

from mkv.pipeline.isr import InSyncSet


def three(min_isr: int = 2) -> InSyncSet:
    return InSyncSet(
        "a", ("a", "b", "c"), frozenset("abc"), min_isr=min_isr, lag_timeout=10.0, now=0.0
    )


def test_commit_waits_for_every_isr_member_and_its_own_fsync() -> None:
    isr = three()
    isr.logged(5)
    assert isr.commit_seq == 0
    isr.reported("b", 5, now=1.0)
    isr.reported("c", 4, now=1.0)
    assert isr.commit_seq == 0  # the leader's own log is not synced yet
    isr.synced(5)
    assert isr.commit_seq == 4  # c has only 4 durable
    isr.reported("c", 5, now=1.0)
    assert isr.commit_seq == 5


def test_a_single_node_commits_at_its_own_fsync() -> None:
    isr = InSyncSet("a", ("a",), frozenset("a"), min_isr=1, lag_timeout=10.0, now=0.0)
    isr.synced(7)
    assert isr.commit_seq == 7
    assert isr.admits_writes()


def test_a_lagging_member_is_named_after_the_timeout_and_left_out_only_once_removed() -> None:
    isr = three()
    isr.synced(3)
    isr.reported("b", 3, now=1.0)
    isr.reported("c", 1, now=1.0)
    assert isr.laggards(now=9.9) == frozenset()
    assert isr.laggards(now=10.0) == {"c"}
    assert isr.commit_seq == 1  # still counted until etcd says it is out
    isr.set_isr(frozenset("ab"), now=10.0)
    assert isr.commit_seq == 3
    assert isr.lag("c", now=12.0) == (2, 12.0)
    assert isr.rejoiners() == frozenset()
    isr.reported("c", 3, now=13.0)
    assert isr.rejoiners() == {"c"}
    isr.set_isr(frozenset("abc"), now=13.0)
    assert isr.laggards(now=20.0) == frozenset()  # caught up: no lag clock running


def test_below_min_isr_writes_are_not_admitted() -> None:
    isr = three(min_isr=2)
    isr.set_isr(frozenset("a"), now=0.0)
    assert not isr.admits_writes()
    isr.set_isr(frozenset("ab"), now=0.0)
    assert isr.admits_writes()


def test_reports_from_a_node_that_is_not_a_replica_count_for_nothing() -> None:
    isr = three()
    isr.synced(4)
    isr.reported("b", 4, now=0.0)
    isr.reported("c", 4, now=0.0)
    isr.reported("z", 100, now=0.0)
    assert isr.commit_seq == 4
    isr.set_replicas(("a", "b"), now=0.0)
    isr.set_isr(frozenset("ab"), now=0.0)
    isr.synced(6)
    isr.reported("b", 6, now=0.0)
    assert isr.commit_seq == 6


def test_a_replica_that_never_reported_is_not_added_back() -> None:
    """Before any write the commit seq is 0, which a silent replica's durable
    seq (0) "reaches": it must have fetched to count as caught up."""
    isr = InSyncSet("a", ("a", "b", "c"), frozenset("ab"), min_isr=1, lag_timeout=10, now=0.0)
    assert isr.commit_seq == 0
    assert isr.rejoiners() == frozenset()
    isr.reported("c", 0, now=1.0)
    assert isr.rejoiners() == {"c"}
