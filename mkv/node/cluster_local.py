"""The registry as cluster mode's membership sees it: the partitions on this
node's disk, opened and deleted when etcd assigns or removes them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.membership import LocalPartition
from mkv.errors import NotFoundError
from mkv.node.registry import PartitionRegistry

__all__ = ["RegistryPartitions"]


class RegistryPartitions:
    """``mkv.cluster.membership.LocalPartitions`` over a ``PartitionRegistry``."""

    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry

    def held(self) -> Mapping[str, LocalPartition]:
        return {
            p.id: LocalPartition(p.range, p.store_kind, tuple(p.pipeline_specs))
            for p in self._registry
        }

    async def create(self, record: PartitionRecord) -> None:
        await self._registry.add(record.id, record.range, record.store, record.pipeline)

    def changing(self) -> bool:
        return self._registry.changing

    async def delete(self, partition_id: str) -> None:
        # Removed already is what was asked for.
        with contextlib.suppress(NotFoundError):
            await self._registry.remove(partition_id)
