"""The async Python client for mkv's data plane, under Trio or asyncio (via anyio).

    async with mkv.Client.connect("127.0.0.1:7070") as db:
        await db.upsert({b"user:1": b"ada", b"user:2": b"grace"})
        assert await db.get(b"user:1") == b"ada"
        await db.remove(b"user:2")

The client routes keys with the cluster's partition map to the node leading
each partition (one connection per node, ``mkv.client.nodes``), splits an
upsert into one batch per partition of at most 1 MiB each (each batch is
atomic; the whole call is not, when it needs more than one), and follows the
hint or refreshes the map and retries when a node answers BAD_NODE.
Conditional writes and increments are never split: they must fit one
partition and one request.

After a lost connection the next call dials again (reads are retried, a
write sent on it has an unknown outcome); ``watch`` resumes by itself where
it was.
"""

from __future__ import annotations

import itertools
import logging
import operator
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import attrs

from mkv.client.channel import Channel
from mkv.client.credentials import client_credentials
from mkv.client.nodes import NO_OWNER, REROUTE_SECONDS, Nodes, Rerouting, parse_seeds
from mkv.client.session import SessionLostError
from mkv.client.streams import Change, Scan, Watch
from mkv.client.upsert_encoding import EntryBatch, cut_batches, field_size
from mkv.errors import (
    BadNodeError,
    ConditionFailedError,
    InvalidArgumentError,
    MkvError,
    ResourceExhaustedError,
    UnavailableError,
)
from mkv.records import Item
from mkv.router import KeyRange
from mkv.rpc.auth import DATA_TOKEN_ENV
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE as SERVICE
from mkv.wire import DEFAULT_DATA_ADDR, MAX_REQUEST_BYTES, Address

__all__ = [
    "REROUTE_SECONDS",
    "Change",
    "Client",
    "Item",
    "Key",
    "PartitionRange",
    "Watch",
    "WriteAck",
]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.client")

# How many keys one BatchGet request carries.
BATCH_GET_KEYS = 1000
# Requests up to this size (and BatchGets of up to so many keys) go on the
# session; bigger ones get a call of their own, so that their bytes do not
# hold up the small answers behind them on the one stream.
SESSION_REQUEST_BYTES = 16 * 1024
SESSION_BATCH_GET_KEYS = 64
# Session request fields by unary method; the reads, safe to ask again.
_SESSION_KINDS = {
    "Get": "get",
    "Upsert": "upsert",
    "Remove": "remove",
    "Increment": "increment",
    "BatchGet": "batch_get",
}
_READS = frozenset({"Get", "BatchGet"})

T = TypeVar("T")
B = TypeVar("B")  # one request's worth of a write (its batch)
Key = bytes | str
Value = bytes | str
# Mapping is invariant in its key type: a dict[bytes, bytes] is not a
# Mapping[bytes | str, ...], so both key types are spelled out.
KeyMap = Mapping[bytes, T] | Mapping[str, T]


@attrs.frozen
class WriteAck:
    """One partition's answer to one batch: its sequence number and timestamp,
    and for a remove how many keys existed."""

    partition_id: str
    seq: int
    count: int
    timestamp: int = 0


@attrs.frozen
class PartitionRange:
    """One partition of the map: its keys and the data address of the node
    leading it, as this client dials it ("" while no node leads it)."""

    id: str
    range: KeyRange
    address: str


def _bytes(data: Key) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class Client:
    """A client of mkv's data plane: one node, or every node of a cluster
    (a connection to each). Use ``Client.connect``."""

    def __init__(self, nodes: Nodes, *, max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        self._nodes = nodes
        self._max_request_bytes = max_request_bytes

    @property
    def _channel(self) -> Channel:
        """The connection to the seed that answered first."""
        return self._nodes.first

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        *addresses: str | Address,
        token: str | None = None,
        token_file: Path | str | None = None,
        tls: bool = False,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        session: bool = True,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> AsyncIterator[Client]:
        """Connect to mkv's data plane: one node's, or a cluster's through seeds.

            async with mkv.Client.connect("h1:7070", "h2:7070") as db: ...

        Args:
            addresses: ``HOST:PORT`` of one or more nodes (seeds), each also
                as one comma-separated string (``"h1:7070,h2:7070"``);
                default ``127.0.0.1:7070``. The first that answers gives the
                partition map, whose addresses the client then uses: one
                connection per node, each key sent to its partition's node.
            token, token_file: the data plane's token, if it requires one
                (default: ``$MKV_DATA_TOKEN`` when set).
            tls, ca, cert, key, ssl_context: TLS, as ``mkv.client.credentials.client_credentials``.
            session: carry small requests (a few keys) on one DataPlane.Session
                stream rather than a unary call each: several times the
                throughput under concurrency. False: unary calls only.
            max_request_bytes: the largest request the client builds (batches
                are split to fit); raise it only with the nodes' own
                ``max_request_bytes``, which refuse larger ones.

        Raises:
            UnavailableError: no seed answers, or the TLS handshake failed.
            ConfigError: a token or certificate file cannot be read.
            ValueError: an address is not ``HOST:PORT``.
        """
        seeds = parse_seeds(addresses or [DEFAULT_DATA_ADDR])
        credentials = await client_credentials(
            env_var=DATA_TOKEN_ENV,
            token=token,
            token_file=token_file,
            tls=tls,
            ca=ca,
            cert=cert,
            key=key,
            ssl_context=ssl_context,
        )
        async with Nodes.open(
            seeds,
            metadata=credentials.metadata,
            ssl_context=credentials.ssl_context,
            sessions=session,
        ) as nodes:
            yield cls(nodes, max_request_bytes=max_request_bytes)

    @property
    def session_requests(self) -> int:
        """How many requests went on a DataPlane.Session so far, on every
        node's connection (0 with ``session=False``)."""
        return self._nodes.pool.session_requests

    # -- reads --------------------------------------------------------------

    async def get(self, key: Key) -> bytes | None:
        """The value stored under ``key``, or None. Linearizable."""
        item = await self.get_item(key)
        return None if item is None else item.value

    async def get_item(self, key: Key) -> Item | None:
        """The value and its sequence number, or None when the key is absent."""
        request = pb.GetRequest(key=_bytes(key))
        response = await self._routed(
            "Get", [request.key], lambda: request, pb.GetResponse, read=True
        )
        if not response.found:
            return None
        return Item(response.value, response.seq, response.timestamp)

    async def batch_get(self, keys: Iterable[Key]) -> list[Item | None]:
        """Items of many keys, in the order asked (None where absent): one
        round trip per partition and thousand keys, each a consistent view
        of its partition."""
        raw = [_bytes(k) for k in keys]
        if not raw:
            return []
        found: dict[bytes, Item | None] = {}

        errors: list[MkvError] = []

        async def fetch(chunk: list[bytes]) -> None:
            try:
                response = await self._routed(
                    "BatchGet",
                    chunk,
                    lambda: pb.BatchGetRequest(keys=chunk, map_version=self._map_version()),
                    pb.BatchGetResponse,
                    read=True,
                )
            except MkvError as exc:
                # Kept rather than raised, as in _write: the caller gets an
                # MkvError, not a task group's ExceptionGroup.
                errors.append(exc)
                return
            for key, lookup in zip(chunk, response.items, strict=True):
                found[key] = (
                    Item(lookup.value, lookup.seq, lookup.timestamp) if lookup.found else None
                )

        # Routed before the task group opens: an error raised in its body
        # would come out wrapped in an ExceptionGroup too.
        groups = await self._group(list(dict.fromkeys(raw)), lambda key: key)
        async with anyio.create_task_group() as nursery:
            for group in groups:
                for i in range(0, len(group), BATCH_GET_KEYS):
                    nursery.start_soon(fetch, group[i : i + BATCH_GET_KEYS])
        if errors:
            raise errors[0]
        return [found[key] for key in raw]

    def scan(
        self,
        start: Key = b"",
        end: Key | None = None,
        *,
        keys_only: bool = False,
        page_size: int = 1000,
    ) -> AsyncIterator[tuple[bytes, Item]]:
        """Keys in ``[start, end)`` in byte order, with their items, across
        partitions, a page at a time::

            async for key, item in db.scan(b"user:", b"user;"):
                ...

        Each page is a consistent view of its partition at one sequence
        number; the whole scan is not one view when it takes more than one
        page: a key written between pages is seen or not depending on where
        it falls. Stopping early is fine (nothing is left open between pages).
        """
        return Scan(
            self._nodes, _bytes(start), None if end is None else _bytes(end), keys_only, page_size
        )

    @asynccontextmanager
    async def watch(
        self, start: Key = b"", end: Key | None = None, *, from_seq: int = 0
    ) -> AsyncIterator[Watch]:
        """Every mutation of keys in ``[start, end)`` after ``from_seq`` (0: from
        now), in order, then live::

            async with db.watch(b"user:", b"user;", from_seq=seq) as changes:
                async for change in changes:
                    ...

        The range must lie within one partition (sequence numbers are per
        partition). After a lost connection, a server restart or a cut-off
        for reading too slowly, it dials again (backing off) and resumes
        after the last sequence number it delivered, so nothing is missed or
        repeated while the server retains it.

        Raises (while iterating):
            CompactedError: the server no longer retains the changes after
                the position to resume from: scan, then watch from there.
            InvalidArgumentError: the range leaves one partition.
        """
        request = pb.WatchRequest(
            start=_bytes(start), end=b"" if end is None else _bytes(end), from_seq=from_seq
        )
        changes = Watch(self._nodes, request)
        try:
            yield changes
        finally:
            await changes.aclose()

    # -- writes -------------------------------------------------------------

    async def upsert(
        self,
        items: KeyMap[Value] | Iterable[tuple[Key, Value]],
        *,
        if_seq: KeyMap[int] | None = None,
        if_value: KeyMap[Value] | None = None,
    ) -> list[WriteAck]:
        """Store every key/value pair; later pairs for the same key win.

        Returns one acknowledgement per batch sent (per partition, per MiB).

        Args:
            if_seq: apply only if each named key's current value was written
                at that sequence number (0: the key must not exist).
            if_value: apply only if each named key currently holds that value.
                With either, the call is one atomic request (one partition).

        Raises:
            ConditionFailedError: a condition did not hold; nothing was applied.
            ResourceExhaustedError: one entry alone is over the request limit.
            BadNodeError: a key belongs to no partition on the node.
        """
        given = items.items() if isinstance(items, Mapping) else items
        # Plain pairs, encoded by hand (mkv.client.upsert_encoding): protobuf objects
        # are made once per request, never per entry (a 1 MiB batch is ~9k pairs).
        pairs = [
            (k if type(k) is bytes else _bytes(k), v if type(v) is bytes else _bytes(v))
            for k, v in given
        ]
        if if_seq or if_value:
            conditions = _conditions(if_seq, if_value)
            return [
                await self._conditional(
                    "Upsert",
                    [k for k, _ in pairs] + [c.key for c in conditions],
                    lambda: pb.UpsertRequest(
                        entries=[pb.Entry(key=k, value=v) for k, v in pairs],
                        conditions=conditions,
                        map_version=self._map_version(),
                    ),
                    pb.UpsertResponse,
                )
            ]
        if not pairs:
            return []
        send: _Send[EntryBatch] = _Send(
            method="Upsert",
            response_type=pb.UpsertResponse,
            build=lambda batch: batch.request(self._map_version()),
            first_key=lambda batch: batch.pairs[0][0],
            resplit=lambda batch: self._upsert_batches(batch.pairs),
            count_of=lambda response: 0,
        )
        return await self._write(await self._upsert_batches(pairs), send)

    async def remove(
        self,
        *keys: Key,
        if_seq: KeyMap[int] | None = None,
        if_value: KeyMap[Value] | None = None,
    ) -> list[WriteAck]:
        """Remove ``keys``; a missing key is not an error. ``WriteAck.count`` says
        how many existed. Conditions as in ``upsert``.

        Raises:
            ConditionFailedError: a condition did not hold; nothing was removed.
        """
        raw = [_bytes(k) for k in keys]
        if if_seq or if_value:
            conditions = _conditions(if_seq, if_value)
            return [
                await self._conditional(
                    "Remove",
                    raw + [c.key for c in conditions],
                    lambda: pb.RemoveRequest(
                        keys=raw, conditions=conditions, map_version=self._map_version()
                    ),
                    pb.RemoveResponse,
                )
            ]
        if not raw:
            return []
        send: _Send[list[bytes]] = _Send(
            method="Remove",
            response_type=pb.RemoveResponse,
            build=lambda batch: pb.RemoveRequest(keys=batch, map_version=self._map_version()),
            first_key=lambda batch: batch[0],
            resplit=lambda batch: self._split(batch, _same, _key_size),
            count_of=lambda response: int(response.removed),
        )
        return await self._write(await self._split(raw, _same, _key_size), send)

    async def increment(self, key: Key, delta: int = 1) -> int:
        """Add ``delta`` to the counter at ``key`` (a missing key counts as 0)
        and return its new value. Counters are signed 64-bit integers stored
        as decimal text, so ``get`` returns e.g. ``b"42"``.

        Raises:
            FailedPreconditionError: the key holds something else, or the sum
                would leave the 64-bit range; nothing changed.
        """
        [value] = await self.increment_many([(key, delta)])
        return value

    async def increment_many(self, deltas: KeyMap[int] | Iterable[tuple[Key, int]]) -> list[int]:
        """Apply several increments atomically (one partition); the new value
        after each delta, in order."""
        given = deltas.items() if isinstance(deltas, Mapping) else deltas
        pairs = [(_bytes(k), d) for k, d in given]
        if not pairs:
            return []
        for key, delta in pairs:
            if not -(2**63) <= delta < 2**63:
                raise InvalidArgumentError(
                    f"The delta for key {key!r} is outside the signed 64-bit range."
                )
        response = await self._routed(
            "Increment",
            [key for key, _ in pairs],
            lambda: pb.IncrementRequest(
                deltas=[pb.CounterDelta(key=k, delta=d) for k, d in pairs],
                map_version=self._map_version(),
            ),
            pb.IncrementResponse,
            read=False,
        )
        return list(response.values)

    async def _conditional(
        self,
        method: str,
        keys: list[bytes],
        build: Callable[[], Any],
        response_type: type[Any],
    ) -> WriteAck:
        """Send a conditional write as one request (it may not be split)."""
        if len(await self._group(keys, lambda key: key)) > 1:
            raise InvalidArgumentError(
                "A conditional write must keep its keys and its conditions' keys in one partition."
            )

        def checked() -> Any:
            request = build()
            if request.ByteSize() > self._max_request_bytes:
                raise ResourceExhaustedError(
                    f"The conditional write is {request.ByteSize()} bytes; it cannot be split, "
                    f"and a request is at most {self._max_request_bytes} bytes."
                )
            return request

        response = await self._routed(method, keys, checked, response_type, read=False)
        if response.status == pb.CONDITION_FAILED:
            failure = response.failure
            state = f"is at seq {failure.seq}" if failure.found else "does not exist"
            raise ConditionFailedError(
                f"The condition on key {failure.key!r} does not hold: the key {state}.",
                key=failure.key,
                current_seq=failure.seq,
            )
        count = int(getattr(response, "removed", 0))
        return WriteAck(response.partition_id, response.seq, count, response.timestamp)

    # -- routing ------------------------------------------------------------

    async def partition_map(self) -> list[PartitionRange]:
        """The partitions and the node leading each, refreshed from the server."""
        table = await self._nodes.refresh()
        return [
            PartitionRange(pid, rng, "" if (a := table.routes[pid].address) is None else str(a))
            for rng, pid in table.router.ranges
        ]

    async def _group(self, items: Sequence[T], key_of: Callable[[T], bytes]) -> list[list[T]]:
        """``items`` per owning partition, in order; refreshes the map once if a
        key has no owner in it."""
        keys = list(map(key_of, items))
        for attempt in range(2):
            router = (await self._nodes.current()).router
            try:
                # Usually every key is in one partition: min and max tell, in C.
                if (owner := router.lookup_span(min(keys), max(keys))) is not None:
                    return [list(items)]
            except InvalidArgumentError:
                pass  # several partitions: route key by key
            owners = [router.lookup(key) for key in keys]
            if None not in owners:
                groups: dict[str | None, list[T]] = defaultdict(list)
                for item, owner in zip(items, owners, strict=True):
                    groups[owner].append(item)
                return list(groups.values())
            if attempt == 0:
                await self._nodes.refresh()
        raise BadNodeError(NO_OWNER)

    async def _split(
        self, items: Sequence[T], key_of: Callable[[T], bytes], size_of: Callable[[T], int]
    ) -> list[list[list[T]]]:
        """Group ``items`` per partition, then cut each group into requests of at
        most ``max_request_bytes``, keeping their order: per partition, its batches."""
        partitions: list[list[list[T]]] = []
        for group in await self._group(items, key_of):
            batches: list[list[T]] = []
            batch: list[T] = []
            size = 0
            for item in group:
                item_size = size_of(item)
                if item_size > self._max_request_bytes:
                    raise ResourceExhaustedError(
                        f"One entry is {item_size} bytes; a request is at most "
                        f"{self._max_request_bytes} bytes."
                    )
                if batch and size + item_size > self._max_request_bytes:
                    batches.append(batch)
                    batch, size = [], 0
                batch.append(item)
                size += item_size
            batches.append(batch)
            partitions.append(batches)
        return partitions

    async def _upsert_batches(self, pairs: Sequence[tuple[bytes, bytes]]) -> list[list[EntryBatch]]:
        """``pairs`` per partition, cut into encoded requests (mkv.client.upsert_encoding)."""
        groups = await self._group(pairs, operator.itemgetter(0))
        return [cut_batches(group, self._max_request_bytes) for group in groups]

    async def _write(self, partitions: list[list[B]], send: _Send[B]) -> list[WriteAck]:
        """Send each batch; partitions side by side, one partition's batches in order."""
        acks: list[WriteAck] = []
        errors: list[MkvError] = []

        async def send_in_order(own: list[B]) -> None:
            try:
                for batch in own:
                    acks.extend(await self._send_batch(batch, send))
            except MkvError as exc:
                # Kept rather than raised, so the caller gets an MkvError and
                # not a nursery's ExceptionGroup; other partitions carry on.
                errors.append(exc)

        if len(partitions) == 1:
            # The usual case (a key, or keys of one partition): no task group,
            # whose setup and task were an eighth of the client's CPU per
            # single-key write (docs/performance.md, "The client's share").
            await send_in_order(partitions[0])
        else:
            async with anyio.create_task_group() as nursery:
                for own in partitions:
                    nursery.start_soon(send_in_order, own)
        if errors:
            raise errors[0]
        return acks

    async def _send_batch(
        self, batch: B, send: _Send[B], rerouting: Rerouting | None = None
    ) -> list[WriteAck]:
        rerouting = rerouting or Rerouting(self._nodes, read=False)
        response, address = await self._send_once(
            rerouting,
            send.first_key(batch),
            send.method,
            lambda: send.build(batch),
            send.response_type,
        )
        if response.status == pb.OK:
            return [
                WriteAck(
                    response.partition_id, response.seq, send.count_of(response), response.timestamp
                )
            ]
        # The map moved under us: route this batch again (resplit raises
        # BadNodeError at once if the new map has no owner for a key).
        await rerouting.bad_node(address, response.hint)
        acks: list[WriteAck] = []
        for again in itertools.chain.from_iterable(await send.resplit(batch)):
            acks.extend(await self._send_batch(again, send, rerouting))
        return acks

    async def _call(
        self, channel: Channel, method: str, request: Any, response_type: type[Any]
    ) -> Any:
        """One data-plane request to ``channel``'s node: on its session when
        it is small, else a unary call.

        Raises:
            MkvError: the request's error, as the unary call raises it.
            UnavailableError: the connection or the session was lost (for a
                write, its outcome is unknown; a read is asked again once).
        """
        session = self._nodes.pool.session(channel.address)
        kind = _SESSION_KINDS.get(method) if session is not None else None
        if (
            kind is None
            or session is None
            or request.ByteSize() > SESSION_REQUEST_BYTES
            or (method == "BatchGet" and len(request.keys) > SESSION_BATCH_GET_KEYS)
        ):
            # Large answers would hold up the small ones queued behind them.
            return await channel.unary(SERVICE, method, request, response_type)
        try:
            return await session.call(kind, request)
        except SessionLostError:
            if method not in _READS:
                raise
            # A read changes nothing: ask again at once, on a new session
            # (if that fails too, Rerouting refreshes the map and retries).
            return await session.call(kind, request)

    def _map_version(self) -> int:
        table = self._nodes.table
        return table.version if table is not None else 0

    async def _routed(
        self,
        method: str,
        keys: Sequence[bytes],
        build: Callable[[], Any],
        response_type: type[Any],
        *,
        read: bool,
    ) -> Any:
        """One request for ``keys`` that must not be split: sent to the node
        leading their partition, and on BAD_NODE built again (with the
        refreshed map's version) and sent again, while ``Rerouting`` allows.

        Args:
            read: the request changes nothing, so it may be sent again after
                a lost connection or UNAVAILABLE too.

        Returns:
            The first answer that is not BAD_NODE.

        Raises:
            BadNodeError: the current map has no owner for a key, or the
                nodes kept refusing for ``REROUTE_SECONDS``.
            UnavailableError: a write's connection broke after it was sent
                (its outcome is unknown), or no node could be reached.
        """
        rerouting = Rerouting(self._nodes, read=read)
        while True:
            response, address = await self._send_once(
                rerouting, keys[0], method, build, response_type
            )
            if response.status != pb.BAD_NODE:
                return response
            await rerouting.bad_node(address, response.hint)
            table = await self._nodes.current()
            if any(table.lookup(key) is None for key in keys):
                raise BadNodeError(response.hint.message or NO_OWNER)

    async def _send_once(
        self,
        rerouting: Rerouting,
        key: bytes,
        method: str,
        build: Callable[[], Any],
        response_type: type[Any],
    ) -> tuple[Any, Address]:
        """Send one request to the node leading ``key``'s partition, again
        while the failure allows (``Rerouting.unavailable``).

        Returns:
            The answer (which may be BAD_NODE) and the address that gave it.
        """
        while True:
            channel = await rerouting.channel(key)
            try:
                response = await self._call(channel, method, build(), response_type)
            except UnavailableError as exc:
                await rerouting.unavailable(channel.address, exc)
                continue
            return response, channel.address


def _conditions(if_seq: KeyMap[int] | None, if_value: KeyMap[Value] | None) -> list[pb.Condition]:
    conditions = [pb.Condition(key=_bytes(k), seq=seq) for k, seq in (if_seq or {}).items()]
    conditions += [
        pb.Condition(key=_bytes(k), value=_bytes(v)) for k, v in (if_value or {}).items()
    ]
    return conditions


def _same(key: bytes) -> bytes:
    return key


def _key_size(key: bytes) -> int:
    """Bytes a key takes in a ``RemoveRequest`` (an empty one still takes two)."""
    return field_size(len(key)) or 2


@attrs.frozen
class _Send(Generic[B]):
    """How to send one kind of write in batches of type ``B``: build its
    request, cut a batch again by a refreshed map, read its answer."""

    method: str
    response_type: type[Any]
    build: Callable[[B], Any]
    # A key of the batch, to route it by (all its keys share a partition).
    first_key: Callable[[B], bytes]
    # Per partition, its batches: after BAD_NODE, by the refreshed map.
    resplit: Callable[[B], Awaitable[list[list[B]]]]
    count_of: Callable[[Any], int]
