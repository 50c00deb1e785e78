"""The DataPlane service: Upsert, Get, Remove, Increment, BatchGet, Scan,
Watch, PartitionMap, and Session (the small unary ones on one stream).

Handlers check input, route it, and hand it to the partition; they hold no
state of their own. Errors are raised as ``mkv.errors`` exceptions and become
gRPC statuses in ``mkv.rpc.server``; a key nobody owns is not an error but a
``BAD_NODE`` status in the response, with the owned ranges as a hint.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import trio

from mkv.cluster.membership import Membership
from mkv.cluster.view import Routing
from mkv.errors import (
    ConditionFailedError,
    InvalidArgumentError,
    MovedError,
    ResourceExhaustedError,
    UnavailableError,
)
from mkv.node.registry import PartitionRegistry
from mkv.node.watching import watch_partition
from mkv.observe.logs import note_partition
from mkv.partition.mutations import Condition
from mkv.partition.task import Get, Increment, Partition, Read, Remove, Upsert, WriteResult
from mkv.rpc.server import Handler, Multiplexed, ServerStream
from mkv.rpc.vouch import vouch
from mkv.store import Item, StateStore
from mkv.v1 import data_pb2 as pb
from mkv.wire import MAX_KEY_BYTES

__all__ = ["DataPlane"]


# Upserts with more entries than this are unpacked on a worker thread.
INLINE_ENTRIES = 1000
# One Scan call returns at most this many keys (its default: SCAN_LIMIT) and
# about this many bytes of keys and values, then says where to continue.
SCAN_LIMIT = 1000
MAX_SCAN_LIMIT = 10_000
SCAN_BYTES = 4 * 1024 * 1024
# Bytes of keys and values in one message of a Scan's stream.
SCAN_MESSAGE_BYTES = 64 * 1024
# BatchGet: keys per call, and bytes of values in its one response.
MAX_BATCH_GET_KEYS = 10_000
MAX_BATCH_GET_BYTES = 16 * 1024 * 1024


def _unpack(entries: Sequence[pb.Entry]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The keys, and the (key, value) pairs, of an upsert's entries."""
    # map and attrgetter loop in C: a third cheaper than comprehensions.
    puts: list[tuple[bytes, bytes]] = list(map(_KEY_AND_VALUE, entries))
    return list(map(_FIRST, puts)), puts


_KEY_AND_VALUE = operator.attrgetter("key", "value")
_FIRST = operator.itemgetter(0)


def _conditions(conditions: Sequence[pb.Condition]) -> list[tuple[bytes, Condition]]:
    """Raises:
    InvalidArgumentError: a condition has no test.
    """
    out: list[tuple[bytes, Condition]] = []
    for c in conditions:
        test = c.WhichOneof("test")
        if test is None:
            raise InvalidArgumentError("A condition needs a test: `seq` or `value`.")
        out.append((c.key, Condition(seq=c.seq) if test == "seq" else Condition(value=c.value)))
    return out


def _failure(exc: ConditionFailedError) -> pb.ConditionFailure:
    return pb.ConditionFailure(key=exc.key, found=exc.current_seq > 0, seq=exc.current_seq)


class DataPlane:
    def __init__(self, registry: PartitionRegistry, cluster: Membership | None = None) -> None:
        """Args:
        cluster: in cluster mode, what decides which partitions this node
            may serve now (the gate in ``_admit``); None: a single node,
            serving every partition it has.
        """
        self._registry = registry
        self.cluster = cluster
        # Set by the node once the data port is bound, for PartitionMap.
        self.advertised_address = ""

    def methods(self) -> dict[str, tuple[type, Handler | ServerStream | Multiplexed]]:
        return {
            "Upsert": (pb.UpsertRequest, self.upsert),
            "Get": (pb.GetRequest, self.get),
            "Remove": (pb.RemoveRequest, self.remove),
            "PartitionMap": (pb.PartitionMapRequest, self.partition_map),
            "Increment": (pb.IncrementRequest, self.increment),
            "BatchGet": (pb.BatchGetRequest, self.batch_get),
            "Scan": (pb.ScanRequest, ServerStream(self.scan)),
            "Watch": (pb.WatchRequest, ServerStream(self.watch)),
            # The same handlers, so a session request means what its unary call does.
            "Session": (
                pb.SessionRequest,
                Multiplexed(
                    {
                        "get": ("Get", self.get),
                        "upsert": ("Upsert", self.upsert),
                        "remove": ("Remove", self.remove),
                        "increment": ("Increment", self.increment),
                        "batch_get": ("BatchGet", self.batch_get),
                    },
                    pb.SessionResponse,
                    immediate={"get": self.get_now},
                ),
            ),
        }

    async def upsert(self, request: pb.UpsertRequest) -> pb.UpsertResponse:
        entries = request.entries
        if not entries:
            raise InvalidArgumentError("An upsert needs at least one entry.")
        if len(entries) <= INLINE_ENTRIES:
            keys, puts = _unpack(entries)
        else:
            # ~0.6 µs an entry: a full 1 MiB batch would hold the event loop ~5 ms.
            keys, puts = await trio.to_thread.run_sync(_unpack, entries)
        conditions = _conditions(request.conditions)
        routed = keys + [key for key, _ in conditions] if conditions else keys
        partition = self._route(routed, request.map_version)
        if isinstance(partition, pb.RoutingHint):
            return pb.UpsertResponse(status=pb.BAD_NODE, hint=partition)
        payload = request.SerializeToString()
        try:
            result = await self._submit(
                partition, Upsert(puts, size=len(payload), payload=payload, conditions=conditions)
            )
        except ConditionFailedError as exc:
            return pb.UpsertResponse(
                status=pb.CONDITION_FAILED, partition_id=partition.id, failure=_failure(exc)
            )
        except MovedError as exc:
            return pb.UpsertResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        assert isinstance(result, WriteResult)
        return pb.UpsertResponse(
            status=pb.OK, seq=result.seq, timestamp=result.timestamp, partition_id=partition.id
        )

    async def get(self, request: pb.GetRequest) -> pb.GetResponse:
        partition = self._route([request.key])
        if isinstance(partition, pb.RoutingHint):
            return pb.GetResponse(status=pb.BAD_NODE, hint=partition)
        try:
            item = await self._submit(partition, Get(request.key))
        except MovedError as exc:
            return pb.GetResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        return _get_response(partition, item)

    def get_now(self, request: pb.GetRequest) -> pb.GetResponse | None:
        """``get``'s answer when it can be had at once (nothing ahead of the
        read in its partition: ``Partition.can_read_now``), else None.

        A single node's only: in cluster mode an answer leaves only while
        the node still serves the partition, checked by the voucher that
        ``_submit`` sets on the request's own task.

        Raises:
            InvalidArgumentError, StorageError: as ``get``.
        """
        if self.cluster is not None:
            return None
        partition = self._route([request.key])
        if isinstance(partition, pb.RoutingHint):
            return pb.GetResponse(status=pb.BAD_NODE, hint=partition)
        if not partition.can_read_now():
            return None
        try:
            item = partition.read_now(request.key)
        except MovedError as exc:
            return pb.GetResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        return _get_response(partition, item)

    async def remove(self, request: pb.RemoveRequest) -> pb.RemoveResponse:
        keys = list(request.keys)
        if not keys:
            raise InvalidArgumentError("A remove needs at least one key.")
        conditions = _conditions(request.conditions)
        partition = self._route(keys + [key for key, _ in conditions], request.map_version)
        if isinstance(partition, pb.RoutingHint):
            return pb.RemoveResponse(status=pb.BAD_NODE, hint=partition)
        try:
            result = await self._submit(
                partition, Remove(keys, size=request.ByteSize(), conditions=conditions)
            )
        except ConditionFailedError as exc:
            return pb.RemoveResponse(
                status=pb.CONDITION_FAILED, partition_id=partition.id, failure=_failure(exc)
            )
        except MovedError as exc:
            return pb.RemoveResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        assert isinstance(result, WriteResult)
        return pb.RemoveResponse(
            status=pb.OK,
            removed=result.removed,
            seq=result.seq,
            timestamp=result.timestamp,
            partition_id=partition.id,
        )

    async def increment(self, request: pb.IncrementRequest) -> pb.IncrementResponse:
        deltas = [(d.key, d.delta) for d in request.deltas]
        if not deltas:
            raise InvalidArgumentError("An increment needs at least one key and delta.")
        partition = self._route([key for key, _ in deltas], request.map_version)
        if isinstance(partition, pb.RoutingHint):
            return pb.IncrementResponse(status=pb.BAD_NODE, hint=partition)
        try:
            result = await self._submit(partition, Increment(deltas, size=request.ByteSize()))
        except MovedError as exc:
            return pb.IncrementResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        assert isinstance(result, WriteResult)
        return pb.IncrementResponse(
            status=pb.OK,
            values=result.values,
            seq=result.seq,
            timestamp=result.timestamp,
            partition_id=partition.id,
        )

    async def batch_get(self, request: pb.BatchGetRequest) -> pb.BatchGetResponse:
        keys = list(request.keys)
        if not keys:
            raise InvalidArgumentError("A batch get needs at least one key.")
        if len(keys) > MAX_BATCH_GET_KEYS:
            raise ResourceExhaustedError(
                f"A batch get asks for {len(keys)} keys; the limit is {MAX_BATCH_GET_KEYS}."
            )
        partition = self._route(keys, request.map_version)
        if isinstance(partition, pb.RoutingHint):
            return pb.BatchGetResponse(status=pb.BAD_NODE, hint=partition)

        def read(store: StateStore) -> tuple[int, list[Item | None]]:
            # Between two writes: the range now is the one this view is of.
            partition.check_owned(*keys, reading=True)
            items = store.get_many(keys)
            size = sum(len(item.value) for item in items if item is not None)
            if size > MAX_BATCH_GET_BYTES:
                raise ResourceExhaustedError(
                    f"The values asked for add up to {size} bytes; one batch get returns at "
                    f"most {MAX_BATCH_GET_BYTES}, so ask for fewer keys."
                )
            return store.last_seq(), items

        try:
            seq, items = await self._submit(partition, Read(read))
        except MovedError as exc:
            return pb.BatchGetResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        return pb.BatchGetResponse(
            status=pb.OK,
            items=[
                pb.Lookup()
                if item is None
                else pb.Lookup(found=True, value=item.value, seq=item.seq, timestamp=item.timestamp)
                for item in items
            ],
            partition_id=partition.id,
            seq=seq,
        )

    async def scan(self, request: pb.ScanRequest) -> AsyncGenerator[pb.ScanResponse, None]:
        start, end = request.start, request.end or None
        if end is not None and end < start:
            # Refused as Watch refuses it, rather than an empty answer that
            # reads as "no keys" (an unquoted `user;` in a shell gives one).
            # [k, k) stays allowed: a page can end exactly at the range's end.
            raise InvalidArgumentError("The scanned range is empty: its end is before its start.")
        partition = self._owner_of_start(start, "scan")
        if isinstance(partition, pb.RoutingHint):
            yield pb.ScanResponse(status=pb.BAD_NODE, hint=partition)
            return
        limit = min(request.limit or SCAN_LIMIT, MAX_SCAN_LIMIT)
        keys_only = request.keys_only

        def read(store: StateStore) -> tuple[int, list[tuple[bytes, Item]], bytes | None]:
            # The range as of this view (between two writes): a split may
            # have given the upper part away since the scan was routed.
            partition.check_owned(start, reading=True)
            owned_end = partition.read_range.end
            stop = end if owned_end is None or (end is not None and end <= owned_end) else owned_end
            if stop is not None and stop <= start:
                return store.last_seq(), [], stop
            page = store.scan(start, stop, limit, keys_only=keys_only, max_bytes=SCAN_BYTES)
            return store.last_seq(), page, stop

        try:
            seq, page, stop = await self._submit(partition, Read(read))
        except MovedError as exc:
            yield pb.ScanResponse(status=pb.BAD_NODE, hint=self._hint(exc))
            return
        size = sum(len(key) + len(item.value) for key, item in page)
        if len(page) >= limit or size >= SCAN_BYTES:
            more, next_start = True, page[-1][0] + b"\x00"
        elif stop is not None and stop != end:
            more, next_start = True, stop  # the partition ends first: go on in the next
        else:
            more, next_start = False, b""
        batch: list[pb.KeyValue] = []
        batch_bytes = 0
        for key, item in page:
            batch.append(
                pb.KeyValue(key=key, value=item.value, seq=item.seq, timestamp=item.timestamp)
            )
            batch_bytes += len(key) + len(item.value)
            if batch_bytes >= SCAN_MESSAGE_BYTES:
                yield pb.ScanResponse(status=pb.OK, items=batch, partition_id=partition.id, seq=seq)
                batch, batch_bytes = [], 0
        yield pb.ScanResponse(
            status=pb.OK,
            items=batch,
            partition_id=partition.id,
            seq=seq,
            more=more,
            next_start=next_start,
        )

    async def watch(self, request: pb.WatchRequest) -> AsyncGenerator[pb.WatchResponse, None]:
        start, end = request.start, request.end or None
        partition = self._owner_of_start(start, "watch")
        if isinstance(partition, pb.RoutingHint):
            yield pb.WatchResponse(status=pb.BAD_NODE, hint=partition)
            return
        if self.cluster is not None:
            # Every event leaves only while served as when the watch began.
            vouch(self.cluster.serving_check(partition.id))
        async with contextlib.aclosing(
            watch_partition(partition, start, end, request.from_seq)
        ) as responses:
            async for response in responses:
                if self.cluster is not None and (hint := self._not_led(partition.id)) is not None:
                    # Led elsewhere now: the watcher resumes there from its
                    # position. (An idle watch notices at its next heartbeat.)
                    # A hint carries no data: it needs no check to leave.
                    vouch(None)
                    yield pb.WatchResponse(status=pb.BAD_NODE, hint=hint)
                    return
                yield response

    async def partition_map(self, request: pb.PartitionMapRequest) -> pb.PartitionMapResponse:
        if self.cluster is not None:
            routing = self.cluster.routing
            return pb.PartitionMapResponse(
                version=routing.version,
                partitions=[
                    pb.PartitionRange(
                        id=pid, start=rng.start, end=rng.end or b"", address=routing.owners[pid][1]
                    )
                    for rng, pid in routing.router.ranges
                ],
            )
        router = self._registry.router
        return pb.PartitionMapResponse(version=router.version, partitions=self._ranges())

    def _route(self, keys: Sequence[bytes], map_version: int = 0) -> Partition | pb.RoutingHint:
        """The partition owning every key; a hint (BAD_NODE) when none here does.

        Args:
            map_version: the partition map the client split by, 0 if none.

        Raises:
            InvalidArgumentError: a key is empty or too long, or the keys span
                partitions although the client routed by the current map.
        """
        # min/max run in C: the per-key checks cost no Python loop.
        if min(map(len, keys)) == 0:
            raise InvalidArgumentError("A key must not be empty.")
        if (longest := max(map(len, keys))) > MAX_KEY_BYTES:
            raise InvalidArgumentError(
                f"A key is {longest} bytes; the limit is {MAX_KEY_BYTES} bytes."
            )
        if self.cluster is not None:
            return self._admit(keys, map_version)
        router = self._registry.router
        try:
            partition_id = router.lookup_span(min(keys), max(keys))
        except InvalidArgumentError:
            if map_version and map_version != router.version:
                return self._hint()  # split by an old map: BAD_NODE tells the client to re-route
            raise
        if partition_id is None:
            return self._hint()
        note_partition(partition_id)  # for the request log, should the call fail
        # A partition removed since the router was read is as gone as one never had.
        return self._registry.partition(partition_id) or self._hint()

    def _admit(self, keys: Sequence[bytes], map_version: int = 0) -> Partition | pb.RoutingHint:
        """Cluster mode's gate: route by the cluster's map, and admit only what
        this node leads, under a lease whose deadline has not passed.

        Raises:
            UnavailableError: past the lease deadline (nothing is served then).
            InvalidArgumentError: as ``_route``.
        """
        cluster = self.cluster
        assert cluster is not None
        routing = cluster.routing
        try:
            partition_id = routing.router.lookup_span(min(keys), max(keys))
        except InvalidArgumentError:
            if map_version and map_version != routing.version:
                return self._cluster_hint(routing, None)
            raise
        if partition_id is None:
            return self._cluster_hint(routing, None)
        note_partition(partition_id)  # for the request log, should the call fail
        if partition_id not in routing.mine:
            return self._cluster_hint(routing, partition_id)
        if not cluster.lease_valid():
            # The lease may be gone in etcd already, and another node leading:
            # neither reads nor writes until a keepalive is answered.
            raise UnavailableError(
                "This node's lease in etcd has passed its deadline; it serves nothing "
                "until etcd answers again. Retry, or ask another node."
            )
        partition = self._registry.partition(partition_id)
        return partition if partition is not None else self._cluster_hint(routing, None)

    async def _submit(self, partition: Partition, command: Any) -> Any:
        """``partition.submit(command)``, answered only while this node
        still serves the partition as when the request was admitted (cluster
        mode): the same epoch, under the same lease, its deadline not passed.

        A request admitted just before the deadline (or before the process
        was paused: SIGSTOP, a long GC, a swapped-out page) may finish after
        it, when another node may lead the partition: its read may be stale,
        and its write must not be acknowledged (safety rule 5). So the
        answer, a refused condition too, is checked when it is ready, and
        again wherever it waits on its way to the socket (``mkv.rpc.vouch``).
        Called right after admission (``_route``), nothing awaited between:
        the check taken here is the one the request was admitted under.

        Raises:
            UnavailableError: not served here any more; a write may have
                been applied here (its outcome is unknown).
            ConditionFailedError, MovedError: as ``submit``.
        """
        check = self.cluster.serving_check(partition.id) if self.cluster is not None else None
        try:
            result = await partition.submit(command)
        except ConditionFailedError:
            if check is not None:
                check()
                vouch(check)
            raise
        if check is not None:
            check()
            vouch(check)
        return result

    def _not_led(self, partition_id: str) -> pb.RoutingHint | None:
        """Cluster mode, for a stream admitted earlier: None while this node
        still leads ``partition_id``, else the hint naming its owner.

        Raises:
            UnavailableError: past the lease deadline.
        """
        cluster = self.cluster
        assert cluster is not None
        routing = cluster.routing
        if partition_id not in routing.mine:
            return self._cluster_hint(
                routing, partition_id if partition_id in routing.owners else None
            )
        if not cluster.lease_valid():
            raise UnavailableError(
                "This node's lease in etcd has passed its deadline; it serves nothing "
                "until etcd answers again. Watch again, from your last position, on any node."
            )
        return None

    def _cluster_hint(self, routing: Routing, partition_id: str | None) -> pb.RoutingHint:
        """BAD_NODE's hint in cluster mode: the ranges this node leads, and
        the owner of the key asked for when a node leads it."""
        hint = pb.RoutingHint(
            message="This node does not lead the partition owning the key; "
            + ("the owner is named." if partition_id else "no node leads it now: retry."),
            owned=[
                pb.PartitionRange(
                    id=pid,
                    start=routing.owners[pid][0].start,
                    end=routing.owners[pid][0].end or b"",
                    address=routing.owners[pid][1],
                )
                for pid in routing.mine
            ],
            map_version=routing.version,
        )
        if partition_id is not None:
            rng, address = routing.owners[partition_id]
            if address:
                hint.owner.CopyFrom(
                    pb.PartitionRange(
                        id=partition_id, start=rng.start, end=rng.end or b"", address=address
                    )
                )
            else:
                hint.message = "No node leads the partition owning the key now: retry."
        return hint

    def _owner_of_start(self, start: bytes, what: str) -> Partition | pb.RoutingHint:
        """The partition owning the first key of a range (a hint: BAD_NODE).

        Raises:
            InvalidArgumentError: ``start`` is longer than any key may be.
        """
        if len(start) > MAX_KEY_BYTES:
            raise InvalidArgumentError(f"The {what}'s start is over {MAX_KEY_BYTES} bytes.")
        if self.cluster is not None:
            return self._admit([start])
        partition_id = self._registry.router.lookup(start)
        if partition_id is None:
            return self._hint()
        note_partition(partition_id)  # for the request log, should the call fail
        return self._registry.partition(partition_id) or self._hint()

    def _ranges(self) -> list[pb.PartitionRange]:
        return [
            pb.PartitionRange(
                id=pid, start=rng.start, end=rng.end or b"", address=self.advertised_address
            )
            for rng, pid in self._registry.router.ranges
        ]

    def _hint(self, moved: MovedError | None = None) -> pb.RoutingHint:
        if self.cluster is not None and (moved is None or not moved.address):
            # A split or merge moved the key while the request waited: the
            # cluster's map (once etcd has the change) says where it went. A
            # move names its target itself, ahead of etcd's view.
            hint = self._cluster_hint(self.cluster.routing, None)
            if moved is not None:
                hint.message = str(moved)
            return hint
        hint = pb.RoutingHint(
            message=str(moved)
            if moved is not None
            else "No partition on this node owns the key; the ranges it owns are listed.",
            owned=self._ranges(),
            map_version=self._registry.router.version,
        )
        if moved is not None and moved.address:
            # Moved to another node: name it, so the client goes there.
            hint.owner.CopyFrom(
                pb.PartitionRange(
                    id=moved.owner, start=moved.start, end=moved.end or b"", address=moved.address
                )
            )
        return hint


def _get_response(partition: Partition, item: Item | None) -> pb.GetResponse:
    if item is None:
        return pb.GetResponse(status=pb.OK, found=False, partition_id=partition.id)
    return pb.GetResponse(
        status=pb.OK,
        found=True,
        value=item.value,
        seq=item.seq,
        timestamp=item.timestamp,
        partition_id=partition.id,
    )
