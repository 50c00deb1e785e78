"""A replica's follower: one partition kept here as a copy of its leader's log (issue 16).

Unlike a move's ``Follower`` (a copy built apart and installed once), a
``ReplicaFollower`` holds the partition's own files, the ones a leader of it
on this node would open: its store, its write-ahead log (``wal/``) and its
epoch file (``epochs``, ``mkv.wal.epochs``). It fetches the leader's log over
``Replication/Fetch`` as a replica (``replica=true``, ``follower`` = this
node, ``last_epoch`` = the newest epoch its epoch file records, ``after_seq``
= the end of its log) and:

- appends every record it receives to its WAL and fsyncs it (one fsync per
  answer: group commit), recording in the epoch file where each new epoch
  starts, and reports the seq it holds durable on its next request;
- applies to its store only records at or below the leader's ``commit_seq``
  (cluster.md rule 3: a follower's store never holds a write that may
  vanish), and only once they are durable in its own log;
- runs no pipeline stage: the leader decided timestamps and conditions, and
  a record is its outcome.

Everything from the leader is input: records must follow its log in seq
order, hold valid keys of the partition's range, carry an epoch no newer than
the leader's and no older than the log's last; a ``Truncate`` must come first
and not above the position asked from. Bad input, or a ``Truncate`` below
what the store already holds (an acknowledged write would be lost), stops the
follower for good with ``DATA_LOSS`` (``error``, state ``failed``). A broken
stream or a refusal (the leader moved on, does not lead it yet) is retried
with backoff, or at once when ``set_leader`` names another leader.

Restart: ``open`` replays the log into the store only up to the commit point
this replica knew (the larger of the store's own seq and the commit seq the
epoch file keeps, persisted lazily: a stale-low value only means more is
fetched again), never the tail; the tail stays in the log, to be applied once
a leader's commit covers it or cut by its ``Truncate``.

Too far behind the leader's retained log (``snapshot_required``), it streams a
snapshot into a ``RangeFile`` (checked as a move's copy is), installs it as
its store, and starts its log and epoch file again after the snapshot's seq.

Sans-I/O it is not: it is the Trio plumbing around the WAL, the store and the
stream. All disk work runs on the partition's own worker lane.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import ssl
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import trio

from mkv.cluster.reconcile import LeaderRef
from mkv.errors import (
    DataLossError,
    FailedPreconditionError,
    MkvError,
    StorageError,
    UnavailableError,
)
from mkv.limits import in_range
from mkv.node.follower import FETCH_BYTES, REPLICATION_SERVICE, SILENCE_SECONDS, check_rows
from mkv.observe.logs import fields
from mkv.pipeline.payload import decode_write, encode_write
from mkv.records import Item, Write
from mkv.router import KeyRange
from mkv.rpc.auth import authorization_metadata
from mkv.rpc.dial import BidiCall, open_bidi
from mkv.snapshots.stores import install
from mkv.snapshots.transfer import RangeFile, hash_rows
from mkv.store import StateStore, StoreOptions, open_store
from mkv.store.files import fsync_directory, make_directory
from mkv.v1 import replication_pb2 as pb
from mkv.wal.epochs import EpochHistory, read_epoch_file, write_epoch_file
from mkv.wal.log import WalGapError, WriteAheadLog
from mkv.wal.record import MAX_PAYLOAD
from mkv.wire import MAX_KEY_BYTES
from mkv.worker import SerialWorker, WorkerPool, WorkerThread

__all__ = [
    "EPOCH_FILE",
    "WAL_DIR",
    "ReplicaFollower",
    "epoch_file_path",
    "is_replica_directory",
]

log = logging.getLogger("mkv.replication")

# The epoch file, in the partition's directory next to its log: its presence
# marks the directory as a replica's (see ``is_replica_directory``).
EPOCH_FILE = "epochs"
# The log's directory, as the ``wal`` stage names it.
WAL_DIR = "wal"
# Where a snapshot is built before it replaces the store.
SNAPSHOT_FILE = "replica-snapshot.sqlite3.tmp"
# The commit seq is written to the epoch file at most this often (lazily:
# a stale-low value is safe, it only means more is applied after a restart).
COMMIT_PERSIST_SECONDS = 1.0
# A stream that broke, or a leader that refused, is tried again after this
# many seconds, doubling up to the second; at once when the leader changes.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# A replica keeps one request outstanding: the leader reads it at once and
# learns the durable seq it carries without waiting behind earlier answers
# (its commit, and so every write's acknowledgement, waits for it).
CREDITS = 1

Role = Literal["opening", "idle", "following", "failed", "closed"]


def epoch_file_path(directory: Path) -> Path:
    return directory / EPOCH_FILE


def is_replica_directory(directory: Path) -> bool:
    """Whether a partition's directory is a replica's (its epoch file exists):
    such a partition is never opened as a serving leader at start (that would
    replay its whole log, uncommitted tail included); blocking."""
    return epoch_file_path(directory).is_file()


class _Restart(Exception):
    """The stream ends and a new one starts at once (a snapshot is needed)."""


class ReplicaFollower:
    """One partition this node follows as a replica (see the module doc).

    Made by ``PartitionRegistry.open_follower``: ``open`` (its files), then
    ``run`` in the registry's nursery; ``set_leader`` whenever the cluster
    layer learns of another leader; ``close`` before anything else opens the
    files (a promotion).
    """

    def __init__(
        self,
        partition_id: str,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str],
        directory: Path,
        *,
        node: str = "",
        store_options: StoreOptions | None = None,
        workers: WorkerPool | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.partition_id = partition_id
        self.range = key_range
        self.store_kind = store
        self.pipeline = tuple(pipeline)
        self.directory = directory
        self.node = node
        self.store_options = store_options or StoreOptions()
        self._metadata = authorization_metadata(token)
        self._ssl_context = ssl_context
        name = f"mkv-replica-{partition_id}"
        self._worker: SerialWorker = WorkerThread(name) if workers is None else workers.lane(name)
        self.state: Role = "opening"
        # Set when the follower stopped for good (bad input, DATA_LOSS, a disk).
        self.error: MkvError | None = None
        self.leader: LeaderRef | None = None
        # The newest epoch of the partition's leadership this replica has seen.
        self.epoch = 0
        # The leader's commit seq, as last heard.
        self.leader_commit_seq = 0
        # Truncations obeyed and snapshots installed (metrics, tests).
        self.truncations = 0
        self.snapshots = 0
        self._store: StateStore | None = None
        self._wal: WriteAheadLog | None = None
        self.history = EpochHistory()
        # Records durable in the log and not applied (above the commit), in order.
        self._pending: deque[Write] = deque()
        # The store's seq: every write through it applied.
        self.applied_seq = 0
        # The log's last and synced seq when it was closed.
        self._closed_log = (0, 0)
        self._commit_persisted_at = 0.0
        self._need_snapshot = False
        self._building: _SnapshotBuild | None = None
        self._leader_changed = trio.Event()
        self._stream_scope: trio.CancelScope | None = None
        self._scope = trio.CancelScope()
        self._progress = trio.Event()
        self._stopped = trio.Event()
        self._running = False

    # -- what the registry and tests see ------------------------------------------

    @property
    def log_end(self) -> int:
        """The last seq this replica holds (logged, or in a snapshot it installed)."""
        wal = self._wal
        return max(self.applied_seq, self._closed_log[0] if wal is None else wal.last_seq)

    @property
    def durable_seq(self) -> int:
        """The last seq durable here: fsynced in the log, or installed."""
        wal = self._wal
        return max(self.applied_seq, self._closed_log[1] if wal is None else wal.synced_seq)

    def set_leader(self, leader: LeaderRef | None) -> None:
        """Follow ``leader`` from now on (None: nobody leads; idle). A stream
        to another leader (or another epoch) ends at once."""
        if leader == self.leader:
            return
        self.leader = leader
        if leader is not None:
            self.epoch = max(self.epoch, leader.epoch)
        self._leader_changed.set()
        self._leader_changed = trio.Event()
        if self._stream_scope is not None:
            self._stream_scope.cancel()

    async def wait_until(self, applied: int = 0, durable: int = 0, *, within: float = 30.0) -> None:
        """Wait until the store holds ``applied`` and the log ``durable`` (tests, lead).

        Raises:
            MkvError: the follower failed (``error``).
            UnavailableError: not reached within ``within`` seconds.
        """
        with trio.move_on_after(within):
            while not (self.applied_seq >= applied and self.durable_seq >= durable):
                if self.error is not None:
                    raise self.error
                if self._stopped.is_set():
                    raise UnavailableError(f"The replica of {self.partition_id} stopped.")
                await self._progress.wait()
            return
        raise UnavailableError(
            f"The replica of {self.partition_id} reached applied {self.applied_seq}, durable "
            f"{self.durable_seq}, not {applied}, {durable}, within {within:g} s."
        )

    async def wait_failed(self) -> MkvError:
        """The error the follower stopped with, once it has."""
        while self.error is None:
            await self._progress.wait()
        return self.error

    async def items(self) -> list[tuple[bytes, Item]]:
        """Every key the store holds, in order (tests, checks).

        Raises:
            MkvError: the follower failed (``error``) or stopped.
        """
        while True:
            while (store := self._store) is None:
                # Closed for a moment while a snapshot replaces it (``_install``).
                if self.error is not None:
                    raise self.error
                if self._stopped.is_set():
                    raise UnavailableError(f"The replica of {self.partition_id} stopped.")
                await self._progress.wait()
            result: list[tuple[bytes, Item]] = []
            start = self.range.start
            try:
                while True:
                    page = await self._worker.run_sync(
                        functools.partial(store.scan, start, self.range.end, 1000)
                    )
                    if self._store is not store:
                        break  # a snapshot replaced it between pages: read the new one
                    result += page
                    if len(page) < 1000:
                        return result
                    start = page[-1][0] + b"\x00"
            except StorageError:
                if self._store is store:
                    raise
                # Closed under the scan by a snapshot install: read the new one.

    def _tell(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # -- opening and closing ----------------------------------------------------

    async def open(self) -> None:
        """Open the store, the log and the epoch file, and bring the store up
        to the commit point this replica knew (never past it).

        Raises:
            StorageError: a file cannot be opened or is damaged (the epoch
                file, the log), or the log misses records the store lacks.
        """
        try:
            await self._worker.run_sync(self._open_files)
        except BaseException:
            with trio.CancelScope(shield=True):
                # Nothing recorded: what failed to open is left as it was.
                await self._worker.run_sync(functools.partial(self._close_files, persist=False))
                await self._worker.stop()
            raise
        self.state = "idle"

    def _open_files(self) -> None:
        """Blocking; on the worker lane."""
        make_directory(self.directory)
        remove_snapshot_leftover(self.directory)
        path = epoch_file_path(self.directory)
        history = read_epoch_file(path)
        if not path.exists():
            # Written first: from here the directory is a replica's.
            write_epoch_file(path, history)
        store = self._store = open_store(
            self.store_kind, self.directory, logged=True, options=self.store_options
        )
        wal = self._wal = WriteAheadLog.open(self.directory / WAL_DIR)[0]
        applied = store.last_seq()
        if wal.last_seq and applied > wal.last_seq:
            raise StorageError(
                f"The store of replica {self.partition_id} holds seq {applied}, past its "
                f"log's last seq {wal.last_seq}: the log lost records the store applied."
            )
        # A crash between a log append and the epoch file write, either way
        # round, leaves entries past the log's end: they describe nothing.
        end = max(applied, wal.last_seq)
        history = history.truncated_after(end)
        commit = max(applied, history.commit_seq)
        pending: deque[Write] = deque()
        batch: list[Write] = []
        try:
            for records in wal.replay_batches(applied):
                for seq, timestamp, payload in records:
                    write = decode_write(payload, seq, timestamp)
                    if seq > commit:
                        pending.append(write)  # the tail: never applied here at open
                        continue
                    batch.append(write)
                if batch:
                    store.apply(batch)
                    batch = []
        except WalGapError as exc:
            raise StorageError(
                f"The log of replica {self.partition_id} no longer holds the records its "
                f"store lacks (the store is at {applied}): {exc}"
            ) from exc
        except Exception as exc:
            if isinstance(exc, MkvError):
                raise
            raise StorageError(
                f"The log of replica {self.partition_id} holds a record that is not a "
                f"write ({type(exc).__name__})."
            ) from exc
        self.history = history
        self._pending = pending
        self.applied_seq = store.last_seq()
        self.epoch = max(self.epoch, history.last_epoch)
        if history != read_epoch_file(path):
            write_epoch_file(path, history)
        if pending or applied != self.applied_seq:
            log.info(
                "replica %s: opened at seq %d (applied), %d logged above the commit it knew",
                self.partition_id,
                self.applied_seq,
                len(pending),
                extra=fields(event="replica_opened", partition=self.partition_id),
            )

    def _close_files(self, *, persist: bool = True) -> None:
        """Make the store durable, record the commit it holds, and close; blocking."""
        store, wal = self._store, self._wal
        try:
            if persist and store is not None and wal is not None and not wal.broken:
                store.sync()
                self._persist_commit(force=True)
        finally:
            if wal is not None:
                self._closed_log = (wal.last_seq, wal.synced_seq)
                wal.close()
            if store is not None:
                store.close()
            self._store = self._wal = None

    async def close(self) -> None:
        """Stop following and close the files, consistent: the log durable, the
        store holding only committed writes, the epoch file naming the commit."""
        self._scope.cancel()
        if self._running:
            await self._stopped.wait()
        elif self.state != "closed":
            with trio.CancelScope(shield=True):
                await self._shut()

    async def _shut(self) -> None:
        try:
            await self._worker.run_sync(self._close_files)
        except MkvError as exc:
            log.warning("replica %s: closing its files failed: %s", self.partition_id, exc)
        finally:
            await self._worker.stop()
            if self.state != "failed":
                self.state = "closed"
            self._stopped.set()
            self._tell()

    # -- the loop ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow whichever leader ``set_leader`` names until ``close`` or a
        failure for good (kept in ``error``)."""
        if self._scope.cancel_called:
            # ``close`` came first (the node began to close while this replica
            # opened): it closed the files and stopped the lane, which the
            # end of this task must not use again.
            task_status.started()
            return
        self._running = True
        task_status.started()
        try:
            with self._scope:
                await self._follow_leaders()
        except MkvError as exc:
            self.error = exc
            self.state = "failed"
            log.error(
                "replica %s: stopped following: %s",
                self.partition_id,
                exc,
                extra=fields(event="replica_failed", partition=self.partition_id),
            )
        except Exception as exc:
            log.exception("replica %s: the follower failed", self.partition_id)
            self.error = StorageError(
                f"The replica of partition {self.partition_id} failed ({type(exc).__name__})."
            )
            self.state = "failed"
        finally:
            with trio.CancelScope(shield=True):
                await self._shut()

    async def _follow_leaders(self) -> None:
        delay = RETRY_FIRST
        while True:
            leader = self.leader
            changed = self._leader_changed
            if leader is None:
                self.state = "idle"
                await changed.wait()
                continue
            self.state = "following"
            try:
                with trio.CancelScope() as scope:
                    self._stream_scope = scope
                    await self._stream(leader)
                # Cancelled by set_leader: the new one at once.
                delay = RETRY_FIRST
                continue
            except _Restart:
                continue
            except MkvError as exc:
                if isinstance(exc, DataLossError | StorageError):
                    raise  # bad input from the leader, or this node's disk
                # The leader is gone, not yet leading, or moved on (or refused
                # us for now): the cluster layer will say who leads; meanwhile,
                # try again.
                log.info(
                    "replica %s: fetching from %s failed (%s); again in %.1f s",
                    self.partition_id,
                    leader.node or leader.address,
                    exc,
                    delay,
                    extra=fields(event="replica_retry", partition=self.partition_id),
                )
            finally:
                self._stream_scope = None
            with trio.move_on_after(delay):
                await changed.wait()
            # A new leader named meanwhile (it may not lead yet): ask it soon
            # again rather than after the backoff the old one built up.
            delay = RETRY_FIRST if changed.is_set() else min(delay * 2, RETRY_MAX)

    def _request(self, leader: LeaderRef, **start: object) -> pb.FetchRequest:
        return pb.FetchRequest(
            partition_id=self.partition_id,
            epoch=self.epoch,
            durable_seq=self.durable_seq,
            max_bytes=FETCH_BYTES,
            follower=self.node,
            replica=True,
            **start,  # type: ignore[arg-type]
        )

    async def _stream(self, leader: LeaderRef) -> None:
        snapshot = self._need_snapshot
        after = self.log_end
        try:
            async with open_bidi(
                leader.address,
                REPLICATION_SERVICE,
                "Fetch",
                pb.FetchRequest,
                pb.FetchResponse,
                metadata=self._metadata,
                ssl_context=self._ssl_context,
                silence=SILENCE_SECONDS,
            ) as call:
                if snapshot:
                    await call.send(self._request(leader, snapshot=True))
                else:
                    await call.send(
                        self._request(leader, after_seq=after, last_epoch=self.history.last_epoch)
                    )
                for _ in range(CREDITS - 1):
                    await call.send(self._request(leader))
                await self._receive(call, leader, after, snapshot)
        except BaseExceptionGroup as group:
            # purerpc's connection tasks wrap what ended the stream.
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, MkvError | _Restart | trio.Cancelled):
                raise first from None
            raise UnavailableError(
                f"The stream from {leader.address} failed ({first!r})."
            ) from group
        finally:
            building, self._building = self._building, None
            if building is not None and not building.done:
                with trio.CancelScope(shield=True):
                    await self._worker.run_sync(building.discard)

    async def _receive(
        self, call: BidiCall[pb.FetchResponse], leader: LeaderRef, after: int, snapshot: bool
    ) -> None:
        first = True
        while True:
            message = await call.receive()
            if message.epoch < self.epoch:
                # cluster.md rule 2: a deposed leader's records are never taken.
                raise FailedPreconditionError(
                    f"The leader of partition {self.partition_id} at {leader.address} sent "
                    f"epoch {message.epoch}, older than epoch {self.epoch} this replica knows."
                )
            if not in_range(message.commit_seq):
                raise DataLossError(f"The leader sent commit seq {message.commit_seq}: refused.")
            self.epoch = message.epoch
            self.leader_commit_seq = message.commit_seq
            body = message.WhichOneof("body")
            if body == "truncate":
                if not first or snapshot:
                    raise DataLossError(
                        f"The leader of partition {self.partition_id} sent Truncate other "
                        "than as its first answer to a replica: refused."
                    )
                await self._truncate(message.truncate.seq, after)
            elif body == "records":
                if snapshot and (self._building is None or not self._building.done):
                    raise DataLossError("Records came before the snapshot ended: refused.")
                await self._append(message.records.records, message.epoch)
            elif body == "snapshot_required":
                # Also right after a snapshot: under heavy writes the leader's
                # change feed may drop the snapshot's seq while it streams;
                # not bad input, just another snapshot (a newer one) to take.
                self._need_snapshot = True
                log.info(
                    "replica %s: %s no longer retains the log after seq %d; installing a snapshot",
                    self.partition_id,
                    leader.address,
                    after,
                    extra=fields(event="replica_snapshot", partition=self.partition_id),
                )
                raise _Restart
            elif body in ("snapshot_begin", "snapshot_rows", "snapshot_end"):
                if not snapshot:
                    raise DataLossError("Snapshot rows came unasked: refused.")
                if self._building is None:
                    self._building = _SnapshotBuild(self)
                if await self._building.take(message, body):
                    await self._install(self._building, message.epoch)
            first = False
            await self._apply_committed()
            self._tell()
            await call.send(self._request(leader))

    # -- the log ------------------------------------------------------------------

    async def _truncate(self, seq: int, after: int) -> None:
        """Obey the leader's Truncate{seq}: cut the log and the epoch file there.

        Raises:
            DataLossError: ``seq`` is above the position asked from (garbage),
                or below what the store holds (a committed write would go).
        """
        if seq > after:
            raise DataLossError(
                f"The leader of partition {self.partition_id} said to truncate after seq "
                f"{seq}, past the {after} asked from: refused."
            )
        if seq < self.applied_seq:
            raise DataLossError(
                f"The leader of partition {self.partition_id} said to truncate after seq "
                f"{seq}, but this replica's store holds writes through {self.applied_seq} "
                "(committed): refusing to lose them; the partition is marked failed."
            )
        if seq >= self.log_end:
            return
        wal = self._wal
        assert wal is not None

        def cut() -> int:
            dropped = wal.truncate_after(seq)
            self.history = self.history.truncated_after(seq)
            write_epoch_file(epoch_file_path(self.directory), self.history)
            return dropped

        dropped = await self._worker.run_sync(cut)
        while self._pending and self._pending[-1].seq > seq:
            self._pending.pop()
        self.truncations += 1
        log.info(
            "replica %s: truncated %d records after seq %d (the new leader's log diverges there)",
            self.partition_id,
            dropped,
            seq,
            extra=fields(event="replica_truncated", partition=self.partition_id, seq=seq),
        )

    async def _append(self, records: Sequence[pb.Record], epoch: int) -> None:
        """Check the records, append them to the log, fsync once, and record a
        new epoch in the epoch file once they are durable."""
        if not records:
            return
        checked, history = self._check_records(records, epoch)
        wal = self._wal
        assert wal is not None
        rows = [(w.seq, w.timestamp, w.payload or b"") for w in checked]

        def log_them() -> None:
            wal.append(rows)
            wal.sync()
            if history != self.history:
                write_epoch_file(epoch_file_path(self.directory), history)

        await self._worker.run_sync(log_them)
        self.history = history
        self._pending.extend(checked)

    def _check_records(
        self, records: Sequence[pb.Record], epoch: int
    ) -> tuple[list[Write], EpochHistory]:
        """What a leader sends is input: seqs above the log's end and
        increasing, valid timestamps, keys of the range and of a valid
        length, epochs no newer than the leader's and never going back.

        Raises:
            DataLossError: naming the first record that is not so.
        """
        writes: list[Write] = []
        last = self.log_end
        history = self.history
        for record in records:
            where = f"Record seq {record.seq} from the leader of partition {self.partition_id}"
            if not (record.seq > last and in_range(record.seq) and in_range(record.timestamp)):
                raise DataLossError(f"{where} does not follow seq {last}: refused.")
            keys = [e.key for e in record.puts] + list(record.deletes)
            if not all(0 < len(key) <= MAX_KEY_BYTES and key in self.range for key in keys):
                raise DataLossError(
                    f"{where} holds a key outside its range {self.range} or of a bad length: "
                    "refused."
                )
            # A leader that does not say (a move's source) logged it in its own epoch.
            record_epoch = record.epoch or epoch
            if record_epoch > epoch:
                raise DataLossError(
                    f"{where} has epoch {record_epoch}, past the leader's {epoch}: refused."
                )
            if record_epoch and record_epoch != history.last_epoch:
                history = _started(history, record_epoch, record.seq, self.applied_seq, where)
            write = Write(
                puts=[(e.key, e.value) for e in record.puts],
                deletes=list(record.deletes),
                seq=record.seq,
                timestamp=record.timestamp,
            )
            payload = encode_write(write)
            if len(payload) > MAX_PAYLOAD:
                raise DataLossError(f"{where} is larger than a log record may be: refused.")
            writes.append(
                Write(write.puts, write.deletes, write.seq, write.timestamp, payload=payload)
            )
            last = record.seq
        return writes, history

    # -- the store ------------------------------------------------------------------

    async def _apply_committed(self) -> None:
        """Apply the logged records the leader has committed (rule 3), and
        only those durable here; now and then record the commit seq."""
        bound = min(self.leader_commit_seq, self.durable_seq)
        writes: list[Write] = []
        while self._pending and self._pending[0].seq <= bound:
            writes.append(self._pending.popleft())
        store = self._store
        assert store is not None
        if writes:

            def apply() -> None:
                store.apply(writes)
                self._checkpoint()

            await self._worker.run_sync(apply)
            self.applied_seq = writes[-1].seq
        if time.monotonic() - self._commit_persisted_at >= COMMIT_PERSIST_SECONDS:
            await self._worker.run_sync(self._persist_commit)

    def _persist_commit(self, *, force: bool = False) -> None:
        """Record in the epoch file the commit the store holds; blocking."""
        self._commit_persisted_at = time.monotonic()
        history = self.history.committed(self.applied_seq)
        if history != self.history or force:
            write_epoch_file(epoch_file_path(self.directory), history)
            self.history = history

    def _checkpoint(self) -> None:
        """Once the log has rolled, make the store durable and drop the log
        segments it covers, so the log stays bounded; blocking."""
        store, wal = self._store, self._wal
        assert store is not None
        assert wal is not None
        if not store.persistent or wal.statistics().segments <= 1:
            return
        durable = store.sync()
        wal.checkpoint(durable)

    # -- snapshots ----------------------------------------------------------------

    async def _install(self, building: _SnapshotBuild, epoch: int) -> None:
        """Make the snapshot the store, and start the log and epoch file
        again after its seq."""
        seq, timestamp = building.position

        def swap() -> None:
            target = building.target
            assert target is not None
            target.finish(seq, timestamp)
            self._close_files()
            _clear_state(self.directory, self.store_options, keep={SNAPSHOT_FILE, EPOCH_FILE})
            install(self.store_kind, self.directory, building.path, self.store_options)
            # The snapshot's seq counts as of the leader's epoch: a new leader
            # answers our last_epoch from it (records of an older epoch that
            # follow replace it, see _started).
            history = EpochHistory(((epoch, seq),) if epoch and seq else (), seq)
            write_epoch_file(epoch_file_path(self.directory), history)
            self.history = history
            self._store = open_store(
                self.store_kind, self.directory, logged=True, options=self.store_options
            )
            self._wal = WriteAheadLog.open(self.directory / WAL_DIR)[0]
            self.applied_seq = self._store.last_seq()

        await self._worker.run_sync(swap)
        self._pending.clear()
        self._need_snapshot = False
        self.snapshots += 1
        self._tell()
        log.info(
            "replica %s: installed a snapshot at seq %d (%d rows)",
            self.partition_id,
            seq,
            building.rows,
            extra=fields(event="replica_snapshot_installed", partition=self.partition_id, seq=seq),
        )


def _started(history: EpochHistory, epoch: int, seq: int, applied: int, where: str) -> EpochHistory:
    """``history`` with ``epoch`` starting at ``seq``.

    Raises:
        DataLossError: ``epoch`` is older than the log's last one. Allowed
            only right after a snapshot: its seq is recorded as of the
            leader's epoch then, and the records after it may be older (the
            entry is replaced: it covers no logged record).
    """
    if epoch > history.last_epoch:
        return history.started(epoch, seq)
    entries = history.entries
    if entries and entries[-1][1] == applied and applied < seq:
        rest = entries[:-1]
        if not rest or rest[-1][0] < epoch:
            return EpochHistory((*rest, (epoch, seq)), history.commit_seq)
    raise DataLossError(
        f"{where} has epoch {epoch}, older than epoch {history.last_epoch} of the log: refused."
    )


def _clear_state(directory: Path, options: StoreOptions, keep: set[str]) -> None:
    """Delete a replica's store and log (not ``keep``): a snapshot replaces them; blocking."""
    for path in directory.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    durable = options.durable_directory
    if durable is not None and durable.exists():
        shutil.rmtree(durable)
    fsync_directory(directory)


class _SnapshotBuild:
    """A snapshot being streamed into a ``RangeFile`` beside the store."""

    def __init__(self, follower: ReplicaFollower) -> None:
        self.follower = follower
        self.path = follower.directory / SNAPSHOT_FILE
        self.target: RangeFile | None = None
        self.position = (0, 0)
        self.rows = 0
        self.done = False
        self._hasher = hashlib.sha256()
        self._last_key: bytes | None = None
        self._begun = False

    def discard(self) -> None:
        """A snapshot the stream broke off: its file goes; blocking."""
        if self.target is not None:
            self.target.close()
        self.path.unlink(missing_ok=True)

    async def take(self, message: pb.FetchResponse, body: str) -> bool:
        """Take one message of the snapshot; True once it is whole and checked.

        Raises:
            DataLossError: out of order, a bad row, or a checksum mismatch.
        """
        f = self.follower
        worker = f._worker
        if body == "snapshot_begin":
            begin = message.snapshot_begin
            if self._begun or not (in_range(begin.seq) and in_range(begin.timestamp)):
                raise DataLossError(f"A bad snapshot began (seq {begin.seq}): refused.")
            self._begun = True
            self.position = (begin.seq, begin.timestamp)
            path = self.path

            def create() -> RangeFile:
                path.unlink(missing_ok=True)
                return RangeFile(path, f.range)

            self.target = await worker.run_sync(create)
            return False
        if not self._begun or self.done:
            raise DataLossError("Snapshot rows came outside a snapshot: refused.")
        target = self.target
        assert target is not None
        if body == "snapshot_rows":
            rows = [(r.key, r.value, r.seq, r.timestamp) for r in message.snapshot_rows.rows]
            self._last_key = check_rows(
                f.partition_id, f.range, rows, self.position[0], self._last_key
            )
            hash_rows(self._hasher, rows)
            self.rows += len(rows)
            await worker.run_sync(lambda: target.put_rows(rows))
            return False
        end = message.snapshot_end
        if (
            end.sha256 != self._hasher.digest()
            or end.rows != self.rows
            or (end.seq, end.timestamp) != self.position
        ):
            raise DataLossError(
                f"The snapshot of partition {f.partition_id} does not match its checksum "
                f"({self.rows} rows received, {end.rows} sent): refused, nothing installed."
            )
        self.done = True
        return True


def remove_snapshot_leftover(directory: Path) -> None:
    """A snapshot a crash left half built; blocking."""
    path = directory / SNAPSHOT_FILE
    if path.exists():
        os.unlink(path)
