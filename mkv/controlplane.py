"""The ControlPlane service: AddPartition, RemovePartition, ListPartitions."""

from __future__ import annotations

import trio

from mkv.errors import NotFoundError
from mkv.partition import PartitionState
from mkv.registry import PartitionRegistry, PartitionReport
from mkv.router import KeyRange
from mkv.rpc import Handler
from mkv.v1 import control_pb2 as pb

__all__ = ["ControlPlane"]

_STATES = {
    PartitionState.STARTING: pb.STARTING,
    PartitionState.ACTIVE: pb.ACTIVE,
    PartitionState.DRAINING: pb.DRAINING,
    PartitionState.STOPPED: pb.STOPPED,
}


class ControlPlane:
    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry

    def methods(self) -> dict[str, tuple[type, Handler]]:
        return {
            "AddPartition": (pb.AddPartitionRequest, self.add_partition),
            "RemovePartition": (pb.RemovePartitionRequest, self.remove_partition),
            "ListPartitions": (pb.ListPartitionsRequest, self.list_partitions),
        }

    async def add_partition(self, request: pb.AddPartitionRequest) -> pb.AddPartitionResponse:
        key_range = KeyRange.from_wire(request.start, request.end)
        store = request.store or self._registry.default_store
        pipeline = list(request.pipeline) if request.pipeline else None
        partition = await self._registry.add(request.id or None, key_range, store, pipeline)
        info = await self._registry.info(partition)
        return pb.AddPartitionResponse(partition=_to_proto(info))

    async def remove_partition(
        self, request: pb.RemovePartitionRequest
    ) -> pb.RemovePartitionResponse:
        if not request.id:
            raise NotFoundError("RemovePartition needs the id of a partition.")
        info = await self._registry.remove(request.id)
        return pb.RemovePartitionResponse(partition=_to_proto(info))

    async def list_partitions(self, request: pb.ListPartitionsRequest) -> pb.ListPartitionsResponse:
        partitions = sorted(self._registry, key=lambda p: p.range.start)
        infos: list[PartitionReport | None] = [None] * len(partitions)

        async def collect(index: int) -> None:
            infos[index] = await self._registry.info(partitions[index])

        # Statistics may scan tables; gather them side by side.
        async with trio.open_nursery() as nursery:
            for index in range(len(partitions)):
                nursery.start_soon(collect, index)
        return pb.ListPartitionsResponse(
            partitions=[_to_proto(info) for info in infos if info is not None]
        )


def _to_proto(info: PartitionReport) -> pb.PartitionInfo:
    return pb.PartitionInfo(
        id=info.id,
        start=info.range.start,
        end=info.range.end or b"",
        store=info.store,
        pipeline=info.pipeline,
        state=_STATES[info.state],
        key_count=info.stats.key_count,
        size_bytes=info.stats.size_bytes,
        last_seq=info.last_seq,
    )
