"""Fuzz: random and malformed payloads, as raw bytes, to every method of
every service on both ports (the methods come from the service descriptors).

The server must never crash and never answer INTERNAL or UNKNOWN (the mark
of an error nobody mapped), and every status message it sends is one clear
sentence. The server runs as a subprocess so that a crash is a crash; its
log must hold no traceback at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkv.rpc.health import HEALTH_SERVICE
from mkv.rpc.reflection import REFLECTION_VERSIONS
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE
from tests.grpcio_stubs import assert_clear_message

_LISTENING = re.compile(r"mkv: (data|control) plane listening on (\S+)")
STANDARD = [HEALTH_SERVICE, *REFLECTION_VERSIONS]


@attrs.frozen
class Target:
    port: str  # "data" or "control"
    path: str
    input_type: Descriptor
    client_streaming: bool
    server_streaming: bool

    def __str__(self) -> str:
        return f"{self.port}:{self.path}"


def targets() -> list[Target]:
    pool = descriptor_pool.Default()
    found = []
    for port, services in (
        ("data", [DATA_SERVICE, *STANDARD]),
        ("control", [CONTROL_SERVICE, *STANDARD]),
    ):
        for service in services:
            for method in pool.FindServiceByName(service).methods:
                found.append(
                    Target(
                        port,
                        f"/{service}/{method.name}",
                        method.input_type,
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return found


TARGETS = targets()


@attrs.frozen
class Server:
    process: subprocess.Popen[str]
    stderr: Path
    channels: dict[str, grpc.Channel]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("fuzz")
    config = directory / "mkv.toml"
    # The fuzzer is not to be slowed by the control plane's rate limit.
    config.write_text(
        "control_rate = 100000.0\ncontrol_burst = 100000\nstream_stall_timeout = 2.0\n"
    )
    stderr = directory / "stderr.log"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mkv.cli.server",
                "serve",
                "--config",
                str(config),
                "--data-addr",
                "127.0.0.1:0",
                "--control-addr",
                "127.0.0.1:0",
                "--data-dir",
                str(directory / "data"),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    while len(addresses) < 2:
        line = process.stdout.readline()
        assert line, f"mkv serve exited: {stderr.read_text()}"
        if match := _LISTENING.search(line):
            addresses[match[1]] = match[2]
    channels = {port: grpc.insecure_channel(address) for port, address in addresses.items()}
    try:
        yield Server(process, stderr, channels)
    finally:
        for channel in channels.values():
            channel.close()
        alive = process.poll() is None
        process.terminate()
        code = process.wait(timeout=30)
        process.stdout.close()
        log = stderr.read_text()
        assert alive, f"the server died during fuzzing:\n{log}"
        assert code == 0, log
        assert "Traceback" not in log, log


# -- payloads ----------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_wire_field = st.tuples(
    st.integers(1, 40),
    st.sampled_from([0, 1, 2, 5]),
    st.binary(max_size=64),
    st.integers(0, 2**64 - 1),
)


@st.composite
def wire_messages(draw: st.DrawFn) -> bytes:
    """Well-framed protobuf wire data with arbitrary field numbers and types."""
    out = b""
    for number, wire_type, data, n in draw(st.lists(_wire_field, max_size=8)):
        out += _varint(number << 3 | wire_type)
        if wire_type == 0:
            out += _varint(n)
        elif wire_type == 1:
            out += n.to_bytes(8, "little")
        elif wire_type == 2:
            out += _varint(len(data)) + data
        else:
            out += (n & 0xFFFFFFFF).to_bytes(4, "little")
    return out


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=40),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=80),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_ENUM: st.integers(-3, 20),  # unknown values too
}


def typed_messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[bytes]:
    """Valid messages of the method's own type with random field values."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        message: Message = GetMessageClass(descriptor)()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth >= 2 or field.message_type.GetOptions().map_entry:
                    continue
                sub = draw(typed_messages(field.message_type, depth + 1))
                if field.is_repeated:
                    getattr(message, field.name).add().MergeFromString(sub)
                else:
                    getattr(message, field.name).MergeFromString(sub)
                continue
            strategy = _SCALARS.get(field.type)
            if strategy is None:
                continue
            if field.is_repeated:
                getattr(message, field.name).extend(draw(st.lists(strategy, max_size=5)))
            else:
                setattr(message, field.name, draw(strategy))
        return message.SerializeToString()

    return build()


@st.composite
def cases(draw: st.DrawFn) -> tuple[Target, bytes]:
    target = draw(st.sampled_from(TARGETS))
    payload = draw(
        st.one_of(
            st.binary(max_size=200),
            wire_messages(),
            typed_messages(target.input_type),
            # A valid message cut short, or with a byte changed.
            typed_messages(target.input_type).flatmap(
                lambda raw: st.integers(0, max(0, len(raw) - 1)).map(lambda i: raw[:i])
            ),
            typed_messages(target.input_type).flatmap(
                lambda raw: st.tuples(
                    st.integers(0, max(0, len(raw) - 1)), st.integers(0, 255)
                ).map(lambda change: raw[: change[0]] + bytes([change[1]]) + raw[change[0] + 1 :])
            ),
        )
    )
    return target, payload


def send(server: Server, target: Target, payload: bytes) -> None:
    """One call; raises grpc.RpcError for a non-OK status."""
    channel = server.channels[target.port]
    if target.client_streaming:
        method = channel.stream_stream(target.path)
        list(method(iter([payload, payload]), timeout=2))
    elif target.server_streaming:
        # A valid Watch may stream for ever: only its first answers count.
        method = channel.unary_stream(target.path)
        responses = method(payload, timeout=0.5)
        for count, _ in enumerate(responses):
            if count >= 3:
                responses.cancel()
                break
    else:
        channel.unary_unary(target.path)(payload, timeout=5)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_random_payloads_to_every_method_never_break_the_server(
    server: Server, case: tuple[Target, bytes]
) -> None:
    target, payload = case
    error: Any = None
    try:
        send(server, target, payload)
    except grpc.RpcError as exc:
        error = exc
    if error is None:
        return
    code = error.code()
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        # The client's own timeout or cancel (streams that would go on).
        assert target.server_streaming, (str(target), code)
        return
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        str(target),
        error.details(),
    )
    assert_clear_message(error.details())


def test_every_method_is_fuzzed() -> None:
    """The fuzz target list comes from the descriptors: both ports, all services."""
    paths = {str(t) for t in TARGETS}
    assert f"control:/{CONTROL_SERVICE}/AddPartition" in paths
    assert f"data:/{DATA_SERVICE}/Watch" in paths
    assert "data:/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in paths
    assert len(TARGETS) >= 2 * (3 + 1) + 8
