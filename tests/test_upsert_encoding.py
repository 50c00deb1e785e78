"""The client's hand-written UpsertRequest encoding: the bytes protobuf itself
would write, cut greedily into requests that fit the limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mkv.client.upsert_encoding import (
    MAP_VERSION_ROOM,
    cut_batches,
    encode_varint,
    entry_size,
    field_size,
)
from mkv.errors import ResourceExhaustedError
from mkv.v1 import data_pb2 as pb

# Around each boundary where a varint grows by a byte.
LENGTHS = [0, 1, 2, 127, 128, 129, 16_383, 16_384, 300_000]


def protobuf_bytes(pairs: list[tuple[bytes, bytes]], map_version: int = 0) -> bytes:
    request = pb.UpsertRequest(
        entries=[pb.Entry(key=k, value=v) for k, v in pairs], map_version=map_version
    )
    return bytes(request.SerializeToString())


@pytest.mark.parametrize("n", [1, 127, 128, 300, 16_383, 16_384, 2**21, 2**64 - 1])
def test_varints_are_protobufs(n: int) -> None:
    # (map_version is field 2: tag 0x10; protobuf leaves a 0 out altogether.)
    assert pb.UpsertRequest(map_version=n).SerializeToString() == b"\x10" + encode_varint(n)
    assert encode_varint(0) == b"\x00"


@pytest.mark.parametrize("key_length", LENGTHS)
@pytest.mark.parametrize("value_length", LENGTHS)
def test_one_entry_is_encoded_as_protobuf_encodes_it(key_length: int, value_length: int) -> None:
    pair = (b"k" * key_length, b"v" * value_length)
    [batch] = cut_batches([pair], 1024 * 1024)
    assert batch.encoded == protobuf_bytes([pair])
    assert entry_size(key_length, value_length) == len(batch.encoded)
    request = batch.request(map_version=7)
    assert request.SerializeToString() == protobuf_bytes([pair], map_version=7)


def test_a_pair_too_large_for_any_request_is_refused() -> None:
    with pytest.raises(ResourceExhaustedError, match="at most 1000 bytes"):
        cut_batches([(b"small", b"v"), (b"big", b"x" * 1000)], 1000)


def test_nothing_to_encode_is_no_batch() -> None:
    assert cut_batches([], 1000) == []


pair_lists = st.lists(
    st.tuples(st.binary(max_size=40), st.binary(max_size=300)), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(pairs=pair_lists, limit=st.integers(min_value=400, max_value=6000))
def test_batches_keep_every_pair_in_order_and_fit_the_limit(
    pairs: list[tuple[bytes, bytes]], limit: int
) -> None:
    batches = cut_batches(pairs, limit)
    assert [pair for batch in batches for pair in batch.pairs] == pairs
    for i, batch in enumerate(batches):
        # What the server parses is what protobuf would have sent.
        assert batch.encoded == protobuf_bytes(list(batch.pairs))
        # With the largest map version, the request still fits.
        assert batch.request(map_version=2**64 - 1).ByteSize() <= limit
        if i + 1 < len(batches):
            # Greedy: the next batch's first pair would not have fitted here.
            first = batches[i + 1].pairs[0]
            grown = len(batch.encoded) + entry_size(len(first[0]), len(first[1]))
            assert grown > limit - MAP_VERSION_ROOM


@given(st.integers(min_value=0, max_value=1 << 21))
def test_field_size_is_what_protobuf_writes_for_a_field(length: int) -> None:
    request = pb.RemoveRequest(keys=[b"k" * length]) if length else pb.RemoveRequest()
    assert field_size(length) == len(request.SerializeToString())
