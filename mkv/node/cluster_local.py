"""The registry as cluster mode's membership sees it: the partitions on this
node's disk, opened and deleted when etcd assigns or removes them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

import trio

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.membership import LocalPartition
from mkv.errors import NotFoundError
from mkv.node.registry import PartitionRegistry

__all__ = ["REPLICATE_STAGE", "RegistryPartitions", "cluster_pipeline"]

# Whether the cluster's default pipelines get the ``replicate`` stage. Its
# stage spec comes with the replica data path (branch ``replica``, issue 16):
# until that is merged the spec does not exist and check_pipeline would refuse
# it, so this stays False; the integration sets it True (the one switch).
REPLICATE_STAGE = False


def cluster_pipeline(pipeline: Sequence[str], replicate: str) -> tuple[str, ...]:
    """A store's default pipeline as the cluster runs it: ``replicate:<mode>``
    right after the ``wal`` stage (the leader's log is what followers fetch,
    and a write waits for the ISR only once it is durable here). Unchanged
    without a wal stage (nothing to ship), if it has a replicate stage
    already, or while ``REPLICATE_STAGE`` is off."""
    specs = tuple(pipeline)
    names = [spec.partition(":")[0] for spec in specs]
    if not REPLICATE_STAGE or "wal" not in names or "replicate" in names:
        return specs
    at = names.index("wal") + 1
    return (*specs[:at], f"replicate:{replicate}", *specs[at:])


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
