"""An upsert's pairs written as ``UpsertRequest`` bytes by hand, and cut into
requests of bounded size. Sans-I/O; used by the client.

Making a ``pb.Entry`` for each of a 1 MiB batch's ~9,000 pairs, and sizing
each pair to cut the batches, cost the client ~15 ms of CPU a batch (more
than SQLite's whole transaction on the server). The wire format of
``repeated Entry entries = 1`` is simple, and every pair with the same key
and value lengths is framed by the same bytes, so one pass over the pairs
with the framing looked up by those lengths sizes, cuts and encodes (~2 ms)::

    entries field   0x0a | varint(len(entry)) | entry
    entry           0x0a | varint(len(key)) | key | 0x12 | varint(len(value)) | value

A key or value of length 0 is left out of its entry, as protobuf itself does.
The result is parsed back into a ``pb.UpsertRequest`` by protobuf (in C, a
fraction of a millisecond), so a mistake here is a decode error, never a
request that means something else.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mkv.errors import ResourceExhaustedError
from mkv.v1 import data_pb2 as pb

__all__ = ["EntryBatch", "cut_batches", "encode_varint", "entry_size", "field_size"]

# Field 1 of UpsertRequest (entries) and of Entry (key), and Entry's field 2
# (value): (number << 3) | 2, "length-delimited".
_ENTRIES_TAG = b"\x0a"
_KEY_TAG = b"\x0a"
_VALUE_TAG = b"\x12"
# Every request also carries map_version (field 2, a uint64: its tag and up
# to ten bytes of varint); a batch leaves room for it under the limit.
MAP_VERSION_ROOM = 11


def encode_varint(n: int) -> bytes:
    """``n`` (not negative) as a protobuf varint: 7 bits a byte, low bits first."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_size(length: int) -> int:
    """Bytes a length-delimited field of ``length`` bytes takes in any request
    (a one-byte tag: field numbers below 16), or 0 for an empty one, which
    protobuf leaves out. Arithmetic, for sizing without encoding."""
    return 1 + max(1, (length.bit_length() + 6) // 7) + length if length else 0


def _field(tag: bytes, length: int) -> bytes:
    """The tag and length before a length-delimited field's bytes (none when empty)."""
    return tag + encode_varint(length) if length else b""


def _framing(key_length: int, value_length: int) -> tuple[bytes, bytes, int]:
    """The bytes before the key, the bytes between key and value, and the
    size of the whole ``entries`` field, for an entry of these lengths."""
    key_field = _field(_KEY_TAG, key_length)
    value_field = _field(_VALUE_TAG, value_length)
    body = len(key_field) + key_length + len(value_field) + value_length
    before_key = _ENTRIES_TAG + encode_varint(body) + key_field
    return before_key, value_field, len(before_key) + key_length + len(value_field) + value_length


def entry_size(key_length: int, value_length: int) -> int:
    """Bytes one pair takes in an ``UpsertRequest``."""
    return _framing(key_length, value_length)[2]


@attrs.frozen
class EntryBatch:
    """Pairs that go in one request, and their encoding as its ``entries``."""

    pairs: Sequence[tuple[bytes, bytes]]
    encoded: bytes = attrs.field(repr=False)

    def request(self, map_version: int = 0) -> pb.UpsertRequest:
        request = pb.UpsertRequest.FromString(self.encoded)
        request.map_version = map_version
        return request


def cut_batches(pairs: Sequence[tuple[bytes, bytes]], max_bytes: int) -> list[EntryBatch]:
    """``pairs`` in order, cut into as few requests of at most ``max_bytes`` as
    a greedy cut gives, each encoded.

    Raises:
        ResourceExhaustedError: one pair alone does not fit a request.
    """
    budget = max_bytes - MAP_VERSION_ROOM
    framings: dict[int, tuple[bytes, bytes, int]] = {}
    batches: list[EntryBatch] = []
    parts: list[bytes] = []
    start = size = 0
    for i, (key, value) in enumerate(pairs):
        key_length, value_length = len(key), len(value)
        # An int, not a tuple, as the cache key: no allocation per pair.
        lengths = key_length << 32 | value_length
        framing = framings.get(lengths)
        if framing is None:
            framing = framings[lengths] = _framing(key_length, value_length)
        before_key, before_value, entry_bytes = framing
        if size + entry_bytes > budget:
            if entry_bytes > budget:
                raise ResourceExhaustedError(
                    f"One entry is {entry_bytes} bytes; a request is at most {max_bytes} bytes."
                )
            batches.append(EntryBatch(pairs[start:i], b"".join(parts)))
            parts, start, size = [], i, 0
        parts += (before_key, key, before_value, value)
        size += entry_bytes
    if parts:
        batches.append(EntryBatch(pairs[start:], b"".join(parts)))
    return batches
