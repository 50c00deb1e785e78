"""Limits a client cannot talk its way past: deadlines, the control plane's
rate, streams per connection, connections per address, compressed requests,
and responses nobody reads. Each limit is tried at limit-1, limit and limit+1
where it has a number."""

from __future__ import annotations

import collections
import functools
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import h2.events
import h2.settings
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mkv
from mkv.rpc.server import RpcServer
from mkv.testing import running_node
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE, parse_address
from tests.grpcio_stubs import assert_clear_message, call, call_error, grpcio_channel, raw_method
from tests.h2_raw import RawH2, grpc_frame

GET = f"/{DATA_SERVICE}/Get"


@asynccontextmanager
async def serving(
    handler: Callable[[pb.GetRequest], Awaitable[pb.GetResponse]], **settings: Any
) -> AsyncIterator[RpcServer]:
    """An RpcServer whose DataPlane/Get is ``handler``, on a free port."""
    server = RpcServer(
        DATA_SERVICE, {"Get": (pb.GetRequest, handler)}, parse_address("127.0.0.1:0"), **settings
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.stop()


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition()`` holds (polled: server statistics have no event).

    Raises:
        AssertionError: it did not within ``seconds``.
    """
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


async def sleep_forever_on_hold(request: pb.GetRequest) -> pb.GetResponse:
    if request.key == b"hold":
        await trio.sleep_forever()
    return pb.GetResponse(found=True, value=request.key)


# -- deadlines -------------------------------------------------------------


async def test_a_request_whose_deadline_passed_is_not_applied(mkv_client: mkv.Client) -> None:
    channel = mkv_client._channel
    request = pb.UpsertRequest(entries=[pb.Entry(key=b"late", value=b"v")])
    with trio.fail_after(10):
        with pytest.raises(mkv.DeadlineExceededError, match="nothing was done"):
            await channel.unary(DATA_SERVICE, "Upsert", request, pb.UpsertResponse, grpc_timeout=0)
        assert await mkv_client.get(b"late") is None
        # A deadline with room to spare is honoured, not refused.
        await channel.unary(DATA_SERVICE, "Upsert", request, pb.UpsertResponse, grpc_timeout=5)
        assert await mkv_client.get(b"late") == b"v"


@pytest.mark.parametrize(
    ("cap", "client_timeout"), [(0.3, None), (None, 0.3), (30.0, 0.3)], ids=str
)
async def test_a_handler_is_cancelled_at_its_deadline(
    cap: float | None, client_timeout: float | None
) -> None:
    async with (
        serving(sleep_forever_on_hold, deadline_cap=cap) as server,
        mkv.Client.connect(server.address) as client,
    ):
        with trio.fail_after(10):
            start = trio.current_time()
            with pytest.raises(mkv.DeadlineExceededError, match="unknown") as raised:
                await client._channel.unary(
                    DATA_SERVICE,
                    "Get",
                    pb.GetRequest(key=b"hold"),
                    pb.GetResponse,
                    grpc_timeout=client_timeout,
                )
            assert 0.25 <= trio.current_time() - start < 5
            assert_clear_message(raised.value.message)
            # The handler is gone, not left running.
            assert server.statistics().calls_in_flight == 0
            response = await client._channel.unary(
                DATA_SERVICE, "Get", pb.GetRequest(key=b"k"), pb.GetResponse
            )
            assert response.value == b"k"


def test_deadline_caps_default_short_for_data_and_long_for_control() -> None:
    config = mkv.Config()
    assert config.data_deadline_cap == 30.0
    assert config.control_deadline_cap > config.data_deadline_cap


# -- the control plane's rate ----------------------------------------------


async def test_a_burst_gets_the_configured_number_through(tmp_path: Any) -> None:
    burst = 5
    async with (
        running_node(tmp_path / "data", control_rate=0.001, control_burst=burst) as node,
        # rate_limit_wait=0: see the refusals rather than wait them out.
        mkv.AdminClient.connect(node.control_address, rate_limit_wait=0) as admin,
        mkv.Client.connect(node.data_address) as client,
    ):
        with trio.fail_after(20):
            outcomes: list[str] = []
            for _ in range(burst + 3):  # limit-1, limit, limit+1 and beyond
                try:
                    await admin.list_partitions()
                    outcomes.append("ok")
                except mkv.ResourceExhaustedError as exc:
                    outcomes.append(exc.message)
            assert outcomes[:burst] == ["ok"] * burst
            assert len(outcomes[burst:]) == 3
            for message in outcomes[burst:]:
                assert "retry after" in message
                assert_clear_message(message)
            # The data plane is not rate limited.
            for i in range(50):
                await client.upsert({f"k{i}": b"v"})
            assert await client.get(b"k49") == b"v"
            # grpcio sees the wait as trailing metadata too.
            with grpcio_channel(node.control_address) as channel:
                refused = await call_error(
                    raw_method(channel, "/mkv.v1.ControlPlane/ListPartitions"), b""
                )
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                trailers = dict(refused.trailing_metadata())  # type: ignore[attr-defined]
                assert float(trailers["retry-after"]) > 0
            # Health on the control port is not rate limited either.
            with grpcio_channel(node.control_address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(10):
                    checked = await call(health.Check, health_pb2.HealthCheckRequest())
                    assert checked.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_admin_client_waits_out_the_rate_limit(tmp_path: Any) -> None:
    """The refusal comes before anything is applied, with the wait in a
    trailer: AdminClient sleeps that long and calls again."""
    async with (
        running_node(tmp_path / "data", control_rate=20.0, control_burst=2) as node,
        mkv.AdminClient.connect(node.control_address) as admin,
    ):
        with trio.fail_after(20):
            start = trio.current_time()
            for _ in range(6):
                assert len(await admin.list_partitions()) == 1
            # Two at once, then four at 20 a second.
            assert trio.current_time() - start >= 0.15
            admin.rate_limit_wait = 0

            async def burst() -> None:
                for _ in range(5):
                    await admin.list_partitions()

            with pytest.raises(mkv.ResourceExhaustedError):
                await burst()


def test_token_bucket_refills_at_its_rate() -> None:
    from mkv.rpc.ratelimit import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.5) == 0.0  # one token came back
    assert bucket.take(100.5) == pytest.approx(0.5)
    assert [bucket.take(200.0) for _ in range(4)][-1] > 0  # never more than the burst
    assert bucket.take(50.0) > 0  # a clock stepping back adds nothing


# -- streams per connection ------------------------------------------------


@pytest.mark.parametrize("opened", [4, 5, 6])
async def test_streams_beyond_the_limit_end_the_connection(opened: int) -> None:
    """A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS (5 here) loses
    its connection; one within it keeps it."""
    async with serving(sleep_forever_on_hold, max_concurrent_streams=5) as server:
        with trio.fail_after(10):
            raw = await RawH2.connect(str(server.address))
            try:
                advertised = raw.conn.remote_settings.max_concurrent_streams
                assert advertised == 5
                # Pretend not to have heard the limit.
                raw.conn.remote_settings._settings[
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
                ] = collections.deque([1000])
                for _ in range(opened):
                    await raw.call(GET, grpc_frame(pb.GetRequest(key=b"hold").SerializeToString()))
                raw.conn.ping(b"12345678")
                await raw.flush()
                if opened <= 5:
                    await raw.receive_until(lambda e: isinstance(e, h2.events.PingAckReceived))
                    assert not raw.closed
                else:
                    with pytest.raises(EOFError):
                        await raw.receive_until(lambda e: isinstance(e, h2.events.PingAckReceived))
                    # Ended: a GOAWAY, when it gets out before the close.
                    assert raw.closed
            finally:
                await raw.aclose()
        # Other connections are served all along.
        async with mkv.Client.connect(server.address) as client:
            got = await client._channel.unary(
                DATA_SERVICE, "Get", pb.GetRequest(key=b"x"), pb.GetResponse
            )
            assert got.value == b"x"


async def test_a_thousand_calls_on_one_grpcio_connection_queue_within_the_limit() -> None:
    async def slow_get(request: pb.GetRequest) -> pb.GetResponse:
        await trio.sleep(0.005)
        return pb.GetResponse(found=True, value=request.key)

    def thousand(address: str) -> list[bytes]:
        with grpcio_channel(address) as channel:
            get = channel.unary_unary(
                GET,
                request_serializer=pb.GetRequest.SerializeToString,
                response_deserializer=pb.GetResponse.FromString,
            )
            futures = [get.future(pb.GetRequest(key=b"%d" % i), timeout=60) for i in range(1000)]
            return [f.result().value for f in futures]

    async with serving(slow_get, max_concurrent_streams=100) as server:
        with trio.fail_after(60):
            values = await trio.to_thread.run_sync(thousand, str(server.address))
        assert values == [b"%d" % i for i in range(1000)]
        stats = server.statistics()
        assert 1 < stats.peak_calls_in_flight <= 100


# -- connections per address -----------------------------------------------


async def test_connections_beyond_the_per_address_limit_are_closed_at_accept() -> None:
    async with serving(sleep_forever_on_hold, max_connections_per_address=3) as server:
        with trio.fail_after(10):
            sockets = []
            try:
                for expected_open in (True, True, True, False):  # 2, 3 (limit), 4
                    sock = await trio.open_tcp_stream("127.0.0.1", server.address.port)
                    sockets.append(sock)
                    first = await sock.receive_some(1024)  # the server's SETTINGS, or EOF
                    assert bool(first) is expected_open
                assert server.statistics().connections_refused == 1
                await sockets.pop(0).aclose()
                await eventually(lambda: server.statistics().connections < 3)
                again = await trio.open_tcp_stream("127.0.0.1", server.address.port)
                sockets.append(again)
                assert await again.receive_some(1024)
            finally:
                for sock in sockets:
                    await sock.aclose()


# -- compressed requests ---------------------------------------------------


async def test_grpcio_compression_is_refused_clearly(mkv_node: mkv.Node) -> None:
    with trio.fail_after(20):
        with grpcio_channel(
            mkv_node.data_address, options=[("grpc.default_compression_algorithm", 2)]
        ) as channel:
            get = raw_method(channel, GET)
            body = pb.GetRequest(key=b"k" * 2000).SerializeToString()
            error = await call_error(
                functools.partial(get, compression=grpc.Compression.Gzip), body
            )
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "compressed" in (error.details() or "")
            assert_clear_message(error.details())
        with grpcio_channel(mkv_node.data_address) as channel:
            got = await call(raw_method(channel, GET), pb.GetRequest(key=b"k").SerializeToString())
            assert pb.GetResponse.FromString(got).status == pb.OK


async def test_a_compression_bomb_is_refused_without_being_inflated(mkv_node: mkv.Node) -> None:
    # 64 MiB of zeros in 64 KiB, in the zlib format purerpc alone would
    # inflate in memory, whole, for any grpc-encoding it knows.
    compressor = zlib.compressobj(6)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 256 * 1024
    with trio.fail_after(20):
        raw = await RawH2.connect(str(mkv_node.data_address))
        try:
            stream_id = await raw.call(
                GET, grpc_frame(bomb, compressed=True), metadata=[("grpc-encoding", "gzip")]
            )
            code, message = await raw.status(stream_id)
            assert code == grpc.StatusCode.UNIMPLEMENTED.value[0]
            assert "compressed" in message
            # The connection is still good.
            stream_id = await raw.call(GET, grpc_frame(pb.GetRequest(key=b"k").SerializeToString()))
            assert (await raw.status(stream_id))[0] == 0
        finally:
            await raw.aclose()


# -- clients that do not read ----------------------------------------------


async def test_a_client_that_never_reads_is_cut_off_and_others_are_served() -> None:
    value = bytes(256 * 1024)  # larger than the client's 64 KiB window

    async def big_get(request: pb.GetRequest) -> pb.GetResponse:
        return pb.GetResponse(found=True, value=value)

    async with serving(big_get, stream_stall_timeout=0.5) as server:
        with trio.fail_after(20):
            raw = await RawH2.connect(str(server.address))
            try:
                for _ in range(10):
                    await raw.call(GET, grpc_frame(pb.GetRequest(key=b"k").SerializeToString()))
                # Never read: the server cannot finish; it gives up on each call.
                await eventually(lambda: server.statistics().calls_in_flight == 10)
                async with mkv.Client.connect(server.address) as other:
                    got = await other._channel.unary(
                        DATA_SERVICE, "Get", pb.GetRequest(key=b"x"), pb.GetResponse
                    )
                    assert len(got.value) == len(value)
                await eventually(lambda: server.statistics().calls_in_flight == 0)
            finally:
                await raw.aclose()


# -- a partition's inbox -----------------------------------------------------


async def test_a_full_inbox_answers_unavailable_and_applies_nothing(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stalls; its partition's window and inbox fill; what cannot
    get in within the enqueue timeout is refused UNAVAILABLE (retryable) and
    never applied."""
    import threading

    from mkv.partition import task as partition
    from mkv.store.memory import MemoryStore

    monkeypatch.setattr(partition, "INBOX_SIZE", 3)
    monkeypatch.setattr(partition, "WINDOW_SIZE", 2)
    # Released writes wait for the applier in a backlog of their own (writes
    # are answered on commit, applied after): bound it too, or the window
    # empties into it and the inbox never fills.
    monkeypatch.setattr(partition, "APPLY_BACKLOG", 2)
    monkeypatch.setattr(partition, "ENQUEUE_TIMEOUT", 0.3)
    release = threading.Event()
    apply = MemoryStore.apply

    def stalled_apply(self: MemoryStore, writes: Any) -> Any:
        release.wait(20)  # on the partition's worker thread
        return apply(self, writes)

    monkeypatch.setattr(MemoryStore, "apply", stalled_apply)
    outcomes: dict[int, str] = {}
    async with (
        running_node(tmp_path / "data", default_store="memory") as node,
        mkv.Client.connect(node.data_address) as client,
    ):

        async def put(i: int) -> None:
            try:
                await client.upsert({f"k{i}": b"v"})
                outcomes[i] = "ok"
            except mkv.UnavailableError as exc:
                outcomes[i] = exc.message

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(put, i)
                await eventually(lambda: len(outcomes) >= 1)
                release.set()
            refused = [i for i, outcome in outcomes.items() if outcome != "ok"]
            accepted = [i for i, outcome in outcomes.items() if outcome == "ok"]
            assert refused, outcomes
            assert accepted, outcomes
            for i in refused:
                assert "overloaded" in outcomes[i]
                assert_clear_message(outcomes[i])
                assert await client.get(f"k{i}") is None
            for i in accepted:
                assert await client.get(f"k{i}") == b"v"
