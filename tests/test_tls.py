"""TLS and mTLS on both ports, with grpcio and with mkv's own clients."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import grpc
import pytest
import trio

import mkv
from mkv.cli import ctl
from mkv.node.config import ConfigError
from mkv.testing import running_node
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE
from tests.certs import CertificateAuthority, Issued
from tests.grpcio_stubs import CALL_TIMEOUT


@attrs.frozen
class Pki:
    ca: CertificateAuthority
    server: Issued
    client: Issued
    # A client certificate from a CA the server does not trust.
    stranger: Issued
    stranger_ca: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "trusted")
    stranger_ca = CertificateAuthority(directory, "stranger")
    return Pki(
        ca,
        ca.issue("node", server=True),
        ca.issue("ops", server=False),
        stranger_ca.issue("intruder", server=False),
        stranger_ca,
    )


@pytest.fixture
async def tls_node(tmp_path: Path, pki: Pki) -> AsyncIterator[mkv.Node]:
    async with running_node(
        tmp_path / "data", tls_cert_file=pki.server.cert, tls_key_file=pki.server.key
    ) as node:
        yield node


@pytest.fixture
async def mtls_node(tmp_path: Path, pki: Pki) -> AsyncIterator[mkv.Node]:
    async with running_node(
        tmp_path / "data",
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    ) as node:
        yield node


@contextmanager
def secure_channel(address: object, credentials: grpc.ChannelCredentials) -> Iterator[grpc.Channel]:
    channel = grpc.secure_channel(str(address), credentials)
    try:
        yield channel
    finally:
        channel.close()


def grpcio_round_trip(address: str, credentials: grpc.ChannelCredentials) -> bytes:
    with secure_channel(address, credentials) as channel:
        upsert = channel.unary_unary(
            f"/{DATA_SERVICE}/Upsert",
            request_serializer=pb.UpsertRequest.SerializeToString,
            response_deserializer=pb.UpsertResponse.FromString,
        )
        get = channel.unary_unary(
            f"/{DATA_SERVICE}/Get",
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        upsert(pb.UpsertRequest(entries=[pb.Entry(key=b"g", value=b"rpc")]), timeout=CALL_TIMEOUT)
        value: bytes = get(pb.GetRequest(key=b"g"), timeout=CALL_TIMEOUT).value
        return value


async def test_tls_round_trip_with_mkv_clients(tls_node: mkv.Node, pki: Pki) -> None:
    with trio.fail_after(20):
        async with mkv.Client.connect(tls_node.data_address, ca=pki.ca.cert) as client:
            await client.upsert({b"k": b"v"})
            assert await client.get(b"k") == b"v"
        async with mkv.AdminClient.connect(tls_node.control_address, ca=pki.ca.cert) as admin:
            assert [p.id for p in await admin.list_partitions()] == ["default"]


async def test_tls_round_trip_with_grpcio(tls_node: mkv.Node, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
    with trio.fail_after(20):
        value = await trio.to_thread.run_sync(
            grpcio_round_trip, str(tls_node.data_address), credentials
        )
    assert value == b"rpc"


async def test_tls_refuses_plain_and_untrusting_clients(tls_node: mkv.Node, pki: Pki) -> None:
    with trio.fail_after(20):
        # A plaintext client gets no answer from a TLS port.
        with pytest.raises(mkv.UnavailableError):
            async with mkv.Client.connect(tls_node.data_address) as client:
                await client.get(b"k")
        # A client that does not trust the server's CA refuses it.
        with pytest.raises(mkv.UnavailableError, match="TLS handshake"):
            async with mkv.Client.connect(tls_node.data_address, ca=pki.stranger_ca.cert) as client:
                await client.get(b"k")
        # The server is unharmed.
        async with mkv.Client.connect(tls_node.data_address, ca=pki.ca.cert) as client:
            assert await client.get(b"k") is None


async def test_mtls_round_trip_with_a_client_certificate(mtls_node: mkv.Node, pki: Pki) -> None:
    with trio.fail_after(20):
        async with mkv.Client.connect(
            mtls_node.data_address, ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key
        ) as client:
            await client.upsert({b"k": b"v"})
            assert await client.get(b"k") == b"v"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.cert_pem,
            private_key=pki.client.key_pem,
            certificate_chain=pki.client.cert_pem,
        )
        value = await trio.to_thread.run_sync(
            grpcio_round_trip, str(mtls_node.data_address), credentials
        )
        assert value == b"rpc"


@pytest.mark.parametrize("who", ["no certificate", "stranger"])
async def test_mtls_refuses_a_client_without_the_right_certificate(
    mtls_node: mkv.Node, pki: Pki, who: str
) -> None:
    cert = {"no certificate": None, "stranger": pki.stranger}[who]
    with trio.fail_after(20):
        with pytest.raises(mkv.UnavailableError):
            async with mkv.Client.connect(
                mtls_node.data_address,
                ca=pki.ca.cert,
                cert=cert.cert if cert else None,
                key=cert.key if cert else None,
            ) as client:
                await client.get(b"k")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.cert_pem,
            private_key=cert.key_pem if cert else None,
            certificate_chain=cert.cert_pem if cert else None,
        )
        with pytest.raises(grpc.RpcError) as refused:
            await trio.to_thread.run_sync(
                grpcio_round_trip, str(mtls_node.control_address), credentials
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


async def test_mkvctl_speaks_mtls(mtls_node: mkv.Node, pki: Pki) -> None:
    out, err = io.BytesIO(), io.StringIO()
    argv = [
        "partitions",
        "list",
        "--control-addr",
        str(mtls_node.control_address),
        "--ca",
        str(pki.ca.cert),
        "--cert",
        str(pki.client.cert),
        "--key",
        str(pki.client.key),
    ]
    with trio.fail_after(20):
        assert await ctl.run(argv, out, err, {}) == 0, err.getvalue()
        assert b"default" in out.getvalue()
        out, err = io.BytesIO(), io.StringIO()
        assert await ctl.run(argv[:-4], out, err, {}) == 1
        assert err.getvalue().startswith("mkvctl: ")


def test_bad_tls_files_are_a_clear_configuration_error(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        mkv.Node(
            mkv.Config(
                data_dir=tmp_path,
                tls_cert_file=tmp_path / "missing.pem",
                tls_key_file=pki.server.key,
            ),
            environ={},
        )
    with pytest.raises(ConfigError, match="together"):
        mkv.Config.load(None, tls_cert_file=pki.server.cert)


async def test_tls_against_a_plaintext_port_says_so(mkv_node: mkv.Node, pki: Pki) -> None:
    with trio.fail_after(20):
        with pytest.raises(mkv.UnavailableError) as refused:
            async with mkv.Client.connect(mkv_node.data_address, ca=pki.ca.cert) as client:
                await client.get(b"k")
        out, err = io.BytesIO(), io.StringIO()
        argv = ["get", "k", "--data-addr", str(mkv_node.data_address), "--ca", str(pki.ca.cert)]
        assert await ctl.run(argv, out, err, {}) == 1
    # What probably went wrong first, then OpenSSL's own word for it.
    assert "does not speak TLS there (is it a plaintext port?" in refused.value.message
    assert "[WRONG_VERSION_NUMBER]" in refused.value.message
    [line] = err.getvalue().splitlines()
    assert line.startswith("mkvctl: The TLS handshake with mkv at ")
    assert "does not speak TLS there" in line


async def test_an_untrusted_server_certificate_says_which_ca(tls_node: mkv.Node, pki: Pki) -> None:
    with trio.fail_after(20), pytest.raises(mkv.UnavailableError) as refused:
        async with mkv.Client.connect(tls_node.data_address, ca=pki.stranger_ca.cert) as client:
            await client.get(b"k")
    assert "not signed by a CA this client trusts" in refused.value.message
