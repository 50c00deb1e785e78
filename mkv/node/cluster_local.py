"""The registry as cluster mode's membership sees it: the partitions on this
node's disk, opened and deleted when etcd assigns or removes them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import trio

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.membership import LocalPartition
from mkv.errors import NotFoundError
from mkv.node.registry import PartitionRegistry

__all__ = ["RegistryPartitions"]


class RegistryPartitions:
    """``mkv.cluster.membership.LocalPartitions`` over a ``PartitionRegistry``."""

    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry
        # Partitions a move running on this node is bringing in (from the
        # copy's install until it serves): reconcile leaves them to the move.
        self.moves_in: set[str] = set()

    def held(self) -> Mapping[str, LocalPartition]:
        return {
            p.id: LocalPartition(p.range, p.store_kind, tuple(p.pipeline_specs))
            for p in self._registry
        }

    async def create(self, record: PartitionRecord) -> None:
        await self._registry.add(record.id, record.range, record.store, record.pipeline)

    def changing(self) -> bool:
        return self._registry.changing

    def moving(self) -> set[str]:
        return self._registry.handing() | self.moves_in

    def copies(self) -> set[str]:
        return self._registry.held_copies()

    async def adopt(self, partition_id: str) -> None:
        await self._registry.serve(partition_id)

    async def delete(self, partition_id: str) -> None:
        # Set aside, not deleted: a removal read from etcd (a mistaken
        # `etcdctl del`, a wrong cluster) must not cost the data at once.
        label = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        # Removed already is what was asked for.
        with contextlib.suppress(NotFoundError):
            await self._registry.remove(partition_id, set_aside=label)

    async def purge_removed(self, older_than: float) -> list[str]:
        return await trio.to_thread.run_sync(self._registry.purge_removed, older_than)
