"""Vouched answers (``mkv.rpc.vouch``): an answer whose check fails on its
way to the socket does not leave, wherever it waited: before it goes into the
connection (a unary call, a stream, a session's outbox), or in the
connection's buffer (the connection ends instead).

The check here is a counter: it passes its first ``n`` runs and fails after,
so each test makes exactly one of the server's checkpoints the failing one
(the cluster's check is the lease, tests/test_failover.py pauses a node).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc
import pytest
import trio

from mkv.cluster.membership import ClusterSettings, Membership
from mkv.cluster.view import Routing
from mkv.errors import UnavailableError
from mkv.router import Router
from mkv.rpc.server import ServerStream
from mkv.rpc.vouch import vouch
from mkv.v1 import data_pb2 as pb
from tests.grpcio_stubs import CALL_TIMEOUT, GrpcioStubs, grpcio_channel
from tests.test_session import drive, session_server


def passes(times: int) -> tuple[Callable[[], None], list[int]]:
    """A check that passes ``times`` times, then fails; and its run count."""
    runs = [0]

    def check() -> None:
        runs[0] += 1
        if runs[0] > times:
            raise UnavailableError("no longer served here (test)")

    return check, runs


def vouching_get(times: int, runs_seen: list[list[int]]) -> Callable[[pb.GetRequest], Any]:
    async def get(request: pb.GetRequest) -> pb.GetResponse:
        check, runs = passes(times)
        runs_seen.append(runs)
        vouch(check)
        return pb.GetResponse(status=pb.OK, found=True, value=b"answer:" + request.key)

    return get


async def unary_get(server: Any, stubs: GrpcioStubs) -> pb.GetResponse | grpc.RpcError:
    with grpcio_channel(f"127.0.0.1:{server.address.port}") as channel:
        stub = stubs.data_stub(channel)

        def call() -> pb.GetResponse | grpc.RpcError:
            try:
                response: pb.GetResponse = stub.Get(pb.GetRequest(key=b"k"), timeout=CALL_TIMEOUT)
                return response
            except grpc.RpcError as exc:
                return exc

        return await trio.to_thread.run_sync(call)


async def test_a_unary_answer_whose_check_fails_at_send_is_unavailable(
    stubs: GrpcioStubs,
) -> None:
    """Mutation: no check in ``RpcServer._send`` → the answer arrives."""
    runs: list[list[int]] = []
    handler = vouching_get(0, runs)
    async with session_server({}, {"Get": (pb.GetRequest, handler)}) as server:
        with trio.fail_after(30):
            got = await unary_get(server, stubs)
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.UNAVAILABLE, got
    assert "no longer served" in str(got.details())


async def test_an_answer_already_in_the_connection_ends_it_if_its_check_fails_at_the_write(
    stubs: GrpcioStubs,
) -> None:
    """The check passes when the answer goes into HTTP/2's buffer and fails
    when the writer takes it to the socket (a pause in between): the client
    gets no answer, only a lost connection. Mutation: no check in
    ``ConnectionGuard.send`` → the answer arrives."""
    runs: list[list[int]] = []
    handler = vouching_get(1, runs)
    async with session_server({}, {"Get": (pb.GetRequest, handler)}) as server:
        with trio.fail_after(30):
            got = await unary_get(server, stubs)
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.UNAVAILABLE, got
    assert runs == [[2]], runs  # once into the connection, once at the write


async def test_a_session_answer_whose_check_fails_in_the_outbox_is_an_error(
    stubs: GrpcioStubs,
) -> None:
    """Session answers wait in an outbox for the writer: the one whose check
    fails there is answered UNAVAILABLE, the others go out. Mutation: no
    check in the session's writer → every answer arrives OK."""
    runs: list[list[int]] = []
    good, _ = passes(10)

    async def get(request: pb.GetRequest) -> pb.GetResponse:
        if request.key == b"bad":
            check, seen = passes(0)
            runs.append(seen)
            vouch(check)
        else:
            vouch(good)
        return pb.GetResponse(status=pb.OK, found=True, value=b"answer:" + request.key)

    requests = [
        pb.SessionRequest(id=1, get=pb.GetRequest(key=b"good")),
        pb.SessionRequest(id=2, get=pb.GetRequest(key=b"bad")),
        pb.SessionRequest(id=3, get=pb.GetRequest(key=b"good")),
    ]
    async with session_server({"get": get}) as server:
        with grpcio_channel(f"127.0.0.1:{server.address.port}") as channel, trio.fail_after(30):
            _, answers = await trio.to_thread.run_sync(drive, stubs.data_stub(channel), requests)
    by_id = {answer.id: answer for answer in answers}
    assert by_id[1].get.value == by_id[3].get.value == b"answer:good"
    assert by_id[2].WhichOneof("response") == "error", by_id[2]
    assert by_id[2].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    # Failed in the outbox, so it never reached the connection's checks.
    assert runs == [[1]], runs


@pytest.mark.parametrize("times", [1, 3])
async def test_a_stream_ends_unavailable_once_its_check_fails(
    stubs: GrpcioStubs, times: int
) -> None:
    """Every message of a stream is checked, not only the first: the stream
    ends UNAVAILABLE at the first that fails. Mutation: the check taken for
    the first message only → all five arrive."""

    async def scan(request: pb.ScanRequest) -> AsyncGenerator[pb.ScanResponse, None]:
        # Two runs per message that leaves (send, write): ``times`` messages.
        check, _ = passes(2 * times)
        vouch(check)
        for n in range(5):
            yield pb.ScanResponse(status=pb.OK, items=[pb.KeyValue(key=b"k%d" % n, value=b"v")])
            # Each message its own socket write.
            await trio.sleep(0.05)

    async with session_server({}, {"Scan": (pb.ScanRequest, ServerStream(scan))}) as server:
        with grpcio_channel(f"127.0.0.1:{server.address.port}") as channel, trio.fail_after(30):
            stub = stubs.data_stub(channel)

            def call() -> tuple[list[pb.ScanResponse], grpc.RpcError | None]:
                got: list[pb.ScanResponse] = []
                try:
                    for response in stub.Scan(pb.ScanRequest(), timeout=CALL_TIMEOUT):
                        got.append(response)
                except grpc.RpcError as exc:
                    return got, exc
                return got, None

            got, error = await trio.to_thread.run_sync(call)
    assert len(got) == times, got
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


def _membership() -> Membership:
    settings = ClusterSettings(etcd=("127.0.0.1:1",), name="t", node_id="n1", lease_ttl=10)
    # Never run: only the state the data plane's check reads.
    return Membership(settings, None, default_store="sqlite", default_pipeline=())  # type: ignore[arg-type]


def _leading(m: Membership, mine: dict[str, int]) -> None:
    m.routing = Routing(1, Router.build([], version=1), {}, mine)


async def test_the_serving_check_holds_only_for_the_lease_and_epoch_admitted_under() -> None:
    """What an answer admitted under one lease and epoch must still pass when
    it leaves. The paused-node break: after a pause past its deadline the
    node registers a new lease, valid at once, and leads nothing yet; an
    answer admitted before the pause passed a "some lease is valid" check
    then. Mutation: the check as ``lease_valid()`` alone → the second
    assertion fails."""
    m = _membership()
    m.lease = 7
    m.clock.renewed(trio.current_time(), 10)
    _leading(m, {"p": 5})
    check = m.serving_check("p")
    check()  # admitted, and still served
    # The lease is lost and a new one granted (valid by the clock), before
    # the node leads p again.
    m.clock.expire()
    m.lease = 0
    _leading(m, {})
    m.clock.renewed(trio.current_time(), 10)
    m.lease = 8
    with pytest.raises(UnavailableError):
        check()
    # Leading p again, at a new epoch: still not what it was admitted under.
    _leading(m, {"p": 6})
    with pytest.raises(UnavailableError):
        check()
    # Nor once the deadline of the admitting lease passed.
    m2 = _membership()
    m2.lease = 7
    m2.clock.renewed(trio.current_time() - 9.5, 10)  # deadline 1 s (less the margin) ago
    _leading(m2, {"p": 5})
    with pytest.raises(UnavailableError):
        m2.serving_check("p")
