"""The client across many nodes: seeds, one connection per node, routing by owner.

``mkv.Client`` talks to a cluster through this module (issue 15, item 6):

- **Seeds.** ``parse_seeds`` turns what the caller gave (addresses, or one
  comma-separated string as a command line takes it) into the list of nodes
  to ask first; ``Nodes.open`` dials them in turn until one answers.
- **One connection per node.** ``NodePool`` keeps a ``Channel`` per node
  address, made on first use and closed with the client, so every call to a
  node shares one HTTP/2 connection however many partitions it leads.
- **The routing table.** ``RoutingTable`` (sans-I/O) is a ``PartitionMap``:
  each range's partition and the address of the node leading it (None while
  none does). A ``BAD_NODE`` hint naming the owner patches it at once
  (``with_owner``) without a round trip.
- **Refreshes.** ``Nodes.refresh`` asks the node that refused first (it knows
  the newest map), then every other node it knows, then the seeds; a node that
  broke or answered ``UNAVAILABLE`` is asked last (its view may be stale: it
  may be cut off from etcd).
- **Re-routing one request.** ``Rerouting`` decides, per request, whether to
  retry and how long to wait: a ``BAD_NODE`` (never applied) is retried for
  reads and writes alike; ``UNAVAILABLE`` or a lost connection only for reads
  and for writes that were certainly not sent (the node could not be dialled);
  a write whose connection broke after it was sent surfaces as
  ``UnavailableError`` saying its outcome is unknown.

Addresses in the map are what nodes advertise. The seed a client dialled may
be spelled differently from what it advertises (``localhost`` against
``127.0.0.1``, or a wildcard ``0.0.0.0`` a node bound without
``--advertise-addr``): ``own_address`` recognises the seed's own entry so that
the client keeps using the address that works for it (``docs/client.md``).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import attrs

from mkv.client.channel import Channel, NotSentError
from mkv.client.session import SessionMux
from mkv.client.unwrap import unwrap_single_exception
from mkv.errors import BadNodeError, MkvError, UnavailableError
from mkv.router import KeyRange, Router
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE as SERVICE
from mkv.wire import DEFAULT_DATA_ADDR, Address, is_loopback, parse_address

__all__ = [
    "REROUTE_SECONDS",
    "NodePool",
    "Nodes",
    "Rerouting",
    "Route",
    "RoutingTable",
    "own_address",
    "parse_seeds",
]

log = logging.getLogger("mkv.client")

# How long a request refused with BAD_NODE (or, for a read, UNAVAILABLE) is
# routed again while the map does not move. A split or merge refuses the
# moving range from the moment its cut-over is queued until the node
# publishes the new map (tens of milliseconds), and two splits in a row can
# each refuse once; a client that re-routed only once failed writes that a
# moment later went through (tests/test_split.py caught it under load).
REROUTE_SECONDS = 5.0
# Backoff between tries while the map has not moved: 5 ms doubling to 100 ms.
FIRST_BACKOFF = 0.005
MAX_BACKOFF = 0.1
# Hints followed at once, without a pause, before backing off: two nodes
# whose views disagree for a moment (a move cutting over) would otherwise
# send a request back and forth as fast as the network allows.
FREE_HOPS = 3
# A node asked for the map that says nothing for this long is skipped: a
# node cut off by the network answers nothing at all, not even a reset.
MAP_TIMEOUT = 2.0

NO_OWNER = "No partition on this node owns the key."


def parse_seeds(addresses: Iterable[str | Address]) -> list[Address]:
    """The seed addresses, in order, each once: a string may hold several,
    comma-separated (``"h1:7070,h2:7070"``, as a command line gives them).

    Raises:
        ValueError: an address is not ``HOST:PORT``.
    """
    seeds: list[Address] = []
    for given in addresses:
        if isinstance(given, Address):
            parsed = [given]
        else:
            parsed = [parse_address(part.strip()) for part in given.split(",") if part.strip()]
        for address in parsed:
            if address not in seeds:
                seeds.append(address)
    return seeds or [parse_address(DEFAULT_DATA_ADDR)]


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def own_address(dialled: Address, advertised: Iterable[str]) -> str | None:
    """Which of the map's node addresses is the node at ``dialled`` itself,
    when the map spells it differently; None when it is spelled the same (or
    cannot be told).

    The node's own entry is the only address in the map (a single node), or
    the one on the same port whose host is a wildcard (a node bound to
    ``0.0.0.0`` advertises that) or, like the dialled host, a loopback name.
    """
    addresses = {a for a in advertised if a}
    if str(dialled) in addresses:
        return None
    if len(addresses) == 1:
        return next(iter(addresses))
    same_port = []
    for text in addresses:
        try:
            address = parse_address(text)
        except ValueError:
            continue
        if address.port != dialled.port:
            continue
        if _unspecified(address.host) or (is_loopback(address.host) and is_loopback(dialled.host)):
            same_port.append(text)
    return same_port[0] if len(same_port) == 1 else None


@attrs.frozen
class Route:
    """Where a key goes: its partition, that partition's range, and the node
    leading it (None: no node leads it now)."""

    partition_id: str
    range: KeyRange
    address: Address | None


@attrs.frozen
class RoutingTable:
    """A client's partition map: ranges to partitions to node addresses.

    Immutable, like ``Router``: a request in flight keeps routing against
    one consistent table while a refresh replaces it.
    """

    router: Router
    routes: Mapping[str, Route]
    # The map's version as the node gave it (an etcd revision in cluster
    # mode). A hint patches the table but keeps the version: it is sent with
    # batches as the map they were split by, and a patched table is not
    # that newer map.
    version: int

    @classmethod
    def from_map(
        cls,
        ranges: Iterable[tuple[str, KeyRange, str]],
        version: int,
        *,
        aliases: Mapping[str, Address] | None = None,
    ) -> RoutingTable:
        """Build a table from ``(partition id, range, advertised address)``.

        Args:
            aliases: advertised addresses to dial at another address (the seed's own).

        Raises:
            AlreadyExistsError: two ranges overlap (a broken map).
            ValueError: an address is not ``HOST:PORT``.
        """
        routes = {
            pid: Route(pid, rng, _dial_address(address, aliases or {}))
            for pid, rng, address in ranges
        }
        router = Router.build(((r.range, pid) for pid, r in routes.items()), version=version)
        return cls(router, routes, version)

    @classmethod
    def from_response(
        cls, response: pb.PartitionMapResponse, *, aliases: Mapping[str, Address] | None = None
    ) -> RoutingTable:
        """Build a table from a node's ``PartitionMap`` answer.

        Raises:
            InvalidArgumentError, AlreadyExistsError, ValueError: the map is broken.
        """
        return cls.from_map(
            ((p.id, KeyRange.from_wire(p.start, p.end), p.address) for p in response.partitions),
            response.version,
            aliases=aliases,
        )

    def lookup(self, key: bytes) -> Route | None:
        """The route of ``key``; None when no partition owns it."""
        partition_id = self.router.lookup(key)
        return None if partition_id is None else self.routes[partition_id]

    @property
    def addresses(self) -> list[Address]:
        """The nodes leading a partition, each once, in key order."""
        found: dict[Address, None] = {}
        for _, pid in self.router.ranges:
            if (address := self.routes[pid].address) is not None:
                found[address] = None
        return list(found)

    def with_owner(
        self, owner: pb.PartitionRange, *, aliases: Mapping[str, Address] | None = None
    ) -> RoutingTable:
        """This table with a ``BAD_NODE`` hint's owner put in: its range goes to
        its partition at its address; ranges it overlaps are cut back to what
        lies outside it, and the partition's other range (it had one before a
        split or merge) is dropped, so the keys left unowned are looked up
        in a fresh map.

        Raises:
            InvalidArgumentError, ValueError: the hint is broken.
        """
        rng = KeyRange.from_wire(owner.start, owner.end)
        kept: list[Route] = []
        for route in self.routes.values():
            if route.partition_id == owner.id:
                continue
            if not route.range.overlaps(rng):
                kept.append(route)
                continue
            if route.range.start < rng.start:
                kept.append(attrs.evolve(route, range=KeyRange(route.range.start, rng.start)))
            if rng.end is not None and (route.range.end is None or rng.end < route.range.end):
                kept.append(attrs.evolve(route, range=KeyRange(rng.end, route.range.end)))
        # A partition cut on both sides keeps two pieces: give each its own
        # name in the table (routes are per name) while requests still carry
        # only keys, so the server sees no difference.
        routes: dict[str, Route] = {}
        for route in kept:
            name = route.partition_id
            while name in routes or name == owner.id:
                name += "'"
            routes[name] = route
        routes[owner.id] = Route(owner.id, rng, _dial_address(owner.address, aliases or {}))
        router = Router.build(((r.range, name) for name, r in routes.items()), self.version)
        return RoutingTable(router, routes, self.version)


def _dial_address(advertised: str, aliases: Mapping[str, Address]) -> Address | None:
    if not advertised:
        return None
    return aliases.get(advertised) or parse_address(advertised)


class NodePool:
    """One connection per node, by address, each with its own DataPlane
    Session for small calls (``mkv.client.session``): made on first use (a
    channel dials when first called), all closed together with the client."""

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
        sessions: bool = True,
    ) -> None:
        self._task_group = task_group
        self._metadata = tuple(metadata)
        self._ssl_context = ssl_context
        self._channels: dict[Address, Channel] = {}
        # None: small calls go as unary calls too (Client.connect(session=False)).
        self._sessions: dict[Address, SessionMux] | None = {} if sessions else None
        self._closed = False

    def channel(self, address: Address) -> Channel:
        """The connection to the node at ``address``.

        Raises:
            UnavailableError: the client is closed.
        """
        if self._closed:
            raise UnavailableError(f"The connection to mkv at {address} is closed.")
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = Channel(
                address,
                self._task_group,
                metadata=self._metadata,
                ssl_context=self._ssl_context,
            )
        return channel

    def session(self, address: Address) -> SessionMux | None:
        """The session multiplexer on the connection to ``address``; None
        when the client sends every call on its own.

        Raises:
            UnavailableError: the client is closed.
        """
        if self._sessions is None:
            return None
        mux = self._sessions.get(address)
        if mux is None:
            mux = self._sessions[address] = SessionMux(self.channel(address))
        return mux

    @property
    def session_requests(self) -> int:
        """Requests sent on sessions so far, over every node."""
        return sum(mux.sent for mux in (self._sessions or {}).values())

    @property
    def addresses(self) -> list[Address]:
        """The nodes this pool has a connection for (connected or not)."""
        return list(self._channels)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            channel.close()


class Nodes:
    """The client's view of the cluster: its seeds, its connections, its
    routing table, and how the table is refreshed."""

    def __init__(self, pool: NodePool, seeds: Sequence[Address]) -> None:
        self.pool = pool
        self.seeds = list(seeds)
        self._table: RoutingTable | None = None
        # Advertised addresses the client dials elsewhere (own_address).
        self._aliases: dict[str, Address] = {}
        # Advertised addresses found to be another node's (not aliased again).
        self._others: set[str] = set()
        # The last map fetched and where from: rebuilt when an alias is dropped.
        self._last: tuple[Address, pb.PartitionMapResponse] | None = None
        self._refreshing = anyio.Lock()
        # Bumped by every new table, so that callers queued behind a refresh
        # need not repeat it.
        self._generation = 0
        # A node whose connection broke or which answered UNAVAILABLE: asked
        # last at the next refresh, which happens before the next route.
        self._suspect: Address | None = None
        self._stale = False
        # Maps fetched so far (tests tell a followed hint from a refresh).
        self.refreshes = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        seeds: Sequence[Address],
        *,
        metadata: Sequence[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
        sessions: bool = True,
    ) -> AsyncIterator[Nodes]:
        """Dial the seeds in turn until one answers; close every connection on exit.

        Args:
            sessions: small calls share a DataPlane.Session per node.

        Raises:
            UnavailableError: no seed answers (naming each), or the TLS handshake failed.
        """
        with unwrap_single_exception():
            async with anyio.create_task_group() as task_group:
                pool = NodePool(
                    task_group, metadata=metadata, ssl_context=ssl_context, sessions=sessions
                )
                try:
                    nodes = cls(pool, seeds)
                    await nodes._dial_a_seed()
                    yield nodes
                finally:
                    pool.close()

    async def _dial_a_seed(self) -> None:
        failures: list[UnavailableError] = []
        for seed in self.seeds:
            try:
                await self.pool.channel(seed).connect()
            except UnavailableError as exc:
                failures.append(exc)
                continue
            # The seed that answered first is asked first for the map.
            self.seeds.remove(seed)
            self.seeds.insert(0, seed)
            return
        if len(failures) == 1:
            raise failures[0]
        raise UnavailableError(
            "Cannot connect to any seed: " + "; ".join(f.message for f in failures)
        )

    @property
    def first(self) -> Channel:
        """The connection to the seed that answered first."""
        return self.pool.channel(self.seeds[0])

    @property
    def table(self) -> RoutingTable | None:
        return self._table

    async def current(self) -> RoutingTable:
        """The routing table, fetched first if there is none yet or it was
        marked stale by a broken node."""
        if self._table is None:
            return await self.refresh()
        if self._stale:
            try:
                return await self.refresh(avoid=self._suspect)
            except UnavailableError:
                # No node answers now: route by the old table; the call
                # itself then fails (and is retried) or finds its node back.
                return self._table
        return self._table

    def mark_stale(self, address: Address) -> None:
        """The node at ``address`` broke or answered UNAVAILABLE: the next
        route refreshes the map first, asking that node last."""
        self._stale = True
        self._suspect = address

    async def refresh(
        self, *, prefer: Address | None = None, avoid: Address | None = None
    ) -> RoutingTable:
        """Fetch the map again: from ``prefer`` first, then the nodes in the
        table, then the seeds, and ``avoid`` last.

        Raises:
            UnavailableError: no node answers.
            MkvError: a node refused the call (e.g. UNAUTHENTICATED).
        """
        generation = self._generation
        async with self._refreshing:
            if self._generation != generation and self._table is not None and not self._stale:
                return self._table  # refreshed while this call waited for the lock
            failures: list[str] = []
            for address in self._sources(prefer, avoid):
                try:
                    return self._install(address, await self._fetch(address))
                except UnavailableError as exc:
                    failures.append(exc.message)
            raise UnavailableError(
                "No mkv node answers for the partition map: " + "; ".join(failures)
            )

    def _sources(self, prefer: Address | None, avoid: Address | None) -> list[Address]:
        order: dict[Address, None] = {}
        if prefer is not None:
            order[prefer] = None
        for address in (self._table.addresses if self._table is not None else []) + self.seeds:
            order[address] = None
        if avoid is not None and avoid in order:
            del order[avoid]
            order[avoid] = None
        return list(order)

    async def _fetch(self, address: Address) -> pb.PartitionMapResponse:
        channel = self.pool.channel(address)
        with anyio.move_on_after(MAP_TIMEOUT):
            return await channel.unary(
                SERVICE,
                "PartitionMap",
                pb.PartitionMapRequest(),
                pb.PartitionMapResponse,
                grpc_timeout=MAP_TIMEOUT,
            )
        raise UnavailableError(f"mkv at {address} did not answer within {MAP_TIMEOUT:g} s.")

    def _install(self, source: Address, response: pb.PartitionMapResponse) -> RoutingTable:
        if response.partitions and not any(p.address for p in response.partitions):
            # A map naming no node at all comes from a node that does not
            # fill addresses in (a server of its own, an older mkv): it
            # serves what it lists itself.
            filled = pb.PartitionMapResponse()
            filled.CopyFrom(response)
            for partition in filled.partitions:
                partition.address = str(source)
            response = filled
        alias = own_address(source, (p.address for p in response.partitions))
        if alias is not None and alias not in self._others:
            self._aliases[alias] = source
        try:
            table = RoutingTable.from_response(response, aliases=self._aliases)
        except (MkvError, ValueError) as exc:
            # A node answering nonsense is a bug there, not a reason to route
            # by half a map.
            raise UnavailableError(f"mkv at {source} sent a broken partition map: {exc}") from None
        self._set(table)
        self._last = (source, response)
        self._stale = False
        self._suspect = None
        self.refreshes += 1
        return table

    def _set(self, table: RoutingTable) -> None:
        self._table = table
        self._generation += 1

    def follow(self, hint: pb.RoutingHint, refused_by: Address | None = None) -> bool:
        """Put a ``BAD_NODE`` hint's owner into the table.

        Args:
            refused_by: the node that sent the hint. A node never names itself
                as the owner it refuses for: if the owner's address was taken
                for that node's own (``own_address``: a seed that leads
                nothing sees only other nodes' addresses in its map), it was
                wrong, and the address is dialled as given from now on.

        Returns:
            Whether it changed where the owner's range is routed (False: no
            owner named, or the table already said so).
        """
        if not hint.HasField("owner") or not hint.owner.address or self._table is None:
            return False
        before = self._table
        advertised = hint.owner.address
        if refused_by is not None and self._aliases.get(advertised) == refused_by:
            log.info("%s is not the address of %s: dialling it as given", advertised, refused_by)
            del self._aliases[advertised]
            self._others.add(advertised)
            if self._last is not None:
                source, response = self._last
                self._install(source, response)
                self.refreshes -= 1  # rebuilt, not fetched
        try:
            table = self._table.with_owner(hint.owner, aliases=self._aliases)
        except (MkvError, ValueError) as exc:
            log.warning("ignoring a broken routing hint (%s)", exc)
            return self._table != before
        if table.routes == before.routes:
            return False
        self._set(table)
        return True

    async def route(self, key: bytes) -> Route:
        """The route of ``key``, refreshing the map once if none owns it.

        Raises:
            BadNodeError: no partition owns the key in a fresh map.
            UnavailableError: no node answers for the map.
        """
        table = await self.current()
        route = table.lookup(key)
        if route is None:
            route = (await self.refresh()).lookup(key)
        if route is None:
            raise BadNodeError(NO_OWNER)
        return route


class Rerouting:
    """The re-routing of one request: what to do after each refusal or
    failure, and how long to wait before the next try.

    Sans-I/O apart from the waits and refreshes it asks ``Nodes`` for: the
    decisions (follow a hint at once, back off while the map has not moved,
    give up after ``REROUTE_SECONDS``, retry a write only when it was not
    applied) are here, in one place for Get, the writes, Scan and Watch.
    """

    def __init__(self, nodes: Nodes, *, read: bool) -> None:
        self._nodes = nodes
        self._read = read
        self._since: float | None = None
        self._delay = FIRST_BACKOFF
        self._hops = 0

    async def channel(self, key: bytes) -> Channel:
        """The connection to the node leading ``key``'s partition, waiting
        (as after a refusal) while no node leads it.

        Raises:
            BadNodeError: no partition owns the key.
            UnavailableError: no node has led it for ``REROUTE_SECONDS``, or
                no node answers for the map.
        """
        while True:
            route = await self._nodes.route(key)
            if route.address is not None:
                return self._nodes.pool.channel(route.address)
            await self._pause(
                lambda: self._nodes.refresh(),
                UnavailableError(
                    f"No node leads partition {route.partition_id} now; "
                    "it may be moving or its node may have failed."
                ),
            )

    async def bad_node(self, address: Address, hint: pb.RoutingHint) -> None:
        """The node at ``address`` refused with BAD_NODE (nothing applied).
        Returns when the request should be routed again.

        Raises:
            BadNodeError: refused for ``REROUTE_SECONDS`` with the map unchanged.
        """
        if self._nodes.follow(hint, address):
            self._hops += 1
            if self._hops <= FREE_HOPS:
                return
        await self._pause(
            lambda: self._nodes.refresh(prefer=address), BadNodeError(hint.message or NO_OWNER)
        )

    async def unavailable(self, address: Address, error: UnavailableError) -> None:
        """The node at ``address`` could not be reached, broke the
        connection, or answered UNAVAILABLE. Returns when the request should
        be sent again: always for a read, for a write only when nothing was
        sent.

        Raises:
            UnavailableError: ``error`` itself for a write that may have been
                applied, or when the map has not moved for ``REROUTE_SECONDS``.
        """
        self._nodes.mark_stale(address)
        if not (self._read or isinstance(error, NotSentError)):
            raise error
        await self._pause(lambda: self._nodes.refresh(avoid=address), error)

    async def _pause(self, refresh: _Refresh, error: MkvError) -> None:
        """Refresh the map; when it has not moved, back off, or raise
        ``error`` once that has gone on for ``REROUTE_SECONDS``."""
        now = anyio.current_time()
        if self._since is None:
            self._since = now
        before = self._nodes.table
        try:
            after: RoutingTable | None = await refresh()
        except UnavailableError:
            after = before  # no node answers: as if the map had not moved
        if after != before:
            return
        if now - self._since >= REROUTE_SECONDS:
            raise error
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_BACKOFF)


# A refresh of the map as Rerouting asks for it (which nodes to ask is the caller's).
_Refresh = Callable[[], Awaitable[RoutingTable]]
