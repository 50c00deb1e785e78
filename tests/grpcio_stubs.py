"""grpcio stubs generated from protos/ alone, and helpers to call them from Trio tests.

The API promises that any gRPC client can use mkv from the ``.proto`` files
alone, so the interop tests do not use mkv's own client code at all: they run
``grpc_tools.protoc`` on ``protos/`` and talk to the server through grpcio's
C-core client.

Only the ``*_pb2_grpc`` service modules are generated here. They import the
message modules by proto path (``from mkv.v1 import data_pb2``), and the
``_pb2`` modules in ``mkv/v1`` are that very protoc output from the same
protos (``tests/test_protos.py`` keeps them fresh), so the stubs reuse ours
rather than shadowing the ``mkv`` package with a second copy.

The in-process server runs on the test's Trio loop, so a blocking grpcio call
made on that thread would deadlock: every call goes through
``trio.to_thread.run_sync``, with a grpcio deadline so that no worker thread
outlives its test even when the server hangs.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import grpc
import trio

__all__ = [
    "CALL_TIMEOUT",
    "FORBIDDEN_IN_MESSAGES",
    "GrpcioClient",
    "GrpcioStubs",
    "assert_clear_message",
    "call",
    "call_error",
    "connect",
    "generate_stubs",
    "grpcio_channel",
    "raw_method",
]

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"

# Deadline of one grpcio call; far above what a local call takes, far below
# the tests' own fail_after bounds, so a hang shows up as DEADLINE_EXCEEDED.
CALL_TIMEOUT = 10.0

# Module names of the loaded stubs are unique per load: loading twice (two
# test modules, or a re-run in one process) never returns a stale module.
_load_counter = itertools.count()


@attrs.frozen
class GrpcioStubs:
    """The generated ``data_pb2_grpc`` and ``control_pb2_grpc`` modules."""

    data: ModuleType
    control: ModuleType

    def data_stub(self, channel: grpc.Channel) -> Any:
        return self.data.DataPlaneStub(channel)

    def control_stub(self, channel: grpc.Channel) -> Any:
        return self.control.ControlPlaneStub(channel)


def generate_stubs(out_dir: Path) -> GrpcioStubs:
    """Run protoc's grpcio plugin on ``protos/`` into ``out_dir`` and load the result.

    Raises:
        RuntimeError: protoc failed; its output is in the message.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTOS}",
            f"--grpc_python_out={out_dir}",
            "mkv/v1/data.proto",
            "mkv/v1/control.proto",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed: {result.stdout}{result.stderr}")
    return GrpcioStubs(
        data=_load(out_dir / "mkv" / "v1" / "data_pb2_grpc.py"),
        control=_load(out_dir / "mkv" / "v1" / "control_pb2_grpc.py"),
    )


def _load(path: Path) -> ModuleType:
    # Loaded straight from its file: neither sys.path nor sys.modules changes,
    # so nothing generated here can shadow the real mkv package.
    name = f"_mkv_grpcio_{path.stem}_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@attrs.frozen
class GrpcioClient:
    """grpcio channels to a node's two ports, and the generated stubs on them."""

    data_channel: grpc.Channel
    control_channel: grpc.Channel
    data: Any  # a DataPlaneStub
    control: Any  # a ControlPlaneStub


@contextmanager
def connect(
    stubs: GrpcioStubs, data_address: object, control_address: object
) -> Iterator[GrpcioClient]:
    """grpcio channels to both ports of a node, closed afterwards."""
    with grpcio_channel(data_address) as data, grpcio_channel(control_address) as control:
        yield GrpcioClient(data, control, stubs.data_stub(data), stubs.control_stub(control))


@contextmanager
def grpcio_channel(
    address: object, options: list[tuple[str, Any]] | None = None
) -> Iterator[grpc.Channel]:
    """An insecure grpcio channel to ``address`` ("HOST:PORT"), closed afterwards
    (an unclosed channel is a ResourceWarning, which fails the test)."""
    channel = grpc.insecure_channel(str(address), options=options)
    try:
        yield channel
    finally:
        channel.close()


def raw_method(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable:
    """A unary method that sends and returns raw bytes: no serializer means
    grpcio puts the request bytes on the wire exactly as given."""
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


async def call(method: Callable[..., Any], request: Any) -> Any:
    """Make one blocking grpcio call off the Trio thread and return its response.

    Raises:
        grpc.RpcError: the server answered a status other than OK.
    """
    return await trio.to_thread.run_sync(functools.partial(method, request, timeout=CALL_TIMEOUT))


async def call_error(method: Callable[..., Any], request: Any) -> grpc.RpcError:
    """Make a call that must fail, and return the error (code() and details())."""
    try:
        response = await call(method, request)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected an error status, got a response: {response!r}")


# What a stack trace or a Python repr leaves in a status message.
FORBIDDEN_IN_MESSAGES = (
    "Traceback",
    'File "',
    "<class",
    "exc_info",
    "object at 0x",
    "Error(",
)
# A bytes repr (b'...'); not a b that ends a word or an escape such as a
# str repr's \U0003203b, which the fuzzer once sent as a store kind.
BYTES_REPR = re.compile(r"(?<![\w\\])b['\"]")


def assert_clear_message(message: str | None) -> None:
    """The status message is one short sentence for a person (api.md, Errors)."""
    assert message, "the status carries no message"
    assert "\n" not in message, f"a multi-line message: {message!r}"
    assert len(message) <= 300, f"a {len(message)}-character message"
    assert message[0].isupper(), f"not a sentence: {message!r}"
    assert message.endswith("."), f"not a sentence: {message!r}"
    for marker in FORBIDDEN_IN_MESSAGES:
        assert marker not in message, f"{marker!r} in the message: {message!r}"
    assert not BYTES_REPR.search(message), f"a bytes repr in the message: {message!r}"
