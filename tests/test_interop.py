"""Interoperability with clients that keep HTTP/2's default windows and with
clients that send malformed request headers (issue 12, items 1 and 2).

grpcio auto-tunes its flow-control windows, so it never finds a server that
waits for more window than a client grants by default; grpc-js (Node) keeps
65,535 bytes per stream and per connection. The raw h2 client here does the
same, and a real grpc-js client runs too (tests/js)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import h2.errors
import h2.events
import pytest
import trio

import mkv
from mkv.rpc.server import RpcServer
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE, parse_address
from tests.h2_raw import RawH2, grpc_frame

GET = f"/{DATA_SERVICE}/Get"
# HTTP/2's initial window, which grpc-js never raises.
DEFAULT_WINDOW = 65_535


def get_body(key: bytes) -> bytes:
    return grpc_frame(pb.GetRequest(key=key).SerializeToString())


def parse_get(body: bytes) -> pb.GetResponse:
    """The one GetResponse a Get's response body holds (5 bytes of gRPC framing first)."""
    assert body[0] == 0
    assert int.from_bytes(body[1:5], "big") == len(body) - 5
    return pb.GetResponse.FromString(body[5:])


async def test_default_windows_get_values_larger_than_the_window(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    values = {b"64k": b"a" * 64 * 1024, b"500k": bytes(range(256)) * 2000}
    await mkv_client.upsert(values)
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            assert raw.conn.local_settings.initial_window_size == DEFAULT_WINDOW
            for key, value in values.items():
                started = time.perf_counter()
                body, code, message = await raw.response(await raw.call(GET, get_body(key)))
                assert (code, message) == (0, "")
                got = parse_get(body)
                assert got.found
                assert got.value == value
                print(f"Get of {len(value)} bytes: {time.perf_counter() - started:.3f}s")
        finally:
            await raw.aclose()


async def test_default_windows_ten_concurrent_gets_of_60k(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    value = b"v" * 60 * 1024
    await mkv_client.upsert({b"60k": value})
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            started = time.perf_counter()
            streams = [await raw.call(GET, get_body(b"60k")) for _ in range(10)]
            for stream_id in streams:
                body, code, message = await raw.response(stream_id)
                assert (code, message) == (0, "")
                assert parse_get(body).value == value
            print(f"10 concurrent Gets of 60 KiB: {time.perf_counter() - started:.3f}s")
        finally:
            await raw.aclose()


# -- a real grpc-js client ---------------------------------------------------

JS_DIR = Path(__file__).parent / "js"
PROTOS = Path(__file__).parent.parent / "protos"


async def js_client_ready() -> Path:
    """The node executable, once tests/js/node_modules matches the lock file
    (``npm ci`` runs only when it does not: the result is cached).

    Skips when node or npm is missing, except under CI=true, where the test
    must run (CI installs both)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are required under CI=true (tests/js needs them)")
        pytest.skip("node/npm not installed: the grpc-js interoperability test needs them")
    lock = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = JS_DIR / "node_modules" / ".mkv-lock-sha256"
    if not stamp.exists() or stamp.read_text() != lock:
        with trio.fail_after(300):
            await trio.run_process(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR,
                capture_stdout=True,
                capture_stderr=True,
            )
        stamp.write_text(lock)
    return Path(node)


async def test_grpc_js_with_default_options_reads_large_values(mkv_node: mkv.Node) -> None:
    """Upsert and Get of 64 KiB and 500 KiB values, then 10 concurrent Gets of
    60 KiB, from grpc-js with its default 65,535-byte windows (each call has a
    15 s deadline, which every one of them hit before the fix)."""
    node = await js_client_ready()
    with trio.fail_after(60):
        done = await trio.run_process(
            [str(node), "interop.js", str(mkv_node.data_address), str(PROTOS)],
            cwd=JS_DIR,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    print("grpc-js:", report["steps"])
    assert report["ok"], report["steps"]
    for name, step in report["steps"].items():
        assert step["seconds"] < 10, (name, step)


# -- malformed request headers -----------------------------------------------

INVALID_ARGUMENT, UNIMPLEMENTED = 3, 12

# header → (value sent, grpc-status, HTTP status, a word the message must hold)
MALFORMED = {
    "timeout abc": ({"grpc-timeout": "abc"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout empty": ({"grpc-timeout": ""}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout 11 digits": ({"grpc-timeout": "99999999999H"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout NUL": ({"grpc-timeout": "5\0S"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout 30 digits": ({"grpc-timeout": "1" * 30}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout no unit": ({"grpc-timeout": "5"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout unknown unit": ({"grpc-timeout": "5s"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "timeout negative": ({"grpc-timeout": "-5S"}, INVALID_ARGUMENT, 200, "grpc-timeout"),
    "content-type text/html": ({"content-type": "text/html"}, INVALID_ARGUMENT, 415, "content"),
    "content-type empty": ({"content-type": ""}, INVALID_ARGUMENT, 415, "content-type"),
    "content-type missing": ({"content-type": None}, INVALID_ARGUMENT, 415, "content-type"),
    "content-type grpc-web": (
        {"content-type": "application/grpc-web"},
        INVALID_ARGUMENT,
        415,
        "content-type",
    ),
    "path /nope": ({":path": "/nope"}, UNIMPLEMENTED, 200, "/nope"),
    "path *": ({":path": "*"}, UNIMPLEMENTED, 200, "path"),
    "path too deep": ({":path": f"/{DATA_SERVICE}/Get/x"}, UNIMPLEMENTED, 200, "path"),
    "method GET": ({":method": "GET"}, UNIMPLEMENTED, 405, "POST"),
    "scheme ftp": ({":scheme": "ftp"}, INVALID_ARGUMENT, 200, "scheme"),
    "te missing": ({"te": None}, INVALID_ARGUMENT, 200, "te"),
    "binary metadata not base64": ({"x-trace-bin": "%%%"}, INVALID_ARGUMENT, 200, "base64"),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_headers_are_answered_on_their_stream_alone(
    case: str, mkv_node: mkv.Node, mkv_client: mkv.Client, caplog: pytest.LogCaptureFixture
) -> None:
    replace, code, http_status, word = MALFORMED[case]
    await mkv_client.upsert({b"k": b"v"})
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            # A call in flight on the same connection: its body is not sent yet.
            pending = raw.start_call(GET)
            await raw.flush()
            bad = await raw.call(GET, get_body(b"k"), replace=replace)
            headers = await raw.final_headers(bad)
            assert int(headers[":status"]) == http_status
            assert int(headers["grpc-status"]) == code
            message = urllib.parse.unquote(headers["grpc-message"])
            assert word in message
            # The other call goes on, and new ones start, on the same connection.
            raw.conn.send_data(pending, get_body(b"k"), end_stream=True)
            await raw.flush()
            body, status, _ = await raw.response(pending)
            assert status == 0
            assert parse_get(body).value == b"v"
            body, status, _ = await raw.response(await raw.call(GET, get_body(b"k")))
            assert (status, parse_get(body).value) == (0, b"v")
            assert not raw.closed
        finally:
            await raw.aclose()
    assert any("malformed headers" in r.getMessage() for r in caplog.records), caplog.records


async def test_repeated_headers_and_a_request_without_body_keep_the_connection(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    """Headers purerpc reads as one value, sent twice, and a unary call whose
    headers end the request (no message at all)."""
    await mkv_client.upsert({b"k": b"v"})
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            for name, value in [("content-type", "application/grpc"), ("grpc-timeout", "5S")]:
                bad = await raw.call(GET, get_body(b"k"), metadata=[(name, value), (name, value)])
                code, message = await raw.status(bad)
                assert code == INVALID_ARGUMENT
                assert "repeated" in message
            empty = raw.start_call(GET, end=True)
            await raw.flush()
            code, message = await raw.status(empty)
            assert code == INVALID_ARGUMENT
            assert "one request message" in message
            body, status, _ = await raw.response(await raw.call(GET, get_body(b"k")))
            assert (status, parse_get(body).value) == (0, b"v")
        finally:
            await raw.aclose()


async def test_well_formed_timeouts_in_every_unit_are_accepted(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    await mkv_client.upsert({b"k": b"v"})
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            for timeout in ["99999999H", "1M", "30S", "5000m", "5000000u", "99999999n"]:
                _, status, message = await raw.response(
                    await raw.call(GET, get_body(b"k"), replace={"grpc-timeout": timeout})
                )
                assert (status, message) == (0, ""), timeout
            # Well formed and already over: the deadline, not the format, answers.
            stream_id = await raw.call(GET, get_body(b"k"), replace={"grpc-timeout": "1n"})
            assert (await raw.status(stream_id))[0] == 4  # DEADLINE_EXCEEDED
        finally:
            await raw.aclose()


@pytest.mark.parametrize(
    "header",
    [
        ("X-Upper", "v"),  # HTTP/2 header names are lowercase
        ("connection", "keep-alive"),  # connection-specific: not in HTTP/2
        ("x-latin1", b"caf\xe9"),  # not UTF-8
    ],
)
async def test_requests_malformed_for_http2_reset_their_stream_alone(
    header: tuple[str, str | bytes], mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    """h2 itself refuses these; HTTP/2 makes a malformed request a stream
    error (RST_STREAM PROTOCOL_ERROR), not a connection error."""
    await mkv_client.upsert({b"k": b"v"})
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            raw.conn.config.validate_outbound_headers = False
            raw.conn.config.normalize_outbound_headers = False
            pending = raw.start_call(GET)
            await raw.flush()
            bad = await raw.call(GET, get_body(b"k"), metadata=[header])  # type: ignore[list-item]
            reset = await raw.receive_until(
                lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == bad
            )
            assert reset.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR  # type: ignore[attr-defined]
            raw.conn.send_data(pending, get_body(b"k"), end_stream=True)
            await raw.flush()
            body, status, _ = await raw.response(pending)
            assert (status, parse_get(body).value) == (0, b"v")
            body, status, _ = await raw.response(await raw.call(GET, get_body(b"k")))
            assert (status, parse_get(body).value) == (0, b"v")
        finally:
            await raw.aclose()


async def test_a_slow_reader_with_default_windows_is_not_taken_for_a_stalled_one() -> None:
    """The stall timeout counts from the last window the client granted, not
    from the start of a message: a 500 KiB answer read in 0.1 s steps takes
    well over the 0.5 s timeout, and arrives whole."""
    value = bytes(range(256)) * 2000

    async def big_get(request: pb.GetRequest) -> pb.GetResponse:
        return pb.GetResponse(found=True, value=value)

    server = RpcServer(
        DATA_SERVICE,
        {"Get": (pb.GetRequest, big_get)},
        parse_address("127.0.0.1:0"),
        stream_stall_timeout=0.5,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            with trio.fail_after(20):
                raw = await RawH2.connect(str(server.address))
                try:
                    started = trio.current_time()
                    stream_id = await raw.call(GET, get_body(b"k"))
                    while not any(
                        isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
                        and e.stream_id == stream_id
                        for e in raw.events
                    ):
                        assert not raw.closed
                        await raw.receive()
                        await trio.sleep(0.1)
                    assert not any(isinstance(e, h2.events.StreamReset) for e in raw.events)
                    assert trio.current_time() - started > 1.0
                    body, code, message = await raw.response(stream_id)
                    assert (code, message) == (0, "")
                    assert parse_get(body).value == value
                finally:
                    await raw.aclose()
        finally:
            server.stop()
