"""The leader side of ``mkv.v1.Replication``, and a whole move between two nodes.

``ReplicationService.fetch`` serves one follower's Fetch stream
(docs/replication.md): the first request says where to start (a snapshot,
or after a seq); every request asks for exactly one answer, so the leader
never produces more than the follower has asked for (a follower that stops
reading stops asking: the leader holds at most its few outstanding answers
and the HTTP/2 window). A snapshot is captured at one seq between two
writes (``mkv.snapshots.stores.begin_capture``, as a split's copy is),
written out off the event loop, and streamed as rows in key order with a
SHA-256 of the whole row stream; then the partition's change feed (its
retained log) is streamed as records after the snapshot's seq. Every answer
carries the leader's epoch and commit seq. A position older than the feed
retains is answered SNAPSHOT_REQUIRED.

``move_partition`` runs a whole move without etcd (tests, and the cluster
layer, which passes its etcd Txn as ``switch``): follow, catch up, fence the
source, cut over on the target, switch, serve, retire the source.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from pathlib import Path

import attrs
import trio

from mkv.cluster.membership import Membership
from mkv.errors import (
    CompactedError,
    FailedPreconditionError,
    InvalidArgumentError,
    MkvError,
    NotFoundError,
    StorageError,
    UnavailableError,
)
from mkv.node.follower import FETCH_BYTES, Follower
from mkv.node.registry import PartitionRegistry
from mkv.observe.logs import fields
from mkv.operations import Operation, run_stoppable
from mkv.partition.task import LogHold, Partition, Read
from mkv.pipeline import ReplicateStage, Write
from mkv.rpc.server import BidiStream, Handler, ServerStream
from mkv.snapshots.stores import begin_capture
from mkv.snapshots.transfer import feed_writes, hash_rows
from mkv.v1 import data_pb2
from mkv.v1 import replication_pb2 as pb
from mkv.wire import Address, parse_address

__all__ = ["MoveResult", "ReplicationService", "move_partition"]

log = logging.getLogger("mkv.replication")

# With nothing new to send, the leader answers a request after this long
# anyway (a heartbeat with its commit seq): a silent stream is a dead one.
HEARTBEAT_SECONDS = 1.0
# A follower asks again as soon as it has applied an answer: one that sends
# nothing for this long (killed, cut off: purerpc may not notice) is gone.
FOLLOWER_SILENCE_SECONDS = 30.0
# The most bytes a follower may ask for in one answer.
MAX_FETCH_BYTES = 4 * 1024 * 1024
# Rows read from the snapshot file per query.
_ROWS_PER_READ = 2000
# A row's most encoded bytes besides its key and value: the key's and the
# value's tags and lengths (3 + 4), seq and timestamp as varints (11 each),
# the row's own tag and length (4). An answer's rows are counted at this, so
# that their message never exceeds its budget, however small the rows.
_ROW_OVERHEAD = 34
# A source fenced by a Handover settles the move through etcd after this
# long without ABANDON or COMMITTED (longer than a target's cut-over may take).
FENCE_TIMEOUT = 20.0
# Where leaders write the snapshots they stream, under the data directory;
# emptied at every start.
OUTGOING_DIR = "replication-out"


class ReplicationService:
    """Serves ``mkv.v1.Replication`` for the partitions this node leads."""

    def __init__(
        self, registry: PartitionRegistry, scratch: Path, *, max_answer_bytes: int
    ) -> None:
        self._registry = registry
        self._scratch = scratch
        # An answer's records or rows stop short of this (the port's largest
        # message, less the envelope's headroom): purerpc refuses to send a
        # larger one, and the stream would fail on every retry.
        self._max_answer_bytes = max_answer_bytes
        # A test hook: called with each snapshot chunk's rows before they
        # are sent (the SHA-256 is of the rows as read), to corrupt one in transit.
        self.tamper: Callable[[list[pb.Row]], None] | None = None
        # The durable seq each follower last reported, by (partition, follower).
        self.durable: dict[tuple[str, str], int] = {}
        # Answers produced, on every stream (each answers one request).
        self.answers = 0

        # Cluster mode: whose leaderships a Handover checks, and where a
        # fenced partition that hears no decision settles it (etcd).
        self.cluster: Membership | None = None
        # Runs the fences' watchdogs (set while the node is in its cluster).
        self.nursery: trio.Nursery | None = None
        # Partitions fenced by a Handover, with the epoch they were fenced at.
        self._fenced: dict[str, int] = {}
        self.fence_timeout = FENCE_TIMEOUT

    def methods(self) -> dict[str, tuple[type, Handler | ServerStream | BidiStream]]:
        return {
            "Fetch": (pb.FetchRequest, BidiStream(self.fetch)),
            "Handover": (pb.HandoverRequest, self.handover),
        }

    # -- a move's hand-over (docs/replication.md) ---------------------------------

    async def handover(self, request: pb.HandoverRequest) -> pb.HandoverResponse:
        """One step of a move's hand-over, asked by its target (see the proto).

        Raises:
            FailedPreconditionError: not cluster mode; FENCE of a partition
                this node does not lead at ``epoch``; ABANDON or COMMITTED of
                one not fenced at ``epoch``.
            InvalidArgumentError: no step, or a bad successor address.
        """
        cluster = self.cluster
        if cluster is None:
            raise FailedPreconditionError("Handover needs cluster mode.")
        pid = request.partition_id
        step = request.step
        if step == pb.HandoverRequest.FENCE:
            epoch = cluster.routing.mine.get(pid)
            if epoch is None or not cluster.lease_valid():
                raise FailedPreconditionError(f"This node does not lead partition {pid} now.")
            if request.epoch != epoch:
                raise FailedPreconditionError(
                    f"Handover of partition {pid} at epoch {request.epoch} refused: this "
                    f"leader is at epoch {epoch}."
                )
            try:
                successor = parse_address(request.successor)
            except ValueError:
                raise InvalidArgumentError("Handover needs the successor's address.") from None
            if self.nursery is None:
                raise UnavailableError("This node is not in its cluster yet; retry.")
            seq = await self._registry.fence(pid, successor)
            self._fenced[pid] = epoch
            self.nursery.start_soon(self._watch_fence, pid, epoch)
            return pb.HandoverResponse(final_seq=seq)
        if step not in (pb.HandoverRequest.ABANDON, pb.HandoverRequest.COMMITTED):
            raise InvalidArgumentError("Handover needs a step.")
        if self._fenced.get(pid) != request.epoch:
            if step == pb.HandoverRequest.ABANDON:
                return pb.HandoverResponse()  # nothing fenced: nothing to undo
            raise FailedPreconditionError(
                f"Partition {pid} is not fenced at epoch {request.epoch} here."
            )
        # Either way etcd decides (a target that says "abandon" may not know
        # that its Txn committed): settle_fence reads it, or makes sure the
        # move can no longer commit.
        await self._settle(pid, request.epoch)
        return pb.HandoverResponse()

    async def _settle(self, pid: str, epoch: int) -> None:
        """Settle a fenced partition by what etcd says: moved away, or served again.

        Raises:
            UnavailableError: etcd cannot be reached (the fence stays).
        """
        assert self.cluster is not None
        if self._fenced.get(pid) != epoch:
            return
        moved = await self.cluster.settle_fence(pid, epoch)
        if self._fenced.get(pid) != epoch:
            return  # settled meanwhile by another caller
        del self._fenced[pid]
        if moved:
            await self._registry.moved_away(pid)
        else:
            await self._registry.unfence(pid)

    async def _watch_fence(self, pid: str, epoch: int) -> None:
        """A fence whose target says nothing (killed, cut off) is settled by
        etcd after ``fence_timeout``: the source never stays fenced for good."""
        await trio.sleep(self.fence_timeout)
        while self._fenced.get(pid) == epoch:
            log.warning(
                "partition %s: fenced for %.0f s without a decision from its move; asking etcd",
                pid,
                self.fence_timeout,
                extra=fields(event="fence_settle", partition=pid),
            )
            try:
                await self._settle(pid, epoch)
            except MkvError as exc:
                log.warning("partition %s: cannot settle its fence yet: %s", pid, exc)
                await trio.sleep(1.0)

    async def fetch(
        self, requests: AsyncIterator[pb.FetchRequest]
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        async with aclosing(self._fetch(requests)) as answers:
            async for answer in answers:
                self.answers += 1
                yield answer

    async def _fetch(
        self, requests: AsyncIterator[pb.FetchRequest]
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        first = await _next(requests)
        if first is None:
            return
        partition = self._leading(first)
        if first.WhichOneof("start") is None:
            raise InvalidArgumentError("The first FetchRequest must say where to start.")
        # The log on disk after the follower's position stays while it reads.
        with partition.holding_log() as hold:
            if first.replica:
                answers = self._replica(partition, first, requests, hold)
            else:
                answers = self._follower(partition, first, requests, hold)
            async with aclosing(answers):
                async for answer in answers:
                    yield answer

    async def _follower(
        self,
        partition: Partition,
        first: pb.FetchRequest,
        requests: AsyncIterator[pb.FetchRequest],
        hold: LogHold,
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        """A move's (or split's) follower's stream: a snapshot or the log
        after a seq, then the log, records as applied here."""
        who = (partition.id, first.follower)
        if first.WhichOneof("start") == "snapshot":
            position = -1
            # Closed here, not by the garbage collector, when the stream ends early.
            async with aclosing(self._snapshot(partition, first, requests, who, hold)) as snapshot:
                async for response in snapshot:
                    if response.WhichOneof("body") == "snapshot_begin":
                        position = response.snapshot_begin.seq
                    yield response
            if position < 0:
                return  # the follower went away mid-snapshot
            request = await _next(requests)
        else:
            position = first.after_seq
            if position > partition.last_seq():
                raise FailedPreconditionError(
                    f"Seq {position} is past partition {partition.id}'s last seq "
                    f"{partition.last_seq()} on this node: the follower's log diverged."
                )
            request = first
        while request is not None:
            self._check(partition, request)
            self.durable[who] = request.durable_seq
            hold.seq = position
            response = await self._records(partition, position, self._budget(request))
            yield response
            if response.WhichOneof("body") == "snapshot_required":
                return
            if response.records.records:
                position = response.records.records[-1].seq
            request = await _next(requests)

    async def _replica(
        self,
        partition: Partition,
        first: pb.FetchRequest,
        requests: AsyncIterator[pb.FetchRequest],
        hold: LogHold,
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        """A replica's stream (issue 16): Truncate first if its log may hold
        records of an older epoch past where that epoch ends here, then the
        log, applied or not, each record with its epoch; the replica's
        durable seq, as far as it matches this log, feeds the in-sync set.

        Raises:
            FailedPreconditionError: the partition is not led here with
                replicas, the follower is not one of them, or its log holds
                an epoch newer than this leader's (this leader is stale).
        """
        stage = partition.replicate_stage()
        isr = None if stage is None else stage.isr
        if stage is None or isr is None:
            raise FailedPreconditionError(
                f"Partition {partition.id} is not led with replicas on this node: "
                "a replica stream is refused."
            )
        node = first.follower
        if node not in isr.replicas or node == isr.leader:
            raise FailedPreconditionError(
                f"Node {node!r} is not a replica of partition {partition.id} (its replicas "
                f"are {', '.join(isr.replicas)}): its replica stream is refused."
            )
        epoch = stage.epoch
        if first.last_epoch > epoch:
            raise FailedPreconditionError(
                f"The replica's log of partition {partition.id} holds epoch {first.last_epoch}, "
                f"newer than this leader's epoch {epoch}: this leader is stale."
            )
        who = (partition.id, node)
        request: pb.FetchRequest | None = first
        if first.WhichOneof("start") == "snapshot":
            position = -1
            async with aclosing(self._snapshot(partition, first, requests, who, hold)) as snapshot:
                async for response in snapshot:
                    if response.WhichOneof("body") == "snapshot_begin":
                        position = response.snapshot_begin.seq
                    yield self._replica_answer(stage, response)
            if position < 0:
                return
            request = await _next(requests)
        elif first.last_epoch < epoch:
            # KIP-101: the replica's records of its last epoch match this log
            # up to where that epoch ends here; anything past is cut.
            position = min(stage.history.end_of(first.last_epoch, stage.log_end), first.after_seq)
            stage.truncations += 1
            log.info(
                "partition %s: %s asked from seq %d at epoch %d; truncating it to %d",
                partition.id,
                node,
                first.after_seq,
                first.last_epoch,
                position,
                extra=fields(event="replica_truncated", partition=partition.id, seq=position),
            )
            yield self._replica_answer(
                stage, pb.FetchResponse(epoch=epoch, truncate=pb.Truncate(seq=position))
            )
            request = await _next(requests)
        else:
            position = first.after_seq
            if position > stage.log_end:
                raise FailedPreconditionError(
                    f"Seq {position} is past partition {partition.id}'s log end "
                    f"{stage.log_end} on this leader at its own epoch: the log diverged."
                )
        # The replica's log matches this one up to here: its durable seq counts
        # for the commit only that far (its first report may be of a tail cut).
        matched = max(position, 0)
        while request is not None:
            self._check(partition, request)
            if stage.isr is None:
                # Stepped down (the partition object may linger, stopped).
                raise UnavailableError(f"This node no longer leads partition {partition.id}.")
            self.durable[who] = request.durable_seq
            hold.seq = matched
            stage.reported(node, min(request.durable_seq, matched))
            response = await self._replica_records(partition, stage, matched, self._budget(request))
            yield response
            if response.WhichOneof("body") == "snapshot_required":
                return
            if response.records.records:
                matched = response.records.records[-1].seq
            request = await _next(requests)

    def _budget(self, request: pb.FetchRequest) -> int:
        """The bytes of records (or rows) one answer to ``request`` may
        carry: what the follower asked for, within what this port can send.
        One record larger than that is sent alone (it came in as one request,
        so it fits a message)."""
        return min(request.max_bytes or FETCH_BYTES, MAX_FETCH_BYTES, self._max_answer_bytes)

    def _replica_answer(
        self, stage: ReplicateStage, response: pb.FetchResponse
    ) -> pb.FetchResponse:
        response.epoch = stage.epoch
        response.commit_seq = stage.commit_seq
        return response

    async def _replica_records(
        self, partition: Partition, stage: ReplicateStage, position: int, max_bytes: int
    ) -> pb.FetchResponse:
        """The records after ``position``: from the change feed while applied,
        from the stage's tail above (waiting up to a heartbeat for some)."""
        with trio.move_on_after(HEARTBEAT_SECONDS):
            await stage.wait_logged(position)
        writes: list[Write] = []
        if position < partition.last_seq():
            try:
                writes = await _logged(partition, position, max_bytes)
            except CompactedError:
                return self._replica_answer(
                    stage, pb.FetchResponse(snapshot_required=_required(partition))
                )
        size = sum(write.size for write in writes)
        # No write in the feed past the position: every seq up to its end was
        # skipped (a write that failed), and the tail goes on from there.
        after = writes[-1].seq if writes else max(position, partition.feed.last_seq)
        if size < max_bytes and after >= partition.last_seq():
            # The feed is read to its end (nothing awaited since): the tail,
            # trimmed to what is not applied, goes on from there.
            writes += stage.tail_after(after, max_bytes - size)
        records = _records_within(writes, max_bytes, stage.epoch_of)
        return self._replica_answer(stage, pb.FetchResponse(records=records))

    def _epoch(self, partition_id: str) -> int:
        """This node's epoch of ``partition_id``: in cluster mode its leader
        key's create revision (0 once it no longer leads it), else the registry's."""
        if self.cluster is not None:
            return self.cluster.routing.mine.get(partition_id, 0)
        return self._registry.epoch(partition_id)

    def _leading(self, request: pb.FetchRequest) -> Partition:
        partition = self._registry.partition(request.partition_id)
        not_led = self.cluster is not None and request.partition_id not in self.cluster.routing.mine
        if (
            partition is None
            or not_led
            or self._registry.follower(request.partition_id) is not None
        ):
            raise NotFoundError(f"No partition {request.partition_id!r} leads on this node.")
        self._check(partition, request)
        return partition

    def _check(self, partition: Partition, request: pb.FetchRequest) -> None:
        """Raises:
        FailedPreconditionError: the request's epoch is older than this
            leader's (cluster.md rule 2), naming the current one.
        UnavailableError: the partition stopped or was replaced here.
        """
        epoch = self._epoch(partition.id)
        if request.epoch < epoch:
            raise FailedPreconditionError(
                f"Fetch of partition {partition.id} at epoch {request.epoch} refused: "
                f"this leader is at epoch {epoch}."
            )
        if self._registry.partition(partition.id) is not partition:
            raise UnavailableError(f"Partition {partition.id} was replaced on this node; retry.")

    def _answer(self, partition: Partition, epoch: int, **body: object) -> pb.FetchResponse:
        return pb.FetchResponse(
            epoch=epoch,
            commit_seq=partition.last_seq(),
            **body,  # type: ignore[arg-type]
        )

    async def _records(
        self, partition: Partition, position: int, max_bytes: int
    ) -> pb.FetchResponse:
        """One answer: the records after ``position`` (waiting up to a
        heartbeat for some), or SNAPSHOT_REQUIRED."""
        feed = partition.feed
        with trio.move_on_after(HEARTBEAT_SECONDS):
            while not _has_entries(partition, position):
                try:
                    await partition.wait_for_changes(max(position, feed.last_seq))
                except UnavailableError:
                    break
        epoch = self._epoch(partition.id)
        try:
            writes = await _logged(partition, position, max_bytes)
        except CompactedError:
            return self._answer(partition, epoch, snapshot_required=_required(partition))
        return self._answer(partition, epoch, records=_records_within(writes, max_bytes))

    async def _snapshot(
        self,
        partition: Partition,
        first: pb.FetchRequest,
        requests: AsyncIterator[pb.FetchRequest],
        who: tuple[str, str],
        hold: LogHold,
    ) -> AsyncGenerator[pb.FetchResponse, None]:
        """Capture ``partition`` at one seq, write it out off the event loop,
        and stream its rows, one answer per request (``first`` is answered
        with SNAPSHOT_BEGIN), ending with their SHA-256. The log after the
        capture is held on disk meanwhile: the follower goes on from there,
        however long the snapshot took."""
        epoch = self._epoch(partition.id)
        capture = await partition.submit(Read(begin_capture))
        hold.seq = capture.seq
        # A directory of its own: SQLite may leave a journal beside the file.
        folder = self._scratch / f"{partition.id}-{uuid.uuid4().hex}"
        path = folder / "snapshot.sqlite3"
        began = time.monotonic()
        try:
            try:
                await trio.to_thread.run_sync(_create_empty, path)

                def write(stop: threading.Event) -> None:
                    capture.write(str(path), lambda *_: None, stop)

                await run_stoppable(write, name=f"mkv-replicate-{partition.id}")
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(capture.close)
            seq, timestamp = capture.seq, capture.timestamp
            rng = partition.range
            yield self._answer(
                partition,
                epoch,
                snapshot_begin=pb.SnapshotBegin(
                    seq=seq, timestamp=timestamp, start=rng.start, end=rng.end or b""
                ),
            )
            reader = await trio.to_thread.run_sync(_RowReader, path, rng.start, rng.end)
            try:
                hasher = hashlib.sha256()
                count = 0
                pending: list[tuple[bytes, bytes, int, int]] = []
                while (request := await _next(requests)) is not None:
                    self._check(partition, request)
                    self.durable[who] = request.durable_seq
                    budget = self._budget(request)
                    rows: list[tuple[bytes, bytes, int, int]] = []
                    size = 0
                    full = False
                    while not full:
                        if not pending:
                            pending = await trio.to_thread.run_sync(reader.next, _ROWS_PER_READ)
                            if not pending:
                                break
                        take = 0
                        while take < len(pending):
                            row = len(pending[take][0]) + len(pending[take][1]) + _ROW_OVERHEAD
                            if (rows or take) and size + row > budget:
                                full = True
                                break
                            size += row
                            take += 1
                        rows += pending[:take]
                        del pending[:take]
                    if not rows:
                        yield self._answer(
                            partition,
                            epoch,
                            snapshot_end=pb.SnapshotEnd(
                                sha256=hasher.digest(), rows=count, seq=seq, timestamp=timestamp
                            ),
                        )
                        log.info(
                            "partition %s: streamed a snapshot of %d rows at seq %d to %s "
                            "in %.1f s",
                            partition.id,
                            count,
                            seq,
                            who[1] or "a follower",
                            time.monotonic() - began,
                            extra=fields(event="snapshot_streamed", partition=partition.id),
                        )
                        return
                    hash_rows(hasher, rows)
                    count += len(rows)
                    message = [pb.Row(key=k, value=v, seq=s, timestamp=t) for k, v, s, t in rows]
                    if self.tamper is not None:
                        self.tamper(message)
                    yield self._answer(
                        partition, epoch, snapshot_rows=pb.SnapshotRows(rows=message)
                    )
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(reader.close)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    functools.partial(shutil.rmtree, folder, ignore_errors=True)
                )


async def _next(requests: AsyncIterator[pb.FetchRequest]) -> pb.FetchRequest | None:
    """The follower's next request (None: it closed the stream).

    Raises:
        UnavailableError: it sent nothing for ``FOLLOWER_SILENCE_SECONDS``.
    """
    with trio.move_on_after(FOLLOWER_SILENCE_SECONDS):
        return await anext(requests, None)
    raise UnavailableError(
        f"The follower sent nothing for {FOLLOWER_SILENCE_SECONDS:g} s; ending its stream."
    )


def _records_within(
    writes: Iterable[Write], max_bytes: int, epoch_of: Callable[[int], int] | None = None
) -> pb.Records:
    """``writes`` as records, in order, as many as fit ``max_bytes`` (the
    first always: it came in as one request, so it fits a message);
    ``epoch_of`` tags each with its epoch (a replica's stream)."""
    records: list[pb.Record] = []
    size = 0
    for write in writes:
        record = pb.Record(
            seq=write.seq,
            timestamp=write.timestamp,
            puts=[data_pb2.Entry(key=k, value=v) for k, v in write.puts],
            deletes=write.deletes,
            epoch=epoch_of(write.seq) if epoch_of is not None else 0,
        )
        record_size = record.ByteSize()
        if records and size + record_size > max_bytes:
            break
        records.append(record)
        size += record_size
    return pb.Records(records=records)


async def _logged(partition: Partition, position: int, max_bytes: int) -> list[Write]:
    """The applied writes after ``position``: from the change feed, or,
    where it no longer reaches back, from the log on disk.

    Raises:
        CompactedError: neither holds them: the follower needs a snapshot.
    """
    try:
        return feed_writes(partition.feed, position, None)
    except CompactedError:
        if writes := await partition.logged_after(position, max_bytes):
            return writes
        raise


def _required(partition: Partition) -> pb.SnapshotRequired:
    return pb.SnapshotRequired(retained_after=partition.feed.retained_after)


def _has_entries(partition: Partition, position: int) -> bool:
    """Whether the feed holds a write above ``position`` (not only skipped seqs)."""
    try:
        return bool(partition.feed.read(position, 1))
    except CompactedError:
        return True  # answered SNAPSHOT_REQUIRED at once


def _create_empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch()


class _RowReader:
    """The rows of ``[start, end)`` of a snapshot file, in key order; blocking."""

    def __init__(self, path: Path, start: bytes, end: bytes | None) -> None:
        try:
            self._conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot read the snapshot {path} ({exc}).") from exc
        self._after: bytes | None = None
        self._start = start
        self._end = end

    def next(self, limit: int) -> list[tuple[bytes, bytes, int, int]]:
        query = "SELECT key, value, seq, ts FROM kv WHERE key >= ?"
        params: list[object] = [self._start]
        if self._after is not None:
            query = "SELECT key, value, seq, ts FROM kv WHERE key > ?"
            params = [self._after]
        if self._end is not None:
            query += " AND key < ?"
            params.append(self._end)
        try:
            rows = [
                (bytes(k), bytes(v), int(s), int(t))
                for k, v, s, t in self._conn.execute(
                    f"{query} ORDER BY key LIMIT ?", (*params, limit)
                )
            ]
        except sqlite3.Error as exc:
            raise StorageError(f"Reading a snapshot failed ({exc}).") from exc
        if rows:
            self._after = rows[-1][0]
        return rows

    def close(self) -> None:
        self._conn.close()


# -- a whole move ---------------------------------------------------------------


@attrs.frozen
class MoveResult:
    partition: Partition
    final_seq: int
    # From the start of the copy to the target serving.
    seconds: float
    # From the fence to the target serving: the pause writers saw.
    cut_over_seconds: float
    # Snapshots the copy streamed (more than one: it started over).
    snapshots: int = 1


Switch = Callable[[int], Awaitable[None]]


async def move_partition(
    source: PartitionRegistry,
    target: PartitionRegistry,
    partition_id: str,
    *,
    source_address: Address,
    target_data_address: Address,
    token: str | None = None,
    epoch: int | None = None,
    switch: Switch | None = None,
    max_lag: int = 64,
    operation: Operation | None = None,
    within: float = 30.0,
) -> MoveResult:
    """Move ``partition_id`` from ``source`` to ``target`` while it takes writes.

    Follow (the target copies from ``source_address``, the source node's
    control address) → caught up → fence the source → cut over on the target
    (held) → ``switch(final_seq)`` (cluster mode: the etcd Txn that makes
    the target leader; here, by default, the source's catalog drops the
    partition) → the target serves → the source answers BAD_NODE naming
    ``target_data_address`` and deletes its copy after its grace period.

    If anything fails before ``switch`` returns, the copy is abandoned and
    the source serves again: nothing is lost, and clients held meanwhile are
    answered (or re-routed back).

    Raises:
        MkvError: as the step that failed.
    """
    began = time.monotonic()
    partition = source.partition(partition_id)
    if partition is None:
        raise NotFoundError(f"No partition with id {partition_id!r} on the source.")
    epoch = source.epoch(partition_id) if epoch is None else epoch
    follower: Follower = await target.follow(
        partition_id,
        partition.range,
        partition.store_kind,
        partition.pipeline_specs,
        source_address,
        epoch,
        token,
        operation,
        name="move",
    )
    fenced_at: float | None = None
    switched = False
    try:
        await follower.caught_up(max_lag)
        if operation is not None:
            operation.report("cut-over", 0, 0)
        fenced_at = time.monotonic()
        final_seq = await source.fence(partition_id, target_data_address)
        moved = await follower.cut_over(final_seq, within=within)
        if switch is not None:
            await switch(final_seq)
        await source.moved_away(partition_id)
        switched = True
    except BaseException:
        with trio.CancelScope(shield=True):
            if not switched:
                await follower.abandon()
                if (installed := target.partition(partition_id)) is not None:
                    await target.remove(installed.id)
                await source.unfence(partition_id)
        raise
    moved = await target.serve(partition_id)
    done = time.monotonic()
    log.info(
        "partition %s moved to %s at seq %d in %.1f s (cut-over %.1f ms)",
        partition_id,
        target_data_address,
        final_seq,
        done - began,
        (done - fenced_at) * 1000,
        extra=fields(event="partition_moved", partition=partition_id, seq=final_seq),
    )
    return MoveResult(moved, final_seq, done - began, done - fenced_at, follower.snapshots)
