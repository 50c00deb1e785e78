"""The leader's half of a replicated partition (issue 16): promotion and stepping down.

``lead`` makes this node's copy of a partition its leader at an epoch: the
partition is opened (if it is not running) with its log replayed only up to
the commit it knew, the writes logged past it adopted as in flight; its
``replicate`` stage is told the epoch and the in-sync set; an epoch-start
record (a write with no puts and no deletes, numbered after the last record)
is logged, its epoch written to the epoch file before it completes, and
``lead`` returns once every ISR member has it durable (cluster.md rule 4:
nothing is served before). The adopted tail comes before it in the log, so
it is committed under the new epoch with it, and applied only then: a
deposed leader's store never holds a write the next one may lack.

``step_down`` refuses new writes, fails every write the ISR has not
acknowledged with UNAVAILABLE ("outcome unknown": a follower may have it),
and stops the partition; reopening it as a follower of the new leader is the
follower's half (``mkv.node.replica_follower``, another branch).

The registry's methods (``PartitionRegistry.lead`` and the rest) are thin
calls into this module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol

import trio

from mkv.cluster.membership import IsrWriter
from mkv.cluster.reconcile import LeaderRef
from mkv.errors import FailedPreconditionError, NotFoundError, UnavailableError
from mkv.node.catalog import CatalogEntry
from mkv.observe.logs import fields
from mkv.partition.task import Partition, PartitionState, Upsert
from mkv.pipeline.isr import InSyncSet
from mkv.pipeline.replicate import EPOCH_FILE, ReplicaStatesInfo, ReplicateStage
from mkv.router import KeyRange
from mkv.wal.epochs import read_epoch_file

__all__ = ["IsrWriter", "Leaderships", "ReplicaStatesInfo", "Role"]

log = logging.getLogger("mkv.replication")

Role = Literal["leader", "follower"]


class _Registry(Protocol):
    """What leadership needs of ``PartitionRegistry`` (which imports this module)."""

    node_id: str
    replica_lag_timeout: float

    def partition(self, partition_id: str) -> Partition | None: ...

    def set_epoch(self, partition_id: str, epoch: int) -> None: ...

    def purging(self, partition_id: str) -> tuple[KeyRange, ...]: ...

    async def start_leader(self, entry: CatalogEntry, commit_seq: int) -> Partition: ...

    async def release_replica(self, partition_id: str) -> CatalogEntry | None: ...

    def directory_of(self, partition_id: str) -> Path: ...

    def spawn(self, fn: Callable[[str], Awaitable[None]], partition_id: str) -> None: ...

    async def follow_stepped_down(self, partition_id: str, leader: LeaderRef | None) -> None: ...


class Leaderships:
    """The partitions this node leads with replicas, and their state."""

    def __init__(self, registry: _Registry) -> None:
        self._registry = registry
        # Partitions serving as leader (the epoch-start record committed), by epoch.
        self.serving: dict[str, int] = {}
        # Partitions being promoted, by epoch.
        self.promoting: dict[str, int] = {}
        self.elections_led = 0

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
        """Lead ``partition_id`` at ``epoch``; return once serving.

        Raises:
            NotFoundError: the partition is not on this node.
            FailedPreconditionError: its pipeline has no replicate stage, or
                ``epoch`` is older than its log's.
            UnavailableError, StorageError: the epoch-start record failed
                (deposed meanwhile, or the log failed).
        """
        registry = self._registry
        me = registry.node_id
        if me not in replicas:
            raise FailedPreconditionError(
                f"This node ({me!r}) is not among partition {partition_id}'s replicas."
            )
        # A follower of it here is closed first; its files are opened as a
        # stopped leader's are.
        if (entry := await registry.release_replica(partition_id)) is not None:
            await self._open(entry)
        partition = registry.partition(partition_id)
        if partition is None:
            raise NotFoundError(f"No partition {partition_id!r} on this node to lead.")
        if partition.state is PartitionState.FAILED:
            # Its files are opened again (the task may still answer reads).
            partition.close()
            await partition.wait_stopped()
        if partition.state in (PartitionState.STOPPED, PartitionState.FAILED):
            partition = await self._open(
                CatalogEntry(
                    partition.id,
                    partition.range,
                    partition.store_kind,
                    partition.pipeline_specs,
                    registry.purging(partition.id),
                    partition.history_floor,
                )
            )
        stage = partition.replicate_stage()
        if stage is None:
            raise FailedPreconditionError(
                f"Partition {partition_id}'s pipeline ({' '.join(partition.pipeline_specs)}) "
                "has no replicate stage: it cannot lead replicas."
            )
        self.serving.pop(partition_id, None)
        self.promoting[partition_id] = epoch
        in_sync = InSyncSet(
            me,
            replicas,
            isr,
            min_isr=min_isr,
            lag_timeout=registry.replica_lag_timeout,
            now=trio.current_time(),
        )

        async def change_isr(wanted: frozenset[str]) -> bool:
            return await isr_writer.change_isr(partition_id, epoch, wanted)

        def deposed() -> None:
            self._deposed(partition_id, epoch)

        stage.lead(epoch, in_sync, change_isr, deposed)
        registry.set_epoch(partition_id, epoch)
        # The epoch-start record: the ISR commits it, and with it the tail
        # adopted before it; until then nothing is served.
        result = await partition.submit(Upsert(puts=(), size=0))
        # (replicate:async answers it at the local log: the ISR must have it
        # all the same before anything is served.)
        await stage.wait_committed(result.seq)
        if self.promoting.get(partition_id) != epoch:
            raise UnavailableError(f"Partition {partition_id} was stepped down while promoted.")
        del self.promoting[partition_id]
        self.serving[partition_id] = epoch
        self.elections_led += 1
        log.info(
            "partition %s: leading at epoch %d from seq %d (ISR %s)",
            partition_id,
            epoch,
            result.seq,
            ", ".join(sorted(in_sync.isr)),
            extra=fields(event="replica_leading", partition=partition_id, seq=result.seq),
        )

    async def _open(self, entry: CatalogEntry) -> Partition:
        """Open a partition's files as its leader: the log replayed only up
        to the commit known (the store's seq, or the epoch file's), the rest
        adopted as writes the ISR must commit first."""
        registry = self._registry
        path = registry.directory_of(entry.id) / EPOCH_FILE
        history = await trio.to_thread.run_sync(read_epoch_file, path)
        return await registry.start_leader(entry, history.commit_seq)

    def failed(self, partition_id: str) -> bool:
        """A partition's log or store failed: if it led replicas, it no longer
        does (role None, so the cluster layer leads it again, which reopens
        it with its log replayed only through the commit: the registry's
        own reopen would replay the whole log, uncommitted tail and all).
        Returns whether it did."""
        if partition_id not in self.serving and partition_id not in self.promoting:
            return False
        self.serving.pop(partition_id, None)
        self.promoting.pop(partition_id, None)
        log.warning(
            "partition %s failed while leading replicas; it serves again once led again",
            partition_id,
            extra=fields(event="replica_leader_failed", partition=partition_id),
        )
        return True

    def _deposed(self, partition_id: str, epoch: int) -> None:
        """An ISR change was refused: another node leads. Step down (once)."""
        if epoch not in (self.serving.get(partition_id), self.promoting.get(partition_id)):
            return
        log.warning(
            "partition %s: deposed at epoch %d (the ISR change's guard failed); stepping down",
            partition_id,
            epoch,
            extra=fields(event="replica_deposed", partition=partition_id),
        )
        self.serving.pop(partition_id, None)
        self.promoting.pop(partition_id, None)
        self._registry.spawn(self._step_down_and_follow, partition_id)

    async def _step_down_and_follow(self, partition_id: str) -> None:
        """A deposed leader's step-down: its files then follow (nobody yet;
        reconcile names the new leader). Stopped and not following, it would
        be held here yet neither lead nor follow: reconcile's SetLeader
        finds no follower, and the replica never rejoins the ISR."""
        await self.step_down(partition_id)
        await self._registry.follow_stepped_down(partition_id, None)

    async def step_down(self, partition_id: str) -> None:
        """Stop leading: fail what the ISR has not acknowledged, stop the partition."""
        self.serving.pop(partition_id, None)
        self.promoting.pop(partition_id, None)
        registry = self._registry
        partition = registry.partition(partition_id)
        if partition is None:
            return
        registry.set_epoch(partition_id, 0)
        stage = partition.replicate_stage()
        if stage is not None:
            stage.abandon(
                UnavailableError(
                    f"This node stopped leading partition {partition_id} before the write "
                    "was acknowledged by every in-sync replica: its outcome is unknown; "
                    "retry and check."
                )
            )
        partition.close()
        await partition.wait_stopped()
        log.info(
            "partition %s: stepped down at seq %d; closed until it follows the new leader",
            partition_id,
            partition.last_seq(),
            extra=fields(event="replica_stepped_down", partition=partition_id),
        )

    def role(self, partition_id: str) -> Role | None:
        return "leader" if partition_id in self.serving else None

    def stage(self, partition_id: str) -> ReplicateStage | None:
        partition = self._registry.partition(partition_id)
        if partition is None or (
            partition_id not in self.serving and partition_id not in self.promoting
        ):
            return None
        return partition.replicate_stage()
