"""The write-ahead log's bytes: segment header and records. Sans-I/O.

A segment file is a header followed by records, all little-endian
(``docs/wal.md`` has the full picture)::

    header   magic b"\\x89MKVWAL\\n" (8) | version u32 | flags u32 (0) | previous_seq u64
    record   length u32 | seq u64 | timestamp u64 | payload (length bytes) | crc u32

``crc`` is CRC32C over ``length``, ``seq``, ``timestamp`` and the payload, so a
damaged length or sequence number is caught as surely as a damaged payload.

Nothing here touches a file: :class:`SegmentDecoder` is fed bytes and says
which records are complete and valid, where the valid prefix ends and why
decoding stopped. What to do about a bad ending (truncate it or refuse to
start) is the caller's decision, because it depends on where the segment sits.
"""

from __future__ import annotations

import enum
import struct

import attrs
import google_crc32c

from mkv.limits import MAX_STORED

_crc32c = google_crc32c.value

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "RECORD_OVERHEAD",
    "DecodeStop",
    "Record",
    "SegmentDecoder",
    "SegmentHeader",
    "StopReason",
    "decode_segment",
    "encode_header",
    "encode_record",
]

# The leading 0x89 (not ASCII) and the trailing newline catch a file mangled by
# a text-mode copy, as PNG's signature does; the rest makes `head -c8` readable.
MAGIC = b"\x89MKVWAL\n"
VERSION = 1
_HEADER = struct.Struct("<8sIIQ")
HEADER_SIZE = _HEADER.size  # 24

_RECORD_HEAD = struct.Struct("<IQQ")  # length, seq, timestamp: what the CRC starts with
_CRC = struct.Struct("<I")
RECORD_OVERHEAD = _RECORD_HEAD.size + _CRC.size  # 24

# A request is at most 1 MiB, so a longer length is damage, not data. The bound
# is what stops a flipped high bit in `length` from making us wait for (or
# allocate) gigabytes before the CRC could tell us it is garbage.
MAX_PAYLOAD = 64 * 1024 * 1024


@attrs.frozen
class Record:
    """One logged mutation: its sequence number, timestamp and opaque payload."""

    seq: int
    timestamp: int
    payload: bytes


@attrs.frozen
class SegmentHeader:
    """What a segment says about itself.

    ``previous_seq`` is the last sequence number logged before this segment (0
    for the first), so every record in it is above that, and a missing segment
    in the middle of a log shows up as a mismatch with its predecessor.
    """

    previous_seq: int
    version: int = VERSION


class StopReason(enum.Enum):
    """Why a decoder stopped."""

    CLEAN = "clean end"
    TORN = "torn record: the data ends inside the header or a record"
    BAD_LENGTH = "record length over the limit"
    CRC_MISMATCH = "CRC mismatch"
    BAD_HEADER = "not a write-ahead log segment, or a format version this build cannot read"
    SEQ_ORDER = "sequence numbers not strictly increasing"
    OUT_OF_RANGE = f"a sequence number or timestamp above {MAX_STORED}, more than a store holds"


@attrs.frozen
class DecodeStop:
    """Where the valid prefix ends (a byte offset into the segment) and why."""

    reason: StopReason
    offset: int


def encode_header(previous_seq: int) -> bytes:
    if not 0 <= previous_seq <= MAX_STORED:
        raise ValueError("previous_seq must fit in a signed 64-bit integer")
    return _HEADER.pack(MAGIC, VERSION, 0, previous_seq)


def encode_record(seq: int, timestamp: int, payload: bytes) -> bytes:
    """The bytes of one record.

    Raises:
        ValueError: seq or timestamp are negative or above ``MAX_STORED`` (a
            store could not hold them), or the payload is over
            :data:`MAX_PAYLOAD` (a reader would take it for damage).
    """
    if not 0 <= seq <= MAX_STORED or not 0 <= timestamp <= MAX_STORED:
        raise ValueError("seq and timestamp must fit in a signed 64-bit integer")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload is over the write-ahead log's record limit")
    head = _RECORD_HEAD.pack(len(payload), seq, timestamp)
    crc = google_crc32c.extend(google_crc32c.value(head), payload)
    return b"".join((head, payload, _CRC.pack(crc)))


class SegmentDecoder:
    """Decodes one segment from bytes fed in any chunks, header first.

    Call :meth:`feed`, then :meth:`next_record` until it returns None (more
    data needed, or :attr:`stop` is set), and :meth:`end_of_input` once the
    file is exhausted. After a stop the decoder ignores further input: nothing
    past a bad record can be trusted, because its length may be wrong.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        # Bytes, not a bytearray: slices of it go to the CRC and become
        # payloads with one copy each (the CRC takes no mutable buffer).
        self._buffer = b""
        self._pos = 0  # index into _buffer of the first undecoded byte
        self._consumed = 0  # segment offset of _buffer[0]
        self.header: SegmentHeader | None = None
        self.last_seq = 0  # of the last good record, or the header's previous_seq
        self.stop: DecodeStop | None = None

    @classmethod
    def resuming(cls, offset: int, last_seq: int) -> SegmentDecoder:
        """A decoder fed from ``offset`` of a segment whose header was
        already checked, where a record starts and every record is above
        ``last_seq`` (a mark the log kept while writing or recovering it)."""
        decoder = cls()
        decoder.header = SegmentHeader(last_seq, VERSION)
        decoder.last_seq = last_seq
        decoder._consumed = offset
        return decoder

    @property
    def offset(self) -> int:
        """Segment offset where the valid prefix (header and good records) ends."""
        return self._consumed + self._pos

    def feed(self, data: bytes) -> None:
        if self.stop is not None:
            return
        # Drop decoded bytes first, so the buffer holds at most one record and a chunk.
        self._buffer = self._buffer[self._pos :] + data
        self._consumed += self._pos
        self._pos = 0

    def next_record(self) -> Record | None:
        """The next complete, valid record, or None: see :attr:`stop`, or feed more."""
        records = self.next_records(limit=1)
        return Record(*records[0]) if records else None

    def next_records(self, limit: int | None = None) -> list[tuple[int, int, bytes]]:
        """Every complete, valid record fed so far (at most ``limit``), as
        ``(seq, timestamp, payload)``; empty: see :attr:`stop`, or feed more.

        One tight loop over the buffer and no object per record beyond its
        tuple: replay and recovery read every record of the log through here
        (a Record per record cost a fifth of replay time).
        """
        records: list[tuple[int, int, bytes]] = []
        if self.stop is not None:
            return records
        if self.header is None and not self._read_header():
            return records
        buffer, pos, last_seq = self._buffer, self._pos, self.last_seq
        size, max_payload = len(buffer), self._max_payload
        unpack_head, unpack_crc, crc32c = _RECORD_HEAD.unpack_from, _CRC.unpack_from, _crc32c
        head = _RECORD_HEAD.size
        stop = None
        while limit is None or len(records) < limit:
            if size - pos < head:
                break
            length, seq, timestamp = unpack_head(buffer, pos)
            if length > max_payload:
                stop = StopReason.BAD_LENGTH
                break
            end = pos + head + length
            if end + _CRC.size > size:
                break
            if crc32c(buffer[pos:end]) != unpack_crc(buffer, end)[0]:
                stop = StopReason.CRC_MISMATCH
                break
            # Checked after the CRC: a record that passes it was written as it
            # is, so an out-of-order seq is a writer's bug or a misplaced file.
            if seq <= last_seq:
                stop = StopReason.SEQ_ORDER
                break
            # A u64 on disk, but the store keeps signed 64 bits (mkv.limits).
            if seq > MAX_STORED or timestamp > MAX_STORED:
                stop = StopReason.OUT_OF_RANGE
                break
            records.append((seq, timestamp, buffer[pos + head : end]))
            pos = end + _CRC.size
            last_seq = seq
        self._pos, self.last_seq = pos, last_seq
        if stop is not None:
            self._stopped(stop)
        return records

    def end_of_input(self) -> DecodeStop:
        """Why decoding ended, once the caller has no more bytes to feed."""
        if self.stop is None:
            # Anything left over is a record (or header) the writer never finished.
            undecoded = len(self._buffer) - self._pos
            clean = undecoded == 0 and self.header is not None
            self.stop = DecodeStop(StopReason.CLEAN if clean else StopReason.TORN, self.offset)
        return self.stop

    def _read_header(self) -> bool:
        got = bytes(self._buffer[: min(len(self._buffer), len(MAGIC) + 4)])
        expected = MAGIC + struct.pack("<I", VERSION)
        # Judge the magic as soon as it starts arriving, so a foreign file is
        # called foreign rather than torn even when it is only a few bytes long.
        if got != expected[: len(got)]:
            self._stopped(StopReason.BAD_HEADER)
            return False
        if len(self._buffer) < HEADER_SIZE:
            return False
        _magic, version, flags, previous_seq = _HEADER.unpack_from(self._buffer, 0)
        if flags != 0:  # reserved: a later version may use them, and we would misread it
            self._stopped(StopReason.BAD_HEADER)
            return False
        if previous_seq > MAX_STORED:
            self._stopped(StopReason.OUT_OF_RANGE)
            return False
        self.header = SegmentHeader(previous_seq, version)
        self.last_seq = previous_seq
        self._pos = HEADER_SIZE
        return True

    def _stopped(self, reason: StopReason) -> None:
        self.stop = DecodeStop(reason, self.offset)


def decode_segment(
    data: bytes, *, max_payload: int = MAX_PAYLOAD
) -> tuple[SegmentHeader | None, list[Record], DecodeStop]:
    """Decode a whole segment held in memory: header, valid records, and the stop."""
    decoder = SegmentDecoder(max_payload=max_payload)
    decoder.feed(data)
    records = [Record(*record) for record in decoder.next_records()]
    return decoder.header, records, decoder.end_of_input()
