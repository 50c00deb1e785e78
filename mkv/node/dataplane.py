"""The DataPlane service: Upsert, Get, Remove, Increment, BatchGet, Scan,
Watch and PartitionMap.

Handlers check input, route it, and hand it to the partition; they hold no
state of their own. Errors are raised as ``mkv.errors`` exceptions and become
gRPC statuses in ``mkv.rpc.server``; a key nobody owns is not an error but a
``BAD_NODE`` status in the response, with the owned ranges as a hint.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import AsyncGenerator, Sequence

import trio

from mkv.errors import (
    ConditionFailedError,
    InvalidArgumentError,
    MovedError,
    ResourceExhaustedError,
)
from mkv.node.registry import PartitionRegistry
from mkv.node.watching import watch_partition
from mkv.observe.logs import note_partition
from mkv.partition.mutations import Condition
from mkv.partition.task import Get, Increment, Partition, Read, Remove, Upsert, WriteResult
from mkv.rpc.server import Handler, ServerStream
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
    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry
        # Set by the node once the data port is bound, for PartitionMap.
        self.advertised_address = ""

    def methods(self) -> dict[str, tuple[type, Handler | ServerStream]]:
        return {
            "Upsert": (pb.UpsertRequest, self.upsert),
            "Get": (pb.GetRequest, self.get),
            "Remove": (pb.RemoveRequest, self.remove),
            "PartitionMap": (pb.PartitionMapRequest, self.partition_map),
            "Increment": (pb.IncrementRequest, self.increment),
            "BatchGet": (pb.BatchGetRequest, self.batch_get),
            "Scan": (pb.ScanRequest, ServerStream(self.scan)),
            "Watch": (pb.WatchRequest, ServerStream(self.watch)),
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
        if partition is None:
            return pb.UpsertResponse(status=pb.BAD_NODE, hint=self._hint())
        payload = request.SerializeToString()
        try:
            result = await partition.submit(
                Upsert(puts, size=len(payload), payload=payload, conditions=conditions)
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
        if partition is None:
            return pb.GetResponse(status=pb.BAD_NODE, hint=self._hint())
        try:
            item = await partition.submit(Get(request.key))
        except MovedError as exc:
            return pb.GetResponse(status=pb.BAD_NODE, hint=self._hint(exc))
        if item is None:
            return pb.GetResponse(status=pb.OK, found=False, partition_id=partition.id)
        assert isinstance(item, Item)
        return pb.GetResponse(
            status=pb.OK,
            found=True,
            value=item.value,
            seq=item.seq,
            timestamp=item.timestamp,
            partition_id=partition.id,
        )

    async def remove(self, request: pb.RemoveRequest) -> pb.RemoveResponse:
        keys = list(request.keys)
        if not keys:
            raise InvalidArgumentError("A remove needs at least one key.")
        conditions = _conditions(request.conditions)
        partition = self._route(keys + [key for key, _ in conditions], request.map_version)
        if partition is None:
            return pb.RemoveResponse(status=pb.BAD_NODE, hint=self._hint())
        try:
            result = await partition.submit(
                Remove(keys, size=request.ByteSize(), conditions=conditions)
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
        if partition is None:
            return pb.IncrementResponse(status=pb.BAD_NODE, hint=self._hint())
        try:
            result = await partition.submit(Increment(deltas, size=request.ByteSize()))
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
        if partition is None:
            return pb.BatchGetResponse(status=pb.BAD_NODE, hint=self._hint())

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
            seq, items = await partition.submit(Read(read))
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
        if partition is None:
            yield pb.ScanResponse(status=pb.BAD_NODE, hint=self._hint())
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
            seq, page, stop = await partition.submit(Read(read))
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
        if partition is None:
            yield pb.WatchResponse(status=pb.BAD_NODE, hint=self._hint())
            return
        async with contextlib.aclosing(
            watch_partition(partition, start, end, request.from_seq)
        ) as responses:
            async for response in responses:
                yield response

    async def partition_map(self, request: pb.PartitionMapRequest) -> pb.PartitionMapResponse:
        router = self._registry.router
        return pb.PartitionMapResponse(version=router.version, partitions=self._ranges())

    def _route(self, keys: Sequence[bytes], map_version: int = 0) -> Partition | None:
        """The partition owning every key, None when none owns them.

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
        router = self._registry.router
        try:
            partition_id = router.lookup_span(min(keys), max(keys))
        except InvalidArgumentError:
            if map_version and map_version != router.version:
                return None  # split by an old map: BAD_NODE tells the client to re-route
            raise
        if partition_id is None:
            return None
        note_partition(partition_id)  # for the request log, should the call fail
        # A partition removed since the router was read is as gone as one never had.
        return self._registry.partition(partition_id)

    def _owner_of_start(self, start: bytes, what: str) -> Partition | None:
        """The partition owning the first key of a range (None: BAD_NODE).

        Raises:
            InvalidArgumentError: ``start`` is longer than any key may be.
        """
        if len(start) > MAX_KEY_BYTES:
            raise InvalidArgumentError(f"The {what}'s start is over {MAX_KEY_BYTES} bytes.")
        partition_id = self._registry.router.lookup(start)
        if partition_id is None:
            return None
        note_partition(partition_id)  # for the request log, should the call fail
        return self._registry.partition(partition_id)

    def _ranges(self) -> list[pb.PartitionRange]:
        return [
            pb.PartitionRange(
                id=pid, start=rng.start, end=rng.end or b"", address=self.advertised_address
            )
            for rng, pid in self._registry.router.ranges
        ]

    def _hint(self, moved: MovedError | None = None) -> pb.RoutingHint:
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
