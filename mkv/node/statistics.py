"""What a node hands its metrics: each partition's numbers, read from the registry.

``mkv.observe.metrics`` renders numbers it is given and imports no partition
or registry (docs/architecture.md); this module is the node's side of that
handover, the one place that knows both a ``Partition`` and a
``PartitionNumbers``.
"""

from __future__ import annotations

import contextlib

import trio

from mkv.errors import MkvError
from mkv.node.registry import PartitionRegistry
from mkv.observe.metrics import PartitionNumbers, StoreSize

__all__ = ["RegistryStatistics"]

# The most a store size read waits for the store to apply what was acknowledged.
APPLIED_WAIT = 1.0


class RegistryStatistics:
    """A ``PartitionSource`` over a node's partition registry."""

    def __init__(self, registry: PartitionRegistry) -> None:
        self.registry = registry

    def numbers(self) -> list[PartitionNumbers]:
        found = []
        for partition in self.registry:
            stats = partition.statistics()
            states = self.registry.replica_states(partition.id)
            stage = partition.replicate_stage() if states is not None else None
            found.append(
                PartitionNumbers(
                    id=partition.id,
                    state=stats.state.value,
                    inbox_depth=stats.inbox_depth,
                    in_flight=stats.in_flight,
                    last_seq=stats.last_seq,
                    wal_synced_seq=stats.wal_synced_seq,
                    wal_segments=stats.wal_segments,
                    wal_bytes=stats.wal_bytes,
                    feed_bytes=partition.feed.bytes_retained,
                    watchers=partition.feed.watchers,
                    replicas=()
                    if states is None
                    else tuple(
                        (r.node, r.lag_records, r.lag_seconds, r.in_sync) for r in states.replicas
                    ),
                    truncations=0 if stage is None else stage.truncations,
                    isr_shrinks=0 if stage is None else stage.isr_shrinks,
                    isr_expands=0 if stage is None else stage.isr_expands,
                )
            )
        return found

    async def store_sizes(self) -> dict[str, StoreSize]:
        """One partition at a time (``Partition.store_stats`` counts on a thread)."""
        sizes: dict[str, StoreSize] = {}
        for partition in self.registry:
            # Counts include every write acknowledged so far (answered on
            # commit, applied a moment later), as ListPartitions' do; a
            # partition whose applier is stuck is counted as it stands.
            with trio.move_on_after(APPLIED_WAIT), contextlib.suppress(MkvError):
                await partition.wait_applied()
            try:
                stats = await partition.store_stats()
            except MkvError:
                continue  # a failing store is reported by its requests' errors
            sizes[partition.id] = StoreSize(stats.key_count, stats.size_bytes)
        return sizes
