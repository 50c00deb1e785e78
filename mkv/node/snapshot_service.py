"""Snapshots and restores as the control plane asks for them.

Everything a caller can get wrong (an unknown partition, a path outside the
root, a snapshot of the partition already running, a corrupt snapshot) is
refused by the call itself; only the copying runs as an operation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from mkv.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, shown
from mkv.node.registry import PartitionRegistry
from mkv.observe.logs import fields
from mkv.operations import Operation, OperationRegistry
from mkv.partition.task import Partition
from mkv.pipeline import check_pipeline
from mkv.snapshots.paths import SnapshotRoot
from mkv.snapshots.restore import RestoreSource, restored_range
from mkv.snapshots.take import take_snapshot
from mkv.store import StoreOptions

__all__ = ["SNAPSHOT", "Restored", "SnapshotService"]

log = logging.getLogger(__name__)

# The kind of a snapshot operation.
SNAPSHOT = "snapshot"


@attrs.frozen
class Restored:
    """A partition restored from a snapshot, and what the caller should know."""

    partition: Partition
    # One sentence each, for the caller (AddPartitionResponse.warnings).
    warnings: tuple[str, ...] = ()


def _check_recorded(pipeline: Sequence[str]) -> None:
    """Raises:
    InvalidArgumentError: the snapshot's pipeline does not build on this node.
    """
    try:
        check_pipeline(pipeline)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(
            f"The snapshot's pipeline '{shown(' '.join(pipeline), 200)}' cannot be used here "
            f"({exc.message}); name a pipeline in the request to restore it with another."
        ) from None


class SnapshotService:
    def __init__(
        self, registry: PartitionRegistry, operations: OperationRegistry, root: SnapshotRoot
    ) -> None:
        self.registry = registry
        self.operations = operations
        self.root = root

    async def snapshot(self, partition_id: str, path: str) -> Operation:
        """Check the request, create the target directory, start the copy.

        Raises:
            NotFoundError: no such partition.
            InvalidArgumentError: the path is bad or leaves the snapshot root.
            AlreadyExistsError: a snapshot of the partition is running.
            UnavailableError: the server is shutting down.
        """
        partition = self._partition(partition_id)
        self._check_not_running(partition_id)
        target = await trio.to_thread.run_sync(self.root.check_directory, path)
        directory = await trio.to_thread.run_sync(
            lambda: self.root.open_directory(target, create=True)
        )
        try:
            # Checked again: another call may have started one while this one waited.
            self._check_not_running(partition_id)
            return self.operations.start(
                SNAPSHOT,
                partition_id,
                lambda operation: take_snapshot(
                    operation, partition, directory, target, self.operations.running_ids
                ),
            )
        except BaseException:
            os.close(directory)
            raise

    async def restore(
        self,
        manifest_path: str,
        *,
        partition_id: str | None,
        start: bytes,
        end: bytes | None,
        store: str | None,
        pipeline: Sequence[str] | None,
    ) -> Restored:
        """Add a partition that starts from the snapshot at ``manifest_path``,
        with the request's store kind and pipeline, else the snapshot's.

        Raises:
            InvalidArgumentError: a bad path, manifest, range or store kind, or
                a corrupt snapshot (``SnapshotCorruptError``).
            AlreadyExistsError: the id is taken or the range overlaps another.
        """
        source = await trio.to_thread.run_sync(RestoreSource.open, self.root, manifest_path)
        try:
            manifest = source.manifest
            key_range = restored_range(start, end, manifest)
            kind = store or manifest.store_kind
            warnings: list[str] = []
            if pipeline is None:
                pipeline = manifest.pipeline
                if pipeline is None:
                    pipeline = self.registry.pipeline_for(kind)
                    warnings.append(
                        f"The snapshot's manifest does not record the pipeline of partition "
                        f"{manifest.partition_id} (it was written before mkv recorded it); the "
                        f"restored partition has the default pipeline "
                        f"'{' '.join(pipeline)}': name the pipeline in the request if it "
                        "had another."
                    )
                else:
                    _check_recorded(pipeline)

            async def prepare(directory: Path, options: StoreOptions) -> None:
                await trio.to_thread.run_sync(source.restore_into, directory, kind, options)

            partition = await self.registry.add(
                partition_id, key_range, kind, pipeline, prepare=prepare
            )
        finally:
            source.close()
        for warning in warnings:
            log.warning(
                "restored partition %s from %s: %s",
                partition.id,
                source.path,
                warning,
                extra=fields(event="restore_warning", partition=partition.id),
            )
        return Restored(partition, tuple(warnings))

    def _partition(self, partition_id: str) -> Partition:
        partition = self.registry.partition(partition_id)
        if partition is None:
            raise NotFoundError(f"No partition with id {shown(partition_id)}.")
        return partition

    def _check_not_running(self, partition_id: str) -> None:
        running = self.operations.running(SNAPSHOT, partition_id)
        if running is not None:
            raise AlreadyExistsError(
                f"A snapshot of partition {partition_id} is already running "
                f"(operation {running.id})."
            )
