"""Bad input, from a client we did not write (grpcio) and from our own.

Each refusal is checked three ways, as api.md promises: the gRPC status code;
a message that is one sentence for a person, with no stack trace or repr;
and a server that still answers afterwards and lost nothing (a key written
before the bad request reads back with its value).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import mkv
from mkv.v1 import control_pb2 as cpb
from mkv.v1 import data_pb2 as pb
from mkv.wire import MAX_KEY_BYTES, MAX_REQUEST_BYTES
from tests.grpcio_stubs import (
    CALL_TIMEOUT,
    GrpcioClient,
    GrpcioStubs,
    assert_clear_message,
    call,
    call_error,
    connect,
    raw_method,
)

SENTINEL_KEY = b"sentinel: written before the bad request"
SENTINEL_VALUE = b"still here"

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
NOT_FOUND = grpc.StatusCode.NOT_FOUND

DATA_METHODS = ("Upsert", "Get", "Remove", "PartitionMap")
CONTROL_METHODS = ("AddPartition", "RemovePartition", "ListPartitions")


@pytest.fixture
async def grpcio(stubs: GrpcioStubs, mkv_node: mkv.Node) -> AsyncIterator[GrpcioClient]:
    """grpcio stubs on both ports of a node that already holds the sentinel key."""
    with connect(stubs, mkv_node.data_address, mkv_node.control_address) as client:
        await write_sentinel(client)
        yield client


def upsert_request(items: dict[bytes, bytes]) -> pb.UpsertRequest:
    return pb.UpsertRequest(entries=[pb.Entry(key=k, value=v) for k, v in items.items()])


async def write_sentinel(grpcio: GrpcioClient) -> None:
    written = await call(grpcio.data.Upsert, upsert_request({SENTINEL_KEY: SENTINEL_VALUE}))
    assert written.status == pb.OK


async def assert_still_serving(grpcio: GrpcioClient) -> None:
    """The node lost nothing and still takes reads, writes and control calls."""
    sentinel = await call(grpcio.data.Get, pb.GetRequest(key=SENTINEL_KEY))
    assert (sentinel.status, sentinel.found, sentinel.value) == (pb.OK, True, SENTINEL_VALUE)
    # Next to the sentinel, so in a partition whatever the test did to the others.
    after = SENTINEL_KEY + b" and after"
    await call(grpcio.data.Upsert, upsert_request({after: b"ok"}))
    assert (await call(grpcio.data.Get, pb.GetRequest(key=after))).value == b"ok"
    assert (await call(grpcio.control.ListPartitions, cpb.ListPartitionsRequest())).partitions


async def refused(method: Callable[..., Any], request: Any, code: grpc.StatusCode) -> str:
    """Make a call that must fail with ``code`` and a clear message; return the message."""
    error = await call_error(method, request)
    assert error.code() == code, error.details()
    assert_clear_message(error.details())
    return str(error.details())


async def get(grpcio: GrpcioClient, key: bytes) -> bytes | None:
    response = await call(grpcio.data.Get, pb.GetRequest(key=key))
    assert response.status == pb.OK
    return response.value if response.found else None


async def partitions(grpcio: GrpcioClient) -> list[tuple[str, bytes, bytes, int, int]]:
    listed = await call(grpcio.control.ListPartitions, cpb.ListPartitionsRequest())
    return [(p.id, p.start, p.end, p.key_count, p.last_seq) for p in listed.partitions]


async def split_at_m(grpcio: GrpcioClient) -> None:
    """Replace the default partition by "low" [, m) and "high" [m, ∞), and put
    the sentinel back (it lands in "high")."""
    await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
    await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
    await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="high", start=b"m"))
    await write_sentinel(grpcio)


async def write_sentinel_in_new_partition(grpcio: GrpcioClient) -> None:
    """After removing "default": a partition [s, ∞) holding the sentinel."""
    await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="rest", start=b"s"))
    await write_sentinel(grpcio)


def upsert_of_size(size: int, key: bytes) -> pb.UpsertRequest:
    """One entry whose request serializes to exactly ``size`` bytes."""
    # The value's length prefix is a varint, so aim a little short and grow.
    for value_len in range(size - 32, size):
        request = upsert_request({key: b"v" * value_len})
        if request.ByteSize() == size:
            return request
    raise AssertionError(f"no one-entry request serializes to {size} bytes")


# -- request size ---------------------------------------------------------------


async def test_a_request_over_1_mib_is_resource_exhausted(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        big = upsert_request({b"big": b"x" * (3 * MAX_REQUEST_BYTES // 2)})
        message = await refused(grpcio.data.Upsert, big, RESOURCE_EXHAUSTED)
        assert str(MAX_REQUEST_BYTES) in message  # says what the limit is
        assert await get(grpcio, b"big") is None
        await assert_still_serving(grpcio)


async def test_the_size_limit_is_exact(grpcio: GrpcioClient) -> None:
    """1 MiB serialized is accepted; one byte more is refused and changes nothing."""
    with trio.fail_after(20):
        at_limit = upsert_of_size(MAX_REQUEST_BYTES, b"edge")
        written = await call(grpcio.data.Upsert, at_limit)
        assert written.status == pb.OK
        assert await get(grpcio, b"edge") == at_limit.entries[0].value

        over = upsert_of_size(MAX_REQUEST_BYTES + 1, b"edge")
        await refused(grpcio.data.Upsert, over, RESOURCE_EXHAUSTED)
        assert await get(grpcio, b"edge") == at_limit.entries[0].value
        await assert_still_serving(grpcio)


async def test_a_request_over_the_transport_limit_is_still_resource_exhausted(
    grpcio: GrpcioClient,
) -> None:
    """api.md: a request over a limit is RESOURCE_EXHAUSTED, however far over.

    Anything else misleads a client: UNAVAILABLE is documented as retryable,
    so a well-behaved client would retry a request that can never succeed.
    """
    with trio.fail_after(20):
        huge = upsert_request({b"huge": b"x" * (5 * MAX_REQUEST_BYTES)})
        await refused(grpcio.data.Upsert, huge, RESOURCE_EXHAUSTED)
        await assert_still_serving(grpcio)


async def test_mkv_client_reports_resource_exhausted(
    grpcio: GrpcioClient, mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    with trio.fail_after(20):
        too_big = {b"big": b"x" * (3 * MAX_REQUEST_BYTES // 2)}
        # Our client splits batches, but one entry over the limit cannot be split.
        with pytest.raises(mkv.ResourceExhaustedError) as local:
            await mkv_client.upsert(too_big)
        assert_clear_message(local.value.message)

        # A client configured with a higher limit than the server's sends it,
        # and the server's refusal arrives as the same typed error.
        async with mkv.Client.connect(
            mkv_node.data_address, max_request_bytes=4 * MAX_REQUEST_BYTES
        ) as lax:
            with pytest.raises(mkv.ResourceExhaustedError) as remote:
                await lax.upsert(too_big)
        assert "split the batch" in remote.value.message
        assert_clear_message(remote.value.message)
        assert await mkv_client.get(b"big") is None
        await assert_still_serving(grpcio)


# -- keys -------------------------------------------------------------------------


def keyed_request(method: str, key: bytes) -> Any:
    if method == "Get":
        return pb.GetRequest(key=key)
    if method == "Upsert":
        return upsert_request({key: b"value"})
    return pb.RemoveRequest(keys=[key])


@pytest.mark.parametrize("method", ["Get", "Upsert", "Remove"])
async def test_key_length_limits(grpcio: GrpcioClient, method: str) -> None:
    with trio.fail_after(20):
        stub = getattr(grpcio.data, method)
        longest = b"k" * MAX_KEY_BYTES
        await call(grpcio.data.Upsert, upsert_request({longest: b"before"}))

        await refused(stub, keyed_request(method, b""), INVALID_ARGUMENT)
        message = await refused(stub, keyed_request(method, longest + b"k"), INVALID_ARGUMENT)
        assert str(MAX_KEY_BYTES) in message

        # Exactly at the limit is an ordinary key for every method.
        response = await call(stub, keyed_request(method, longest))
        assert response.status == pb.OK
        expected = {"Get": b"before", "Upsert": b"value", "Remove": None}[method]
        assert await get(grpcio, longest) == expected
        await assert_still_serving(grpcio)


async def test_one_bad_key_refuses_the_whole_batch(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        await refused(
            grpcio.data.Upsert,
            upsert_request({b"good": b"v", b"": b"empty key"}),
            INVALID_ARGUMENT,
        )
        assert await get(grpcio, b"good") is None
        too_long = b"k" * (MAX_KEY_BYTES + 1)
        await refused(
            grpcio.data.Remove, pb.RemoveRequest(keys=[SENTINEL_KEY, too_long]), INVALID_ARGUMENT
        )
        await assert_still_serving(grpcio)  # the sentinel was not removed


async def test_mkv_client_raises_invalid_argument_for_bad_keys(
    grpcio: GrpcioClient, mkv_client: mkv.Client
) -> None:
    with trio.fail_after(20):
        with pytest.raises(mkv.InvalidArgumentError):
            await mkv_client.get(b"")
        with pytest.raises(mkv.InvalidArgumentError) as error:
            await mkv_client.upsert({b"k" * (MAX_KEY_BYTES + 1): b"v"})
        assert_clear_message(error.value.message)
        with pytest.raises(mkv.InvalidArgumentError):
            await mkv_client.remove(b"")
        await assert_still_serving(grpcio)


async def test_an_empty_upsert_or_remove_is_invalid(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        await refused(grpcio.data.Upsert, pb.UpsertRequest(), INVALID_ARGUMENT)
        await refused(grpcio.data.Remove, pb.RemoveRequest(), INVALID_ARGUMENT)
        # An entry with neither key nor value is not "nothing": it has an empty key.
        await refused(grpcio.data.Upsert, pb.UpsertRequest(entries=[pb.Entry()]), INVALID_ARGUMENT)
        await assert_still_serving(grpcio)


# -- batches across partitions ------------------------------------------------------


async def test_a_batch_spanning_partitions_is_refused_whole(grpcio: GrpcioClient) -> None:
    """Atomic within one partition means refused, not half-applied, across two."""
    with trio.fail_after(20):
        await split_at_m(grpcio)
        await call(grpcio.data.Upsert, upsert_request({b"apple": b"old"}))
        await call(grpcio.data.Upsert, upsert_request({b"zebra": b"old"}))
        before = await partitions(grpcio)

        both = {b"apple": b"new", b"zebra": b"new"}
        message = await refused(grpcio.data.Upsert, upsert_request(both), INVALID_ARGUMENT)
        assert "PartitionMap" in message  # tells the caller how to split
        await refused(
            grpcio.data.Remove, pb.RemoveRequest(keys=[b"apple", b"zebra"]), INVALID_ARGUMENT
        )
        assert (await get(grpcio, b"apple"), await get(grpcio, b"zebra")) == (b"old", b"old")
        # Not even a sequence number was spent in either partition.
        assert await partitions(grpcio) == before
        await assert_still_serving(grpcio)


async def test_a_batch_of_owned_and_unowned_keys_is_refused_whole(
    grpcio: GrpcioClient,
) -> None:
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await call(
            grpcio.control.AddPartition, cpb.AddPartitionRequest(id="middle", start=b"a", end=b"t")
        )
        await write_sentinel(grpcio)
        unowned = upsert_request({b"banana": b"v", b"zebra": b"v"})
        await refused(grpcio.data.Upsert, unowned, INVALID_ARGUMENT)
        assert await get(grpcio, b"banana") is None
        await refused(
            grpcio.data.Remove, pb.RemoveRequest(keys=[SENTINEL_KEY, b"zebra"]), INVALID_ARGUMENT
        )
        await assert_still_serving(grpcio)


# -- AddPartition and RemovePartition --------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(b"p", b"n", id="end-before-start"),
        pytest.param(b"n", b"n", id="empty-range"),
        pytest.param(b"n\xff\xfe", b"n", id="non-utf8-start"),
        # Keys are any bytes; a person must still get a one-line message.
        pytest.param(b"p\n", b"n", id="newline-in-start"),
    ],
)
async def test_a_backwards_range_is_invalid(
    grpcio: GrpcioClient, mkv_admin: mkv.AdminClient, start: bytes, end: bytes
) -> None:
    with trio.fail_after(20):
        # Only [s, ∞) is owned, so nothing overlaps [n, p): only the range's
        # own shape can be the reason to refuse.
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await write_sentinel_in_new_partition(grpcio)
        before = await partitions(grpcio)

        request = cpb.AddPartitionRequest(id="bad", start=start, end=end)
        await refused(grpcio.control.AddPartition, request, INVALID_ARGUMENT)
        with pytest.raises(mkv.InvalidArgumentError):
            await mkv_admin.add_partition(start=start, end=end, partition_id="bad")
        assert await partitions(grpcio) == before

        # The same id with a well-formed range in the same free space is fine.
        well_formed = cpb.AddPartitionRequest(id="bad", start=b"n", end=b"p")
        await call(grpcio.control.AddPartition, well_formed)
        await assert_still_serving(grpcio)


BAD_IDS = [
    "../escaped",
    "../../escaped",
    "a/b",
    "..",
    ".hidden",
    "-dash-first",
    "x" * 65,
    "trailing-newline\n",
    "caf\u00e9",
    "with space",
    "nul\x00",
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_a_bad_partition_id_is_invalid(
    grpcio: GrpcioClient, mkv_node: mkv.Node, bad_id: str
) -> None:
    """Ids name directories: a bad one must be refused before it touches the disk."""
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await write_sentinel_in_new_partition(grpcio)
        root = mkv_node.config.data_dir.parent
        tree = sorted(root.rglob("*"))

        request = cpb.AddPartitionRequest(id=bad_id, start=b"a", end=b"b")
        await refused(grpcio.control.AddPartition, request, INVALID_ARGUMENT)
        assert not any(p.name == "escaped" for p in root.rglob("*"))
        assert [p for p in sorted(root.rglob("*")) if p.is_dir()] == [p for p in tree if p.is_dir()]
        # The longest legal id is accepted: the limit is where it says it is.
        await call(
            grpcio.control.AddPartition, cpb.AddPartitionRequest(id="x" * 64, start=b"a", end=b"b")
        )
        await assert_still_serving(grpcio)


async def test_an_empty_id_means_the_server_picks_one(grpcio: GrpcioClient) -> None:
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await write_sentinel_in_new_partition(grpcio)
        first = await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(end=b"h"))
        second = await call(
            grpcio.control.AddPartition, cpb.AddPartitionRequest(start=b"h", end=b"s")
        )
        picked = [first.partition.id, second.partition.id]
        assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", p) for p in picked)
        assert len(set(picked) | {"rest"}) == 3
        assert [p[0] for p in await partitions(grpcio)] == [*picked, "rest"]
        await assert_still_serving(grpcio)


@pytest.mark.parametrize(
    ("partition_id", "start", "end"),
    [
        pytest.param("low", b"n", b"p", id="duplicate-id-free-range"),
        pytest.param("new", b"a", b"b", id="inside"),
        pytest.param("new", b"l", b"n", id="straddling-the-end"),
        pytest.param("new", b"", b"", id="everything"),
    ],
)
async def test_overlap_or_duplicate_id_is_already_exists(
    grpcio: GrpcioClient,
    mkv_admin: mkv.AdminClient,
    partition_id: str,
    start: bytes,
    end: bytes,
) -> None:
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        # "low" [, m) and "rest" [s, ∞): [m, s) is free.
        await call(grpcio.control.AddPartition, cpb.AddPartitionRequest(id="low", end=b"m"))
        await write_sentinel_in_new_partition(grpcio)
        await call(grpcio.data.Upsert, upsert_request({b"kept": b"v"}))
        before = await partitions(grpcio)

        request = cpb.AddPartitionRequest(id=partition_id, start=start, end=end)
        await refused(grpcio.control.AddPartition, request, ALREADY_EXISTS)
        with pytest.raises(mkv.AlreadyExistsError):
            await mkv_admin.add_partition(start=start, end=end or None, partition_id=partition_id)
        assert await partitions(grpcio) == before
        assert await get(grpcio, b"kept") == b"v"
        await assert_still_serving(grpcio)


@pytest.mark.parametrize(
    "partition_id",
    [
        pytest.param("nope", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("../default", id="path-to-a-real-one"),
        # The id is echoed in the message; it must not carry the caller's input
        # unbounded (grpcio drops trailers over 16 KiB) or across lines.
        pytest.param("x" * 100_000, id="huge"),
        pytest.param("two\nlines", id="newline"),
    ],
)
async def test_removing_an_unknown_partition_is_not_found(
    grpcio: GrpcioClient, mkv_admin: mkv.AdminClient, partition_id: str
) -> None:
    with trio.fail_after(20):
        before = await partitions(grpcio)
        request = cpb.RemovePartitionRequest(id=partition_id)
        await refused(grpcio.control.RemovePartition, request, NOT_FOUND)
        with pytest.raises(mkv.NotFoundError):
            await mkv_admin.remove_partition(partition_id)
        assert await partitions(grpcio) == before
        await assert_still_serving(grpcio)


@pytest.mark.parametrize(
    "store",
    [
        pytest.param("bogus", id="unknown"),
        pytest.param("SQLITE", id="wrong-case"),
        pytest.param("x" * 100_000, id="huge"),
    ],
)
async def test_an_unknown_store_kind_is_invalid(
    grpcio: GrpcioClient, mkv_node: mkv.Node, store: str
) -> None:
    with trio.fail_after(20):
        await call(grpcio.control.RemovePartition, cpb.RemovePartitionRequest(id="default"))
        await write_sentinel_in_new_partition(grpcio)
        before = await partitions(grpcio)
        request = cpb.AddPartitionRequest(id="odd", end=b"m", store=store)
        message = await refused(grpcio.control.AddPartition, request, INVALID_ARGUMENT)
        assert "sqlite" in message  # names the kinds that exist
        assert await partitions(grpcio) == before
        assert not (mkv_node.config.data_dir / "partitions" / "odd").exists()
        await assert_still_serving(grpcio)


# -- bodies that are not the message ---------------------------------------------


def method_path(method: str) -> str:
    service = "DataPlane" if method in DATA_METHODS else "ControlPlane"
    return f"/mkv.v1.{service}/{method}"


def channel_for(grpcio: GrpcioClient, method: str) -> grpc.Channel:
    return grpcio.data_channel if method in DATA_METHODS else grpcio.control_channel


@pytest.mark.parametrize("method", DATA_METHODS + CONTROL_METHODS)
async def test_a_body_that_is_not_protobuf_is_invalid(grpcio: GrpcioClient, method: str) -> None:
    with trio.fail_after(20):
        raw = raw_method(channel_for(grpcio, method), method_path(method))
        message = await refused(raw, b"\xff\xff\xff", INVALID_ARGUMENT)
        assert f"mkv.v1.{method}Request" in message  # says what was expected
        await assert_still_serving(grpcio)


async def test_a_string_field_that_is_not_utf8_is_invalid(grpcio: GrpcioClient) -> None:
    """proto3 strings must be UTF-8: a partition id of raw bytes is not a string."""
    with trio.fail_after(20):
        raw = raw_method(grpcio.control_channel, method_path("AddPartition"))
        body = b"\x0a\x02\xc3\x28" + b"\x12\x01m"  # id = invalid UTF-8, start = "m"
        await refused(raw, body, INVALID_ARGUMENT)
        await assert_still_serving(grpcio)


@pytest.mark.parametrize("count", [0, 2])
async def test_a_unary_call_with_other_than_one_message_is_invalid(
    grpcio: GrpcioClient, count: int
) -> None:
    """A client-streaming call sent to a unary method: malformed, so INVALID_ARGUMENT,
    every time (a race with the rest of the stream must not turn it into
    CANCELLED or a dropped connection)."""
    streaming = grpcio.data_channel.stream_unary(method_path("Get"))
    body = pb.GetRequest(key=SENTINEL_KEY).SerializeToString()

    def send() -> grpc.StatusCode:
        try:
            streaming(iter([body] * count), timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == INVALID_ARGUMENT:
                assert_clear_message(exc.details())
            return exc.code()
        return grpc.StatusCode.OK

    with trio.fail_after(20):
        codes = Counter([await trio.to_thread.run_sync(send) for _ in range(20)])
        assert codes == {INVALID_ARGUMENT: 20}
        await assert_still_serving(grpcio)


# Bodies chosen by hand for the parser's edge cases; each goes to every method.
TRICKY_BODIES = [
    b"",  # every field at its default
    b"\xff\xff\xff",  # a tag that never ends
    b"\x00",  # field number 0, which protobuf forbids
    b"\x0a",  # a length-delimited field without its length
    b"\x0a\x05ab",  # a length running past the end
    b"\x0a\xff\xff\xff\xff\x0f",  # a 4 GiB length
    b"\x08" + b"\xff" * 10 + b"\x01",  # a varint longer than 10 bytes
    b"\x0b",  # a group that never ends
    b"\x0c",  # an end-group tag outside any group
    b"\x1b" * 200 + b"\x1c" * 200,  # groups nested past the parser's depth limit
    b"\x0a\x00",  # Upsert: one entry with an empty key; Get/Remove: an empty key
    b"\xfa\xff\xff\xff\x0f\x00",  # the largest field number, unknown to every type
    b"\x0d\x01\x02",  # a fixed32 cut short
    b"\x0a\x03\x0a\x01k" * 3,  # Upsert: three entries with key "k"; Get: key "\nk"...
]

ACCEPTABLE = {grpc.StatusCode.OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED}


def _mangled(pairs: list[tuple[bytes, bytes]], cut: int) -> bytes:
    return upsert_request(dict(pairs)).SerializeToString()[:cut]


# Random bytes rarely parse, so half the bodies start as well-formed messages,
# some cut short: those reach the handlers, not only the parser.
BODIES = st.one_of(
    st.binary(max_size=64),
    st.builds(
        _mangled,
        st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=4),
        st.integers(min_value=0, max_value=80),
    ),
)


async def test_random_bodies_never_break_the_server(grpcio: GrpcioClient) -> None:
    """Any body to any DataPlane method is answered OK (it happened to parse) or
    refused as the caller's fault, never INTERNAL, UNKNOWN or CANCELLED, and the
    connection keeps serving."""
    methods = {m: raw_method(grpcio.data_channel, method_path(m)) for m in DATA_METHODS}
    partition_map = methods["PartitionMap"]
    seen: Counter[grpc.StatusCode] = Counter()

    def check(method: str, body: bytes) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            methods[method](body, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
        assert code in ACCEPTABLE, (method, body, code, details)
        if code != grpc.StatusCode.OK:
            assert_clear_message(details)
        seen[code] += 1
        partition_map(b"", timeout=CALL_TIMEOUT)  # raises if the connection broke

    # Hypothesis runs in a worker thread: its examples make blocking grpcio
    # calls, and the server they call runs on this test's Trio loop.
    @settings(max_examples=50, deadline=None, database=None, derandomize=True)
    @given(method=st.sampled_from(DATA_METHODS), body=BODIES)
    def random_bodies(method: str, body: bytes) -> None:
        check(method, body)

    def run_all() -> None:
        for body in TRICKY_BODIES:
            for method in DATA_METHODS:
                check(method, body)
        # A seeded stream of plain noise as well, bigger than Hypothesis draws.
        rng = random.Random(20240601)
        for _ in range(20):
            check(rng.choice(DATA_METHODS), rng.randbytes(rng.randrange(1, 4096)))
        random_bodies()

    with trio.fail_after(60):
        await trio.to_thread.run_sync(run_all)
        # Both outcomes were exercised, so the bodies reached past the parser.
        assert seen[grpc.StatusCode.OK] > 0
        assert seen[INVALID_ARGUMENT] > 0
        await assert_still_serving(grpcio)
