"""The server's log: JSON lines with the documented fields, errors with their
method, partition and status, and never a value, a token or a raw key."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from purerpc.grpclib.status import Status, StatusCode

import mkv
from mkv.observe.logs import ERROR_LINES_PER_WINDOW, ERROR_WINDOW_SECONDS, RequestLog
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import GrpcioStubs, call_error, connect
from tests.processes import ServerProcess

TIMEOUT = 60
SECRET_VALUE = b"VALUE-d41d8cd98f00b204e9800998ecf8427e"
SECRET_TOKEN = "TOKEN-5f4dcc3b5aa765d61d8327deb882cf99"
# Long enough that only a bounded prefix of it may appear anywhere.
LONG_KEY = b"key-" + b"k" * 200 + b"-TAIL-c4ca4238a0b923820dcc509a6f75849b"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON (failing the test on one that is not)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    return [json.loads(line) for line in lines]


async def exercise(server: ServerProcess, stubs: GrpcioStubs) -> None:
    """Traffic that puts the secrets in front of the server, and fails on them."""
    async with mkv.Client.connect(server.data_addr) as client:
        await client.upsert({LONG_KEY: SECRET_VALUE})
        # Not a counter: FAILED_PRECONDITION, with the key in the message.
        with pytest.raises(mkv.FailedPreconditionError):
            await client.increment(LONG_KEY)
        with pytest.raises(mkv.ConditionFailedError):
            await client.upsert({LONG_KEY: b"x"}, if_value={LONG_KEY: SECRET_VALUE + b"!"})
    with connect(stubs, server.data_addr, server.control_addr) as grpcio:
        # A token in the metadata, on a call that fails and is logged.
        error = await call_error(
            lambda request, timeout: grpcio.data.Get(
                request, timeout=timeout, metadata=[("authorization", f"Bearer {SECRET_TOKEN}")]
            ),
            pb.GetRequest(key=b""),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_json_logs_are_structured_and_hold_no_secrets(
    tmp_path: Path, stubs: GrpcioStubs
) -> None:
    server = ServerProcess(tmp_path / "data", "--log-format", "json", "--log-level", "DEBUG")
    with trio.fail_after(TIMEOUT):
        await server.start()
        try:
            await exercise(server, stubs)
        finally:
            assert await server.stop() == 0
    stderr = server.stderr()
    lines = json_lines(stderr)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["time"].endswith("Z")

    events = [line.get("event") for line in lines]
    for event in (
        "node_starting",
        "partition_started",
        "listening",
        "signal",
        "drain",
        "partition_stopped",
        "node_stopped",
    ):
        assert event in events, f"no {event} line in {events}"
    started = next(line for line in lines if line.get("event") == "partition_started")
    assert started["partition"] == "default"

    errors = [line for line in lines if line.get("event") == "request_error"]
    increment = next(line for line in errors if line["method"] == "Increment")
    assert increment["service"] == "mkv.v1.DataPlane"
    assert increment["partition"] == "default"
    assert increment["code"] == "FAILED_PRECONDITION"
    assert increment["level"] == "INFO"
    assert "not a counter" in increment["message"]
    get = next(line for line in errors if line["method"] == "Get")
    assert get["code"] == "INVALID_ARGUMENT"
    assert get["partition"] is None  # refused before it was routed

    for text in (stderr, server.stderr_path.read_text()):
        assert SECRET_VALUE.decode() not in text
        assert SECRET_TOKEN not in text
        assert "-TAIL-" not in text  # the key appears only cut short
        assert "k" * 60 not in text


async def test_human_logs_by_default(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    with trio.fail_after(TIMEOUT):
        await server.start()
        assert await server.stop() == 0
    lines = server.stderr().splitlines()
    assert any(" INFO mkv.server: serving data plane on " in line for line in lines), lines
    assert not any(line.startswith("{") for line in lines)


async def test_a_bad_log_format_is_a_configuration_error(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--log-level", "CHATTY")
    with trio.fail_after(TIMEOUT), pytest.raises(RuntimeError, match="log level"):
        await server.start()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_request_log_limits_repeated_errors(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    request_log = RequestLog(clock=clock)
    status = Status(StatusCode.ABORTED, "A write this one depended on failed.")
    with caplog.at_level(logging.INFO, logger="mkv.requests"):
        for _ in range(ERROR_LINES_PER_WINDOW + 15):
            request_log.call_finished("svc", "Upsert", status, 0.001)
        # Another status of the same method has a budget of its own.
        request_log.call_finished("svc", "Upsert", Status(StatusCode.INTERNAL, "Oops."), 0.001)
        clock.now += ERROR_WINDOW_SECONDS
        request_log.call_finished("svc", "Upsert", status, 0.001)
    records = caplog.records
    assert len(records) == ERROR_LINES_PER_WINDOW + 2
    assert records[ERROR_LINES_PER_WINDOW].levelno == logging.ERROR
    last = records[-1]
    assert last.getMessage().endswith("(15 more like it not logged)")
    assert last.__dict__["suppressed"] == 15


def test_request_log_reports_slow_unary_calls_only(caplog: pytest.LogCaptureFixture) -> None:
    request_log = RequestLog(slow_seconds=0.5)
    request_log.declare("svc", "Get", streaming=False)
    request_log.declare("svc", "Watch", streaming=True)
    ok = Status(StatusCode.OK)
    with caplog.at_level(logging.INFO, logger="mkv.requests"):
        request_log.call_finished("svc", "Get", ok, 0.1)
        request_log.call_finished("svc", "Get", ok, 0.7)
        request_log.call_finished("svc", "Watch", ok, 3600.0)
    [slow] = caplog.records
    assert slow.levelno == logging.WARNING
    assert slow.getMessage() == "svc/Get took 0.700 s"
    assert slow.__dict__["event"] == "request_slow"
