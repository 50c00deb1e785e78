"""The client's routing core without a network (mkv.client.nodes): seeds,
the seed's own address in a map, the routing table and the hints that patch
it, and the re-routing decisions (what is retried, how long, after what).

The real-server side (several seeds, a lost connection, a node that goes
away) is in tests/test_routing.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from mkv.client.channel import NotSentError
from mkv.client.nodes import (
    FREE_HOPS,
    REROUTE_SECONDS,
    Nodes,
    Rerouting,
    RoutingTable,
    own_address,
    parse_seeds,
)
from mkv.errors import BadNodeError, UnavailableError
from mkv.router import KeyRange
from mkv.v1 import data_pb2 as pb
from mkv.wire import Address

A = Address("10.0.0.1", 7070)
B = Address("10.0.0.2", 7070)
C = Address("10.0.0.3", 7070)


def table(*ranges: tuple[str, bytes, bytes | None, str], version: int = 7) -> RoutingTable:
    return RoutingTable.from_map(
        ((pid, KeyRange(start, end), address) for pid, start, end, address in ranges), version
    )


def owner(pid: str, start: bytes, end: bytes, address: Address | str) -> pb.PartitionRange:
    return pb.PartitionRange(id=pid, start=start, end=end, address=str(address))


def where(t: RoutingTable, key: bytes) -> tuple[str, Address | None] | None:
    route = t.lookup(key)
    return None if route is None else (route.partition_id, route.address)


# -- seeds ---------------------------------------------------------------------


def test_seeds_are_addresses_or_comma_separated_strings_each_once() -> None:
    assert parse_seeds(["h1:7070,h2:7071", Address("h3", 1), " h2:7071 ", "[::1]:9"]) == [
        Address("h1", 7070),
        Address("h2", 7071),
        Address("h3", 1),
        Address("::1", 9),
    ]
    assert parse_seeds([]) == [Address("127.0.0.1", 7070)]
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_seeds(["h1:7070,nonsense"])


def test_the_seeds_own_entry_is_recognised_when_spelled_otherwise() -> None:
    dialled = Address("localhost", 7001)
    # Spelled the same: nothing to alias.
    assert own_address(Address("10.0.0.1", 7070), ["10.0.0.1:7070", "10.0.0.2:7070"]) is None
    # A single node: its only address is its own, whatever it advertises.
    assert own_address(Address("db.example", 7070), ["0.0.0.0:7070", "", "0.0.0.0:7070"]) == (
        "0.0.0.0:7070"
    )
    # Several nodes on one machine: the loopback one on the dialled port.
    assert own_address(dialled, ["127.0.0.1:7001", "127.0.0.1:7002"]) == "127.0.0.1:7001"
    # A wildcard bind on the dialled port.
    assert own_address(Address("db1", 7070), ["0.0.0.0:7070", "10.0.0.2:7071"]) == "0.0.0.0:7070"
    # Cannot be told: the map's addresses are used as they are.
    assert own_address(Address("db1", 7070), ["10.0.0.1:7070", "10.0.0.2:7070"]) is None
    assert own_address(dialled, []) is None


# -- the table -----------------------------------------------------------------


def test_the_table_routes_each_key_to_its_partitions_node() -> None:
    t = table(
        ("a", b"", b"g", str(A)),
        ("b", b"g", b"p", str(B)),
        ("c", b"p", None, ""),
    )
    assert where(t, b"apple") == ("a", A)
    assert where(t, b"g") == ("b", B)
    assert where(t, b"zebra") == ("c", None)  # no node leads it now
    assert t.addresses == [A, B]
    assert t.version == 7


def test_aliases_replace_an_advertised_address_with_the_dialled_one() -> None:
    proxy = Address("127.0.0.1", 9999)
    t = RoutingTable.from_map(
        [("a", KeyRange(b"", None), "0.0.0.0:7070")], 1, aliases={"0.0.0.0:7070": proxy}
    )
    assert where(t, b"k") == ("a", proxy)


def test_a_hint_moves_a_partition_to_another_node_at_once() -> None:
    t = table(("a", b"", b"m", str(A)), ("b", b"m", None, str(A)))
    moved = t.with_owner(owner("b", b"m", b"", B))
    assert where(moved, b"x") == ("b", B)
    assert where(moved, b"c") == ("a", A)
    # The map's version stays: a patched table is not the newer map.
    assert moved.version == t.version


def test_a_hint_after_a_split_cuts_the_parent_back() -> None:
    t = table(("p", b"a", None, str(A)))
    # The child q took [m, ∞) from p.
    split = t.with_owner(owner("q", b"m", b"", B))
    assert where(split, b"b") == ("p", A)
    assert where(split, b"z") == ("q", B)
    # The parent named by a hint with its shrunk range: its old range goes,
    # and keys it no longer covers are left to a refresh.
    shrunk = t.with_owner(owner("p", b"a", b"m", A))
    assert where(shrunk, b"b") == ("p", A)
    assert where(shrunk, b"z") is None


def test_a_hint_inside_a_range_leaves_both_sides_routed() -> None:
    t = table(("p", b"", None, str(A)))
    t2 = t.with_owner(owner("q", b"f", b"k", B))
    assert where(t2, b"a") == ("p", A)
    assert where(t2, b"g") == ("q", B)
    assert where(t2, b"z") == ("p", A)


def test_a_hint_after_a_merge_covers_both_ranges() -> None:
    t = table(("l", b"", b"m", str(A)), ("r", b"m", None, str(B)))
    merged = t.with_owner(owner("l", b"", b"", C))
    assert where(merged, b"a") == ("l", C)
    assert where(merged, b"z") == ("l", C)
    assert len(merged.router.ranges) == 1


def test_a_broken_map_is_refused() -> None:
    response = pb.PartitionMapResponse(
        version=1,
        partitions=[
            pb.PartitionRange(id="a", start=b"", end=b"m", address=str(A)),
            pb.PartitionRange(id="b", start=b"k", end=b"", address=str(B)),
        ],
    )
    with pytest.raises(Exception, match="overlaps"):
        RoutingTable.from_response(response)
    bad_address = pb.PartitionMapResponse(
        partitions=[pb.PartitionRange(id="a", start=b"", end=b"", address="no-port")]
    )
    with pytest.raises(ValueError, match="HOST:PORT"):
        RoutingTable.from_response(bad_address)


# -- re-routing decisions --------------------------------------------------------


class Cluster:
    """What Rerouting asks of ``Nodes``, answered from a script of tables:
    each refresh takes the next one (the last repeats), and every refresh
    is recorded with whom it preferred and avoided."""

    def __init__(self, tables: Sequence[RoutingTable]) -> None:
        self._tables = list(tables)
        self.table: RoutingTable | None = self._tables.pop(0)
        self.refreshes: list[tuple[Address | None, Address | None]] = []
        self.stale: list[Address] = []
        self.hints: list[pb.RoutingHint] = []

    async def refresh(
        self, *, prefer: Address | None = None, avoid: Address | None = None
    ) -> RoutingTable:
        self.refreshes.append((prefer, avoid))
        if self._tables:
            self.table = self._tables.pop(0)
        assert self.table is not None
        return self.table

    def mark_stale(self, address: Address) -> None:
        self.stale.append(address)

    def follow(self, hint: pb.RoutingHint, refused_by: Address | None = None) -> bool:
        assert self.table is not None
        if not hint.HasField("owner") or not hint.owner.address:
            return False
        self.hints.append(hint)
        self.table = self.table.with_owner(hint.owner)
        return True


def rerouting(cluster: Cluster, *, read: bool) -> Rerouting:
    return Rerouting(cluster, read=read)  # type: ignore[arg-type]  # Nodes' protocol


ONE = table(("p", b"", None, str(A)), version=1)
MOVED = table(("p", b"", None, str(B)), version=2)


async def test_a_hint_is_followed_without_a_refresh_or_a_pause(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster = Cluster([ONE])
    decide = rerouting(cluster, read=False)
    start = trio.current_time()
    await decide.bad_node(A, pb.RoutingHint(owner=owner("p", b"", b"", B)))
    assert cluster.refreshes == []
    assert trio.current_time() == start
    assert cluster.table is not None
    assert where(cluster.table, b"k") == ("p", B)


async def test_hints_going_back_and_forth_are_followed_a_few_times_then_paced(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster = Cluster([ONE])
    decide = rerouting(cluster, read=False)
    start = trio.current_time()
    for hop in range(FREE_HOPS + 4):
        target = B if hop % 2 == 0 else A
        await decide.bad_node(A, pb.RoutingHint(owner=owner("p", b"", b"", target)))
    # The free hops cost nothing; the rest refreshed and backed off.
    assert len(cluster.refreshes) == 4
    assert trio.current_time() - start >= 0.005 + 0.01 + 0.02 + 0.04


async def test_bad_node_without_a_hint_refreshes_from_the_node_that_refused() -> None:
    cluster = Cluster([ONE, MOVED])
    await rerouting(cluster, read=False).bad_node(A, pb.RoutingHint(message="not here"))
    assert cluster.refreshes == [(A, None)]


async def test_bad_node_backs_off_while_the_map_stands_still_then_gives_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster = Cluster([ONE])
    decide = rerouting(cluster, read=False)
    start = trio.current_time()
    pauses = []

    async def refused_until_it_gives_up() -> None:
        while True:
            before = trio.current_time()
            await decide.bad_node(A, pb.RoutingHint(message="not here"))
            pauses.append(trio.current_time() - before)

    with pytest.raises(BadNodeError, match="not here"):
        await refused_until_it_gives_up()
    assert pauses[:5] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert max(pauses) == pytest.approx(0.1)
    assert REROUTE_SECONDS <= trio.current_time() - start < REROUTE_SECONDS + 0.2


async def test_a_read_is_retried_after_unavailable_avoiding_that_node() -> None:
    cluster = Cluster([ONE, MOVED])
    lost = UnavailableError("Lost the connection; the outcome of this call is unknown.")
    await rerouting(cluster, read=True).unavailable(A, lost)
    assert cluster.refreshes == [(None, A)]
    assert cluster.stale == [A]


async def test_a_write_sent_on_a_broken_connection_is_not_retried() -> None:
    cluster = Cluster([ONE, MOVED])
    lost = UnavailableError("Lost the connection; the outcome of this call is unknown.")
    with pytest.raises(UnavailableError) as raised:
        await rerouting(cluster, read=False).unavailable(A, lost)
    assert raised.value is lost
    # Not retried, but the next call refreshes the map first.
    assert cluster.refreshes == []
    assert cluster.stale == [A]


async def test_a_write_that_was_never_sent_is_retried_elsewhere() -> None:
    cluster = Cluster([ONE, MOVED])
    await rerouting(cluster, read=False).unavailable(A, NotSentError("Cannot connect."))
    assert cluster.refreshes == [(None, A)]


async def test_a_read_gives_up_when_no_node_answers_for_long(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster = Cluster([ONE])
    decide = rerouting(cluster, read=True)
    lost = UnavailableError("gone")
    start = trio.current_time()

    async def lost_until_it_gives_up() -> None:
        while True:
            await decide.unavailable(A, lost)

    with pytest.raises(UnavailableError, match="gone"):
        await lost_until_it_gives_up()
    assert REROUTE_SECONDS <= trio.current_time() - start < REROUTE_SECONDS + 0.2


async def test_a_partition_no_node_leads_is_waited_for(autojump_clock: trio.abc.Clock) -> None:
    leaderless = table(("p", b"", None, ""), version=3)

    class Pool:
        def channel(self, address: Address) -> Address:
            return address

    class Waiting(Cluster):
        pool = Pool()

        async def route(self, key: bytes) -> object:
            assert self.table is not None
            return self.table.lookup(key)

    cluster = Waiting([leaderless, leaderless, leaderless, MOVED])
    got: object = await rerouting(cluster, read=False).channel(b"k")
    assert got == B
    assert len(cluster.refreshes) == 3

    stuck = Waiting([leaderless])
    with pytest.raises(UnavailableError, match="No node leads partition p"):
        await rerouting(stuck, read=False).channel(b"k")


def test_an_address_taken_for_the_seeds_own_is_dropped_when_the_seed_names_it_as_another() -> None:
    """A seed that leads nothing sees one address in its map, another node's:
    taken at first for its own (as a single node's would be), it is dropped
    as soon as the seed refuses and names that address as the owner."""
    seed = Address("127.0.0.1", 7001)
    nodes = Nodes(None, [seed])  # type: ignore[arg-type]  # no connections needed here
    other = "127.0.0.1:7002"
    response = pb.PartitionMapResponse(
        version=4, partitions=[pb.PartitionRange(id="p", start=b"", end=b"", address=other)]
    )
    table = nodes._install(seed, response)
    assert where(table, b"k") == ("p", seed)
    assert nodes.follow(pb.RoutingHint(owner=owner("p", b"", b"", other)), seed)
    assert nodes.table is not None
    assert where(nodes.table, b"k") == ("p", Address("127.0.0.1", 7002))
    # A later map from the seed does not bring the mistake back.
    assert where(nodes._install(seed, response), b"k") == ("p", Address("127.0.0.1", 7002))
    # A single node (its own address the only one) is still reached at the seed.
    single = Nodes(None, [seed])  # type: ignore[arg-type]
    assert where(single._install(seed, response), b"k") == ("p", seed)
