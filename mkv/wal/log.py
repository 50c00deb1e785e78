"""A partition's write-ahead log on disk: segment files, recovery, replay, checkpoints.

Blocking file I/O throughout, meant for the one worker thread that owns the
partition's storage; a :class:`WriteAheadLog` is not safe to share between
threads. The byte format is in :mod:`mkv.wal.record` and ``docs/wal.md``.

Crash safety rests on three orderings:

- a segment is created under a temporary name with its header fsynced, then
  renamed into place and the directory fsynced, so a segment file that exists
  always has a whole header;
- the segment being left is fsynced before its successor is created, so only
  the last segment can end in a torn record; damage anywhere else is real
  corruption and :meth:`WriteAheadLog.open` refuses to guess;
- checkpoints delete oldest first, so a crash part-way still leaves a log
  whose segments follow each other with no gap.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import attrs

from mkv.errors import StorageError
from mkv.store.files import fsync_directory, make_directory, write_atomically
from mkv.wal.record import (
    HEADER_SIZE,
    DecodeStop,
    Record,
    SegmentDecoder,
    StopReason,
    encode_header,
    encode_record,
)

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "RecoveryReport",
    "Truncation",
    "WalCorruptError",
    "WalGapError",
    "WalStatistics",
    "WriteAheadLog",
]

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
# A segment remembers where a record starts about this often, so that a
# read from the middle of a segment (a follower catching up from disk)
# decodes at most this much it does not return.
_MARK_BYTES = 256 * 1024
# Twenty digits hold any u64, so names sort in sequence order as plain strings.
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
# A torn tail is what a crash leaves; these mean the bytes were written wrong or
# by something else, so cutting them off could throw away acknowledged writes.
_NEVER_TRUNCATED = (StopReason.BAD_HEADER, StopReason.SEQ_ORDER, StopReason.OUT_OF_RANGE)


class WalCorruptError(StorageError):
    """A segment is damaged in a way a crash cannot explain; recovery stops rather than guess."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"The write-ahead log segment {path} is damaged at byte {offset}: {reason}."
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class WalGapError(StorageError):
    """Replay was asked for records the log no longer holds (a checkpoint deleted them)."""


@attrs.frozen
class Truncation:
    """The tail that recovery cut off the last segment, and why."""

    path: Path
    offset: int
    dropped_bytes: int
    reason: StopReason

    def __str__(self) -> str:  # for the server log
        return (
            f"cut {self.dropped_bytes} bytes at byte {self.offset} of {self.path}"
            f" ({self.reason.value})"
        )


@attrs.frozen
class RecoveryReport:
    """What :meth:`WriteAheadLog.open` found. Sequence numbers are 0 when there are no records."""

    segments: int
    records: int
    first_seq: int
    last_seq: int
    last_timestamp: int
    truncation: Truncation | None


@attrs.frozen
class WalStatistics:
    segments: int
    bytes: int
    first_seq: int
    last_seq: int
    synced_seq: int
    # The last seq the oldest segment holds: a checkpoint at or above it can
    # delete that segment (0 with no segments).
    oldest_segment_end_seq: int = 0


@attrs.define
class _Segment:
    path: Path
    previous_seq: int  # from the header: every record here is above it
    first_seq: int = 0  # of its first record; 0 while it has none
    last_seq: int = 0
    size: int = HEADER_SIZE
    # (seq, offset): every record from ``offset`` on is above ``seq``; in
    # offset order. Only ever appended to, or replaced by a shorter list.
    marks: list[tuple[int, int]] = attrs.Factory(list)

    @property
    def end_seq(self) -> int:
        """The last sequence number logged up to the end of this segment."""
        return self.last_seq or self.previous_seq

    def mark(self, seq: int, offset: int) -> None:
        """Remember that the records from ``offset`` on are above ``seq``,
        unless a mark lies within ``_MARK_BYTES`` before it."""
        if not self.marks or offset - self.marks[-1][1] >= _MARK_BYTES:
            self.marks.append((seq, offset))


class WriteAheadLog:
    """An append-only, segmented log of (seq, timestamp, payload) records.

    Sequence numbers start above 0 and strictly increase: replay and checkpoints
    find records by them. Get one with :meth:`open`.
    """

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        file: io.FileIO | None,
        *,
        segment_bytes: int,
        last_timestamp: int,
    ) -> None:
        self._directory = directory
        self._segments = segments
        self._file = file  # the last segment, opened for appending
        self._segment_bytes = segment_bytes
        self._last_timestamp = last_timestamp
        self._synced_seq = self.last_seq  # open() fsyncs what it found
        self._closed = False
        self._broken = False

    @classmethod
    def open(
        cls, directory: Path | str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> tuple[WriteAheadLog, RecoveryReport]:
        """Open (or create) the log in ``directory``, recovering from a crash.

        A torn or damaged tail of the last segment is cut off and reported:
        those records were never fsynced, so never acknowledged.

        Raises:
            WalCorruptError: a segment other than the last is damaged, a segment
                is missing from the middle, or a file is not a segment of ours.
            StorageError: the directory or a file cannot be read or written.
        """
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        directory = Path(directory)
        file = None
        try:
            make_directory(directory)
            segments, report = _recover(directory)
            # Whatever this log replays must stay replayable after a power cut,
            # even if the previous process died before fsyncing it.
            fsync_directory(directory)
            if segments:
                file = open(segments[-1].path, "ab", buffering=0)  # noqa: SIM115 (the log owns it)
                os.fsync(file.fileno())
        except OSError as exc:
            if file is not None:
                file.close()
            raise StorageError(f"Could not open the write-ahead log in {directory}.") from exc
        log = cls(
            directory,
            segments,
            file,
            segment_bytes=segment_bytes,
            last_timestamp=report.last_timestamp,
        )
        return log, report

    @property
    def first_seq(self) -> int:
        """The oldest record's sequence number (0: no records)."""
        return next((s.first_seq for s in self._segments if s.first_seq), 0)

    @property
    def base_seq(self) -> int:
        """Records at or below this were checkpointed away (or never logged here)."""
        return self._segments[0].previous_seq if self._segments else 0

    @property
    def last_seq(self) -> int:
        """The newest record's sequence number (0: nothing ever logged)."""
        return self._segments[-1].end_seq if self._segments else 0

    @property
    def last_timestamp(self) -> int:
        return self._last_timestamp

    @property
    def broken(self) -> bool:
        """A write or fsync failed so that only reopening the log is safe."""
        return self._broken

    @property
    def synced_seq(self) -> int:
        """The highest sequence number known to be fsynced."""
        return self._synced_seq

    def append(self, records: Sequence[tuple[int, int, bytes]]) -> None:
        """Write ``(seq, timestamp, payload)`` records, in one write; no fsync (see :meth:`sync`).

        Raises:
            ValueError: a seq is not above the previous one, or a record does not
                fit the format; nothing was written.
            StorageError: the write failed; nothing was logged.
        """
        self._check_usable()
        if not records:
            return
        previous = self.last_seq
        parts = []
        for seq, timestamp, payload in records:
            if seq <= previous:
                raise ValueError(f"sequence number {seq} is not above {previous}")
            parts.append(encode_record(seq, timestamp, payload))
            previous = seq
        data = b"".join(parts)
        active = self._segments[-1] if self._segments else None
        # A segment with no records takes any batch, so a batch never spans two files.
        if active is None or (active.last_seq and active.size + len(data) > self._segment_bytes):
            active = self._roll()
        active.mark(self.last_seq, active.size)
        self._write(active, data)
        active.first_seq = active.first_seq or records[0][0]
        active.last_seq = previous
        active.size += len(data)
        self._last_timestamp = records[-1][1]

    def sync(self) -> None:
        """Make every appended record durable (one fsync, however many records).

        Raises:
            StorageError: the fsync failed. The log refuses further use: the
                kernel may have dropped the unwritten pages, so only reopening
                (and recovering from what is really on disk) is safe.
        """
        self._check_usable()
        if self._file is None or self._synced_seq == self.last_seq:
            return
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._broken = True
            raise StorageError("Syncing the write-ahead log failed.") from exc
        self._synced_seq = self.last_seq

    def replay(self, after_seq: int = 0) -> Iterator[Record]:
        """Every record with seq above ``after_seq``, oldest first, read from disk.

        Do not append or checkpoint while iterating.

        Raises:
            WalGapError: (at once) records above ``after_seq`` were checkpointed away.
            WalCorruptError, StorageError: (while iterating) a file changed under us.
        """
        batches = self.replay_batches(after_seq)
        return (Record(*record) for batch in batches for record in batch)

    def replay_batches(self, after_seq: int = 0) -> Iterator[list[tuple[int, int, bytes]]]:
        """As :meth:`replay`, as lists of ``(seq, timestamp, payload)`` (one per
        chunk read; never empty): no object per record, for bulk replay."""
        self._check_open()
        if after_seq < self.base_seq:
            raise WalGapError(
                "The write-ahead log no longer holds every record the store is missing."
            )
        wanted = [(s.path, s.size) for s in self._segments if s.end_seq > after_seq]
        return _replay(wanted, after_seq)

    def read_after(self, after_seq: int, max_bytes: int) -> list[tuple[int, int, bytes]]:
        """The records above ``after_seq``, oldest first, as ``(seq, timestamp,
        payload)``, as many as fit ``max_bytes`` of payload (the first always):
        a follower catching up on what the leader's memory no longer holds.

        Safe to call from another thread than the one appending: it reads only
        what was appended before it began. It starts at the segment's last
        mark at or below ``after_seq``, so it decodes little it does not return.

        Raises:
            WalGapError: records above ``after_seq`` were checkpointed away
                (before or during the read).
            WalCorruptError, StorageError: a file is damaged or unreadable.
        """
        self._check_open()
        records: list[tuple[int, int, bytes]] = []
        size = 0
        # Copies: the appending thread may add segments and marks meanwhile.
        segments = list(self._segments)
        if segments and after_seq < segments[0].previous_seq:
            raise WalGapError(f"The write-ahead log no longer holds the records after {after_seq}.")
        for segment in segments:
            end = segment.size  # read first: the bytes up to it are written
            if segment.end_seq <= after_seq:
                continue
            seq, offset = segment.previous_seq, HEADER_SIZE
            for mark_seq, mark_offset in list(segment.marks):
                if mark_seq > after_seq or mark_offset > end:
                    break
                seq, offset = mark_seq, mark_offset
            decoder = SegmentDecoder.resuming(offset, seq)
            try:
                with open(segment.path, "rb") as file:
                    file.seek(offset)
                    for batch in _read(file, decoder, end - offset):
                        for record in batch:
                            if record[0] <= after_seq:
                                continue
                            if records and size + len(record[2]) > max_bytes:
                                return records
                            records.append(record)
                            size += len(record[2])
            except FileNotFoundError as exc:
                raise WalGapError(
                    f"The write-ahead log dropped the records after {after_seq} while "
                    "they were read."
                ) from exc
            except OSError as exc:
                raise StorageError(
                    f"Reading the write-ahead log segment {segment.path} failed."
                ) from exc
            stop = decoder.end_of_input()
            if stop.reason is not StopReason.CLEAN or stop.offset != end:
                reason = stop.reason.value if stop.reason is not StopReason.CLEAN else "shortened"
                raise WalCorruptError(segment.path, stop.offset, f"{reason}, since it was opened")
        return records

    def checkpoint(self, durable_seq: int) -> int:
        """Delete the segments whose records are all at or below ``durable_seq``.

        Call it with what the store has durably applied, so the log stays
        bounded. The segment being appended to is never deleted. Returns how
        many segments were deleted.
        """
        self._check_usable()
        deleted = 0
        try:
            while len(self._segments) > 1 and self._segments[0].end_seq <= durable_seq:
                self._segments[0].path.unlink()
                del self._segments[0]
                deleted += 1
            if deleted:
                fsync_directory(self._directory)
        except OSError as exc:
            raise StorageError("Deleting old write-ahead log segments failed.") from exc
        return deleted

    def truncate_after(self, seq: int) -> int:
        """Drop every record above ``seq`` (whole records, across segments) and fsync.

        A follower cuts the tail it logged under an older leader (the leader's
        Truncate answer): those records were never committed. Returns how many
        records were dropped.

        Raises:
            WalGapError: ``seq`` is below what a checkpoint already dropped, so
                the log could not end at ``seq``; nothing was changed.
            StorageError: deleting or cutting a file failed; the log must be reopened.
        """
        self._check_usable()
        if seq >= self.last_seq:
            return 0
        if seq < self.base_seq:
            raise WalGapError(
                f"Cannot cut the write-ahead log back to {seq}: a checkpoint already "
                f"dropped the records up to {self.base_seq}."
            )
        dropped = 0
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
            # Whole segments that start above seq go (the first one stays, so
            # the log keeps its base); the newest first, so a crash part-way
            # leaves a log that still has no gap.
            while len(self._segments) > 1 and self._segments[-1].previous_seq >= seq:
                segment = self._segments.pop()
                dropped += _count_records(segment.path, segment.size)
                segment.path.unlink()
            fsync_directory(self._directory)
            last = self._segments[-1]
            kept, timestamp, size = _prefix_through(last.path, last.size, seq)
            dropped += _count_records(last.path, last.size) - kept
            with open(last.path, "r+b") as file:
                file.truncate(size)
                os.fsync(file.fileno())
            last.size = size
            last.marks = [m for m in last.marks if m[1] <= size]
            last.last_seq = seq if kept else 0
            last.first_seq = last.first_seq if kept else 0
            self._file = open(last.path, "ab", buffering=0)  # noqa: SIM115 (the log owns it)
        except OSError as exc:
            self._broken = True
            raise StorageError("Cutting back the write-ahead log failed.") from exc
        self._synced_seq = min(self._synced_seq, seq)
        if timestamp is not None:
            self._last_timestamp = timestamp
        return dropped

    def statistics(self) -> WalStatistics:
        """Sizes and positions; callable from another thread, where they may be a moment stale."""
        return WalStatistics(
            segments=len(self._segments),
            bytes=sum(s.size for s in self._segments),
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            synced_seq=self._synced_seq,
            oldest_segment_end_seq=self._segments[0].end_seq if self._segments else 0,
        )

    def close(self) -> None:
        """Release the file. Does not fsync: call :meth:`sync` first to keep what was appended."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the write-ahead log is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._broken:
            raise StorageError("The write-ahead log failed earlier; it must be reopened.")

    def _roll(self) -> _Segment:
        """Start a new segment (the first one, or after a full one)."""
        previous_seq = self.last_seq
        path = self._directory / f"{previous_seq + 1:020d}.wal"
        try:
            if self._file is not None:
                os.fsync(self._file.fileno())  # before the successor exists: see the module doc
                self._synced_seq = previous_seq
                self._file.close()
                self._file = None
            write_atomically(path, encode_header(previous_seq))
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (the log owns it)
        except OSError as exc:
            # A failed fsync leaves the old segment's state unknown; stop here.
            self._broken = True
            raise StorageError("Starting a new write-ahead log segment failed.") from exc
        segment = _Segment(path, previous_seq)
        self._segments.append(segment)
        return segment

    def _write(self, active: _Segment, data: bytes) -> None:
        assert self._file is not None
        fd = self._file.fileno()
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(data):  # a regular file may take a write in parts
                    written += os.write(fd, view[written:])
        except OSError as exc:
            # Take the partial batch back out: the next batch would otherwise sit
            # behind half a record, and recovery would cut it off with it.
            try:
                os.ftruncate(fd, active.size)
            except OSError:
                self._broken = True
            raise StorageError("Writing the write-ahead log failed; nothing was logged.") from exc


def _recover(directory: Path) -> tuple[list[_Segment], RecoveryReport]:
    paths = sorted(p for p in directory.iterdir() if _SEGMENT_NAME.match(p.name))
    segments: list[_Segment] = []
    records = 0
    last_timestamp = 0
    truncation = None
    for path in paths:
        previous_seq = int(path.name[:20]) - 1
        if previous_seq < 0:
            raise WalCorruptError(path, 0, "its name is not a sequence number above 0")
        segment = _Segment(path, previous_seq)
        decoder = SegmentDecoder()
        with open(path, "rb") as file:
            for batch in _read(file, decoder, None):
                segment.first_seq = segment.first_seq or batch[0][0]
                segment.last_seq, last_timestamp, _ = batch[-1]
                records += len(batch)
                segment.mark(segment.last_seq, decoder.offset)
            stop = decoder.end_of_input()
            size = os.fstat(file.fileno()).st_size
        if decoder.header is not None and decoder.header.previous_seq != previous_seq:
            raise WalCorruptError(path, 0, "its header does not match its name")
        if segments and segments[-1].end_seq != previous_seq:
            raise WalCorruptError(path, 0, "the segment before it is missing or incomplete")
        if stop.reason is not StopReason.CLEAN:
            if path != paths[-1] or stop.reason in _NEVER_TRUNCATED:
                raise WalCorruptError(path, stop.offset, stop.reason.value)
            truncation = Truncation(path, stop.offset, size - stop.offset, stop.reason)
            _truncate(path, stop, previous_seq)
        segment.size = max(stop.offset, HEADER_SIZE)
        segments.append(segment)
    report = RecoveryReport(
        segments=len(segments),
        records=records,
        first_seq=next((s.first_seq for s in segments if s.first_seq), 0),
        last_seq=segments[-1].end_seq if segments else 0,
        last_timestamp=last_timestamp,
        truncation=truncation,
    )
    return segments, report


def _truncate(path: Path, stop: DecodeStop, previous_seq: int) -> None:
    with open(path, "r+b") as file:
        if stop.offset < HEADER_SIZE:
            # Torn inside the header: our writer never leaves this (the header
            # is fsynced before the rename), but another file system might.
            file.truncate(0)
            file.write(encode_header(previous_seq))
        else:
            file.truncate(stop.offset)
        file.flush()
        os.fsync(file.fileno())


def _read(
    file: BinaryIO, decoder: SegmentDecoder, limit: int | None
) -> Iterator[list[tuple[int, int, bytes]]]:
    """Feed ``file`` (up to ``limit`` bytes) through ``decoder`` a chunk at a
    time; yields the records of each chunk (never an empty list)."""
    remaining = limit
    while True:
        if records := decoder.next_records():
            yield records
        if decoder.stop is not None:
            return
        size = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
        chunk = file.read(size) if size else b""
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        decoder.feed(chunk)


def _replay(
    segments: list[tuple[Path, int]], after_seq: int
) -> Iterator[list[tuple[int, int, bytes]]]:
    for path, size in segments:
        decoder = SegmentDecoder()
        try:
            with open(path, "rb") as file:
                for batch in _read(file, decoder, size):
                    if batch[-1][0] <= after_seq:
                        continue
                    if batch[0][0] <= after_seq:
                        batch = [record for record in batch if record[0] > after_seq]
                    yield batch
        except OSError as exc:
            raise StorageError(f"Reading the write-ahead log segment {path} failed.") from exc
        stop = decoder.end_of_input()
        if stop.reason is not StopReason.CLEAN or stop.offset != size:
            reason = stop.reason.value if stop.reason is not StopReason.CLEAN else "shortened"
            raise WalCorruptError(path, stop.offset, f"{reason}, since it was opened")


def _count_records(path: Path, size: int) -> int:
    return sum(len(batch) for batch in _replay([(path, size)], 0))


def _prefix_through(path: Path, size: int, seq: int) -> tuple[int, int | None, int]:
    """(records at or below ``seq``, the last one's timestamp, the byte length
    of the segment through it) for one segment."""
    kept = 0
    timestamp = None
    length = HEADER_SIZE
    for batch in _replay([(path, size)], 0):
        for record_seq, record_timestamp, payload in batch:
            if record_seq > seq:
                return kept, timestamp, length
            kept += 1
            timestamp = record_timestamp
            # The format is deterministic, so re-encoding gives the stored length.
            length += len(encode_record(record_seq, record_timestamp, payload))
    return kept, timestamp, length
