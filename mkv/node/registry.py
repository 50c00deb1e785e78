"""The PartitionRegistry: partition lifecycles, the router, and the catalog.

The registry's nursery owns every partition task. Control-plane changes run
one at a time (a lock) and in a crash-safe order: a new partition's store is
opened before the catalog names it, and a removed partition leaves the catalog
before its files are deleted, so a crash never leaves the catalog naming a
partition that has no files. A partition restored from a snapshot gets its
files (``prepare``) before its store is opened, so the same holds.

A partition that fails (its log or store cannot be written) ends alone: it
refuses writes, and is reopened on the same files, as a restart would open
it, by ``reopen`` or by the registry itself once a probe of its directories
succeeds (retried with backoff).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import attrs
import trio

from mkv.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    MkvError,
    NotFoundError,
    StorageError,
    UnavailableError,
    leaves,
    shown,
)
from mkv.node.catalog import Catalog, CatalogEntry, check_partition_id
from mkv.observe.logs import fields
from mkv.partition.feed import WATCH_RETENTION_BYTES
from mkv.partition.task import Partition, PartitionState
from mkv.pipeline import UNOBSERVED, StageObserver, check_pipeline, default_pipeline
from mkv.router import KeyRange, Router
from mkv.store import DEFAULT_CACHE_BYTES, StoreOptions, StoreStats, check_store_kind
from mkv.store.files import make_directory
from mkv.worker import WorkerPool

__all__ = ["PartitionRegistry", "PartitionReport"]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.registry")

DEFAULT_PARTITION_ID = "default"
# A failed partition is probed (and reopened when the probe succeeds) after
# these many seconds, doubling each time up to the second.
REOPEN_FIRST_DELAY = 1.0
REOPEN_MAX_DELAY = 30.0


@attrs.frozen
class PartitionReport:
    id: str
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]
    state: PartitionState
    last_seq: int
    stats: StoreStats


class PartitionRegistry:
    """Starts, stops and finds partitions; persists what exists."""

    def __init__(
        self,
        data_dir: Path,
        default_store: str = "sqlite",
        default_pipeline: Sequence[str] | None = None,
        *,
        watch_retention_bytes: int = WATCH_RETENTION_BYTES,
        durable_dir: Path | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        stage_observer: StageObserver = UNOBSERVED,
        workers: WorkerPool | None = None,
    ) -> None:
        """Args:
        durable_dir: where stores that keep a durable copy apart (``caching``)
            put it, in a subdirectory per partition; None: in the partition's
            own directory.
        cache_bytes: the bound of each caching partition's memory cache.
        stage_observer: handed to every partition's pipeline stages (metrics).
        workers: the node's thread pool every partition's store and log jobs
            run on; None: each partition has threads of its own.
        """
        self.data_dir = data_dir
        self.watch_retention_bytes = watch_retention_bytes
        self.durable_dir = durable_dir
        self.cache_bytes = cache_bytes
        self.stage_observer = stage_observer
        self.workers = workers
        self.default_store = default_store
        self.default_pipeline = default_pipeline
        self._catalog_path = data_dir / "catalog.json"
        self._partitions: dict[str, Partition] = {}
        self._router = Router.build([], version=0)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()

    # -- the data plane's view ------------------------------------------------

    @property
    def router(self) -> Router:
        return self._router

    def pipeline_for(self, store: str) -> tuple[str, ...]:
        """The pipeline a partition of ``store`` gets when none is named:
        the node's default, or else the store kind's."""
        if self.default_pipeline is not None:
            return tuple(self.default_pipeline)
        return default_pipeline(store)

    def partition(self, partition_id: str) -> Partition | None:
        return self._partitions.get(partition_id)

    def __iter__(self) -> Iterator[Partition]:
        return iter(list(self._partitions.values()))

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring back every catalogued partition (or create the default one), then serve.

        Returns once ``close()`` was called and every partition has drained.
        """
        check_store_kind(self.default_store)
        if self.default_pipeline is not None:
            check_pipeline(self.default_pipeline)
        await trio.to_thread.run_sync(self._prepare_data_dir)
        catalog = await trio.to_thread.run_sync(Catalog.load, self._catalog_path)
        if catalog is None:
            await trio.to_thread.run_sync(self._check_no_orphans)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if catalog is None:
                log.info(
                    "no catalog in %s: creating partition %r owning every key",
                    self.data_dir,
                    DEFAULT_PARTITION_ID,
                    extra=fields(event="catalog_created", partition=DEFAULT_PARTITION_ID),
                )
                await self.add(DEFAULT_PARTITION_ID, KeyRange(b"", None), self.default_store)
            else:
                for entry in catalog.partitions:
                    await self._start_catalogued(entry)
                self._publish(catalog.map_version)
            task_status.started()
            await self._closing.wait()
            for partition in self._partitions.values():
                partition.close()
        self._nursery = None

    def close(self) -> None:
        """Stop accepting requests; ``run`` returns when partitions have drained."""
        self._closing.set()

    def _prepare_data_dir(self) -> None:
        # Durable names: after a power cut a data directory that was never
        # fsynced into its parent would be gone, with every partition in it.
        make_directory(self.data_dir / "partitions")
        if self.durable_dir is not None:
            make_directory(self.durable_dir)

    def _check_no_orphans(self) -> None:
        """Refuse to start on partition files without a catalog; blocking.

        Without one the node would create the default partition, and adding
        it wipes whatever its directory holds: a lost or deleted catalog.json
        would silently cost every key.

        Raises:
            StorageError: naming what was found and how to recover.
        """
        roots = [self.data_dir / "partitions"]
        if self.durable_dir is not None:
            roots.append(self.durable_dir)
        found = sorted(
            str(directory)
            for root in roots
            for directory in root.iterdir()
            if directory.is_dir() and any(p.is_file() for p in directory.rglob("*"))
        )
        if found:
            raise StorageError(
                f"{self._catalog_path} is missing but partition data is present "
                f"({', '.join(found[:5])}{', ...' if len(found) > 5 else ''}); "
                "refusing to start rather than create an empty default partition. "
                "Put catalog.json back from a backup, or move those directories aside "
                "to start empty."
            )

    def _directory(self, partition_id: str) -> Path:
        return self.data_dir / "partitions" / partition_id

    def _store_options(self, partition_id: str) -> StoreOptions:
        durable = None if self.durable_dir is None else self.durable_dir / partition_id
        return StoreOptions(durable_directory=durable, cache_bytes=self.cache_bytes)

    async def _start(self, entry: CatalogEntry) -> Partition:
        partition = self._new_partition(entry)
        await self._run(partition)
        return partition

    async def _run(self, partition: Partition) -> None:
        """Start ``partition`` in the registry's nursery and route to it."""
        assert self._nursery is not None
        await trio.to_thread.run_sync(make_directory, partition.directory)
        await self._nursery.start(partition.run)
        self._partitions[partition.id] = partition

    def _new_partition(self, entry: CatalogEntry) -> Partition:
        return Partition(
            entry.id,
            entry.range,
            entry.store,
            entry.pipeline,
            self._directory(entry.id),
            watch_retention_bytes=self.watch_retention_bytes,
            store_options=self._store_options(entry.id),
            on_failure=self._partition_failed,
            stage_observer=self.stage_observer,
            workers=self.workers,
        )

    async def _start_catalogued(self, entry: CatalogEntry) -> None:
        """Start a partition the catalog names; if it cannot start, it stays
        in the catalog and the router, refusing every request with the
        reason, and the node and the other partitions go on."""
        partition = self._new_partition(entry)
        try:
            # Made when the partition was added: gone now means deleted or not
            # mounted, and starting it empty would hide that its data is lost.
            if not await trio.to_thread.run_sync(partition.directory.is_dir):
                raise StorageError(
                    f"The catalog names partition {entry.id}, but its directory "
                    f"{partition.directory} is missing; put it back, or remove the partition."
                )
            await self._run(partition)
        except Exception as exc:
            # Any failure, not only a StorageError: whatever one partition's
            # files hold must not keep the others from serving.
            # One line for what mkv itself refused, a traceback for anything else.
            causes = leaves(exc)
            expected = all(isinstance(cause, MkvError) for cause in causes)
            log.error(
                "partition %s refused to start: %s",
                entry.id,
                "; ".join(str(cause) if expected else repr(cause) for cause in causes),
                exc_info=None if expected else exc,
                extra=fields(event="partition_refused", partition=entry.id),
            )
            partition.refuse()
            self._partitions[entry.id] = partition

    def _partition_failed(self, partition: Partition) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._reopen_when_possible, partition)

    async def _reopen_when_possible(self, partition: Partition) -> None:
        """Reopen a failed partition once its directories take writes again.

        Until the probe succeeds the failed partition is left alone, so it
        keeps answering reads; a reopen that fails after a good probe leaves
        it stopped (and FAILED), and the retries go on.
        """
        delay = REOPEN_FIRST_DELAY
        while True:
            with trio.move_on_after(delay):
                await self._closing.wait()
            delay = min(delay * 2, REOPEN_MAX_DELAY)
            if self._closing.is_set() or self._partitions.get(partition.id) is not partition:
                return  # shutting down, removed, or reopened by hand
            if not await trio.to_thread.run_sync(partition.probe):
                continue
            try:
                await self.reopen(partition.id)
            except MkvError as exc:
                log.warning(
                    "partition %s: reopening failed (%s); retrying in %.0f s",
                    partition.id,
                    exc,
                    delay,
                    extra=fields(event="reopen_failed", partition=partition.id),
                )
                continue
            return

    def _publish(self, map_version: int) -> None:
        """Swap in a router over the current partitions."""
        self._router = Router.build(
            ((p.range, p.id) for p in self._partitions.values()), version=map_version
        )

    async def _save_catalog(self, map_version: int) -> None:
        catalog = Catalog(
            partitions=[
                CatalogEntry(p.id, p.range, p.store_kind, p.pipeline_specs)
                for p in self._partitions.values()
            ],
            map_version=map_version,
        )
        await trio.to_thread.run_sync(catalog.save, self._catalog_path)

    # -- the control plane ------------------------------------------------------

    async def add(
        self,
        partition_id: str | None,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str] | None = None,
        *,
        prepare: Callable[[Path, StoreOptions], Awaitable[None]] | None = None,
    ) -> Partition:
        """Create a partition, persist it in the catalog, and start routing to it.

        Args:
            pipeline: stage specs; None for the node's default pipeline, or
                else the store kind's.
            prepare: called with the partition's directory (not yet created)
                and its store options once the id and range are known to be
                free, before the store is opened: a restore puts the
                snapshot's data there. If it raises, the directory (and a
                caching store's durable directory) is removed and nothing is
                added.

        Raises:
            InvalidArgumentError: bad id, store kind or pipeline.
            AlreadyExistsError: the id is taken or the range overlaps another.
        """
        check_store_kind(store)
        pipeline = self.pipeline_for(store) if pipeline is None else tuple(pipeline)
        check_pipeline(pipeline)
        if partition_id:
            check_partition_id(partition_id)
        async with self._lock:
            if self._closing.is_set():
                raise UnavailableError("The server is shutting down.")
            if not partition_id:
                partition_id = self._free_id()
            if partition_id in self._partitions:
                raise AlreadyExistsError(f"A partition with id {partition_id} already exists.")
            for other_range, other_id in self._router.conflicts(key_range):
                raise AlreadyExistsError(
                    f"Range {key_range} overlaps range {other_range} of partition {other_id}."
                )
            # Files left by a partition that never made it into the catalog
            # (a crash during an earlier add) must not leak into this one.
            await trio.to_thread.run_sync(self._delete_files, partition_id)
            try:
                if prepare is not None:
                    await prepare(self._directory(partition_id), self._store_options(partition_id))
                partition = await self._start(
                    CatalogEntry(partition_id, key_range, store, pipeline)
                )
            except BaseException:
                # Not in the catalog: whatever was written is garbage.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._delete_files, partition_id)
                raise
            version = self._router.version + 1
            try:
                await self._save_catalog(version)
            except BaseException:
                del self._partitions[partition_id]
                partition.close()
                with trio.CancelScope(shield=True):
                    await partition.wait_stopped()
                    await trio.to_thread.run_sync(self._delete_files, partition_id)
                raise
            self._publish(version)
            log.info(
                "added partition %s %s (%s)",
                partition_id,
                key_range,
                store,
                extra=fields(event="partition_added", partition=partition_id, store=store),
            )
            return partition

    async def remove(self, partition_id: str) -> PartitionReport:
        """Stop routing to a partition, drain it, forget it, delete its files.

        Raises:
            NotFoundError: no such partition.
        """
        async with self._lock:
            partition = self._partitions.get(partition_id)
            if partition is None:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            info = await self.info(partition)
            del self._partitions[partition_id]
            version = self._router.version + 1
            # New requests get BAD_NODE from here on; queued ones still finish.
            self._publish(version)
            partition.close()
            await partition.wait_stopped()
            await self._save_catalog(version)
            await trio.to_thread.run_sync(self._delete_files, partition_id)
            log.info(
                "removed partition %s %s",
                partition_id,
                partition.range,
                extra=fields(event="partition_removed", partition=partition_id),
            )
            # Statistics are from when removal began (the store is closed now);
            # the sequence number covers the writes drained since.
            return attrs.evolve(info, state=PartitionState.STOPPED, last_seq=partition.last_seq())

    async def reopen(self, partition_id: str) -> Partition:
        """Replace a failed partition by a new one on the same files, opened as
        a restart opens it: the store, then the log replayed after it, so
        nothing acknowledged is lost or applied twice and sequence numbers
        go on from the last one logged.

        Raises:
            NotFoundError: no such partition.
            FailedPreconditionError: the partition has not failed.
            StorageError: it cannot be opened yet; it stays failed.
            UnavailableError: the node is shutting down.
        """
        async with self._lock:
            if self._closing.is_set():
                raise UnavailableError("The server is shutting down.")
            failed = self._partitions.get(partition_id)
            if failed is None:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            if failed.state is not PartitionState.FAILED:
                raise FailedPreconditionError(
                    f"Partition {partition_id} is {failed.state.value}, not failed: "
                    "there is nothing to reopen."
                )
            # Its log and store must be closed before another opens them.
            failed.close()
            await failed.wait_stopped()
            entry = CatalogEntry(failed.id, failed.range, failed.store_kind, failed.pipeline_specs)
            try:
                partition = await self._start(entry)
            except MkvError:
                raise
            except Exception as exc:
                raise StorageError(f"Reopening partition {partition_id} failed: {exc}") from exc
            log.info(
                "reopened partition %s from seq %d",
                partition_id,
                partition.last_seq(),
                extra=fields(event="partition_reopened", partition=partition_id),
            )
            return partition

    async def info(self, partition: Partition) -> PartitionReport:
        return PartitionReport(
            id=partition.id,
            range=partition.range,
            store=partition.store_kind,
            pipeline=partition.pipeline_specs,
            state=partition.state,
            last_seq=partition.last_seq(),
            stats=await partition.store_stats(),
        )

    def _free_id(self) -> str:
        n = len(self._partitions) + 1
        while f"p{n}" in self._partitions or self._directory(f"p{n}").exists():
            n += 1
        return f"p{n}"

    def _delete_files(self, partition_id: str) -> None:
        shutil.rmtree(self._directory(partition_id), ignore_errors=True)
        # A caching partition's durable store, when it lives apart.
        if (durable := self._store_options(partition_id).durable_directory) is not None:
            shutil.rmtree(durable, ignore_errors=True)
