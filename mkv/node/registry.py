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

import contextlib
import functools
import logging
import os
import shutil
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import attrs
import trio

from mkv.cluster.reconcile import LeaderRef
from mkv.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    MkvError,
    NotFoundError,
    StorageError,
    UnavailableError,
    leaves,
    shown,
)
from mkv.node.catalog import (
    Catalog,
    CatalogEntry,
    MergeInProgress,
    SplitInProgress,
    check_partition_id,
)
from mkv.node.follower import Follower
from mkv.node.leadership import IsrWriter, Leaderships, ReplicaStatesInfo, Role
from mkv.node.replica_follower import ReplicaFollower, is_replica_directory
from mkv.observe.logs import fields
from mkv.operations import Operation
from mkv.partition.feed import WATCH_RETENTION_BYTES
from mkv.partition.task import Cutover, Extend, Partition, PartitionState, Read, Remove
from mkv.pipeline import UNOBSERVED, StageObserver, check_pipeline, default_pipeline
from mkv.router import KeyRange, Router, format_key
from mkv.snapshots.stores import install
from mkv.snapshots.transfer import (
    RangeFile,
    catch_up_to,
    copy_range,
    feed_writes,
    feed_writes_through,
    load_rows,
    load_writes,
    remove_range,
    set_last_seq,
)
from mkv.store import (
    DEFAULT_CACHE_BYTES,
    StateStore,
    StoreOptions,
    StoreStats,
    check_store_kind,
)
from mkv.store.files import fsync_directory, make_directory
from mkv.wire import Address
from mkv.worker import WorkerPool

__all__ = ["PartitionRegistry", "PartitionReport"]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.registry")

DEFAULT_PARTITION_ID = "default"
# Where removed partitions' files are kept for a while (cluster mode), in the
# data directory and the durable one; a partition id never starts with ".".
REMOVED_DIR = ".removed"
# A failed partition is probed (and reopened when the probe succeeds) after
# these many seconds, doubling each time up to the second.
REOPEN_FIRST_DELAY = 1.0
REOPEN_MAX_DELAY = 30.0
# Keys removed per step of the purge after a split: each is one write of the
# parent, so its writers wait for at most one small step at a time.
PURGE_CHUNK = 500
# The file a split builds its new partition's state in (mkv.snapshots.transfer).
_SPLIT_FILE = "split.sqlite3.tmp"
# The file a merge builds the right partition's state in, in the left one's directory.
_MERGE_FILE = "merge.sqlite3.tmp"
# Rows a merge puts into the survivor's store per step (one job in its queue):
# its own writes wait for at most one such step at a time.
MERGE_CHUNK = 500
# A merge cuts over once fewer of the right partition's writes than this are
# left to catch up on: the cut-over applies them while both partitions wait.
MERGE_SETTLE_WRITES = 64
# The survivor's store is made durable after every this many rows loaded, so
# that no one fsync (a job in its queue: its writes wait) has much to flush.
MERGE_SYNC_ROWS = 20_000


# Cluster mode's commit of a split in etcd: (parent id, the range it keeps,
# the new partition's entry).
Publish = Callable[[str, KeyRange, CatalogEntry], Awaitable[None]]
# And of a merge: (the survivor's id, its merged range, the absorbed one's id).
PublishMerge = Callable[[str, KeyRange, str], Awaitable[None]]


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
        create_default: bool = True,
        replica_grace: float = 60.0,
    ) -> None:
        """Args:
        create_default: with no catalog yet, create ``default`` owning every
            key (a single node); False in cluster mode, where etcd says which
            partitions this node holds.
        durable_dir: where stores that keep a durable copy apart (``caching``)
            put it, in a subdirectory per partition; None: in the partition's
            own directory.
        cache_bytes: the bound of each caching partition's memory cache.
        stage_observer: handed to every partition's pipeline stages (metrics).
        workers: the node's thread pool every partition's store and log jobs
            run on; None: each partition has threads of its own.
        replica_grace: seconds a partition moved to another node is kept
            (answering BAD_NODE naming its new node) before its files go.
        """
        self.data_dir = data_dir
        self.watch_retention_bytes = watch_retention_bytes
        self.durable_dir = durable_dir
        self.cache_bytes = cache_bytes
        self.stage_observer = stage_observer
        self.workers = workers
        self.default_store = default_store
        self.default_pipeline = default_pipeline
        self.create_default = create_default
        self._catalog_path = data_dir / "catalog.json"
        self._partitions: dict[str, Partition] = {}
        self._router = Router.build([], version=0)
        self._lock = trio.Lock()
        # Per partition, the ranges split off whose keys its store may still hold.
        self._purges: dict[str, tuple[KeyRange, ...]] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()
        self.replica_grace = replica_grace
        # Per partition, the epoch of this node's leadership (cluster mode
        # sets it; 0 on a single node): fetches of older epochs are refused.
        self._epochs: dict[str, int] = {}
        # Replicated partitions this node leads or is promoting (issue 16),
        # who this node is in their replica lists, and how long an in-sync
        # follower may lag (the node sets both in cluster mode).
        self._leaderships = Leaderships(self)
        self.node_id = ""
        self.replica_lag_timeout = 10.0
        # Partitions being copied here from other nodes, by id.
        self._followers: dict[str, Follower] = {}
        # Partitions being handed to another node, held at their cut-over.
        self._fences: dict[str, _Fence] = {}
        # Installed here by a move, not yet routed to (``serve``).
        self._held: set[str] = set()
        # Moved to another node: still answering BAD_NODE naming it until
        # the grace period ends, but no longer in the catalog.
        self._retired: set[str] = set()
        # Replicas (issue 16) this node follows, by id: in the catalog, never
        # routed. And replicas found at start (their directory holds an epoch
        # file) that the cluster layer has not opened yet (``open_follower``,
        # or the leader's ``lead``): never opened as serving leaders here.
        self._replicas: dict[str, ReplicaFollower] = {}
        self._dormant: dict[str, CatalogEntry] = {}
        # Who this node is and how it reaches other nodes' control ports, for
        # its replicas' Fetch streams (the node sets them).
        self.node_id = ""
        self.control_token: str | None = None
        self.control_ssl: ssl.SSLContext | None = None

    # -- the data plane's view ------------------------------------------------

    @property
    def router(self) -> Router:
        return self._router

    @property
    def changing(self) -> bool:
        """Whether a control-plane change (add, remove, split, merge ...) runs now."""
        return self._lock.locked()

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
            if catalog is None and self.create_default:
                log.info(
                    "no catalog in %s: creating partition %r owning every key",
                    self.data_dir,
                    DEFAULT_PARTITION_ID,
                    extra=fields(event="catalog_created", partition=DEFAULT_PARTITION_ID),
                )
                await self.add(DEFAULT_PARTITION_ID, KeyRange(b"", None), self.default_store)
            elif catalog is not None:
                await self._recover_split(catalog)
                await self._recover_moves(catalog)
                for entry in catalog.partitions:
                    directory = self._directory(entry.id)
                    if await trio.to_thread.run_sync(is_replica_directory, directory):
                        # A replica's: its log may hold writes never committed,
                        # which opening it as a leader would apply. It waits
                        # for the cluster layer (open_follower or lead).
                        self._dormant[entry.id] = entry
                        continue
                    await self._start_catalogued(entry)
                    if entry.purge:
                        self._purges[entry.id] = entry.purge
                    if entry.held:
                        self._held.add(entry.id)
                self._publish(catalog.map_version)
                await self._recover_merge(catalog)
                if (
                    catalog.split is not None
                    or catalog.merge is not None
                    or catalog.copies
                    or catalog.retired
                ):
                    await self._save_catalog(catalog.map_version)
                for partition_id in list(self._purges):
                    self._start_purge(self._partitions[partition_id])
            task_status.started()
            await self._closing.wait()
            for fence in self._fences.values():
                fence.decide(moved=False)
            for follower in list(self._followers.values()):
                nursery.start_soon(follower.abandon)
            for replica in list(self._replicas.values()):
                nursery.start_soon(replica.close)
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
            if directory.is_dir()
            and directory.name != REMOVED_DIR
            and any(p.is_file() for p in directory.rglob("*"))
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

    def _new_partition(
        self, entry: CatalogEntry, *, replay_through: int | None = None
    ) -> Partition:
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
            history_floor=entry.history_floor,
            replay_through=replay_through,
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
        if self._leaderships.failed(partition.id):
            return  # led with replicas: reopened by the next lead, not here
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
            ((p.range, p.id) for p in self._partitions.values() if p.id not in self._held),
            version=map_version,
        )

    async def _recover_split(self, catalog: Catalog) -> None:
        """A split the catalog records as in progress never committed (else
        the catalog would name its child and no split): the parent has its
        whole range still, and the child's files are garbage."""
        if catalog.split is None:
            return
        child = catalog.split.child
        if any(entry.id == child for entry in catalog.partitions):
            return  # defensive: a committed catalog never records the split
        log.warning(
            "the split of partition %s into %s did not finish before the node stopped; "
            "%s keeps its whole range and %s's files are removed",
            catalog.split.parent,
            child,
            catalog.split.parent,
            child,
            extra=fields(event="split_rolled_back", partition=catalog.split.parent),
        )
        await trio.to_thread.run_sync(self._delete_files, child)

    async def _recover_moves(self, catalog: Catalog) -> None:
        """Copies that were not installed before the node stopped, and
        partitions moved away whose grace period the stop cut short: their
        files are garbage."""
        named = {entry.id for entry in catalog.partitions}
        for partition_id in (*catalog.copies, *catalog.retired):
            if partition_id in named:
                continue  # defensive: a committed catalog never lists both
            log.warning(
                "partition %s: removing the files of an unfinished copy or a partition moved away",
                partition_id,
                extra=fields(event="move_files_removed", partition=partition_id),
            )
            await trio.to_thread.run_sync(self._delete_files, partition_id)

    async def _recover_merge(self, catalog: Catalog) -> None:
        """Finish or undo a merge the catalog records as in progress: if the
        catalog still names the right partition the merge did not commit, and
        the left one's store may hold some of the right one's keys (purged);
        if not, it did, and the right one's files go."""
        if catalog.merge is None:
            return
        left, right = catalog.merge.left, catalog.merge.right
        await trio.to_thread.run_sync(
            lambda: (self._directory(left) / _MERGE_FILE).unlink(missing_ok=True)
        )
        if left not in self._partitions:
            return
        if (other := self._partitions.get(right)) is not None:
            # Purged by the task run() starts for every partition with purges.
            self._purges[left] = (*self._purges.get(left, ()), other.range)
            log.warning(
                "the merge of partitions %s and %s did not finish before the node stopped; "
                "both keep their ranges",
                left,
                right,
                extra=fields(event="merge_rolled_back", partition=left),
            )
        else:
            await trio.to_thread.run_sync(self._delete_files, right)

    async def _save_catalog(
        self,
        map_version: int,
        split: SplitInProgress | None = None,
        merge: MergeInProgress | None = None,
    ) -> None:
        catalog = Catalog(
            partitions=[
                CatalogEntry(
                    p.id,
                    p.range,
                    p.store_kind,
                    p.pipeline_specs,
                    self._purges.get(p.id, ()),
                    p.history_floor,
                    held=p.id in self._held,
                )
                for p in self._partitions.values()
                if p.id not in self._retired
            ]
            + [
                CatalogEntry(r.partition_id, r.range, r.store_kind, r.pipeline)
                for r in self._replicas.values()
            ]
            + list(self._dormant.values()),
            map_version=map_version,
            split=split,
            merge=merge,
            copies=tuple(self._followers),
            retired=tuple(self._retired),
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
            await self._claim(partition_id, key_range)
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

    async def remove(self, partition_id: str, *, set_aside: str | None = None) -> PartitionReport:
        """Stop routing to a partition, drain it, forget it, delete its files.

        Args:
            set_aside: keep the files under ``.removed/<id>.<set_aside>``
                instead of deleting them (cluster mode: a removal decided in
                etcd is undone by putting them back; ``purge_removed``
                deletes them after a grace period).

        Raises:
            NotFoundError: no such partition.
        """
        async with self._lock:
            partition = self._partitions.get(partition_id)
            if partition is None and (
                partition_id in self._replicas or partition_id in self._dormant
            ):
                return await self._remove_replica(partition_id, set_aside)
            if partition is None:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            info = await self.info(partition)
            del self._partitions[partition_id]
            self._purges.pop(partition_id, None)
            version = self._router.version + 1
            # New requests get BAD_NODE from here on; queued ones still finish.
            self._publish(version)
            partition.close()
            await partition.wait_stopped()
            await self._save_catalog(version)
            if set_aside is None:
                await trio.to_thread.run_sync(self._delete_files, partition_id)
            else:
                await trio.to_thread.run_sync(self._set_aside, partition_id, set_aside)
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
            # As the catalog names it: a merge's survivor keeps refusing
            # positions from before the merge (its history floor).
            entry = CatalogEntry(
                failed.id,
                failed.range,
                failed.store_kind,
                failed.pipeline_specs,
                self._purges.get(failed.id, ()),
                failed.history_floor,
            )
            try:
                partition = await self._start(entry)
            except MkvError:
                raise
            except Exception as exc:
                raise StorageError(f"Reopening partition {partition_id} failed: {exc}") from exc
            if partition_id in self._purges:
                # The failed partition's purge stopped with it.
                self._start_purge(partition)
            log.info(
                "reopened partition %s from seq %d",
                partition_id,
                partition.last_seq(),
                extra=fields(event="partition_reopened", partition=partition_id),
            )
            return partition

    async def split(
        self,
        partition_id: str,
        at: bytes,
        new_id: str | None,
        operation: Operation,
        *,
        publish: Publish | None = None,
    ) -> Partition:
        """Split ``partition_id``'s range ``[start, end)`` at ``at``: it keeps
        ``[start, at)``, and a new partition (``new_id``, or one the node
        picks) of the same store kind and pipeline takes ``[at, end)`` with
        its keys, while both go on serving. Returns the new partition.

        Crash-safe in this order: the catalog records the split in progress;
        the new partition's state is built in its directory (a copy at one
        seq, then the parent's writes since); at the cut-over, in the
        parent's own order, the state is finished at the parent's last seq
        and the catalog written once with both ranges (the commit); the
        parent's store then gives up the moved keys in the background.

        Args:
            publish: called at the cut-over once the catalog holds both ranges
                (cluster mode: one etcd Txn with both ranges); if it raises,
                the split is rolled back as if the catalog write had failed.

        Raises:
            NotFoundError: no such partition.
            InvalidArgumentError: ``at`` is not inside the range, a bad id,
                or a store kind that cannot be copied.
            AlreadyExistsError: ``new_id`` is taken.
            FailedPreconditionError: the partition is not active.
            CompactedError: writes came faster than the feed keeps them; retry.
        """
        async with self._lock:
            if self._closing.is_set():
                raise UnavailableError("The server is shutting down.")
            parent = self.check_split(partition_id, at, new_id)
            whole = parent.range
            child_id = new_id or self._free_id()
            keep, moved = KeyRange(whole.start, at), KeyRange(at, whole.end)
            version = self._router.version
            await self._save_catalog(version, split=SplitInProgress(parent.id, child_id))
            committed: list[Partition] = []
            try:
                await self._build_and_cut_over(
                    parent, child_id, keep, moved, operation, committed, publish
                )
            finally:
                if not committed:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(self._delete_files, child_id)
                        await self._save_catalog(self._router.version)
            child = committed[0]
            log.info(
                "split partition %s at %s: %s keeps %s, %s has %s from seq %d",
                parent.id,
                format_key(at),
                parent.id,
                keep,
                child.id,
                moved,
                child.last_seq() + 1,
                extra=fields(event="partition_split", partition=parent.id, seq=child.last_seq()),
            )
            self._start_purge(parent)
            return child

    def check_split(self, partition_id: str, at: bytes, new_id: str | None) -> Partition:
        """The partition to split, if the split may begin now (see ``split``)."""
        if new_id:
            check_partition_id(new_id)
        parent = self._partitions.get(partition_id)
        if parent is None:
            raise NotFoundError(f"No partition with id {shown(partition_id)}.")
        if parent.state is not PartitionState.ACTIVE:
            raise FailedPreconditionError(
                f"Partition {partition_id} is {parent.state.value}; only an active "
                "partition can be split."
            )
        whole = parent.range
        if not (at > whole.start and (whole.end is None or at < whole.end)):
            raise InvalidArgumentError(
                f"The split key {format_key(at)} is not inside partition {partition_id}'s "
                f"range {whole} (it must be after its start and before its end)."
            )
        if new_id and new_id in self._partitions:
            raise AlreadyExistsError(f"A partition with id {new_id} already exists.")
        return parent

    async def _build_and_cut_over(
        self,
        parent: Partition,
        child_id: str,
        keep: KeyRange,
        moved: KeyRange,
        operation: Operation,
        committed: list[Partition],
        publish: Publish | None,
    ) -> None:
        await trio.to_thread.run_sync(self._delete_files, child_id)
        directory = self._directory(child_id)
        await trio.to_thread.run_sync(make_directory, directory)
        target = await trio.to_thread.run_sync(RangeFile, directory / _SPLIT_FILE, moved)
        entry = CatalogEntry(child_id, moved, parent.store_kind, parent.pipeline_specs)

        async def at_release(seq: int, timestamp: int) -> None:
            # The parent applies nothing until this returns: keep it short.
            began = time.monotonic()
            await catch_up_to(parent.feed, target, seq)
            await trio.to_thread.run_sync(target.finish, seq, timestamp)
            await trio.to_thread.run_sync(
                install, entry.store, directory, target.path, self._store_options(child_id)
            )
            child = await self._start(entry)
            # Positions taken on the parent stay good on the child while the
            # parent's feed still held them (until the child restarts).
            child.feed.inherit(parent.feed, moved.start, moved.end)
            version = self._router.version + 1
            before = self._purges.get(parent.id, ())
            self._purges[parent.id] = (*before, moved)
            try:
                await self._save_catalog(version)  # the commit
                if publish is not None:
                    await publish(parent.id, keep, entry)
            except BaseException:
                self._purges[parent.id] = before
                del self._partitions[child_id]
                child.close()
                with trio.CancelScope(shield=True):
                    await child.wait_stopped()
                raise
            committed.append(child)
            self._publish(version)
            log.info(
                "partition %s: cut-over to %s at seq %d took %.1f ms",
                parent.id,
                child_id,
                seq,
                (time.monotonic() - began) * 1000,
                extra=fields(event="cut_over", partition=parent.id, seq=seq),
            )

        try:
            await copy_range(operation, parent, moved, target)
            operation.report("cut-over", 0, 0)
            await parent.submit(Cutover(keep, moved, child_id, at_release))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(target.close)

    def check_merge(self, left_id: str, right_id: str) -> tuple[Partition, Partition]:
        """The two partitions to merge, if the merge may begin now (see ``merge``)."""
        found = []
        for partition_id in (left_id, right_id):
            partition = self._partitions.get(partition_id)
            if partition is None:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            if partition.state is not PartitionState.ACTIVE:
                raise FailedPreconditionError(
                    f"Partition {partition_id} is {partition.state.value}; only active "
                    "partitions can be merged."
                )
            found.append(partition)
        left, right = found
        if left is right:
            raise InvalidArgumentError("A partition cannot be merged with itself.")
        if left.range.end != right.range.start:
            order = " (give the lower one first)" if right.range.end == left.range.start else ""
            raise InvalidArgumentError(
                f"Partitions {left.id} {left.range} and {right.id} {right.range} are not "
                f"adjacent{order}: only a range that ends where the other starts can be merged."
            )
        if left.store_kind != right.store_kind:
            raise InvalidArgumentError(
                f"Partition {left.id} is {left.store_kind} and {right.id} is "
                f"{right.store_kind}: only partitions of the same store kind can be merged."
            )
        if any(rng.overlaps(right.range) for rng in self._purges.get(left.id, ())):
            raise FailedPreconditionError(
                f"Partition {left.id} is still purging keys of {right.range} it gave away; "
                "retry once it is done."
            )
        return left, right

    async def merge(
        self,
        left_id: str,
        right_id: str,
        operation: Operation,
        *,
        publish: PublishMerge | None = None,
    ) -> Partition:
        """Merge the adjacent partitions ``left_id`` and ``right_id`` (in key
        order, same store kind) into ``left_id``, which then owns both ranges
        and numbers its writes above every seq either had given. Returns it.

        Online: the right one's state is copied at one seq while both serve,
        and put into the left one's store in small steps (jobs in its own
        queue, between its writes: it does not serve that range yet), then
        caught up from the right one's change feed. At the cut-over (in the
        right one's order, then in the left one's: ``Extend``) only the last
        few writes are applied and the ranges switched; both partitions hold
        requests for that short while. Crash-safe: the catalog records the
        merge first, and one catalog write commits it (see ``_recover_merge``).

        Args:
            publish: called at the cut-over once the catalog holds the merged
                range (cluster mode: one etcd Txn); if it raises, the merge is
                rolled back as if the catalog write had failed.

        Raises:
            NotFoundError, InvalidArgumentError, FailedPreconditionError: see
                ``check_merge``.
        """
        async with self._lock:
            if self._closing.is_set():
                raise UnavailableError("The server is shutting down.")
            left, right = self.check_merge(left_id, right_id)
            version = self._router.version
            await self._save_catalog(version, merge=MergeInProgress(left.id, right.id))
            survivor: list[Partition] = []
            try:
                await self._merge(left, right, operation, survivor, publish)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        lambda: (left.directory / _MERGE_FILE).unlink(missing_ok=True)
                    )
                    if survivor:
                        right.close()
                        await right.wait_stopped()
                        await trio.to_thread.run_sync(self._delete_files, right.id)
                    elif self._partitions.get(left.id) is left:
                        # Left keeps its own range; its store may hold some of
                        # right's rows now, which it purges.
                        self._purges[left.id] = (*self._purges.get(left.id, ()), right.range)
                        if left.state is PartitionState.ACTIVE:
                            self._start_purge(left)
                        # A failed left one purges once it is reopened.
                    await self._save_catalog(self._router.version)
            merged = survivor[0]
            log.info(
                "merged partition %s into %s: %s from seq %d",
                right.id,
                left.id,
                merged.range,
                merged.last_seq() + 1,
                extra=fields(event="partitions_merged", partition=left.id, seq=merged.last_seq()),
            )
            return merged

    async def _merge(
        self,
        left: Partition,
        right: Partition,
        operation: Operation,
        survivor: list[Partition],
        publish: PublishMerge | None,
    ) -> None:
        target = await trio.to_thread.run_sync(RangeFile, left.directory / _MERGE_FILE, right.range)
        try:
            await copy_range(operation, right, right.range, target)
            loaded = await self._load_into(left, right, target, operation)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(target.close)
        merged_purge = tuple(
            r for r in self._purges.get(left.id, ()) if not r.overlaps(right.range)
        )
        moved = right.range

        async def at_release(seq: int, timestamp: int) -> int:
            # Right applies nothing until this returns: keep it short.
            began = time.monotonic()
            tail = feed_writes_through(right.feed, loaded, seq)

            async def commit(top: int) -> None:
                # Left's range and history floor are the merged ones by now.
                del self._partitions[right.id]
                purges = dict(self._purges)
                self._purges.pop(right.id, None)
                if merged_purge:
                    self._purges[left.id] = merged_purge
                else:
                    self._purges.pop(left.id, None)
                version = self._router.version + 1
                try:
                    # The commit: the catalog names the merged range, not right.
                    await self._save_catalog(version, merge=MergeInProgress(left.id, right.id))
                    if publish is not None:
                        await publish(left.id, left.range, right.id)
                except BaseException:
                    self._partitions[right.id] = right
                    self._purges = purges
                    raise
                survivor.append(left)
                self._publish(version)

            top: int = await left.submit(
                Extend(
                    moved,
                    seq,
                    timestamp,
                    prepare=lambda store: load_writes(store, tail, moved),
                    finish=lambda store, top: set_last_seq(store, top, timestamp),
                    commit=commit,
                )
            )
            log.info(
                "partition %s: merge cut-over of %s into %s at seq %d took %.1f ms",
                right.id,
                right.id,
                left.id,
                top,
                (time.monotonic() - began) * 1000,
                extra=fields(event="cut_over", partition=right.id, seq=top),
            )
            # Right's watchers resume at ``top`` on the survivor.
            return top

        operation.report("cut-over", 0, 0)
        await right.submit(
            Cutover(
                KeyRange(right.range.start, right.range.start), right.range, left.id, at_release
            )
        )

    async def _load_into(
        self, left: Partition, right: Partition, target: RangeFile, operation: Operation
    ) -> int:
        """Put the copy of right's state in ``target`` into left's store, then
        right's writes since, a small step at a time; returns the seq of
        right's up to which left's store holds them."""
        moved = right.range
        # Stale keys of the range in left's store first: only right's rows stand.
        while await left.submit(Read(lambda store: remove_range(store, moved, MERGE_CHUNK))):
            pass
        after: bytes | None = None
        done = 0
        operation.report("load", 0, 0)
        while rows := await trio.to_thread.run_sync(target.rows_after, after, MERGE_CHUNK):
            await left.submit(Read(functools.partial(load_rows, rows=rows)))
            after = rows[-1][0]
            done += len(rows)
            if done % MERGE_SYNC_ROWS < len(rows):
                await left.submit(Read(_sync))
            operation.report("load", done, 0, "keys")
        loaded = target.seq
        # Right keeps taking writes meanwhile: catch up from its feed until few are left.
        while right.last_seq() - loaded >= MERGE_SETTLE_WRITES:
            operation.report("catch-up", loaded, right.last_seq(), "seq")
            writes = feed_writes(right.feed, loaded, right.last_seq())
            if not writes:
                break
            await left.submit(Read(functools.partial(load_writes, writes=writes, key_range=moved)))
            loaded = writes[-1].seq
        # What is loaded becomes durable now, between left's writes, so that
        # the cut-over has only the tail to flush.
        operation.report("sync", 0, 0)
        await left.submit(Read(_sync))
        return loaded

    def _start_purge(self, partition: Partition) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._purge, partition)

    async def _purge(self, partition: Partition) -> None:
        """Remove the keys of the ranges ``partition`` gave away from its
        store, a small step at a time, through its pipeline (so the log
        replays the removals after a crash); then clear them from the catalog."""
        ranges = self._purges.get(partition.id, ())
        removed = 0
        try:
            for rng in ranges:
                while True:
                    keys = await partition.submit(Read(_keys_in(rng)))
                    if not keys:
                        break
                    await partition.submit(Remove(keys, size=sum(map(len, keys)), purge=True))
                    removed += len(keys)
        except MkvError as exc:
            # Stopped or failed: the catalog still lists the ranges, and the
            # next start (or reopen) goes on from there.
            log.warning(
                "partition %s: purging moved keys stopped (%s); it resumes at the next start",
                partition.id,
                exc,
                extra=fields(event="purge_stopped", partition=partition.id),
            )
            return
        async with self._lock:
            if self._partitions.get(partition.id) is not partition:
                return
            if self._purges.get(partition.id) == ranges:
                del self._purges[partition.id]
            else:  # another split meanwhile: its range is purged by its own task
                self._purges[partition.id] = tuple(
                    r for r in self._purges.get(partition.id, ()) if r not in ranges
                )
            await self._save_catalog(self._router.version)
        log.info(
            "partition %s: purged %d moved keys",
            partition.id,
            removed,
            extra=fields(event="purge_done", partition=partition.id),
        )

    # -- moving a partition between nodes (docs/replication.md) ----------------

    def epoch(self, partition_id: str) -> int:
        """The epoch of this node's leadership of ``partition_id`` (0: none set)."""
        return self._epochs.get(partition_id, 0)

    def set_epoch(self, partition_id: str, epoch: int) -> None:
        """Say this node leads ``partition_id`` at ``epoch`` (cluster mode:
        its leader key's create revision); fetches of older epochs are refused."""
        self._epochs[partition_id] = epoch

    def follower(self, partition_id: str) -> Follower | None:
        return self._followers.get(partition_id)

    def fenced(self, partition_id: str) -> bool:
        return partition_id in self._fences

    def handing(self) -> set[str]:
        """Partitions in a move here: copied in, fenced, or moved away and
        waiting out the grace period."""
        return set(self._followers) | set(self._fences) | self._retired

    def held_copies(self) -> set[str]:
        """Copies installed by a move and not yet served (``serve``)."""
        return set(self._held)

    # -- replicas (issue 16): the follower's half (docs/replication.md) ----------

    def replica(self, partition_id: str) -> ReplicaFollower | None:
        """This node's follower of ``partition_id``, if it follows it."""
        return self._replicas.get(partition_id)

    def replicas(self) -> list[ReplicaFollower]:
        return list(self._replicas.values())

    async def open_follower(
        self,
        partition_id: str,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str],
        leader: LeaderRef | None,
    ) -> None:
        """Follow ``partition_id`` as a replica of ``leader`` (None: nobody
        leads yet): create it empty, or open it on its files (a replica found
        at start); idempotent (an open one is told ``leader``).

        Raises:
            AlreadyExistsError: it is here already, but as a serving partition
                or a move's copy, or with another range.
            StorageError: its files cannot be opened (its log, epoch file).
            UnavailableError: the node is shutting down.
        """
        check_partition_id(partition_id)
        check_store_kind(store)
        pipeline = tuple(pipeline) or self.pipeline_for(store)
        check_pipeline(pipeline)
        async with self._lock:
            if self._closing.is_set() or self._nursery is None:
                raise UnavailableError("The server is shutting down.")
            replica = self._replicas.get(partition_id)
            dormant = self._dormant.get(partition_id)
            known = replica.range if replica is not None else dormant and dormant.range
            if known is not None and known != key_range:
                raise AlreadyExistsError(
                    f"Partition {partition_id} is here with range {known}, not {key_range}."
                )
            if replica is not None:
                replica.set_leader(leader)
                return
            if dormant is None and self._taken(partition_id):
                raise AlreadyExistsError(f"Partition {partition_id} is here, and not a replica.")
            if dormant is None:
                for other_range, other_id in self._router.conflicts(key_range):
                    raise AlreadyExistsError(
                        f"Range {key_range} overlaps range {other_range} of partition {other_id}."
                    )
                # Files no catalog names (a crash during an earlier open) are garbage.
                await trio.to_thread.run_sync(self._delete_files, partition_id)
            else:
                store, pipeline = dormant.store, dormant.pipeline
            replica = ReplicaFollower(
                partition_id,
                key_range,
                store,
                pipeline,
                self._directory(partition_id),
                node=self.node_id,
                store_options=self._store_options(partition_id),
                workers=self.workers,
                token=self.control_token,
                ssl_context=self.control_ssl,
            )
            # Its epoch file is written first: from then on a restart takes
            # the directory for a replica's, never a leader's.
            await replica.open()
            # Told before it is published: a SetLeader that finds it from
            # then on (reconcile's, while this awaits the catalog) must not
            # be overwritten by this older word, or it follows nobody and
            # reconcile, having told it, never says it again.
            replica.set_leader(leader)
            self._replicas[partition_id] = replica
            self._dormant.pop(partition_id, None)
            try:
                await self._save_catalog(self._router.version)
            except BaseException:
                del self._replicas[partition_id]
                if dormant is not None:
                    self._dormant[partition_id] = dormant
                with trio.CancelScope(shield=True):
                    await replica.close()
                raise
            await self._nursery.start(replica.run)
            if self._closing.is_set():
                # The node began to close while this one opened, perhaps
                # after ``run`` closed the others: it would run on, and hold
                # the node's shutdown forever (a deposed leader's step-down).
                self._nursery.start_soon(replica.close)
            log.info(
                "partition %s: following %s as a replica (from seq %d)",
                partition_id,
                leader.node if leader is not None else "nobody yet",
                replica.log_end,
                extra=fields(event="replica_opened", partition=partition_id),
            )

    async def _remove_replica(self, partition_id: str, set_aside: str | None) -> PartitionReport:
        """``remove`` of a replica followed here (or found at start); under the lock."""
        replica = self._replicas.pop(partition_id, None)
        entry = self._dormant.pop(partition_id, None)
        if replica is not None:
            await replica.close()
            entry = CatalogEntry(partition_id, replica.range, replica.store_kind, replica.pipeline)
        assert entry is not None
        # Out of the catalog first: a crash then leaves files no catalog names,
        # which the next open of the id deletes.
        await self._save_catalog(self._router.version)
        if set_aside is None:
            await trio.to_thread.run_sync(self._delete_files, partition_id)
        else:
            await trio.to_thread.run_sync(self._set_aside, partition_id, set_aside)
        log.info(
            "removed replica %s %s",
            partition_id,
            entry.range,
            extra=fields(event="replica_removed", partition=partition_id),
        )
        return PartitionReport(
            id=partition_id,
            range=entry.range,
            store=entry.store,
            pipeline=tuple(entry.pipeline),
            state=PartitionState.STOPPED,
            last_seq=0 if replica is None else replica.log_end,
            stats=StoreStats(0, 0),
        )

    def set_leader(self, partition_id: str, leader: LeaderRef | None) -> None:
        """The leader of a replica followed here changed (or is gone: None).

        Raises:
            NotFoundError: this node does not follow ``partition_id``.
        """
        replica = self._replicas.get(partition_id)
        if replica is None:
            raise NotFoundError(f"This node follows no partition {shown(partition_id)}.")
        replica.set_leader(leader)

    async def follow(
        self,
        partition_id: str,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str] | None,
        source: Address,
        epoch: int,
        token: str | None = None,
        operation: Operation | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "",
    ) -> Follower:
        """Start copying ``partition_id`` from its leader at ``source`` (that
        node's control address) in the background: a snapshot, then its log.

        The copy is built in the partition's directory and named in the
        catalog as unfinished, so a restart deletes it; nothing is routed to
        it until ``Follower.cut_over`` and ``serve``.

        Raises:
            InvalidArgumentError: bad id, store kind or pipeline.
            AlreadyExistsError: the id is taken here, or being copied, or the
                range overlaps a partition here.
            UnavailableError: the node is shutting down.
        """
        check_partition_id(partition_id)
        check_store_kind(store)
        pipeline = self.pipeline_for(store) if pipeline is None else tuple(pipeline)
        check_pipeline(pipeline)
        async with self._lock:
            if self._closing.is_set() or self._nursery is None:
                raise UnavailableError("The server is shutting down.")
            await self._claim(partition_id, key_range)
            directory = self._directory(partition_id)
            follower = Follower(
                partition_id,
                key_range,
                store,
                pipeline,
                source,
                epoch,
                directory=directory,
                install=self._install_copy,
                discard=self._discard_copy,
                token=token,
                ssl_context=ssl_context,
                operation=operation,
                name=name,
            )
            self._followers[partition_id] = follower
            try:
                # Named first: a crash from here on leaves files a restart removes.
                await self._save_catalog(self._router.version)
                await trio.to_thread.run_sync(make_directory, directory)
            except BaseException:
                del self._followers[partition_id]
                raise
            await self._nursery.start(follower.run)
            log.info(
                "partition %s: copying %s from %s at epoch %d",
                partition_id,
                key_range,
                source,
                epoch,
                extra=fields(event="follow_started", partition=partition_id),
            )
            return follower

    async def _install_copy(self, follower: Follower, seq: int, timestamp: int) -> Partition:
        """The copy holds the leader's state at ``seq``: make it a partition
        here, held (not routed) until ``serve``."""
        async with self._lock:
            if self._followers.get(follower.partition_id) is not follower:
                raise UnavailableError(f"The copy of {follower.partition_id} was abandoned.")
            entry = CatalogEntry(
                follower.partition_id, follower.range, follower.store, follower.pipeline
            )
            directory = follower.directory
            began = time.monotonic()
            try:
                # The leader's state at ``seq``, durable; the file is closed.
                await trio.to_thread.run_sync(follower.target.finish, seq, timestamp)
                await trio.to_thread.run_sync(
                    install, entry.store, directory, follower.path, self._store_options(entry.id)
                )
                self._held.add(entry.id)
                partition = await self._start(entry)
            except BaseException:
                self._held.discard(entry.id)
                raise
            del self._followers[entry.id]
            try:
                await self._save_catalog(self._router.version)  # held, installed
            except BaseException:
                self._followers[entry.id] = follower
                del self._partitions[entry.id]
                self._held.discard(entry.id)
                partition.close()
                with trio.CancelScope(shield=True):
                    await partition.wait_stopped()
                raise
            self._epochs[entry.id] = follower.epoch
            log.info(
                "partition %s: installed the copy at seq %d in %.1f ms (held)",
                entry.id,
                seq,
                (time.monotonic() - began) * 1000,
                extra=fields(event="copy_installed", partition=entry.id, seq=seq),
            )
            return partition

    async def _discard_copy(self, follower: Follower) -> None:
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._followers.get(follower.partition_id) is not follower:
                    return
                await trio.to_thread.run_sync(self._delete_files, follower.partition_id)
                del self._followers[follower.partition_id]
                await self._save_catalog(self._router.version)

    async def serve(self, partition_id: str) -> Partition:
        """Route to ``partition_id``, installed here by a move and held till now.

        Raises:
            NotFoundError: no such partition here.
        """
        async with self._lock:
            partition = self._partitions.get(partition_id)
            if partition is None:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            if partition_id not in self._held:
                return partition
            self._held.discard(partition_id)
            version = self._router.version + 1
            try:
                await self._save_catalog(version)
            except BaseException:
                self._held.add(partition_id)
                raise
            self._publish(version)
            log.info(
                "partition %s: serving %s from seq %d",
                partition_id,
                partition.range,
                partition.last_seq() + 1,
                extra=fields(event="partition_serving", partition=partition_id),
            )
            return partition

    async def fence(
        self, partition_id: str, successor: Address, *, owner: str | None = None
    ) -> int:
        """Stop admitting requests for ``partition_id``, let those in flight
        finish, and return its last seq (the move's final seq).

        The partition is held as a split's cut-over holds it: requests that
        come meanwhile wait, and once the move is decided are answered
        BAD_NODE naming ``successor`` (its data address) if it moved
        (``moved_away``), or served here if not (``unfence``).

        Raises:
            NotFoundError: no such partition.
            FailedPreconditionError: it is not active, or already fenced.
            MkvError: the partition refused the hold (it failed).
        """
        async with self._lock:
            partition = self._partitions.get(partition_id)
            if partition is None or partition_id in self._retired:
                raise NotFoundError(f"No partition with id {shown(partition_id)}.")
            if partition.state is not PartitionState.ACTIVE or partition_id in self._fences:
                raise FailedPreconditionError(
                    f"Partition {partition_id} is {partition.state.value}"
                    f"{' and fenced' if partition_id in self._fences else ''}; only an active "
                    "partition can be handed over."
                )
            assert self._nursery is not None
            fence = self._fences[partition_id] = _Fence()
            whole = partition.range
            command = Cutover(
                KeyRange(whole.start, whole.start),
                whole,
                owner or partition_id,
                fence.at_release,
                address=str(successor),
            )
            self._nursery.start_soon(self._hold, partition, fence, command)
        await fence.held.wait()
        if fence.error is not None:
            raise fence.error
        log.info(
            "partition %s: fenced at seq %d for %s",
            partition_id,
            fence.seq,
            successor,
            extra=fields(event="fenced", partition=partition_id, seq=fence.seq),
        )
        return fence.seq

    async def _hold(self, partition: Partition, fence: _Fence, command: Cutover) -> None:
        try:
            await partition.submit(command)
        except MkvError as exc:
            if not fence.held.is_set():
                fence.error = exc
        finally:
            fence.held.set()
            fence.released.set()
            if self._fences.get(partition.id) is fence and not fence.moved:
                del self._fences[partition.id]

    async def unfence(self, partition_id: str) -> None:
        """The move of ``partition_id`` is abandoned: serve it here again
        (the requests held meanwhile are answered, or re-routed back)."""
        fence = self._fences.get(partition_id)
        if fence is None or fence.moved:
            return
        fence.decide(moved=False)
        await fence.released.wait()
        log.info(
            "partition %s: unfenced; serving here again",
            partition_id,
            extra=fields(event="unfenced", partition=partition_id),
        )

    async def moved_away(self, partition_id: str) -> None:
        """The move of fenced ``partition_id`` committed: it leaves the
        catalog, answers BAD_NODE naming its new node, and its files are
        deleted after ``replica_grace`` seconds.

        Raises:
            FailedPreconditionError: it is not fenced.
        """
        async with self._lock:
            fence = self._fences.get(partition_id)
            partition = self._partitions.get(partition_id)
            if fence is None or partition is None:
                raise FailedPreconditionError(f"Partition {partition_id} is not fenced.")
            self._retired.add(partition_id)
            try:
                await self._save_catalog(self._router.version)
            except BaseException:
                self._retired.discard(partition_id)
                raise
            fence.decide(moved=True)
            assert self._nursery is not None
            self._nursery.start_soon(self._retire, partition, fence)
        await fence.released.wait()

    async def _retire(self, partition: Partition, fence: _Fence) -> None:
        """After the grace period, forget a partition moved away and delete its files."""
        with trio.move_on_after(self.replica_grace):
            await self._closing.wait()
        if self._closing.is_set():
            return  # the catalog lists it as retired: the next start deletes it
        async with self._lock:
            if self._partitions.get(partition.id) is not partition:
                return  # forgotten already (``_forget_retired``)
            await self._forget_retired(partition.id)
        log.info(
            "partition %s: moved away; its files are deleted",
            partition.id,
            extra=fields(event="partition_retired", partition=partition.id),
        )

    async def _forget_retired(self, partition_id: str) -> None:
        """Stop a partition moved away and delete its files; under the lock."""
        partition = self._partitions.pop(partition_id)
        self._publish(self._router.version + 1)
        partition.close()
        await partition.wait_stopped()
        await trio.to_thread.run_sync(self._delete_files, partition_id)
        self._retired.discard(partition_id)
        self._fences.pop(partition_id, None)
        self._epochs.pop(partition_id, None)
        await self._save_catalog(self._router.version)

    # -- replicas: the leader's half (issue 16; mkv.node.leadership) ------------

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
        """Lead ``partition_id`` at ``epoch``; returns once the ISR has the
        epoch-start record durable (then it serves). See ``Leaderships.lead``."""
        await self._leaderships.lead(
            partition_id,
            epoch,
            replicas=replicas,
            isr=isr,
            isr_writer=isr_writer,
            min_isr=min_isr,
        )

    def set_isr(self, partition_id: str, replicas: tuple[str, ...], isr: frozenset[str]) -> None:
        """etcd's record of a partition led here changed its replicas or ISR."""
        if (stage := self._leaderships.stage(partition_id)) is not None:
            stage.set_isr(replicas, isr)

    async def step_down(self, partition_id: str, leader: LeaderRef | None) -> None:
        """Stop leading: unacknowledged writes fail UNAVAILABLE; the partition
        stops, then follows ``leader``."""
        await self._leaderships.step_down(partition_id)
        await self.follow_stepped_down(partition_id, leader)

    # The seam with the follower's half (``mkv.node.replica_follower``,
    # another branch): these two bodies are its to fill in.

    async def release_replica(self, partition_id: str) -> CatalogEntry | None:
        """Close this node's follower of ``partition_id`` (leaving its store,
        log and epoch file consistent) and hand back its entry, for ``lead``
        to open its files as the leader's; None: no follower runs here."""
        async with self._lock:
            replica = self._replicas.pop(partition_id, None)
            dormant = self._dormant.pop(partition_id, None)
        if replica is not None:
            await replica.close()
            return CatalogEntry(
                partition_id, replica.range, replica.store_kind, tuple(replica.pipeline)
            )
        return dormant

    async def follow_stepped_down(self, partition_id: str, leader: LeaderRef | None) -> None:
        """Open a partition stopped by ``step_down`` as a follower of
        ``leader`` (``open_follower`` on its files). Without the follower's
        half it stays stopped: refusing requests, in the catalog."""
        async with self._lock:
            partition = self._partitions.get(partition_id)
            if partition is None or self._leaderships.role(partition_id) is not None:
                return
            if partition.state not in (PartitionState.STOPPED, PartitionState.FAILED):
                partition.close()
                await partition.wait_stopped()
            # Its files become a replica's: out of the router, in the catalog
            # as a replica (dormant until open_follower opens them).
            del self._partitions[partition_id]
            self._publish(self._router.version + 1)
            self._dormant[partition_id] = CatalogEntry(
                partition_id,
                partition.range,
                partition.store_kind,
                tuple(partition.pipeline_specs),
            )
        await self.open_follower(
            partition_id,
            partition.range,
            partition.store_kind,
            partition.pipeline_specs,
            leader,
        )

    def role(self, partition_id: str) -> Role | None:
        """ "leader" once serving after ``lead``; None otherwise."""
        return self._leaderships.role(partition_id)

    def replica_states(self, partition_id: str) -> ReplicaStatesInfo | None:
        """A partition led here: its commit seq and each follower's progress."""
        stage = self._leaderships.stage(partition_id)
        return None if stage is None else stage.states()

    async def start_leader(self, entry: CatalogEntry, commit_seq: int) -> Partition:
        """Start a catalogued partition's files to lead it: the log replayed
        only through ``commit_seq`` (or the store's seq), the rest adopted."""
        partition = self._new_partition(entry, replay_through=commit_seq)
        await self._run(partition)
        # Routed (a follower's copy is not; a stopped leader's was already).
        self._publish(self._router.version + 1)
        return partition

    def directory_of(self, partition_id: str) -> Path:
        return self._directory(partition_id)

    def spawn(self, fn: Callable[[str], Awaitable[None]], partition_id: str) -> None:
        """Run ``fn(partition_id)`` in the registry's nursery (a deposed
        leader's step-down, decided where nothing may wait for it)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, partition_id)

    async def info(self, partition: Partition) -> PartitionReport:
        # Writes are answered on commit and applied after: counts read now
        # must include every write acknowledged before the call (a client
        # that writes and then lists sees its keys), as a read would.
        with contextlib.suppress(MkvError):
            await partition.wait_applied()
        return PartitionReport(
            id=partition.id,
            range=partition.range,
            store=partition.store_kind,
            pipeline=partition.pipeline_specs,
            state=partition.state,
            last_seq=partition.last_seq(),
            stats=await partition.store_stats(),
        )

    def purging(self, partition_id: str) -> tuple[KeyRange, ...]:
        """Ranges ``partition_id`` gave away whose keys are not purged yet."""
        return self._purges.get(partition_id, ())

    def dormant(self) -> set[str]:
        """Replicas found on this disk at start, not opened yet (as follower or leader)."""
        return set(self._dormant)

    async def _claim(self, partition_id: str, key_range: KeyRange) -> None:
        """Make ``partition_id`` and ``key_range`` free for a new partition
        here, or refuse; under the lock.

        Raises:
            AlreadyExistsError: the id is taken, or the range overlaps a partition's.
        """
        if partition_id in self._retired:
            # Moved away and now moved back: the new copy supersedes the
            # old one waiting out its grace period.
            await self._forget_retired(partition_id)
        if self._taken(partition_id):
            raise AlreadyExistsError(f"A partition with id {partition_id} already exists.")
        for other_range, other_id in self._router.conflicts(key_range):
            raise AlreadyExistsError(
                f"Range {key_range} overlaps range {other_range} of partition {other_id}."
            )
        # Files left by a partition that never made it into the catalog
        # (a crash during an earlier add) must not leak into this one.
        await trio.to_thread.run_sync(self._delete_files, partition_id)

    def _taken(self, partition_id: str) -> bool:
        return (
            partition_id in self._partitions
            or partition_id in self._followers
            or partition_id in self._replicas
            or partition_id in self._dormant
        )

    def _free_id(self) -> str:
        n = len(self._partitions) + 1
        while f"p{n}" in self._partitions or self._directory(f"p{n}").exists():
            n += 1
        return f"p{n}"

    def _set_aside(self, partition_id: str, label: str) -> None:
        """Move a removed partition's files under ``.removed/`` (next to
        ``partitions/``, and in the durable directory for a caching store's
        durable copy) as ``<id>.<label>``, instead of deleting them; blocking.
        ``purge_removed`` deletes them later."""
        sources = [(self._directory(partition_id), self.data_dir / REMOVED_DIR)]
        if (durable := self._store_options(partition_id).durable_directory) is not None:
            sources.append((durable, durable.parent / REMOVED_DIR))
        for source, removed in sources:
            if not source.exists():
                continue
            make_directory(removed)
            target = removed / f"{partition_id}.{label}"
            source.rename(target)
            os.utime(target)  # the grace period counts from now
            fsync_directory(source.parent)
            fsync_directory(removed)

    def purge_removed(self, older_than: float) -> list[str]:
        """Delete what ``_set_aside`` kept for longer than ``older_than``
        seconds; blocking. Returns the names deleted."""
        roots = [self.data_dir / REMOVED_DIR]
        if self.durable_dir is not None:
            roots.append(self.durable_dir / REMOVED_DIR)
        deleted = []
        now = time.time()
        for root in roots:
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                if now - entry.stat().st_mtime > older_than:
                    shutil.rmtree(entry, ignore_errors=True)
                    deleted.append(entry.name)
        return deleted

    def _delete_files(self, partition_id: str) -> None:
        shutil.rmtree(self._directory(partition_id), ignore_errors=True)
        # A caching partition's durable store, when it lives apart.
        if (durable := self._store_options(partition_id).durable_directory) is not None:
            shutil.rmtree(durable, ignore_errors=True)


class _Fence:
    """A partition held at a cut-over until its move is decided."""

    def __init__(self) -> None:
        self.seq = 0
        self.timestamp = 0
        self.error: MkvError | None = None
        self.moved = False
        # Set once the partition is held (``seq`` known) or refused the hold.
        self.held = trio.Event()
        self._decided = trio.Event()
        # Set once the hold ended (requests answered or re-routed).
        self.released = trio.Event()

    def decide(self, *, moved: bool) -> None:
        self.moved = moved
        self._decided.set()

    async def at_release(self, seq: int, timestamp: int) -> None:
        """The ``Cutover``'s turn: every write before it is applied."""
        self.seq, self.timestamp = seq, timestamp
        self.held.set()
        await self._decided.wait()
        if not self.moved:
            # The Cutover gives the range back: the partition serves it again.
            raise UnavailableError("The partition's move was abandoned; retry.")


def _sync(store: StateStore) -> int:
    return store.sync()


def _keys_in(rng: KeyRange) -> Callable[[StateStore], list[bytes]]:
    def read(store: StateStore) -> list[bytes]:
        return [key for key, _ in store.scan(rng.start, rng.end, PURGE_CHUNK, keys_only=True)]

    return read
