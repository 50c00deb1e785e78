"""The WAL record codec without files: what a reader makes of the bytes a writer or crash left."""

from __future__ import annotations

import struct

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mkv.limits import MAX_STORED
from mkv.wal import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    RECORD_OVERHEAD,
    Record,
    SegmentDecoder,
    SegmentHeader,
    StopReason,
    decode_segment,
    encode_header,
    encode_record,
)

# What a store can hold (signed 64 bits), though the fields are u64 on disk.
NUMBERS = st.integers(min_value=0, max_value=MAX_STORED)


@st.composite
def record_lists(draw: st.DrawFn) -> list[Record]:
    """Records as a writer makes them: sequence numbers rise, with gaps."""
    seq, records = 0, []
    for gap, timestamp, payload in draw(
        st.lists(st.tuples(st.integers(1, 1000), NUMBERS, st.binary(max_size=200)), max_size=8)
    ):
        seq += gap
        records.append(Record(seq, timestamp, payload))
    return records


def segment(records: list[Record], previous_seq: int = 0) -> bytes:
    return encode_header(previous_seq) + b"".join(
        encode_record(r.seq, r.timestamp, r.payload) for r in records
    )


def test_format_is_stable() -> None:
    # Golden bytes: a change here makes every existing log unreadable, so it
    # must come with a new format version, not by accident.
    assert encode_header(0).hex() == "894d4b5657414c0a" + "01000000" + "00000000" + "00" * 8
    assert encode_record(1, 2, b"hi").hex() == (
        "02000000" + "0100000000000000" + "0200000000000000" + "6869" + "cd868e12"
    )
    assert HEADER_SIZE == 24
    assert RECORD_OVERHEAD == 24


@given(seq=st.integers(1, MAX_STORED), timestamp=NUMBERS, payload=st.binary(max_size=300))
def test_round_trip(seq: int, timestamp: int, payload: bytes) -> None:
    data = encode_header(seq - 1) + encode_record(seq, timestamp, payload)
    header, records, stop = decode_segment(data)
    assert header == SegmentHeader(previous_seq=seq - 1)
    assert records == [Record(seq, timestamp, payload)]
    assert (stop.reason, stop.offset) == (StopReason.CLEAN, len(data))


@given(records=record_lists(), chunk=st.integers(1, 64))
def test_bytes_may_arrive_in_any_chunks(records: list[Record], chunk: int) -> None:
    data = segment(records)
    decoder = SegmentDecoder()
    decoded = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        while (record := decoder.next_record()) is not None:
            decoded.append(record)
    assert decoded == records
    assert decoder.end_of_input().reason is StopReason.CLEAN


def test_every_single_bit_flip_is_caught() -> None:
    record = encode_record(7, 1_700_000_000_000, b"value")
    for bit in range(len(record) * 8):
        damaged = bytearray(record)
        damaged[bit // 8] ^= 1 << (bit % 8)
        _, records, stop = decode_segment(encode_header(0) + bytes(damaged))
        assert records == [], f"bit {bit} went unnoticed"
        assert stop.offset == HEADER_SIZE
        # A flipped length bit may make the record look longer (torn) or huge.
        assert stop.reason in (StopReason.CRC_MISMATCH, StopReason.TORN, StopReason.BAD_LENGTH)


def test_garbage_length_is_reported_without_waiting_for_the_bytes() -> None:
    decoder = SegmentDecoder()
    decoder.feed(encode_header(0) + struct.pack("<IQQ", 0xFFFF_FFF0, 1, 1))
    assert decoder.next_record() is None
    # Stopped now: it neither waits for 4 GiB nor asks for them to be read.
    assert decoder.stop is not None
    assert (decoder.stop.reason, decoder.stop.offset) == (StopReason.BAD_LENGTH, HEADER_SIZE)


def test_length_limit_is_configurable_and_exact() -> None:
    data = segment([Record(1, 0, b"x" * 100)])
    assert decode_segment(data, max_payload=100)[1] == [Record(1, 0, b"x" * 100)]
    assert decode_segment(data, max_payload=99)[2].reason is StopReason.BAD_LENGTH


def test_every_cut_keeps_the_complete_records() -> None:
    records = [Record(1, 10, b"first"), Record(2, 20, b"second")]
    data = segment(records)
    # ends[n]: where the segment ends when it holds the first n records.
    ends = [HEADER_SIZE, HEADER_SIZE + RECORD_OVERHEAD + 5, len(data)]
    for cut in range(len(data) + 1):
        _, decoded, stop = decode_segment(data[:cut])
        if cut < HEADER_SIZE:
            assert (decoded, stop.reason, stop.offset) == ([], StopReason.TORN, 0)
            continue
        n = max(i for i, end in enumerate(ends) if end <= cut)
        assert decoded == records[:n]
        assert stop.offset == ends[n]
        assert stop.reason is (StopReason.CLEAN if cut == ends[n] else StopReason.TORN)


def test_sequence_numbers_must_increase() -> None:
    data = segment([Record(5, 0, b"a"), Record(5, 0, b"b")])
    _, records, stop = decode_segment(data)
    assert records == [Record(5, 0, b"a")]
    assert (stop.reason, stop.offset) == (StopReason.SEQ_ORDER, HEADER_SIZE + RECORD_OVERHEAD + 1)


def test_records_must_be_above_the_segment_previous_seq() -> None:
    _, records, stop = decode_segment(segment([Record(9, 0, b"")], previous_seq=9))
    assert records == []
    assert stop.reason is StopReason.SEQ_ORDER


@pytest.mark.parametrize(
    "data",
    [
        b"SQLite format 3\x00" + b"\x00" * 100,
        b"x",
        encode_header(0)[:8] + struct.pack("<I", 2) + encode_header(0)[12:],  # a later version
        encode_header(0)[:12] + struct.pack("<I", 1) + encode_header(0)[16:],  # unknown flags
    ],
    ids=["sqlite", "one-foreign-byte", "version-2", "flags"],
)
def test_a_foreign_file_is_a_bad_header(data: bytes) -> None:
    _, records, stop = decode_segment(data)
    assert records == []
    assert (stop.reason, stop.offset) == (StopReason.BAD_HEADER, 0)


@pytest.mark.parametrize(("seq", "timestamp"), [(2**63, 0), (2**64 - 1, 0), (2, 2**63)])
def test_a_number_no_store_can_hold_is_never_taken_for_a_torn_tail(
    seq: int, timestamp: int
) -> None:
    """A record with a right CRC was written as it is: out of range is damage
    or forgery, and the log keeps it for a person to look at."""
    head = struct.pack("<IQQ", 0, seq, timestamp)
    data = segment([Record(1, 0, b"")]) + head + struct.pack("<I", google_crc32c.value(head))
    _, records, stop = decode_segment(data)
    assert records == [Record(1, 0, b"")]
    assert (stop.reason, stop.offset) == (StopReason.OUT_OF_RANGE, HEADER_SIZE + RECORD_OVERHEAD)
    _, _, stop = decode_segment(encode_header(0)[:16] + struct.pack("<Q", 2**63))
    assert stop.reason is StopReason.OUT_OF_RANGE


def test_a_short_header_is_torn_not_foreign() -> None:
    for cut in range(HEADER_SIZE):
        _, _, stop = decode_segment(encode_header(3)[:cut])
        assert (stop.reason, stop.offset) == (StopReason.TORN, 0)


@pytest.mark.parametrize(
    ("seq", "timestamp", "size"),
    [(-1, 0, 0), (2**63, 0, 0), (1, -1, 0), (1, 2**63, 0), (1, 0, MAX_PAYLOAD + 1)],
)
def test_encode_refuses_what_a_reader_would_reject(seq: int, timestamp: int, size: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is not the point)
        encode_record(seq, timestamp, bytes(size))
