"""The registry as cluster mode's membership sees it: the partitions on this
node's disk, opened and deleted when etcd assigns or removes them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import trio

from mkv.cluster.keyspace import PartitionRecord
from mkv.cluster.membership import IsrWriter, LocalPartition, ReplicaStates
from mkv.cluster.reconcile import LeaderRef, Role
from mkv.errors import NotFoundError, UnimplementedError
from mkv.node.registry import PartitionRegistry
from mkv.router import KeyRange

__all__ = ["REPLICATE_STAGE", "RegistryPartitions", "ReplicaRegistry", "cluster_pipeline"]

# Whether the cluster's default pipelines get the ``replicate`` stage. Its
# stage spec comes with the replica data path (branch ``replica``, issue 16):
# until that is merged the spec does not exist and check_pipeline would refuse
# it, so this stays False; the integration sets it True (the one switch).
REPLICATE_STAGE = True


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


@runtime_checkable
class ReplicaRegistry(Protocol):
    """The replica data path's methods on ``PartitionRegistry``, as the shared
    design names them (issue 16; built on branch ``replica``). Until it is
    merged the registry lacks them, and cluster mode serves each partition
    on its first replica alone (``replicated()`` is False)."""

    async def open_follower(
        self,
        partition_id: str,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str],
        leader: LeaderRef | None,
    ) -> None: ...

    def set_leader(self, partition_id: str, leader: LeaderRef | None) -> None: ...

    async def lead(
        self,
        partition_id: str,
        epoch: int,
        *,
        replicas: tuple[str, ...],
        isr: frozenset[str],
        isr_writer: IsrWriter,
        min_isr: int,
    ) -> None: ...

    def set_isr(
        self, partition_id: str, replicas: tuple[str, ...], isr: frozenset[str]
    ) -> None: ...

    async def step_down(self, partition_id: str, leader: LeaderRef | None) -> None: ...

    def role(self, partition_id: str) -> Role | None: ...

    def replica_states(self, partition_id: str) -> ReplicaStates | None: ...


class RegistryPartitions:
    """``mkv.cluster.membership.LocalPartitions`` over a ``PartitionRegistry``."""

    def __init__(self, registry: PartitionRegistry) -> None:
        self._registry = registry
        # The same registry, when it has the replica data path.
        self._replicas: ReplicaRegistry | None = (
            registry if isinstance(registry, ReplicaRegistry) else None
        )
        # Partitions a move running on this node is bringing in (from the
        # copy's install until it serves): reconcile leaves them to the move.
        self.moves_in: set[str] = set()

    def held(self) -> Mapping[str, LocalPartition]:
        held = {
            p.id: LocalPartition(p.range, p.store_kind, tuple(p.pipeline_specs))
            for p in self._registry
        }
        # Replicas followed here hold the partition too (so reconcile tells
        # them of leaders, not opens them again); ones found at start and not
        # opened yet do not: reconcile opens them (open_follower).
        for replica in self._registry.replicas():
            held[replica.partition_id] = LocalPartition(
                replica.range, replica.store_kind, replica.pipeline
            )
        return held

    def dormant(self) -> set[str]:
        return self._registry.dormant()

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

    # -- replicas (issue 16): the registry's data path, as the design names it

    def replicated(self) -> bool:
        return self._replicas is not None

    def _data_path(self) -> ReplicaRegistry:
        if self._replicas is None:
            raise UnimplementedError("This node's registry has no replica data path.")
        return self._replicas

    async def open_follower(self, record: PartitionRecord, leader: LeaderRef | None) -> None:
        await self._data_path().open_follower(
            record.id, record.range, record.store, record.pipeline, leader
        )

    def set_leader(self, partition_id: str, leader: LeaderRef | None) -> None:
        self._data_path().set_leader(partition_id, leader)

    async def lead(
        self,
        partition_id: str,
        epoch: int,
        *,
        replicas: tuple[str, ...],
        isr: frozenset[str],
        isr_writer: IsrWriter,
        min_isr: int,
    ) -> None:
        await self._data_path().lead(
            partition_id, epoch, replicas=replicas, isr=isr, isr_writer=isr_writer, min_isr=min_isr
        )

    def set_isr(self, partition_id: str, replicas: tuple[str, ...], isr: frozenset[str]) -> None:
        self._data_path().set_isr(partition_id, replicas, isr)

    async def step_down(self, partition_id: str, leader: LeaderRef | None) -> None:
        await self._data_path().step_down(partition_id, leader)

    def role(self, partition_id: str) -> Role | None:
        return None if self._replicas is None else self._replicas.role(partition_id)

    def replica_states(self, partition_id: str) -> ReplicaStates | None:
        return None if self._replicas is None else self._replicas.replica_states(partition_id)
