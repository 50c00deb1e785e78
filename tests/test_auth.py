"""Tokens: every control-plane method refuses a call without the right token.

The matrix is built from the service descriptor, so a method added to
control.proto later without the guard makes this test fail.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trio

import mkv
from mkv.cli import ctl
from mkv.node.config import Config, ConfigError
from mkv.rpc.auth import TokenCheck, is_loopback, load_token
from mkv.rpc.server import CallInfo
from mkv.testing import running_node
from mkv.v1 import control_pb2, data_pb2
from mkv.wire import CONTROL_SERVICE, DATA_SERVICE
from tests.grpcio_stubs import (
    assert_clear_message,
    call_error,
    grpcio_channel,
    raw_method,
)
from tests.processes import ServerProcess

TOKEN = "correct-horse-battery-staple-7f3a"
CONTROL_METHODS = sorted(
    control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name.items()
)
DATA_METHODS = sorted(data_pb2.DESCRIPTOR.services_by_name["DataPlane"].methods_by_name.items())


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
async def guarded(tmp_path: Path, token_file: Path) -> AsyncIterator[mkv.Node]:
    async with running_node(tmp_path / "data", token_file=token_file, control_burst=1000) as node:
        yield node


def metadata_for(case: str) -> list[tuple[str, str]]:
    return {
        "none": [],
        "wrong": [("authorization", "Bearer not-the-token")],
        "not bearer": [("authorization", TOKEN)],
        "right": [("authorization", f"Bearer {TOKEN}")],
    }[case]


def request_for(method: object) -> bytes:
    """A harmless request of the method's input type: ListPartitions lists,
    RemovePartition names a partition that does not exist, AddPartition
    asks for a range the default partition already owns."""
    input_type = method.input_type  # type: ignore[attr-defined]
    message = control_pb2.__dict__[input_type.name]()
    if input_type.name == "RemovePartitionRequest":
        message.id = "no-such-partition"
    return bytes(message.SerializeToString())


@pytest.mark.parametrize(("name", "method"), CONTROL_METHODS, ids=[n for n, _ in CONTROL_METHODS])
@pytest.mark.parametrize("case", ["none", "wrong", "not bearer", "right"])
async def test_every_control_method_needs_the_token(
    guarded: mkv.Node, name: str, method: object, case: str
) -> None:
    with trio.fail_after(20), grpcio_channel(guarded.control_address) as channel:
        rpc = raw_method(channel, f"/{CONTROL_SERVICE}/{name}")
        metadata = metadata_for(case)
        body = request_for(method)
        if case == "right":
            try:
                await trio.to_thread.run_sync(lambda: rpc(body, timeout=10, metadata=metadata))
            except grpc.RpcError as exc:
                # Past the guard: whatever the method answers, it is not about auth.
                code = exc.code()
            else:
                code = grpc.StatusCode.OK
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            return
        with pytest.raises(grpc.RpcError) as refused:
            await trio.to_thread.run_sync(lambda: rpc(body, timeout=10, metadata=metadata))
        expected = (
            grpc.StatusCode.UNAUTHENTICATED if case == "none" else grpc.StatusCode.PERMISSION_DENIED
        )
        error = refused.value
        assert error.code() == expected  # type: ignore[attr-defined]
        assert_clear_message(error.details())  # type: ignore[attr-defined]
        assert TOKEN not in error.details()  # type: ignore[attr-defined]


async def test_refused_calls_change_nothing(guarded: mkv.Node) -> None:
    async with mkv.AdminClient.connect(guarded.control_address, token="wrong") as admin:
        with pytest.raises(mkv.PermissionDeniedError):
            await admin.add_partition(start=b"m", partition_id="m")
    async with mkv.AdminClient.connect(guarded.control_address, token=TOKEN) as admin:
        assert [p.id for p in await admin.list_partitions()] == ["default"]


async def test_data_plane_needs_no_token_unless_configured(guarded: mkv.Node) -> None:
    async with mkv.Client.connect(guarded.data_address) as client:
        await client.upsert({b"k": b"v"})
        assert await client.get(b"k") == b"v"


async def test_a_data_token_guards_every_data_method(tmp_path: Path) -> None:
    data_token = tmp_path / "data-token"
    data_token.write_text("data-secret\n")
    async with running_node(tmp_path / "data", data_token_file=data_token) as node:
        with trio.fail_after(20), grpcio_channel(node.data_address) as channel:
            for name, _ in DATA_METHODS:
                rpc = raw_method(channel, f"/{DATA_SERVICE}/{name}")
                error = await call_error(rpc, b"")
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, name
        async with mkv.Client.connect(node.data_address, token_file=data_token) as client:
            await client.upsert({b"k": b"v"})
        async with mkv.Client.connect(node.data_address, token="nope") as client:
            with pytest.raises(mkv.PermissionDeniedError):
                await client.get(b"k")
        # The control plane has no token of its own: loopback, unguarded.
        async with mkv.AdminClient.connect(node.control_address) as admin:
            assert len(await admin.list_partitions()) == 1


async def test_clients_read_the_token_from_the_environment(
    guarded: mkv.Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MKV_TOKEN", TOKEN)
    async with mkv.AdminClient.connect(guarded.control_address) as admin:
        assert len(await admin.list_partitions()) == 1
    monkeypatch.setenv("MKV_TOKEN", "wrong")
    async with mkv.AdminClient.connect(guarded.control_address) as admin:
        with pytest.raises(mkv.PermissionDeniedError):
            await admin.list_partitions()


async def test_mkvctl_reads_a_token_file_or_the_environment(
    guarded: mkv.Node, token_file: Path
) -> None:
    address = ["--control-addr", str(guarded.control_address)]

    async def mkvctl(*argv: str, env: dict[str, str]) -> tuple[int, str]:
        out, err = io.BytesIO(), io.StringIO()
        code = await ctl.run([*argv, *address], out, err, env)
        return code, err.getvalue()

    code, err = await mkvctl("partitions", "list", env={})
    assert code == 1
    assert "requires a token" in err
    # Says where mkvctl takes one from, not only the header a gRPC client sends.
    assert err.endswith("Give mkvctl the token with --token-file PATH or $MKV_TOKEN.\n")
    code, err = await mkvctl("partitions", "list", "--token-file", str(token_file), env={})
    assert (code, err) == (0, "")
    code, err = await mkvctl("partitions", "list", env={"MKV_TOKEN": TOKEN})
    assert (code, err) == (0, "")
    code, err = await mkvctl("partitions", "list", env={"MKV_TOKEN": "wrong"})
    assert code == 1
    assert "not the control plane's token" in err
    assert "--token-file PATH or $MKV_TOKEN" in err
    code, err = await mkvctl(
        "partitions", "list", "--token-file", str(token_file.parent / "missing"), env={}
    )
    assert code == 1
    assert "cannot read token file" in err


async def test_no_token_refuses_a_control_address_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only listen on loopback"):
        mkv.Node(Config(data_dir=tmp_path, control_addr="0.0.0.0:0"), environ={})
    # With a token, any address is allowed.
    mkv.Node(Config(data_dir=tmp_path, control_addr="0.0.0.0:0"), environ={"MKV_TOKEN": "t"})


async def test_mkv_serve_refuses_an_open_control_plane_and_says_why(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "mkv-data", "--control-addr", "0.0.0.0:0")
    env = {k: v for k, v in os.environ.items() if k != "MKV_TOKEN"}
    with pytest.raises(RuntimeError, match="only listen on loopback"):
        await process.start(env=env)


async def test_mkv_serve_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "mkv-data")
    await process.start(env={**os.environ, "MKV_TOKEN": TOKEN})
    try:
        assert "WITHOUT a token" not in process.stderr()
        async with mkv.AdminClient.connect(process.control_addr) as admin:
            with pytest.raises(mkv.UnauthenticatedError):
                await admin.list_partitions()
        async with mkv.AdminClient.connect(process.control_addr, token=TOKEN) as admin:
            assert len(await admin.list_partitions()) == 1
    finally:
        await process.stop()


async def test_an_unauthenticated_control_plane_says_so_at_start(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "mkv-data")
    env = {k: v for k, v in os.environ.items() if k != "MKV_TOKEN"}
    await process.start(env=env)
    try:
        assert "WITHOUT a token, on loopback only" in process.stderr()
    finally:
        await process.stop()


def test_token_check_and_sources(tmp_path: Path) -> None:
    check = TokenCheck("abc", "control plane")
    check(CallInfo("s", "m", {"authorization": "Bearer abc"}, "127.0.0.1"))
    with pytest.raises(mkv.UnauthenticatedError):
        check(CallInfo("s", "m", {}, "127.0.0.1"))
    with pytest.raises(mkv.PermissionDeniedError):
        check(CallInfo("s", "m", {"authorization": "Bearer abcd"}, "127.0.0.1"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_token(empty, "MKV_TOKEN", {})
    assert load_token(None, "MKV_TOKEN", {}) is None
    assert load_token(None, "MKV_TOKEN", {"MKV_TOKEN": " t \n"}) == "t"
    assert load_token(None, "MKV_TOKEN", {"MKV_TOKEN": "t"}, token="explicit") == "explicit"
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1")] == [
        True,
        True,
        True,
        False,
        False,
    ]


async def test_list_partitions_with_grpcio_and_the_token(guarded: mkv.Node) -> None:
    with trio.fail_after(20), grpcio_channel(guarded.control_address) as channel:
        rpc = channel.unary_unary(
            f"/{CONTROL_SERVICE}/ListPartitions",
            request_serializer=control_pb2.ListPartitionsRequest.SerializeToString,
            response_deserializer=control_pb2.ListPartitionsResponse.FromString,
        )
        response = await trio.to_thread.run_sync(
            lambda: rpc(
                control_pb2.ListPartitionsRequest(),
                timeout=10,
                metadata=[("authorization", f"Bearer {TOKEN}")],
            )
        )
        assert [p.id for p in response.partitions] == ["default"]
