"""The DataPlane service: Upsert, Get, Remove and PartitionMap.

Handlers check input, route it, and hand it to the partition; they hold no
state of their own. Errors are raised as ``mkv.errors`` exceptions and become
gRPC statuses in ``mkv.rpc``; a key nobody owns is not an error but a
``BAD_NODE`` status in the response, with the owned ranges as a hint.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from mkv.errors import InvalidArgumentError
from mkv.partition import Get, Partition, Remove, Upsert, WriteResult
from mkv.registry import PartitionRegistry
from mkv.rpc import Handler
from mkv.store import Item
from mkv.v1 import data_pb2 as pb
from mkv.wire import MAX_KEY_BYTES

__all__ = ["DataPlane"]


# Upserts with more entries than this are unpacked on a worker thread.
INLINE_ENTRIES = 1000


def _unpack(entries: Sequence[pb.Entry]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The keys, and the (key, value) pairs, of an upsert's entries."""
    keys = [e.key for e in entries]
    return keys, list(zip(keys, [e.value for e in entries], strict=True))


class DataPlane:
    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry
        # Set by the node once the data port is bound, for PartitionMap.
        self.advertised_address = ""

    def methods(self) -> dict[str, tuple[type, Handler]]:
        return {
            "Upsert": (pb.UpsertRequest, self.upsert),
            "Get": (pb.GetRequest, self.get),
            "Remove": (pb.RemoveRequest, self.remove),
            "PartitionMap": (pb.PartitionMapRequest, self.partition_map),
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
        partition = self._route(keys, request.map_version)
        if partition is None:
            return pb.UpsertResponse(status=pb.BAD_NODE, hint=self._hint())
        payload = request.SerializeToString()
        result = await partition.submit(Upsert(puts, size=len(payload), payload=payload))
        assert isinstance(result, WriteResult)
        return pb.UpsertResponse(
            status=pb.OK, seq=result.seq, timestamp=result.timestamp, partition_id=partition.id
        )

    async def get(self, request: pb.GetRequest) -> pb.GetResponse:
        partition = self._route([request.key])
        if partition is None:
            return pb.GetResponse(status=pb.BAD_NODE, hint=self._hint())
        item = await partition.submit(Get(request.key))
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
        partition = self._route(keys, request.map_version)
        if partition is None:
            return pb.RemoveResponse(status=pb.BAD_NODE, hint=self._hint())
        result = await partition.submit(Remove(keys, size=request.ByteSize()))
        assert isinstance(result, WriteResult)
        return pb.RemoveResponse(
            status=pb.OK,
            removed=result.removed,
            seq=result.seq,
            timestamp=result.timestamp,
            partition_id=partition.id,
        )

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
        # A partition removed since the router was read is as gone as one never had.
        return None if partition_id is None else self._registry.partition(partition_id)

    def _ranges(self) -> list[pb.PartitionRange]:
        return [
            pb.PartitionRange(
                id=pid, start=rng.start, end=rng.end or b"", address=self.advertised_address
            )
            for rng, pid in self._registry.router.ranges
        ]

    def _hint(self) -> pb.RoutingHint:
        return pb.RoutingHint(
            message="No partition on this node owns the key; the ranges it owns are listed.",
            owned=self._ranges(),
            map_version=self._registry.router.version,
        )
