"""The request-header rules (mkv/rpc/request_headers.py), without a network, and
the grpc-timeout mkv's own client sends."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection
from purerpc.grpclib.status import StatusCode

import mkv
from mkv.rpc.request_headers import check_request_headers, grpc_timeout, parse_timeout
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE

GOOD = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/mkv.v1.DataPlane/Get"),
    (":authority", "mkv"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
]


def with_header(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in GOOD if n != name] + [(name, value)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0S", 0.0),
        ("1H", 3600.0),
        ("2M", 120.0),
        ("30S", 30.0),
        ("250m", 0.25),
        ("7u", 7e-6),
        ("99999999n", 0.099999999),
        ("99999999H", 99999999 * 3600.0),
    ],
)
def test_well_formed_timeouts_parse(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)
    assert check_request_headers(with_header("grpc-timeout", value)) is None


@pytest.mark.parametrize(
    "value", ["", "S", "abc", "5", "5s", "5SS", " 5S", "-5S", "+5S", "5\0S", "1" * 30, "٣S"]
)
def test_malformed_timeouts_are_invalid_argument(value: str) -> None:
    with pytest.raises(ValueError, match="malformed grpc-timeout"):
        parse_timeout(value)
    rejection = check_request_headers(with_header("grpc-timeout", value))
    assert rejection is not None
    assert rejection.code is StatusCode.INVALID_ARGUMENT
    assert rejection.http_status == 200


def test_more_than_eight_digits_is_malformed() -> None:
    assert check_request_headers(with_header("grpc-timeout", "12345678S")) is None
    assert check_request_headers(with_header("grpc-timeout", "123456789S")) is not None


@pytest.mark.parametrize(
    "value", ["application/grpc", "application/grpc+proto", "application/grpc; charset=utf-8"]
)
def test_grpc_content_types_are_served(value: str) -> None:
    assert check_request_headers(with_header("content-type", value)) is None


@pytest.mark.parametrize(
    "value", ["", "text/html", "application/grpc+json", "application/grpc-web", "application/json"]
)
def test_other_content_types_are_http_415(value: str) -> None:
    rejection = check_request_headers(with_header("content-type", value))
    assert rejection is not None
    assert rejection.http_status == 415


@pytest.mark.parametrize("path", ["", "*", "/", "/nope", "//Get", "/svc/", "/a/b/c", "nope/x"])
def test_paths_naming_no_method_are_unimplemented(path: str) -> None:
    rejection = check_request_headers(with_header(":path", path))
    assert rejection is not None
    assert rejection.code is StatusCode.UNIMPLEMENTED


def test_binary_metadata_must_be_base64() -> None:
    assert check_request_headers([*GOOD, ("x-id-bin", "AAEC")]) is None
    assert check_request_headers([*GOOD, ("x-id-bin", "AAE,AAEC")]) is None
    for bad in ["A", "%%", "AAEC,A"]:
        assert check_request_headers([*GOOD, ("x-id-bin", bad)]) is not None, bad


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (0.0, "0S"),
        (-1.0, "0S"),
        (5.0, "5S"),
        (1e-9, "1u"),
        (0.25, "250000u"),
        (99.999999, "99999999u"),
        (100.5, "101S"),
        (12345.678, "12346S"),
        (10.0**9, "99999999S"),
    ],
)
def test_the_client_writes_timeouts_within_eight_digits(seconds: float, header: str) -> None:
    """What purerpc's request writer makes of ``grpc_timeout(seconds)``."""
    client = GRPCConnection(GRPCConfiguration(client_side=True))
    client.initiate_connection()
    client.start_request(
        client.get_next_available_stream_id(),
        "http",
        "s",
        "m",
        authority="mkv",
        timeout=grpc_timeout(seconds),
    )
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    server.initiate_connection()
    (request,) = [
        e
        for e in server.receive_data(client.data_to_send())
        if isinstance(e, h2.events.RequestReceived)
    ]
    assert dict(request.headers)["grpc-timeout"] == header


async def test_long_client_timeouts_reach_the_server_well_formed(mkv_client: mkv.Client) -> None:
    """100.5 s would be 9 digits of microseconds, which the server refuses."""
    await mkv_client.upsert({b"k": b"v"})
    with trio.fail_after(20):
        for seconds in (100.5, 12345.678, 10.0**9):
            got = await mkv_client._channel.unary(
                DATA_SERVICE, "Get", pb.GetRequest(key=b"k"), pb.GetResponse, grpc_timeout=seconds
            )
            assert got.value == b"v"
