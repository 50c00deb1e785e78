"""WAL segment files: appends, crash recovery, replay and checkpoints, on real files."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mkv.errors import StorageError
from mkv.wal import (
    HEADER_SIZE,
    RECORD_OVERHEAD,
    Record,
    StopReason,
    WalCorruptError,
    WalGapError,
    WriteAheadLog,
    encode_header,
)

PAYLOAD = 20
# Small segments: a segment takes two records, the third starts a new one.
SEGMENT_BYTES = HEADER_SIZE + 2 * (RECORD_OVERHEAD + PAYLOAD)


def record(seq: int) -> Record:
    return Record(seq, 1000 + seq, seq.to_bytes(4, "big") * (PAYLOAD // 4))


def write_log(directory: Path, seqs: range, *, segment_bytes: int = SEGMENT_BYTES) -> None:
    """A log holding ``seqs``, one record per append, synced and closed."""
    log, _ = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
    with log:
        for seq in seqs:
            r = record(seq)
            log.append([(r.seq, r.timestamp, r.payload)])
        log.sync()


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def replayed(directory: Path, after_seq: int = 0) -> list[int]:
    log, _ = WriteAheadLog.open(directory, segment_bytes=SEGMENT_BYTES)
    with log:
        return [r.seq for r in log.replay(after_seq)]


def test_a_new_log_is_created_empty(tmp_path: Path) -> None:
    log, report = WriteAheadLog.open(tmp_path / "p" / "wal")
    with log:
        assert (report.segments, report.records, report.last_seq, report.truncation) == (
            0,
            0,
            0,
            None,
        )
        assert list(log.replay()) == []
    assert segment_files(tmp_path / "p" / "wal") == []


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    with log:
        log.append([(1, 11, b"a"), (2, 12, b""), (5, 15, b"c" * 1000)])
        log.append([(6, 16, b"d")])
        assert (log.last_seq, log.synced_seq) == (6, 0)  # appended, not yet durable
        log.sync()
        assert log.synced_seq == 6
    log, report = WriteAheadLog.open(tmp_path)
    with log:
        assert (report.records, report.first_seq, report.last_seq) == (4, 1, 6)
        assert (report.last_timestamp, report.truncation) == (16, None)
        assert (log.last_seq, log.synced_seq, log.last_timestamp) == (6, 6, 16)
        assert list(log.replay()) == [
            Record(1, 11, b"a"),
            Record(2, 12, b""),
            Record(5, 15, b"c" * 1000),
            Record(6, 16, b"d"),
        ]


def test_sequence_numbers_must_increase_and_nothing_is_written_otherwise(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    with log:
        log.append([(5, 0, b"x")])
        before = log.statistics()
        for batch in ([(5, 0, b"y")], [(7, 0, b"y"), (6, 0, b"z")], [(8, 0, b"y"), (8, 0, b"z")]):
            with pytest.raises(ValueError, match="not above"):
                log.append(batch)
        assert log.statistics() == before
        log.sync()
    assert replayed(tmp_path) == [5]


def test_seq_zero_is_refused(tmp_path: Path) -> None:
    # 0 means "nothing applied" to a store, so it can never be a record.
    log, _ = WriteAheadLog.open(tmp_path)
    with log, pytest.raises(ValueError, match="not above"):
        log.append([(0, 0, b"")])


def test_torn_tail_at_every_offset_is_cut_back_to_the_complete_records(tmp_path: Path) -> None:
    n = 4
    write_log(tmp_path / "whole", range(1, n + 1), segment_bytes=1 << 20)
    [name] = segment_files(tmp_path / "whole")
    data = (tmp_path / "whole" / name).read_bytes()
    last_start = len(data) - (RECORD_OVERHEAD + PAYLOAD)
    for cut in range(last_start + 1, len(data)):
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / name).write_bytes(data[:cut])
        log, report = WriteAheadLog.open(directory)
        with log:
            assert report.truncation is not None
            assert (report.truncation.offset, report.truncation.dropped_bytes) == (
                last_start,
                cut - last_start,
            )
            assert report.truncation.reason is StopReason.TORN
            assert (report.records, report.last_seq) == (n - 1, n - 1)
            assert (directory / name).stat().st_size == last_start
            # The log carries on as if the torn record had never been written.
            log.append([(n, 0, b"again")])
            log.sync()
            assert [r.seq for r in log.replay()] == list(range(1, n + 1))
        log, report = WriteAheadLog.open(directory)
        log.close()
        assert report.truncation is None  # and it stays clean


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:], StopReason.CRC_MISMATCH),
        (lambda data: data[: -(RECORD_OVERHEAD + PAYLOAD)] + b"\xff" * 44, StopReason.BAD_LENGTH),
    ],
    ids=["flipped-payload-byte", "garbage-length"],
)
def test_damaged_last_record_is_cut_and_reported(
    tmp_path: Path, damage: Callable[[bytes], bytes], reason: StopReason
) -> None:
    write_log(tmp_path, range(1, 4), segment_bytes=1 << 20)
    [path] = tmp_path.iterdir()
    data = path.read_bytes()
    path.write_bytes(damage(data))
    log, report = WriteAheadLog.open(tmp_path)
    with log:
        assert report.truncation is not None
        assert report.truncation.reason is reason
        assert report.truncation.offset == len(data) - (RECORD_OVERHEAD + PAYLOAD)
        assert [r.seq for r in log.replay()] == [1, 2]
        assert reason.value in str(report.truncation)  # what the server logs


def test_a_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    # Some file systems show a crash's unwritten blocks as zeros, not as a short file.
    write_log(tmp_path, range(1, 4), segment_bytes=1 << 20)
    [path] = tmp_path.iterdir()
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(4096))
    log, report = WriteAheadLog.open(tmp_path)
    with log:
        assert report.truncation is not None
        assert (report.truncation.offset, report.truncation.dropped_bytes) == (size, 4096)
        assert [r.seq for r in log.replay()] == [1, 2, 3]


def test_damage_in_an_earlier_segment_refuses_to_open_and_touches_nothing(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 7))
    first = tmp_path / segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[HEADER_SIZE + RECORD_OVERHEAD] ^= 0x40  # inside the first record's payload
    first.write_bytes(data)
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path)
    assert (caught.value.path, caught.value.offset) == (first, HEADER_SIZE)
    assert caught.value.reason == StopReason.CRC_MISMATCH.value
    assert isinstance(caught.value, StorageError)
    assert first.read_bytes() == data  # later segments hold records: never cut them off


def test_torn_earlier_segment_is_corruption_too(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 7))
    first = tmp_path / segment_files(tmp_path)[0]
    os.truncate(first, first.stat().st_size - 3)
    with pytest.raises(WalCorruptError, match="torn"):
        WriteAheadLog.open(tmp_path)


def test_a_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 7))
    names = segment_files(tmp_path)
    assert len(names) == 3
    (tmp_path / names[1]).unlink()
    with pytest.raises(WalCorruptError, match="missing"):
        WriteAheadLog.open(tmp_path)


def test_a_foreign_last_file_is_never_truncated(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 3))
    intruder = tmp_path / f"{3:020d}.wal"
    intruder.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(WalCorruptError, match="not a write-ahead log segment"):
        WriteAheadLog.open(tmp_path)
    assert intruder.stat().st_size == 116


def test_an_empty_last_segment_is_fine(tmp_path: Path) -> None:
    # A crash right after starting a segment leaves it holding only its header.
    write_log(tmp_path, range(1, 3))
    (tmp_path / f"{3:020d}.wal").write_bytes(encode_header(2))
    log, report = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert (report.segments, report.last_seq, report.truncation) == (2, 2, None)
        log.append([(3, 0, b"c")])
        log.sync()
    assert segment_files(tmp_path) == [f"{1:020d}.wal", f"{3:020d}.wal"]
    assert replayed(tmp_path) == [1, 2, 3]


def test_a_torn_header_in_the_last_segment_is_rewritten(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 3))
    (tmp_path / f"{3:020d}.wal").write_bytes(encode_header(2)[:7])
    log, report = WriteAheadLog.open(tmp_path)
    with log:
        assert report.truncation is not None
        assert (report.truncation.offset, report.truncation.dropped_bytes) == (0, 7)
        log.append([(3, 0, b"c")])
        log.sync()
    assert replayed(tmp_path) == [1, 2, 3]


def test_segments_roll_at_the_size_and_a_batch_never_spans_two(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        for seq in range(1, 6):
            log.append([(seq, 0, bytes(PAYLOAD))])
        # The segment left behind is made durable when the next one starts.
        assert log.synced_seq == 4
        log.append([(s, 0, bytes(PAYLOAD)) for s in range(6, 10)])  # larger than a segment
        log.append([(10, 0, bytes(PAYLOAD))])
        log.sync()
        stats = log.statistics()
    names = segment_files(tmp_path)
    assert names == [f"{s:020d}.wal" for s in (1, 3, 5, 6, 10)]
    sizes = [(tmp_path / n).stat().st_size for n in names]
    assert sizes[:3] == [SEGMENT_BYTES, SEGMENT_BYTES, HEADER_SIZE + RECORD_OVERHEAD + PAYLOAD]
    assert sizes[3] == HEADER_SIZE + 4 * (RECORD_OVERHEAD + PAYLOAD)
    assert (stats.segments, stats.bytes, stats.first_seq, stats.last_seq, stats.synced_seq) == (
        5,
        sum(sizes),
        1,
        10,
        10,
    )


def test_replay_after_any_seq_across_segments(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 8))
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        for after in range(10):
            assert list(log.replay(after)) == [record(s) for s in range(after + 1, 8)]


def test_checkpoint_deletes_exactly_the_covered_segments(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 8))  # segments: 1-2, 3-4, 5-6, 7 (active)
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert log.checkpoint(0) == 0
        assert log.checkpoint(1) == 0  # 1-2 is only half applied
        assert log.checkpoint(4) == 2
        assert segment_files(tmp_path) == [f"{5:020d}.wal", f"{7:020d}.wal"]
        assert log.checkpoint(100) == 1  # the active segment stays, whatever the store says
        assert segment_files(tmp_path) == [f"{7:020d}.wal"]
        assert (log.first_seq, log.last_seq) == (7, 7)
    log, report = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert (report.segments, report.first_seq, report.last_seq) == (1, 7, 7)
        assert [r.seq for r in log.replay(6)] == [7]
        # Records 1-6 are gone: a store that still needs them must not get a partial replay.
        with pytest.raises(WalGapError):
            log.replay(5)
        log.append([(8, 0, b"h")])
        log.sync()
    assert replayed(tmp_path, 6) == [7, 8]


def test_a_failed_write_is_taken_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    with log:
        log.append([(1, 0, b"one")])
        real_write = os.write

        def half_then_full(fd: int, data: memoryview) -> int:
            real_write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(StorageError, match="nothing was logged"):
            log.append([(2, 0, b"two" * 10)])
        monkeypatch.undo()
        assert log.last_seq == 1
        log.append([(2, 0, b"two")])
        log.sync()
    log, report = WriteAheadLog.open(tmp_path)
    with log:
        assert report.truncation is None
        assert list(log.replay()) == [Record(1, 0, b"one"), Record(2, 0, b"two")]


def test_a_closed_log_refuses_work(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    log.close()
    log.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        log.append([(1, 0, b"")])
    with pytest.raises(ValueError, match="closed"):
        log.replay()


def test_replay_notices_a_segment_changed_under_it(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 4))
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        last = tmp_path / segment_files(tmp_path)[-1]
        os.truncate(last, last.stat().st_size - 1)
        with pytest.raises(WalCorruptError, match="since it was opened"):
            list(log.replay())


def test_an_unusable_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "wal").write_bytes(b"a file, not a directory")
    with pytest.raises(StorageError, match="Could not open the write-ahead log"):
        WriteAheadLog.open(tmp_path / "wal")


def test_truncate_after_drops_whole_records_across_segments_and_survives_a_reopen(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, range(1, 8))  # segments of two records: 1-2, 3-4, 5-6, 7
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert log.truncate_after(3) == 4
        assert log.last_seq == 3
        assert log.synced_seq == 3
        assert log.last_timestamp == record(3).timestamp
        # The log goes on after the cut: the next append numbers above 3.
        r = record(4)
        log.append([(r.seq, r.timestamp, r.payload)])
        log.sync()
    assert replayed(tmp_path) == [1, 2, 3, 4]


def test_truncate_after_a_segment_boundary_and_to_nothing(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 6))
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert log.truncate_after(4) == 1
        assert log.truncate_after(9) == 0  # nothing above 9: a no-op
        assert log.truncate_after(0) == 4
        assert log.last_seq == 0
    assert replayed(tmp_path) == []


def test_truncate_after_refuses_below_a_checkpoint(tmp_path: Path) -> None:
    write_log(tmp_path, range(1, 8))
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        assert log.checkpoint(4) == 2
        with pytest.raises(WalGapError, match="checkpoint already dropped"):
            log.truncate_after(3)
        assert log.last_seq == 7  # nothing changed
    assert replayed(tmp_path, 4) == [5, 6, 7]


def read_all(log: WriteAheadLog, after_seq: int, max_bytes: int) -> list[int]:
    """Every seq above ``after_seq``, read ``max_bytes`` at a time as a follower would."""
    seqs: list[int] = []
    while records := log.read_after(after_seq, max_bytes):
        seqs += [seq for seq, _, _ in records]
        after_seq = records[-1][0]
    return seqs


@pytest.mark.parametrize("reopened", [False, True], ids=["written", "recovered"])
def test_read_after_starts_anywhere_and_stops_at_the_budget(tmp_path: Path, reopened: bool) -> None:
    """A follower catching up from disk reads from any seq, across segments,
    within its byte budget (the first record always), through marks kept
    while writing or rebuilt by recovery. 4 KiB records in 1 MiB segments
    put many marks in each segment. Mutation: start at a mark above the
    seq asked for -> records are missing."""
    payload = b"x" * 4096
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024 * 1024)
    for seq in range(1, 1001):
        log.append([(seq, 1000 + seq, payload)])
    log.sync()
    if reopened:
        log.close()
        log, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024 * 1024)
    with log:
        assert log.statistics().segments >= 4
        for after in (0, 1, 63, 64, 255, 256, 257, 700, 999):
            first = log.read_after(after, 10 * 4096)
            assert [seq for seq, _, _ in first] == list(range(after + 1, min(after + 11, 1001)))
            assert first[0][1:] == (1000 + after + 1, payload)
            assert read_all(log, after, 300_000) == list(range(after + 1, 1001))
        assert log.read_after(1000, 1) == []
        assert [seq for seq, _, _ in log.read_after(0, 1)] == [1]


def test_read_after_a_checkpoint_or_a_truncation(tmp_path: Path) -> None:
    """Records a checkpoint dropped are a WalGapError, as with replay; after
    a truncation, reads end where the log now ends and go on with what is
    appended next."""
    write_log(tmp_path, range(1, 11))
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT_BYTES)
    with log:
        log.checkpoint(4)
        with pytest.raises(WalGapError):
            log.read_after(3, 1000)
        assert read_all(log, 4, 50) == list(range(5, 11))
        log.truncate_after(7)
        r = record(8)
        log.append([(r.seq, r.timestamp, b"new")])
        assert log.read_after(6, 1000) == [
            (7, 1007, record(7).payload),
            (8, 1008, b"new"),
        ]


def test_read_after_sees_only_whole_records_while_another_thread_appends(
    tmp_path: Path,
) -> None:
    """A leader serves followers from disk on another thread than the one
    appending: every read returns whole, consecutive records."""
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=256 * 1024)
    done = threading.Event()

    def append() -> None:
        for seq in range(1, 3001):
            log.append([(seq, seq, seq.to_bytes(4, "big") * 100)])
        done.set()

    writer = threading.Thread(target=append)
    with log:
        writer.start()
        after = 0
        while not done.is_set() or after < 3000:
            for seq, timestamp, payload in log.read_after(after, 64 * 1024):
                expected = (after + 1, after + 1, (after + 1).to_bytes(4, "big") * 100)
                assert (seq, timestamp, payload) == expected
                after = seq
        writer.join()
