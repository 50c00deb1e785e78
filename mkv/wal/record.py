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
_U64_MAX = 2**64 - 1


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


@attrs.frozen
class DecodeStop:
    """Where the valid prefix ends (a byte offset into the segment) and why."""

    reason: StopReason
    offset: int


def encode_header(previous_seq: int) -> bytes:
    if not 0 <= previous_seq <= _U64_MAX:
        raise ValueError("previous_seq must fit in an unsigned 64-bit integer")
    return _HEADER.pack(MAGIC, VERSION, 0, previous_seq)


def encode_record(seq: int, timestamp: int, payload: bytes) -> bytes:
    """The bytes of one record.

    Raises:
        ValueError: seq or timestamp do not fit in a u64, or the payload is over
            :data:`MAX_PAYLOAD` (a reader would take it for damage).
    """
    if not 0 <= seq <= _U64_MAX or not 0 <= timestamp <= _U64_MAX:
        raise ValueError("seq and timestamp must fit in an unsigned 64-bit integer")
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
        self._buffer = bytearray()
        self._pos = 0  # index into _buffer of the first undecoded byte
        self._consumed = 0  # segment offset of _buffer[0]
        self.header: SegmentHeader | None = None
        self.last_seq = 0  # of the last good record, or the header's previous_seq
        self.stop: DecodeStop | None = None

    @property
    def offset(self) -> int:
        """Segment offset where the valid prefix (header and good records) ends."""
        return self._consumed + self._pos

    def feed(self, data: bytes) -> None:
        if self.stop is not None:
            return
        # Drop decoded bytes first, so the buffer holds at most one record and a chunk.
        del self._buffer[: self._pos]
        self._consumed += self._pos
        self._pos = 0
        self._buffer += data

    def next_record(self) -> Record | None:
        """The next complete, valid record, or None: see :attr:`stop`, or feed more."""
        if self.stop is not None:
            return None
        if self.header is None and not self._read_header():
            return None
        available = len(self._buffer) - self._pos
        if available < _RECORD_HEAD.size:
            return None
        length, seq, timestamp = _RECORD_HEAD.unpack_from(self._buffer, self._pos)
        if length > self._max_payload:
            self._stopped(StopReason.BAD_LENGTH)
            return None
        end = self._pos + _RECORD_HEAD.size + length
        if available < _RECORD_HEAD.size + length + _CRC.size:
            return None
        (crc,) = _CRC.unpack_from(self._buffer, end)
        # One pass over the bytes in place; the view must be gone before the
        # next feed() resizes the buffer, hence no named slices outliving it.
        with memoryview(self._buffer) as view:
            if google_crc32c.value(bytes(view[self._pos : end])) != crc:
                self._stopped(StopReason.CRC_MISMATCH)
                return None
            payload = bytes(view[self._pos + _RECORD_HEAD.size : end])
        # Checked after the CRC: a record that passes it was written as it is,
        # so an out-of-order seq is a writer's bug or a misplaced file, not a crash.
        if seq <= self.last_seq:
            self._stopped(StopReason.SEQ_ORDER)
            return None
        self._pos = end + _CRC.size
        self.last_seq = seq
        return Record(seq, timestamp, payload)

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
    records = []
    while (record := decoder.next_record()) is not None:
        records.append(record)
    return decoder.header, records, decoder.end_of_input()
