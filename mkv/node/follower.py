"""The follower side of ``mkv.v1.Replication``: a partition filled from a remote leader.

A ``Follower`` opens a Fetch stream to the partition's leader (its control
port) and builds the partition's state apart, in a ``RangeFile``
(``mkv.snapshots.transfer``, the split's "snapshot, then catch up from the
log" piece): first a snapshot streamed as rows (checked against the
leader's SHA-256 of the whole row stream), then the leader's log records
after the snapshot's seq, applied as replay applies them. The file is
fsynced as it goes; the seq it holds durable is reported on the stream
(issue 16's in-sync set will be decided from it). Nothing is served from it
until ``cut_over`` installs it as a local partition.

Safety (docs/replication.md, cluster.md rules 2 and 3): a message of an
older epoch than the follower knows is refused and ends the copy; records
above the leader's commit seq are never applied.

Flow control is the stream's: every FetchRequest asks for one answer, and the
follower keeps ``CREDITS`` requests outstanding, sending the next only once it
has applied an answer. A slow follower slows only its own stream; one that
stops reading stops asking, and the leader holds nothing more for it.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from mkv.errors import (
    DataLossError,
    FailedPreconditionError,
    MkvError,
    UnavailableError,
)
from mkv.limits import in_range
from mkv.observe.logs import fields
from mkv.operations import Operation
from mkv.records import Write
from mkv.router import KeyRange
from mkv.rpc.auth import authorization_metadata
from mkv.rpc.dial import BidiCall, open_bidi
from mkv.snapshots.transfer import RangeFile, hash_rows
from mkv.v1 import replication_pb2 as pb
from mkv.wire import MAX_KEY_BYTES, Address

if TYPE_CHECKING:
    from mkv.partition.task import Partition

__all__ = ["REPLICATION_SERVICE", "Follower", "check_rows"]

log = logging.getLogger("mkv.replication")

REPLICATION_SERVICE: str = pb.DESCRIPTOR.services_by_name["Replication"].full_name
# Requests the follower keeps unanswered: the most answers in flight to it.
CREDITS = 4
# Bytes of rows or records one answer may carry.
FETCH_BYTES = 1024 * 1024
# The copy is fsynced (and its durable seq reported) after this many bytes
# applied, or this many seconds, whichever comes first.
SYNC_BYTES = 16 * 1024 * 1024
SYNC_SECONDS = 0.5
# Silence on the stream past this (the leader heartbeats every second) is a failure.
SILENCE_SECONDS = 10.0
# The file the copy is built in, in the partition's directory.
FOLLOW_FILE = "follow.sqlite3.tmp"
# A lost stream is opened again this many times (with a pause) before the copy fails.
RECONNECTS = 5
RECONNECT_PAUSE = 0.5


class Follower:
    """One partition being copied here from a remote leader (see the module doc).

    Made and started by ``PartitionRegistry.follow``; ``cut_over`` asks the
    registry to install the copy (``install``), ``abandon`` to forget it
    (``discard``).
    """

    def __init__(
        self,
        partition_id: str,
        key_range: KeyRange,
        store: str,
        pipeline: Sequence[str],
        source: Address,
        epoch: int,
        *,
        directory: Path,
        install: Callable[[Follower, int, int], Awaitable[Partition]],
        discard: Callable[[Follower], Awaitable[None]],
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        operation: Operation | None = None,
        name: str = "",
    ) -> None:
        self.partition_id = partition_id
        self.range = key_range
        self.store = store
        self.pipeline = tuple(pipeline)
        self.source = source
        # The newest epoch of the partition's leadership this follower knows.
        self.epoch = epoch
        self.directory = directory
        self.path = directory / FOLLOW_FILE
        self._install = install
        self._discard = discard
        self._metadata = authorization_metadata(token)
        self._ssl_context = ssl_context
        self._operation = operation
        self._name = name
        # Progress: the seq the copy holds (applied), and holds durable.
        self.applied_seq = 0
        self.durable_seq = 0
        self.leader_commit_seq = 0
        self.snapshot_done = False
        # Snapshots streamed so far: more than one means the leader's log
        # moved past the copy (SNAPSHOT_REQUIRED) and it started over.
        self.snapshots = 0
        # Set when the copy failed for good: every waiter raises it.
        self.error: MkvError | None = None
        self._target: RangeFile | None = None
        self._progress = trio.Event()
        self._scope = trio.CancelScope()
        self._ended = trio.Event()
        self._finished = False
        self.started = time.monotonic()

    @property
    def target(self) -> RangeFile:
        """The file the copy is built in (once ``run`` has begun)."""
        assert self._target is not None
        return self._target

    # -- for the cluster layer ---------------------------------------------------

    async def caught_up(self, max_lag: int = 0) -> None:
        """Return once the copy is within ``max_lag`` records of the leader's commit seq.

        Raises:
            MkvError: the copy failed (``error``).
        """
        while not (self.snapshot_done and self.leader_commit_seq - self.applied_seq <= max_lag):
            self._check()
            await self._changed()

    async def cut_over(self, final_seq: int, *, within: float = 30.0) -> Partition:
        """Apply every record through ``final_seq`` (the leader's last, once it
        is fenced), stop fetching, and install the copy as a local partition,
        held (not routed) until ``PartitionRegistry.serve``.

        Raises:
            MkvError: the copy failed, or holds a record above ``final_seq``
                (the leader went on after it was fenced).
            UnavailableError: ``final_seq`` was not reached within ``within`` seconds.
        """
        with trio.move_on_after(within):
            while not (self.snapshot_done and self.applied_seq >= final_seq):
                self._check()
                await self._changed()
        self._check()
        if not (self.snapshot_done and self.applied_seq >= final_seq):
            raise UnavailableError(
                f"The copy of partition {self.partition_id} reached seq {self.applied_seq}, "
                f"not {final_seq}, within {within:g} s."
            )
        self._scope.cancel()
        await self._ended.wait()
        target = self._target
        assert target is not None
        if target.seq > final_seq:
            raise FailedPreconditionError(
                f"The copy of partition {self.partition_id} holds seq {target.seq}, past the "
                f"leader's final seq {final_seq}: its leader went on after the fence."
            )
        self._finished = True
        partition = await self._install(self, final_seq, target.timestamp)
        log.info(
            "partition %s: copy from %s cut over at seq %d after %.1f s",
            self.partition_id,
            self.source,
            final_seq,
            time.monotonic() - self.started,
            extra=fields(event="follow_cut_over", partition=self.partition_id, seq=final_seq),
        )
        return partition

    async def abandon(self) -> None:
        """Stop copying and delete the copy's files."""
        self._scope.cancel()
        await self._ended.wait()
        if not self._finished:
            self._finished = True
            await self._discard(self)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._ended.is_set() and not self._finished:
            raise UnavailableError(f"The copy of partition {self.partition_id} stopped.")

    async def _changed(self) -> None:
        await self._progress.wait()

    def _tell(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # -- the copy ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Copy until cut over or abandoned; a failure is kept in ``error``."""
        task_status.started()
        try:
            with self._scope:
                self._target = await trio.to_thread.run_sync(RangeFile, self.path, self.range)
                await self._copy()
        except MkvError as exc:
            self.error = exc
            log.warning(
                "partition %s: the copy from %s failed: %s",
                self.partition_id,
                self.source,
                exc,
                extra=fields(event="follow_failed", partition=self.partition_id),
            )
        except Exception as exc:
            log.exception("partition %s: the copy from %s failed", self.partition_id, self.source)
            self.error = UnavailableError(
                f"The copy of partition {self.partition_id} failed ({type(exc).__name__})."
            )
        finally:
            target = self._target
            if target is not None and not self._finished:
                # Made durable as far as it got, for cut_over's finish.
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(target.sync)
                    except MkvError as exc:
                        self.error = self.error or exc
            self._ended.set()
            self._tell()

    async def _copy(self) -> None:
        failures = 0
        while True:
            try:
                await self._stream()
                return
            except UnavailableError as exc:
                # A lost connection: open the stream again from where the copy is.
                failures += 1
                if failures > RECONNECTS:
                    raise
                log.info(
                    "partition %s: the stream from %s broke (%s); reopening",
                    self.partition_id,
                    self.source,
                    exc,
                    extra=fields(event="follow_reconnect", partition=self.partition_id),
                )
                await trio.sleep(RECONNECT_PAUSE)
            except _SnapshotRequired:
                await self._restart_copy()

    async def _restart_copy(self) -> None:
        """The leader no longer retains the log after the copy's seq: start
        over from a snapshot, in a new file."""
        target = self._target
        assert target is not None
        await trio.to_thread.run_sync(target.close)
        await trio.to_thread.run_sync(lambda: self.path.unlink(missing_ok=True))
        self.snapshot_done = False
        self.applied_seq = self.durable_seq = 0
        self._target = await trio.to_thread.run_sync(RangeFile, self.path, self.range)

    def _request(self, **start: object) -> pb.FetchRequest:
        return pb.FetchRequest(
            partition_id=self.partition_id,
            epoch=self.epoch,
            durable_seq=self.durable_seq,
            max_bytes=FETCH_BYTES,
            follower=self._name,
            **start,  # type: ignore[arg-type]
        )

    async def _stream(self) -> None:
        target = self._target
        assert target is not None
        try:
            async with open_bidi(
                self.source,
                REPLICATION_SERVICE,
                "Fetch",
                pb.FetchRequest,
                pb.FetchResponse,
                metadata=self._metadata,
                ssl_context=self._ssl_context,
                silence=SILENCE_SECONDS,
            ) as call:
                if self.snapshot_done:
                    await call.send(self._request(after_seq=target.seq))
                else:
                    self.snapshots += 1
                    await call.send(self._request(snapshot=True))
                for _ in range(CREDITS - 1):
                    await call.send(self._request())
                await self._receive(call, target)
        except BaseExceptionGroup as group:
            # purerpc's connection tasks wrap what ended the stream.
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, MkvError | _SnapshotRequired | trio.Cancelled):
                raise first from None
            raise UnavailableError(f"The stream from {self.source} failed ({first!r}).") from group

    async def _receive(self, call: BidiCall[pb.FetchResponse], target: RangeFile) -> None:
        hasher = hashlib.sha256()
        rows_seen = 0
        snapshot_at: tuple[int, int] | None = None
        last_key: bytes | None = None
        unsynced = 0
        last_sync = time.monotonic()
        while True:
            message = await call.receive()
            if message.epoch < self.epoch:
                # cluster.md rule 2: a deposed leader's records are never applied.
                raise FailedPreconditionError(
                    f"The leader of partition {self.partition_id} at {self.source} sent "
                    f"epoch {message.epoch}, older than epoch {self.epoch} this follower "
                    "knows: refusing its records."
                )
            self.epoch = message.epoch
            self.leader_commit_seq = message.commit_seq
            body = message.WhichOneof("body")
            if body == "snapshot_begin":
                begin = message.snapshot_begin
                if not (in_range(begin.seq) and in_range(begin.timestamp)):
                    raise DataLossError(f"The snapshot's seq {begin.seq} is out of range.")
                snapshot_at = (begin.seq, begin.timestamp)
                last_key = None
                hasher = hashlib.sha256()
                rows_seen = 0
                self._report("copy", 0, begin.seq)
            elif body == "snapshot_rows":
                if snapshot_at is None:
                    raise DataLossError("Snapshot rows came before the snapshot began.")
                rows = [(r.key, r.value, r.seq, r.timestamp) for r in message.snapshot_rows.rows]
                last_key = check_rows(self.partition_id, self.range, rows, snapshot_at[0], last_key)
                hash_rows(hasher, rows)
                rows_seen += len(rows)
                await trio.to_thread.run_sync(target.put_rows, rows)
                unsynced += message.ByteSize()
                self._report("copy", rows_seen, 0, "keys")
            elif body == "snapshot_end":
                end = message.snapshot_end
                if snapshot_at is None:
                    raise DataLossError("The snapshot ended before it began.")
                if (
                    end.sha256 != hasher.digest()
                    or end.rows != rows_seen
                    or (end.seq, end.timestamp) != snapshot_at
                ):
                    raise DataLossError(
                        f"The snapshot of partition {self.partition_id} from {self.source} "
                        f"does not match its checksum ({rows_seen} rows received, "
                        f"{end.rows} sent): refused, nothing is installed."
                    )
                await trio.to_thread.run_sync(target.set_position, *snapshot_at)
                await trio.to_thread.run_sync(target.sync)
                self.durable_seq = self.applied_seq = target.seq
                self.snapshot_done = True
                unsynced, last_sync = 0, time.monotonic()
            elif body == "records":
                if not self.snapshot_done:
                    raise DataLossError("Records came before the snapshot ended.")
                writes = self._check_records(message.records.records, message.commit_seq, target)
                if writes:
                    await trio.to_thread.run_sync(target.apply, writes)
                    unsynced += message.ByteSize()
                self.applied_seq = target.seq
                self._report("catch-up", self.applied_seq, self.leader_commit_seq, "seq")
            elif body == "snapshot_required":
                raise _SnapshotRequired
            if unsynced >= SYNC_BYTES or (
                unsynced and time.monotonic() - last_sync >= SYNC_SECONDS
            ):
                await trio.to_thread.run_sync(target.sync)
                self.durable_seq = target.seq if self.snapshot_done else 0
                unsynced, last_sync = 0, time.monotonic()
            self._tell()
            await call.send(self._request())

    def _check_records(
        self, records: Sequence[pb.Record], commit_seq: int, target: RangeFile
    ) -> list[Write]:
        """The records to apply: numbered in order above the copy's seq, with
        valid keys, and none above the leader's commit seq (cluster.md rule 3:
        a follower's state never holds a write that may vanish).

        Raises:
            DataLossError: a record is out of order or holds a bad key.
        """
        writes: list[Write] = []
        last = target.seq
        for record in records:
            if record.seq > commit_seq:
                break
            if not (record.seq > last and in_range(record.seq) and in_range(record.timestamp)):
                raise DataLossError(
                    f"Record seq {record.seq} from {self.source} does not follow seq {last}: "
                    "refused."
                )
            keys = [e.key for e in record.puts] + list(record.deletes)
            if not all(0 < len(key) <= MAX_KEY_BYTES for key in keys):
                raise DataLossError(f"Record seq {record.seq} holds a key of a bad length.")
            last = record.seq
            writes.append(
                Write(
                    puts=[(e.key, e.value) for e in record.puts],
                    deletes=list(record.deletes),
                    seq=record.seq,
                    timestamp=record.timestamp,
                )
            )
        return writes

    def _report(self, phase: str, done: int, total: int, unit: str = "") -> None:
        if self._operation is not None:
            self._operation.report(phase, done, total, unit)


def check_rows(
    partition_id: str,
    key_range: KeyRange,
    rows: list[tuple[bytes, bytes, int, int]],
    seq: int,
    last_key: bytes | None,
) -> bytes | None:
    """What a leader sends is input: every snapshot row a valid key of the
    range, in key order, set at or below the snapshot's ``seq``. Returns the
    last key, for the next chunk.

    Raises:
        DataLossError: naming the first row that is not.
    """
    for key, _, row_seq, ts in rows:
        if not (0 < len(key) <= MAX_KEY_BYTES and key in key_range):
            raise DataLossError(
                f"The snapshot of partition {partition_id} holds a key outside its "
                f"range {key_range} or of a bad length: refused, nothing is installed."
            )
        if last_key is not None and key <= last_key:
            raise DataLossError("The snapshot's rows are not in key order: refused.")
        if not (0 < row_seq <= seq and in_range(ts)):
            raise DataLossError(
                f"A snapshot row has seq {row_seq} (the snapshot is at {seq}) or a bad "
                "timestamp: refused, nothing is installed."
            )
        last_key = key
    return last_key


class _SnapshotRequired(Exception):
    """The leader no longer retains the log after the copy's position."""
