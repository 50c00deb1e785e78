"""The write-ahead log stage: a write is done here once it is in the log,
durable under the partition's fsync policy, with group commit.

Writes arrive from many in-flight requests; one flusher task takes every
record queued while the previous write-and-fsync ran, appends them in one
write and covers them with one fsync (``always``), so a busy partition pays
one fsync per group, not per request. ``interval=<ms>`` acknowledges after the
write and fsyncs on a timer; ``off`` leaves flushing to the OS. Both can lose
the last acknowledged writes on power loss or an OS crash (not on a process
crash: the write has reached the OS). ``group=off`` fsyncs each record on its
own, the baseline group commit is measured against.

The log file work is blocking and runs on a thread of the stage's own, so a
group's fsync overlaps the partition's store work on its worker thread.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import trio
from google.protobuf.message import DecodeError

from mkv.errors import (
    CompactedError,
    InvalidArgumentError,
    MkvError,
    StorageError,
    UnavailableError,
)
from mkv.pipeline.base import UNOBSERVED, Recovered, StageContext, StageObserver
from mkv.pipeline.payload import decode_write, encode_write
from mkv.records import Write
from mkv.wal import DEFAULT_SEGMENT_BYTES, Record, WalGapError, WalStatistics, WriteAheadLog
from mkv.worker import SerialWorker, WorkerPool, WorkerThread

__all__ = ["FsyncPolicy", "WalStage"]

log = logging.getLogger(__name__)

# Records written in one flush, at most: bounds one hand-off's work.
MAX_GROUP_RECORDS = 4096
# Smaller segments would roll (and checkpoint the store) on every few writes.
MIN_SEGMENT_BYTES = 64 * 1024


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"
    INTERVAL = "interval"
    OFF = "off"


@attrs.frozen
class WalOptions:
    policy: FsyncPolicy = FsyncPolicy.ALWAYS
    interval_ms: int = 0
    group_commit: bool = True
    segment_bytes: int = DEFAULT_SEGMENT_BYTES

    @classmethod
    def parse(cls, argument: str) -> WalOptions:
        """``always`` (default), ``interval=<ms>`` or ``off``; then optionally
        ``,group=off`` and ``,segment=<bytes>``.

        Raises:
            InvalidArgumentError: anything else.
        """
        policy, interval_ms, group_commit = FsyncPolicy.ALWAYS, 0, True
        segment_bytes = DEFAULT_SEGMENT_BYTES
        for i, token in enumerate(t.strip() for t in argument.split(",") if t.strip()):
            key, _, value = token.partition("=")
            if i == 0 and key in ("always", "off"):
                policy = FsyncPolicy(key)
            elif i == 0 and key == "interval" and value.isdigit() and int(value) > 0:
                policy, interval_ms = FsyncPolicy.INTERVAL, int(value)
            elif key == "group" and value in ("on", "off"):
                group_commit = value == "on"
            elif key == "segment" and value.isdigit() and int(value) >= MIN_SEGMENT_BYTES:
                segment_bytes = int(value)
            else:
                raise InvalidArgumentError(
                    "The wal stage takes 'always', 'interval=<ms>' or 'off', optionally "
                    "followed by ',group=off' and ',segment=<bytes>' (at least "
                    f"{MIN_SEGMENT_BYTES}), for example 'wal:interval=10'."
                )
        return cls(policy, interval_ms, group_commit, segment_bytes)


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: MkvError | None = None

    def finish(self, error: MkvError | None) -> None:
        self.error = error
        self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


class WalStage:
    name = "wal"

    def __init__(
        self,
        directory: Path,
        options: WalOptions,
        observer: StageObserver = UNOBSERVED,
        workers: WorkerPool | None = None,
    ) -> None:
        self.directory = directory
        self.options = options
        self._observer = observer
        self._workers = workers
        self._log: WriteAheadLog | None = None
        # The log's jobs (appends, fsyncs, checkpoints) run here, in order:
        # a lane of the node's pool, apart from the store's lane so a
        # partition's next group is logged while its last is applied.
        self._thread: SerialWorker | None = None
        # Records to append, each with what to call once it is durable (or failed).
        self._queue: list[tuple[tuple[int, int, bytes], Callable[[MkvError | None], None]]] = []
        self._wakeup = trio.Event()
        self._closed = False
        self._failed: MkvError | None = None
        # Writes appended since the last fsync (interval policy), for metrics.
        self._unsynced = 0

    @classmethod
    def from_spec(cls, argument: str, context: StageContext) -> WalStage:
        return cls(
            context.directory / "wal",
            WalOptions.parse(argument),
            context.observer,
            context.workers,
        )

    # -- recovery, before serving -------------------------------------------

    async def open(self) -> Recovered:
        """Open the log, cutting a torn tail (and saying so); say where it ends."""
        name = f"mkv-wal-{self.directory.parent.name}"
        self._thread = WorkerThread(name) if self._workers is None else self._workers.lane(name)
        wal, report = await self._thread.run_sync(
            lambda: WriteAheadLog.open(self.directory, segment_bytes=self.options.segment_bytes)
        )
        self._log = wal
        if report.truncation is not None:
            log.warning("write-ahead log tail cut: %s", report.truncation)
        return Recovered(wal.last_seq, wal.last_timestamp)

    @property
    def base_seq(self) -> int:
        """The sequence number just before the oldest record the log still holds."""
        assert self._log is not None
        return self._log.base_seq

    def records(self, after_seq: int) -> Iterator[Record]:
        """Every logged record after ``after_seq``, undecoded; blocking (a thread)."""
        assert self._log is not None
        return self._log.replay(after_seq)

    def record_batches(self, after_seq: int) -> Iterator[list[tuple[int, int, bytes]]]:
        """As :meth:`records`, as ``(seq, timestamp, payload)`` tuples a read
        chunk at a time (bulk replay: mkv.partition.recovery); blocking (a thread)."""
        assert self._log is not None
        return self._log.replay_batches(after_seq)

    def replay(self, after_seq: int) -> Iterator[Write]:
        """Every logged write after ``after_seq``, in order; blocking (a thread)."""
        assert self._log is not None
        for record in self._log.replay(after_seq):
            yield decode_write(record.payload, record.seq, record.timestamp)

    async def read_after(self, after_seq: int, through_seq: int, max_bytes: int) -> list[Write]:
        """The logged writes above ``after_seq`` and at most ``through_seq``,
        about ``max_bytes`` of them (the first always), decoded; read on a
        thread of its own, beside the appends (a follower catching up).

        Raises:
            CompactedError: the log does not hold every write from
                ``after_seq`` through ``through_seq``.
            StorageError: the log could not be read, or holds garbage.
        """
        assert self._log is not None
        wal = self._log

        def read() -> list[Write]:
            if wal.base_seq > after_seq or wal.last_seq < through_seq:
                raise WalGapError(f"The log does not hold seq {after_seq + 1} to {through_seq}.")
            writes = []
            for seq, timestamp, payload in wal.read_after(after_seq, max_bytes):
                if seq > through_seq:
                    break
                writes.append(decode_write(payload, seq, timestamp))
            return writes

        try:
            return await trio.to_thread.run_sync(read)
        except WalGapError as exc:
            raise CompactedError(
                f"The changes after seq {after_seq} are no longer in the log ({exc})"
            ) from exc
        except DecodeError as exc:
            raise StorageError(f"A record of the log in {self.directory} is not a write.") from exc

    # -- serving --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._log is not None, "open() first"
        try:
            async with trio.open_nursery() as nursery:
                if self.options.policy is FsyncPolicy.INTERVAL:
                    nursery.start_soon(self._sync_on_timer)
                task_status.started()
                await self._flush_until_closed()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    def submit(self, write: Write) -> Awaitable[None]:
        waiter = _Waiter()
        self.submit_notify(write, waiter.finish)
        return waiter.wait()

    def submit_notify(self, write: Write, done: Callable[[MkvError | None], None]) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise UnavailableError("The partition is shutting down; retry.")
        # Queued in submission order, which is sequence order: the log's order.
        self._queue.append(((write.seq, write.timestamp, encode_write(write)), done))
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def checkpoint(self, durable_seq: int) -> int:
        """Delete segments the store holds durably up to ``durable_seq``."""
        assert self._log is not None
        assert self._thread is not None
        wal = self._log
        return await self._thread.run_sync(lambda: wal.checkpoint(durable_seq))

    def statistics(self) -> WalStatistics | None:
        """Segments, bytes and sequence numbers written and synced (None when closed)."""
        return None if self._log is None else self._log.statistics()

    async def _flush_until_closed(self) -> None:
        assert self._log is not None
        assert self._thread is not None
        wal, always = self._log, self.options.policy is FsyncPolicy.ALWAYS
        limit = MAX_GROUP_RECORDS if self.options.group_commit else 1
        while True:
            if not self._queue:
                if self._closed:
                    return
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            # Everything that queued while the last flush ran: one write, one fsync.
            group, self._queue = self._queue[:limit], self._queue[limit:]
            records = [record for record, _ in group]

            def flush(records: list[tuple[int, int, bytes]] = records) -> None:
                wal.append(records)
                if always:
                    _timed_sync(wal, len(records), self._observer)

            try:
                await self._thread.run_sync(flush)
            except (StorageError, OSError) as exc:
                # The log's state on disk is unknown: refuse every write from
                # here on rather than acknowledge one that may not be there.
                log.error("%s: write-ahead log failed", self.directory, exc_info=exc)
                self._failed = StorageError("The partition's write-ahead log failed.")
                failed, self._queue = group + self._queue, []
                for _, done in failed:
                    done(self._failed)
                return
            if not always:
                self._unsynced += len(records)
            for _, done in group:
                done(None)

    async def _sync_on_timer(self) -> None:
        assert self._log is not None
        assert self._thread is not None
        wal = self._log
        while True:
            await trio.sleep(self.options.interval_ms / 1000)
            if writes := self._unsynced:
                self._unsynced = 0
                await self._thread.run_sync(lambda: _timed_sync(wal, writes, self._observer))

    async def aclose(self) -> None:
        """Sync and close the log and its thread; safe to call more than once."""
        wal, thread = self._log, self._thread
        self._log = self._thread = None
        if thread is None:
            return
        if wal is not None:

            def sync_and_close() -> None:
                try:
                    # A broken log refuses a sync: what it holds is for the
                    # next open to recover, as after a crash.
                    if not wal.broken:
                        wal.sync()
                finally:
                    wal.close()

            await thread.run_sync(sync_and_close)
        await thread.stop()


def _timed_sync(wal: WriteAheadLog, writes: int, observer: StageObserver) -> None:
    """fsync the log, telling ``observer`` how long it took and how many writes it covered."""
    started = time.perf_counter()
    wal.sync()
    observer.wal_synced(time.perf_counter() - started, writes)
