"""The sans-I/O rules of cluster mode: keys and values in etcd, placement,
the view and what reconcile decides (mkv/cluster/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
import pytest

from mkv.cluster.identity import load_node_id
from mkv.cluster.keyspace import BadValue, Keys, LeaderRecord, NodeRecord, PartitionRecord
from mkv.cluster.placement import check_free, choose_node, choose_replicas
from mkv.cluster.reconcile import (
    Adopt,
    Blocked,
    Campaign,
    Create,
    Delete,
    Lead,
    LeaderRef,
    LeaveIsr,
    OpenFollower,
    PublishMerge,
    PublishSplit,
    ReplicaFacts,
    RevokeStale,
    SetIsr,
    SetLeader,
    StepDown,
    reconcile,
)
from mkv.cluster.view import ClusterView
from mkv.errors import (
    AlreadyExistsError,
    ConfigError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from mkv.node import cluster_local
from mkv.node.cluster_local import cluster_pipeline
from mkv.node.config import Config
from mkv.node.registry import PartitionRegistry
from mkv.router import KeyRange
from mkv.wire import parse_address

KEYS = Keys("t")
WHOLE = KeyRange(b"", None)


@attrs.frozen
class KV:
    key: bytes
    value: bytes
    create_revision: int = 1
    mod_revision: int = 1
    lease: int = 0


def part(pid: str, rng: KeyRange = WHOLE, replicas: tuple[str, ...] = ("n1",)) -> PartitionRecord:
    return PartitionRecord(pid, rng, "sqlite", ("timestamp", "wal"), replicas)


def node(nid: str, port: int = 1) -> NodeRecord:
    return NodeRecord(nid, f"h:{port}", f"h:{port + 1}", f"h:{port + 1}", "0", "now")


def view_of(*kvs: KV, revision: int = 10) -> ClusterView:
    view = ClusterView(KEYS)
    view.load(kvs, revision)
    return view


# -- keyspace ------------------------------------------------------------------


def test_records_round_trip() -> None:
    record = part("p1", KeyRange(b"\x00a", b"\xffz"), ("n1", "n2"))
    assert PartitionRecord.decode("p1", record.encode()) == record
    assert NodeRecord.decode("n1", node("n1").encode()) == node("n1")
    drained = attrs.evolve(node("n1"), drained=True)
    assert NodeRecord.decode("n1", drained.encode()) == drained
    assert LeaderRecord.decode("p1", LeaderRecord("n1").encode()) == LeaderRecord("n1")
    assert KEYS.parse(KEYS.leader("p1")) == ("leaders", "p1")
    assert KEYS.parse(KEYS.placement) == ("placement", "")


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b"[]",
        b'{"schema": 2}',
        b'{"schema": 1, "start": "zz", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1"], "state": "active"}',
        b'{"schema": 1, "start": "62", "end": "61", "store": "s", "pipeline": [],'
        b' "replicas": ["n1"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": [], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["../x"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n1"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [1],'
        b' "replicas": ["n1"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1"], "state": "gone"}',
        b"\xff\xfe",
        # The in-sync set names only replicas, once each, and is never empty.
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n2"], "isr": ["n1", "n3"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n2"], "isr": [], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n2"], "isr": ["n1", "n1"], "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n2"], "isr": "n1", "state": "active"}',
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1", "n2"], "isr": [1], "state": "active"}',
    ],
)
def test_bad_partition_values_are_refused(value: bytes) -> None:
    with pytest.raises(BadValue):
        PartitionRecord.decode("p1", value)


def test_the_in_sync_set_round_trips_and_defaults_to_the_replicas() -> None:
    record = part("p1", replicas=("n1", "n2", "n3")).with_isr({"n3", "n1"})
    assert record.isr == ("n1", "n3")  # kept in the replicas' order
    assert PartitionRecord.decode("p1", record.encode()) == record
    assert part("p1", replicas=("n1", "n2")).isr == ("n1", "n2")
    # A record written before issue 16 has no isr: all its replicas are in sync.
    old = (
        b'{"schema": 1, "start": "", "end": null, "store": "s", "pipeline": [],'
        b' "replicas": ["n1"], "state": "active"}'
    )
    assert PartitionRecord.decode("p1", old).isr == ("n1",)
    with pytest.raises(ValueError, match="one or more of its replicas"):
        record.with_isr({"n4"})
    with pytest.raises(ValueError, match="one or more of its replicas"):
        record.with_isr(())
    with pytest.raises(ValueError, match="among its replicas"):
        PartitionRecord("p", WHOLE, "sqlite", (), ("n1",), "new", ("n2",))


def test_bad_keys_and_names_are_refused() -> None:
    with pytest.raises(BadValue):
        KEYS.parse(b"/mkv/t/leaders/../x")
    with pytest.raises(BadValue):
        KEYS.parse(b"/mkv/other/leaders/x")
    with pytest.raises(BadValue):
        LeaderRecord.decode("p", b'{"schema": 1, "node": "a b"}')
    with pytest.raises(ValueError, match="cluster name"):
        Keys("a/b")


# -- placement -----------------------------------------------------------------


def test_placement_picks_the_least_loaded_live_node() -> None:
    assert choose_node(["n2", "n1", "n3"], {"n1": 2, "n2": 1}) == "n3"
    assert choose_node(["n2", "n1"], {"n1": 1, "n2": 1}) == "n1"  # ties: lowest id
    assert choose_node(["n1", "n2"], {}, "n2") == "n2"
    with pytest.raises(NotFoundError):
        choose_node(["n1"], {}, "n9")
    with pytest.raises(FailedPreconditionError):
        choose_node([], {})


def test_replicas_go_to_distinct_live_nodes_least_loaded_first() -> None:
    alive = ["n3", "n1", "n2", "n4"]
    leading = {"n1": 2, "n2": 1, "n3": 1}
    holding = {"n1": 3, "n2": 3, "n3": 1, "n4": 2}
    # Preferred leader: fewest led (n4); then fewest replicas held (n3), then
    # of n1 and n2 (3 each) the one leading fewer.
    assert choose_replicas(alive, leading, holding, 3) == (("n4", "n3", "n2"), ())
    # Ties on everything: the lowest ids, so every node answering decides alike.
    assert choose_replicas(["n2", "n1", "n3"], {}, {}, 2) == (("n1", "n2"), ())
    # A named node is the first replica (the preferred leader).
    assert choose_replicas(alive, leading, holding, 2, "n2") == (("n2", "n3"), ())
    # More than the live nodes: capped, with a warning naming what was placed.
    chosen, warnings = choose_replicas(["n1", "n2"], {}, {}, 3)
    assert chosen == ("n1", "n2")
    (warning,) = warnings
    assert "asked for 3 replicas but only 2 node(s) are live" in warning
    with pytest.raises(NotFoundError):
        choose_replicas(alive, {}, {}, 2, "n9")
    with pytest.raises(FailedPreconditionError):
        choose_replicas([], {}, {}, 1)
    with pytest.raises(InvalidArgumentError):
        choose_replicas(alive, {}, {}, 0)


def test_overlapping_ranges_are_refused() -> None:
    taken = [(KeyRange(b"a", b"m"), "p1"), (KeyRange(b"m", None), "p2")]
    check_free(KeyRange(b"", b"a"), taken)
    with pytest.raises(AlreadyExistsError, match="p1"):
        check_free(KeyRange(b"", b"b"), taken)
    with pytest.raises(AlreadyExistsError, match="p2"):
        check_free(KeyRange(b"z", None), taken)


# -- the view ----------------------------------------------------------------------


def test_the_view_routes_to_leaders_and_knows_its_own() -> None:
    view = view_of(
        KV(KEYS.node("n1"), node("n1", 10).encode(), lease=7),
        KV(KEYS.node("n2"), node("n2", 20).encode(), lease=8),
        KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode(), mod_revision=3),
        KV(KEYS.partition("b"), part("b", KeyRange(b"m", None), ("n2",)).encode()),
        KV(KEYS.leader("a"), LeaderRecord("n1").encode(), create_revision=5, lease=7),
        KV(KEYS.leader("b"), LeaderRecord("n2").encode(), create_revision=6, lease=8),
        KV(KEYS.placement, b"{}", mod_revision=4),
    )
    routing = view.routing("n1", 7)
    assert routing.version == 10
    assert routing.router.lookup(b"z") == "b"
    assert routing.owners["b"] == (KeyRange(b"m", None), "h:20")
    assert routing.mine == {"a": 5}
    # The same node under another lease (an earlier run) leads nothing here,
    # and does not send clients to itself.
    assert view.routing("n1", 99).mine == {}
    assert view.routing("n1", 99).owners["a"][1] == ""
    assert view.routing("n2", 99).owners["a"][1] == "h:10"
    assert view.placement_revision == 4
    view.delete(KEYS.node("n2"))
    assert view.routing("n1", 7).owners["b"][1] == ""  # its node is gone


def test_a_bad_value_is_neither_served_nor_taken_for_removed() -> None:
    view = view_of(
        KV(KEYS.partition("a"), part("a").encode()),
        KV(KEYS.partition("b"), b"garbage"),
        KV(KEYS.leader("a"), b"garbage", create_revision=5, lease=7),
        KV(b"/mkv/t/unknown", b"x"),
    )
    assert "b" in view.bad
    assert "b" not in view.partitions
    # An unreadable leader key still holds the leadership: nobody campaigns.
    assert view.leaders["a"].node == ""
    local = {"a": WHOLE, "b": KeyRange(b"x", None)}
    actions = reconcile(view, "n1", 7, local, {"a", "b"})
    assert actions == []


def test_overlapping_records_are_not_routed() -> None:
    view = view_of(
        KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode()),
        KV(KEYS.partition("b"), part("b", KeyRange(b"k", None)).encode()),
    )
    routing = view.routing("n1", 1)
    assert [pid for _, pid in routing.router.ranges] == ["a"]


# -- reconcile --------------------------------------------------------------------------


def test_reconcile_creates_then_campaigns() -> None:
    new = attrs.evolve(part("a"), state="new")
    view = view_of(KV(KEYS.partition("a"), new.encode(), mod_revision=3))
    assert reconcile(view, "n1", 7, {}, set()) == [Create(new)]
    assert reconcile(view, "n1", 7, {"a": WHOLE}, {"a"}) == [Campaign("a", 3)]
    # Without a valid lease it opens what is assigned but campaigns for nothing.
    assert reconcile(view, "n1", 0, {"a": WHOLE}, {"a"}) == []
    # Not a replica: nothing to do.
    assert reconcile(view, "n2", 7, {}, set()) == []


def test_a_partition_led_before_is_never_started_empty() -> None:
    """etcd says this node holds "a", which has been led (it has data), but
    this disk has no copy: a lost or different data directory."""
    view = view_of(KV(KEYS.partition("a"), part("a").encode()))
    (blocked,) = reconcile(view, "n1", 7, {}, set())
    assert isinstance(blocked, Blocked)
    assert "not on this disk" in blocked.reason


def test_reconcile_revokes_a_lease_of_an_earlier_run() -> None:
    view = view_of(
        KV(KEYS.partition("a"), part("a").encode()),
        KV(KEYS.partition("b"), part("b", KeyRange(b"", b"a")).encode()),
        KV(KEYS.leader("a"), LeaderRecord("n1").encode(), lease=3),
    )
    actions = reconcile(view, "n1", 7, {"a": WHOLE}, {"a"})
    assert RevokeStale(3) in actions
    assert reconcile(view, "n1", 3, {"a": WHOLE}, {"a"}) == [
        Blocked("b", "its range ['', a) overlaps local ['a']")
    ]


def test_reconcile_deletes_only_what_it_saw_assigned_here() -> None:
    view = view_of(KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode()))
    local = {"a": KeyRange(b"", b"m"), "old": KeyRange(b"m", None)}
    assert reconcile(view, "n1", 7, local, {"a", "old"}) == [
        Campaign("a", 1),
        Delete("old", "removed from the cluster"),
    ]
    # Never seen in this cluster (a wrong --cluster?): kept, and said so.
    (blocked,) = [a for a in reconcile(view, "n1", 7, local, {"a"}) if a != Campaign("a", 1)]
    assert isinstance(blocked, Blocked)
    assert blocked.partition_id == "old"
    # A local copy whose range differs from etcd's is not served.
    (mismatch,) = reconcile(view, "n1", 7, {"a": WHOLE}, {"a"})
    assert isinstance(mismatch, Blocked)


def test_reconcile_leaves_a_running_move_alone() -> None:
    """A move decides what becomes of what it hands in or out: the source's
    fenced (or moved-away) copy, which etcd may already assign elsewhere, is
    not deleted under it; the target's held copy, which etcd does not name
    here yet, is neither deleted nor led before the move serves it."""
    elsewhere = view_of(KV(KEYS.partition("a"), part("a", replicas=("n2",)).encode()))
    assert reconcile(elsewhere, "n1", 7, {"a": WHOLE}, {"a"}) == [
        Delete("a", "assigned to other nodes")
    ]
    assert reconcile(elsewhere, "n1", 7, {"a": WHOLE}, {"a"}, moving={"a"}) == []
    # The target: its held copy, in a move running here, with etcd naming it already.
    here = view_of(KV(KEYS.partition("a"), part("a").encode(), mod_revision=5))
    assert reconcile(here, "n1", 7, {"a": WHOLE}, {"a"}, {"a"}, {"a"}) == []


def test_a_held_copy_left_by_a_restart_is_adopted_or_deleted_as_etcd_says() -> None:
    """After a restart no move runs: a copy whose move switched ownership in
    etcd is served (then led); one whose move did not is deleted."""
    here = view_of(KV(KEYS.partition("a"), part("a").encode(), mod_revision=5))
    assert reconcile(here, "n1", 7, {"a": WHOLE}, set(), copies={"a"}) == [Adopt("a")]
    there = view_of(KV(KEYS.partition("a"), part("a", replicas=("n2",)).encode()))
    assert reconcile(there, "n1", 7, {"a": WHOLE}, set(), copies={"a"}) == [
        Delete("a", "a move's copy the cluster did not switch to")
    ]


# -- reconcile with replicas (issue 16) ---------------------------------------------

R3 = ("n1", "n2", "n3")


def replicated_view(
    *,
    leader: tuple[str, int, int] | None = ("n1", 20, 8),
    isr: tuple[str, ...] = R3,
    state: str = "active",
    alive: tuple[str, ...] = R3,
) -> ClusterView:
    """Partition "a" on n1, n2, n3; ``leader`` = (node, epoch, lease) or None."""
    record = PartitionRecord("a", WHOLE, "sqlite", ("timestamp", "wal"), R3, state, isr)
    kvs = [KV(KEYS.partition("a"), record.encode(), mod_revision=9)]
    kvs += [KV(KEYS.node(n), node(n, 10 * (i + 1)).encode()) for i, n in enumerate(alive)]
    if leader is not None:
        who, epoch, lease = leader
        kvs.append(KV(KEYS.leader("a"), LeaderRecord(who).encode(), epoch, epoch, lease))
    return view_of(*kvs)


def ref(who: str, epoch: int) -> LeaderRef:
    port = 10 * (int(who[1:])) + 1  # node()'s control port
    return LeaderRef(who, parse_address(f"h:{port}"), epoch)


def facts(lease: int = 7, **kwargs: object) -> ReplicaFacts:
    told = {"told_isr": {"a": (R3, R3)}, "told_leader": {"a": ref("n1", 20)}}
    return ReplicaFacts(lease, **{**told, **kwargs})  # type: ignore[arg-type]


def test_replicas_open_as_followers_and_are_told_their_leader() -> None:
    view = replicated_view()
    record = view.partitions["a"].record
    # No copy here yet, and named in sync (a lost disk): it leaves the ISR
    # first, so that it can never be elected empty...
    assert reconcile(view, "n2", 7, {}, set(), replicas=facts()) == [
        LeaveIsr("a", 9, record.with_isr(("n1", "n3")))
    ]
    # ...then, out of it, a follower of n1 at epoch 20 (an empty follower of
    # an active partition catches up from the leader; it is not refused).
    out = replicated_view(isr=("n1", "n3"))
    assert reconcile(out, "n2", 7, {}, set(), replicas=facts()) == [
        OpenFollower(out.partitions["a"].record, ref("n1", 20))
    ]
    # The only in-sync replica with no copy: nobody has the data to follow.
    alone = replicated_view(isr=("n2",))
    (blocked,) = reconcile(alone, "n2", 7, {}, set(), replicas=facts())
    assert isinstance(blocked, Blocked)
    assert "only in-sync replica" in blocked.reason
    # Open, and told nothing yet: its ISR and its leader.
    assert reconcile(view, "n2", 7, {"a": WHOLE}, {"a"}, replicas=ReplicaFacts(7)) == [
        SetIsr("a", R3, R3),
        SetLeader("a", ref("n1", 20)),
    ]
    # Told already: nothing to do; a follower never campaigns while n1 leads.
    assert reconcile(view, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == []
    # A new leader (another node, or the same at a new epoch) is told at once.
    moved = replicated_view(leader=("n3", 31, 9))
    assert reconcile(moved, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == [
        SetLeader("a", ref("n3", 31))
    ]
    # The ISR changed in etcd: told too.
    shrunk = replicated_view(isr=("n1", "n3"))
    assert reconcile(shrunk, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == [
        SetIsr("a", R3, ("n1", "n3"))
    ]


def test_a_replica_campaigns_only_from_the_isr() -> None:
    nobody = replicated_view(leader=None)
    # In sync, nobody leads: it campaigns (and stops following n1, gone).
    assert reconcile(nobody, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == [
        Campaign("a", 9),
        SetLeader("a", None),
    ]
    # Not in the ISR: it may lack acknowledged writes, so it never campaigns.
    out = replicated_view(leader=None, isr=("n1", "n3"))
    told = facts(told_isr={"a": (R3, ("n1", "n3"))}, told_leader={"a": None})
    assert reconcile(out, "n2", 7, {"a": WHOLE}, {"a"}, replicas=told) == []
    assert reconcile(out, "n3", 7, {"a": WHOLE}, {"a"}, replicas=told) == [Campaign("a", 9)]
    # Past its lease deadline (lease 0 here): no campaign.
    assert reconcile(nobody, "n2", 0, {"a": WHOLE}, {"a"}, replicas=facts()) == [
        SetLeader("a", None)
    ]
    # A partition never led: its preferred leader (n1) campaigns while alive...
    new = replicated_view(leader=None, state="new")
    idle = facts(told_leader={"a": None})
    assert reconcile(new, "n2", 7, {"a": WHOLE}, {"a"}, replicas=idle) == []
    assert reconcile(new, "n1", 7, {"a": WHOLE}, {"a"}, replicas=idle) == [Campaign("a", 9)]
    # ...and any in-sync replica once it is gone.
    orphan = replicated_view(leader=None, state="new", alive=("n2", "n3"))
    assert reconcile(orphan, "n2", 7, {"a": WHOLE}, {"a"}, replicas=idle) == [Campaign("a", 9)]


def test_a_replica_leads_once_the_key_is_its_own_and_steps_down_once_it_is_not() -> None:
    mine = replicated_view(leader=("n2", 40, 7))
    # Its key (under the lease it holds) and it does not lead yet: promote it.
    assert reconcile(mine, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == [
        Lead("a", 40, R3, R3)
    ]
    # Promoting (lead runs) or serving: nothing more.
    leading = facts(leading={"a"})
    assert reconcile(mine, "n2", 7, {"a": WHOLE}, {"a"}, replicas=leading) == []
    serving = facts(roles={"a": "leader"})
    assert reconcile(mine, "n2", 7, {"a": WHOLE}, {"a"}, replicas=serving) == []
    # Past the lease deadline, its key still there: neither promoted nor
    # stepped down (the data path stops serving on its own clock).
    assert reconcile(mine, "n2", 0, {"a": WHOLE}, {"a"}, replicas=facts()) == []
    assert reconcile(mine, "n2", 0, {"a": WHOLE}, {"a"}, replicas=serving) == []
    # The key is another node's: step down and follow it.
    theirs = replicated_view(leader=("n3", 41, 9))
    assert reconcile(theirs, "n2", 7, {"a": WHOLE}, {"a"}, replicas=serving) == [
        StepDown("a", ref("n3", 41))
    ]
    assert reconcile(theirs, "n2", 7, {"a": WHOLE}, {"a"}, replicas=leading) == [
        StepDown("a", ref("n3", 41))
    ]
    # The key is gone (its lease lapsed): step down, follow nobody yet.
    gone = replicated_view(leader=None)
    assert reconcile(gone, "n2", 7, {"a": WHOLE}, {"a"}, replicas=serving) == [StepDown("a", None)]
    # The key is this node's under a lease it lost: not its own any more.
    stale = replicated_view(leader=("n2", 40, 3))
    assert reconcile(stale, "n2", 7, {"a": WHOLE}, {"a"}, replicas=serving) == [
        StepDown("a", ref("n2", 40))
    ]
    assert reconcile(stale, "n2", 7, {"a": WHOLE}, {"a"}, replicas=facts()) == [RevokeStale(3)]


def test_without_the_data_path_only_the_first_replica_acts() -> None:
    """Before the replica data path exists, a record of three replicas is
    served by its first alone (as R = 1); the others neither open nor
    campaign for it, so an empty copy can never be elected."""
    view = replicated_view(leader=None, state="new")
    record = view.partitions["a"].record
    assert reconcile(view, "n1", 7, {}, set()) == [Create(record)]
    assert reconcile(view, "n1", 7, {"a": WHOLE}, {"a"}) == [Campaign("a", 9)]
    assert reconcile(view, "n2", 7, {}, set()) == []
    assert reconcile(view, "n2", 7, {"a": WHOLE}, {"a"}) == []


# -- the node id ---------------------------------------------------------------------------


def test_the_node_id_is_made_once_and_kept(tmp_path: Path) -> None:
    made = load_node_id(tmp_path / "d", None)
    assert made.startswith("n-")
    assert len(made) == 10
    assert load_node_id(tmp_path / "d", None) == made
    assert load_node_id(tmp_path / "d", made) == made
    with pytest.raises(ConfigError, match="differs"):
        load_node_id(tmp_path / "d", "other")
    assert load_node_id(tmp_path / "e", "chosen") == "chosen"
    with pytest.raises(ConfigError):
        load_node_id(tmp_path / "f", "no/slash")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "node-id").write_text("../../etc\n")
    with pytest.raises(ConfigError):
        load_node_id(tmp_path / "g", None)


# -- settings ------------------------------------------------------------------------------


def test_the_cluster_table_of_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mkv.toml"
    path.write_text(
        '[cluster]\netcd = ["http://a:2379", "http://b:2379"]\nname = "prod"\n'
        'advertise_addr = "10.0.0.7"\nlease_ttl = 3\n'
    )
    config = Config.load(path)
    assert config.clustered
    assert config.etcd == ("http://a:2379", "http://b:2379")
    assert (config.cluster, config.advertise_addr, config.lease_ttl) == ("prod", "10.0.0.7", 3)
    # Flags win over the file.
    assert Config.load(path, cluster="other").cluster == "other"
    assert not Config.load().clustered
    path.write_text('[cluster]\nnmae = "typo"\n')
    with pytest.raises(ConfigError, match="nmae"):
        Config.load(path)
    path.write_text('[cluster]\nname = "a/b"\n')
    with pytest.raises(ConfigError, match="cluster"):
        Config.load(path)


def test_the_replica_settings_have_defaults_and_are_checked(tmp_path: Path) -> None:
    config = Config.load()
    assert (config.replicas, config.effective_min_isr, config.replicate) == (3, 2, "sync")
    assert (config.replica_lag_timeout, config.node_dead_timeout) == (10.0, 60.0)
    assert Config.load(replicas=2).effective_min_isr == 1
    path = tmp_path / "mkv.toml"
    path.write_text(
        '[cluster]\netcd = "http://a:2379"\nreplicas = 5\nmin_isr = 3\n'
        'replica_lag_timeout = 2.5\nnode_dead_timeout = 30\nreplicate = "async"\n'
    )
    config = Config.load(path)
    assert (config.replicas, config.effective_min_isr, config.replicate) == (5, 3, "async")
    assert (config.replica_lag_timeout, config.node_dead_timeout) == (2.5, 30)
    for bad, match in (
        ({"replicas": 0}, "replicas must be a whole number, 1 or more"),
        ({"replicas": 3, "min_isr": 4}, r"min_isr \(4\) must not exceed replicas \(3\)"),
        ({"min_isr": 0}, "min_isr must be a whole number"),
        ({"replica_lag_timeout": 0}, "replica_lag_timeout must be a number of seconds"),
        ({"node_dead_timeout": -1}, "node_dead_timeout must be a number of seconds"),
        ({"replicate": "quorum"}, "replicate must be one of sync, async, not 'quorum'"),
    ):
        with pytest.raises(ConfigError, match=match):
            Config.load(**bad)


def test_the_cluster_pipeline_replicates_after_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # On since the replica data path is merged (the switch can turn it off).
    assert cluster_pipeline(("timestamp", "wal"), "sync") == ("timestamp", "wal", "replicate:sync")
    monkeypatch.setattr(cluster_local, "REPLICATE_STAGE", False)
    assert cluster_pipeline(("timestamp", "wal"), "sync") == ("timestamp", "wal")
    monkeypatch.setattr(cluster_local, "REPLICATE_STAGE", True)
    assert cluster_pipeline(("timestamp", "wal:always", "x"), "async") == (
        "timestamp",
        "wal:always",
        "replicate:async",
        "x",
    )
    assert cluster_pipeline(("timestamp",), "sync") == ("timestamp",)  # no log to ship
    already = ("wal", "replicate:async")
    assert cluster_pipeline(already, "sync") == already


def test_reconcile_publishes_a_split_committed_only_on_this_disk() -> None:
    view = view_of(
        KV(KEYS.partition("a"), part("a").encode(), mod_revision=3),
        KV(KEYS.leader("a"), LeaderRecord("n1").encode(), create_revision=4, lease=7),
    )
    local = {"a": KeyRange(b"", b"m"), "b": KeyRange(b"m", None)}
    assert reconcile(view, "n1", 7, local, {"a"}) == [
        PublishSplit("a", KeyRange(b"", b"m"), "b", KeyRange(b"m", None))
    ]
    # Not while it does not lead the parent under its lease: nor is b taken
    # for a stranger to report, or anything deleted.
    assert reconcile(view, "n1", 0, local, {"a"}) == []
    # A local copy that is not the lower part of etcd's range is no split.
    odd = {"a": KeyRange(b"c", b"m"), "b": KeyRange(b"m", None)}
    assert [type(a) for a in reconcile(view, "n1", 7, odd, {"a"})] == [Blocked, Blocked]


def test_after_a_restart_it_leads_the_parent_before_publishing() -> None:
    """The earlier run's lease was revoked, so no leader key: it campaigns
    for the record it holds every key of, and publishes once it leads."""
    view = view_of(KV(KEYS.partition("a"), part("a").encode(), mod_revision=3))
    local = {"a": KeyRange(b"", b"m"), "b": KeyRange(b"m", None)}
    assert reconcile(view, "n1", 7, local, {"a"}) == [Campaign("a", 3)]


def test_reconcile_publishes_a_merge_committed_only_on_this_disk() -> None:
    view = view_of(
        KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode(), mod_revision=3),
        KV(KEYS.partition("b"), part("b", KeyRange(b"m", None)).encode(), mod_revision=4),
        KV(KEYS.leader("a"), LeaderRecord("n1").encode(), create_revision=5, lease=7),
    )
    local = {"a": WHOLE}
    # b is neither created (it is inside a) nor reported; a's merge is published.
    assert reconcile(view, "n1", 7, local, {"a", "b"}) == [PublishMerge("a", WHOLE, "b")]
    # Not led yet (after a restart): it campaigns for a first.
    fresh = view_of(
        KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode(), mod_revision=3),
        KV(KEYS.partition("b"), part("b", KeyRange(b"m", None)).encode(), mod_revision=4),
    )
    assert reconcile(fresh, "n1", 7, local, {"a", "b"}) == [Campaign("a", 3)]
    # b assigned to another node: no merge of this node's making.
    other = view_of(
        KV(KEYS.partition("a"), part("a", KeyRange(b"", b"m")).encode()),
        KV(KEYS.partition("b"), part("b", KeyRange(b"m", None), ("n2",)).encode()),
    )
    assert [type(a) for a in reconcile(other, "n1", 7, local, {"a"})] == [Blocked]
    # Others must be told where this node is: not a wildcard address.
    with pytest.raises(ValueError, match="wildcard"):
        Config(etcd=("http://a:2379",), data_addr="0.0.0.0:7070")
    Config(etcd=("http://a:2379",), data_addr="0.0.0.0:7070", advertise_addr="10.0.0.7")
    Config(data_addr="0.0.0.0:7070")  # a single node: as before


def test_files_set_aside_are_deleted_after_the_grace(tmp_path: Path) -> None:
    registry = PartitionRegistry(tmp_path)
    kept = tmp_path / ".removed" / "c.20260101T000000"
    kept.mkdir(parents=True)
    (kept / "data").write_bytes(b"x")
    assert registry.purge_removed(3600) == []
    assert kept.exists()
    old = time.time() - 7200
    os.utime(kept, (old, old))
    assert registry.purge_removed(3600) == ["c.20260101T000000"]
    assert not kept.exists()


def test_a_replica_being_promoted_is_not_taken_for_a_missing_copy() -> None:
    """While ``lead`` reopens a follower's files as the leader's, the registry
    holds neither for a moment: reconcile must not take that for a lost
    copy (leaving the ISR, opening an empty follower over its files)."""
    mine = replicated_view(leader=("n2", 40, 7))
    assert reconcile(mine, "n2", 7, {}, {"a"}, replicas=facts(leading={"a"})) == []
    assert reconcile(mine, "n2", 7, {}, {"a"}, replicas=facts(roles={"a": "leader"})) == []
    # Not being promoted: a copy missing here is one (it leaves the ISR first).
    (leave,) = reconcile(mine, "n2", 7, {}, {"a"}, replicas=facts())
    assert isinstance(leave, LeaveIsr)


def test_a_replica_found_on_disk_at_start_is_opened_not_taken_for_lost() -> None:
    """A replica's files found at start are dormant (not opened, so not
    "held"): reconcile opens them as a follower, even when it is the only
    replica or in the ISR, never calls them a lost copy. Mutation: drop the
    dormant case -> Blocked ("not on this disk") / LeaveIsr."""
    view = replicated_view()
    record = view.partitions["a"].record
    opened = reconcile(view, "n2", 7, {}, {"a"}, replicas=facts(dormant={"a"}))
    assert opened == [OpenFollower(record, ref("n1", 20))]


def test_a_promotion_not_yet_read_back_is_neither_stepped_down_nor_campaigned() -> None:
    """Right after this node won the election its view may not show the new
    leader key yet, while ``lead`` runs: stepping down then would drop the
    leadership it just won (and its files, for a moment). Mutation: step down
    whenever a leading partition's key is not ours -> StepDown."""
    unread = replicated_view(leader=None)
    held = {"a": WHOLE}
    assert reconcile(unread, "n2", 7, held, {"a"}, replicas=facts(leading={"a"})) == []
    # Once it serves, a key that is gone is a reason to step down.
    (down,) = reconcile(unread, "n2", 7, held, {"a"}, replicas=facts(roles={"a": "leader"}))
    assert isinstance(down, StepDown)
