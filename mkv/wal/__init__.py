"""A partition's write-ahead log: the record format (sans-I/O) and its segment files (blocking)."""

from __future__ import annotations

from mkv.wal.log import (
    DEFAULT_SEGMENT_BYTES,
    RecoveryReport,
    Truncation,
    WalCorruptError,
    WalGapError,
    WalStatistics,
    WriteAheadLog,
)
from mkv.wal.record import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    RECORD_OVERHEAD,
    DecodeStop,
    Record,
    SegmentDecoder,
    SegmentHeader,
    StopReason,
    decode_segment,
    encode_header,
    encode_record,
)

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "RECORD_OVERHEAD",
    "DecodeStop",
    "Record",
    "RecoveryReport",
    "SegmentDecoder",
    "SegmentHeader",
    "StopReason",
    "Truncation",
    "WalCorruptError",
    "WalGapError",
    "WalStatistics",
    "WriteAheadLog",
    "decode_segment",
    "encode_header",
    "encode_record",
]
