"""DataPlane.Session: many small requests on one call (issue 17, item 1).

Driven by grpcio from the protos alone (as a third-party client would), by a
raw HTTP/2 client that never reads, and through ``mkv.Client``.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
import trio

import mkv
from mkv.rpc.server import Multiplexed, RpcServer
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE, parse_address
from tests.grpcio_stubs import CALL_TIMEOUT, GrpcioStubs, grpcio_channel
from tests.h2_raw import RawH2, grpc_frame

SESSION = f"/{DATA_SERVICE}/Session"


def drive(stub: Any, requests: list[pb.SessionRequest]) -> tuple[int, list[pb.SessionResponse]]:
    """Run one session on a grpcio stub, keeping within the advertised bound
    (blocking: call off the Trio thread). Returns the bound and the answers."""
    answers: list[pb.SessionResponse] = []
    room = threading.Semaphore(0)
    done = threading.Event()

    def send() -> Iterator[pb.SessionRequest]:
        for request in requests:
            room.acquire()  # released once the bound is known, then per answer
            yield request
        done.wait(CALL_TIMEOUT)  # end our side only once every answer is in

    limit = 0
    for response in stub.Session(send(), timeout=CALL_TIMEOUT):
        if response.id == 0:
            limit = response.max_in_flight
            for _ in range(limit):
                room.release()
            continue
        answers.append(response)
        room.release()
        if len(answers) == len(requests):
            done.set()
    return limit, answers


def every_kind(count: int, seed: int = 17) -> list[pb.SessionRequest]:
    """``count`` requests of every kind on a few keys, ids 1..count."""
    rng = random.Random(seed)
    out = []
    for i in range(1, count + 1):
        key = f"k{rng.randrange(8)}".encode()
        kind = i % 6
        if kind == 0:
            out.append(pb.SessionRequest(id=i, get=pb.GetRequest(key=key)))
        elif kind == 1:
            entry = pb.Entry(key=key, value=b"v%d" % i)
            out.append(pb.SessionRequest(id=i, upsert=pb.UpsertRequest(entries=[entry])))
        elif kind == 2:
            out.append(pb.SessionRequest(id=i, remove=pb.RemoveRequest(keys=[key])))
        elif kind == 3:
            delta = pb.CounterDelta(key=b"counter", delta=1)
            out.append(pb.SessionRequest(id=i, increment=pb.IncrementRequest(deltas=[delta])))
        elif kind == 4:
            keys = [key, b"counter", b"absent"]
            out.append(pb.SessionRequest(id=i, batch_get=pb.BatchGetRequest(keys=keys)))
        else:
            # Conditional: "the key must not exist" - holds or fails by the state.
            entry = pb.Entry(key=key, value=b"c%d" % i)
            out.append(
                pb.SessionRequest(
                    id=i,
                    upsert=pb.UpsertRequest(
                        entries=[entry], conditions=[pb.Condition(key=key, seq=0)]
                    ),
                )
            )
    return out


async def test_grpcio_drives_hundreds_of_interleaved_requests_of_every_kind(
    stubs: GrpcioStubs, mkv_node: mkv.Node
) -> None:
    requests = every_kind(600)
    # A bad request in the middle: an empty key is the Get's own error.
    requests[300] = pb.SessionRequest(id=301, get=pb.GetRequest(key=b""))
    # And one that names no request at all.
    requests[301] = pb.SessionRequest(id=302)
    with grpcio_channel(mkv_node.data_address) as channel, trio.fail_after(60):
        stub = stubs.data_stub(channel)
        limit, answers = await trio.to_thread.run_sync(drive, stub, requests)
    assert limit == 256
    ids = Counter(answer.id for answer in answers)
    assert set(ids) == set(range(1, 601))
    assert set(ids.values()) == {1}, "each answered exactly once"
    by_id = {answer.id: answer for answer in answers}
    assert by_id[301].WhichOneof("response") == "error"
    assert by_id[301].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "empty" in by_id[301].error.message
    assert by_id[302].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    increments: list[int] = []
    for request in requests:
        answer = by_id[request.id]
        kind = request.WhichOneof("request")
        if request.id in (301, 302):
            continue
        assert answer.WhichOneof("response") == kind, (request, answer)
        assert getattr(answer, kind).status in (pb.OK, pb.CONDITION_FAILED)
        if kind == "increment":
            increments.extend(answer.increment.values)
    # Every increment applied once, whatever the order they were answered in.
    assert sorted(increments) == list(range(1, len(increments) + 1))
    # The requests after the bad ones were applied: the session went on.
    async with mkv.Client.connect(mkv_node.data_address, session=False) as client:
        assert await client.get(b"counter") == str(len(increments)).encode()


async def test_answers_match_the_unary_calls(stubs: GrpcioStubs, mkv_node: mkv.Node) -> None:
    """Each kind's answer through a session is what its unary call gives."""
    async with mkv.Client.connect(mkv_node.data_address, session=False) as client:
        await client.upsert({b"a": b"1", b"b": b"2"})
    requests = [
        pb.SessionRequest(id=1, get=pb.GetRequest(key=b"a")),
        pb.SessionRequest(id=2, batch_get=pb.BatchGetRequest(keys=[b"a", b"zz", b"b"])),
        # Gets answered at once, without a task (Multiplexed.immediate):
        # a missing key, and a key the unary call refuses.
        pb.SessionRequest(id=3, get=pb.GetRequest(key=b"zz")),
        pb.SessionRequest(id=4, get=pb.GetRequest(key=b"")),
    ]
    with grpcio_channel(mkv_node.data_address) as channel, trio.fail_after(30):
        stub = stubs.data_stub(channel)
        _, answers = await trio.to_thread.run_sync(drive, stub, requests)
        unary_get = await trio.to_thread.run_sync(
            lambda: stub.Get(pb.GetRequest(key=b"a"), timeout=CALL_TIMEOUT)
        )
        unary_missing = await trio.to_thread.run_sync(
            lambda: stub.Get(pb.GetRequest(key=b"zz"), timeout=CALL_TIMEOUT)
        )
        with pytest.raises(grpc.RpcError) as refused:
            await trio.to_thread.run_sync(
                lambda: stub.Get(pb.GetRequest(key=b""), timeout=CALL_TIMEOUT)
            )
        unary_batch = await trio.to_thread.run_sync(
            lambda: stub.BatchGet(
                pb.BatchGetRequest(keys=[b"a", b"zz", b"b"]), timeout=CALL_TIMEOUT
            )
        )
    by_id = {answer.id: answer for answer in answers}
    assert by_id[1].get == unary_get
    assert by_id[2].batch_get == unary_batch
    assert by_id[3].get == unary_missing
    assert by_id[4].error.code == refused.value.code().value[0]
    assert by_id[4].error.message == refused.value.details()


async def test_a_per_request_timeout_is_its_deadline(tmp_path: Any) -> None:
    """``timeout_ms`` plays the part of grpc-timeout; the session goes on."""
    blocked = trio.Event()

    async def slow_get(request: pb.GetRequest) -> pb.GetResponse:
        if request.key == b"slow":
            await blocked.wait()
        return pb.GetResponse(found=True, value=request.key)

    async with session_server({"get": slow_get}) as server, within(20):
        raw = await RawH2.connect(str(server.address))
        try:
            stream_id = raw.start_call(SESSION)
            for i, key, timeout in ((1, b"slow", 200), (2, b"fast", 0)):
                request = pb.SessionRequest(id=i, timeout_ms=timeout, get=pb.GetRequest(key=key))
                raw.conn.send_data(stream_id, grpc_frame(request.SerializeToString()))
            await raw.flush()
            answers = await read_answers(raw, stream_id, 3)
            by_id = {answer.id: answer for answer in answers}
            assert by_id[2].get.value == b"fast"
            assert by_id[1].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            assert "unknown" in by_id[1].error.message
        finally:
            await raw.aclose()


async def test_requests_past_the_bound_are_refused_and_nothing_is_done() -> None:
    release = trio.Event()
    applied: list[bytes] = []

    async def held_get(request: pb.GetRequest) -> pb.GetResponse:
        applied.append(request.key)
        await release.wait()
        return pb.GetResponse(found=True, value=request.key)

    async with (
        session_server({"get": held_get}, session_max_in_flight=4) as server,
        within(20),
    ):
        raw = await RawH2.connect(str(server.address))
        try:
            stream_id = raw.start_call(SESSION)
            for i in range(1, 7):
                request = pb.SessionRequest(id=i, get=pb.GetRequest(key=b"k%d" % i))
                raw.conn.send_data(stream_id, grpc_frame(request.SerializeToString()))
            await raw.flush()
            first = await read_answers(raw, stream_id, 3)  # the bound, then two refusals
            assert first[0].max_in_flight == 4
            assert sorted(a.id for a in first[1:]) == [5, 6]
            for refused in first[1:]:
                assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            release.set()
            rest = await read_answers(raw, stream_id, 4, skip=3)
            assert sorted(a.id for a in rest) == [1, 2, 3, 4]
            assert sorted(applied) == [b"k1", b"k2", b"k3", b"k4"]
        finally:
            await raw.aclose()


async def test_requests_past_the_byte_bound_are_refused() -> None:
    """Few but large requests: the session's bytes in flight are bounded too
    (four of the largest requests), whatever their count."""
    release = trio.Event()

    async def held_get(request: pb.GetRequest) -> pb.GetResponse:
        await release.wait()
        return pb.GetResponse(found=True)

    async with (
        session_server({"get": held_get}, max_request_bytes=1000) as server,
        within(20),
    ):
        raw = await RawH2.connect(str(server.address))
        try:
            stream_id = raw.start_call(SESSION)
            for i in range(1, 7):
                key = b"k" * 900  # each ~910 bytes as a SessionRequest
                request = pb.SessionRequest(id=i, get=pb.GetRequest(key=key))
                raw.conn.send_data(stream_id, grpc_frame(request.SerializeToString()))
            await raw.flush()
            first = await read_answers(raw, stream_id, 3)
            assert first[0].max_in_flight_bytes == 4000
            # 1 to 4 run (~3,640 bytes); 5 and 6 would take it over 4,000.
            assert sorted(a.id for a in first[1:]) == [5, 6]
            for refused in first[1:]:
                assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                assert "Nothing was done" in refused.error.message
            release.set()
            rest = await read_answers(raw, stream_id, 4, skip=3)
            assert sorted(a.id for a in rest) == [1, 2, 3, 4]
        finally:
            await raw.aclose()


async def test_the_client_keeps_within_both_bounds() -> None:
    """Far more concurrent calls than the session takes, and large ones: the
    client waits for room instead of being refused."""
    running = 0
    most = 0

    async def get(request: pb.GetRequest) -> pb.GetResponse:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.005)
        running -= 1
        return pb.GetResponse(found=True, value=request.key[:4], partition_id="p")

    async def partition_map(request: pb.PartitionMapRequest) -> pb.PartitionMapResponse:
        # mkv.Client routes by the map: one partition, on this server.
        return pb.PartitionMapResponse(version=1, partitions=[pb.PartitionRange(id="p")])

    async with (
        session_server(
            {"get": get},
            extra={"PartitionMap": (pb.PartitionMapRequest, partition_map)},
            session_max_in_flight=8,
            max_request_bytes=4096,
        ) as server,
        within(30),
        mkv.Client.connect(server.address) as client,
    ):
        got: list[bytes | None] = []

        async def one(i: int) -> None:
            # ~3 KiB a request: six would pass the 16 KiB budget, before
            # the bound of eight requests does.
            got.append(await client.get(b"%04d" % i + b"x" * 3000))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert sorted(got) == sorted(b"%04d" % i for i in range(200))  # type: ignore[type-var]
        assert client.session_requests == 200
        assert most <= 5, "the byte budget held"


async def test_a_client_that_stops_reading_is_cut_off_and_buffers_stay_bounded() -> None:
    """The client sends thousands of requests and reads nothing (its 64 KiB
    window shuts): the server runs and holds at most twice the bound, then
    ends the call with RESOURCE_EXHAUSTED once the stall timeout passes."""
    value = bytes(16 * 1024)
    served = 0

    async def big_get(request: pb.GetRequest) -> pb.GetResponse:
        nonlocal served
        served += 1
        return pb.GetResponse(found=True, value=value)

    limit = 8
    async with (
        session_server(
            {"get": big_get}, session_max_in_flight=limit, stream_stall_timeout=1.0
        ) as server,
        within(30),
    ):
        raw = await RawH2.connect(str(server.address))
        try:
            stream_id = raw.start_call(SESSION)
            body = b"".join(
                grpc_frame(pb.SessionRequest(id=i, get=pb.GetRequest(key=b"k")).SerializeToString())
                for i in range(1, 2001)
            )
            # Sent without reading: only as far as the server's windows allow.
            raw.conn.send_data(stream_id, body[: raw.conn.local_flow_control_window(stream_id)])
            await raw.stream.send_all(raw.conn.data_to_send())
            # Read nothing; wait past the stall timeout, then collect the status.
            await trio.sleep(3.0)
            # Unbounded, 2000 answers of 16 KiB (32 MiB) would be held; bounded:
            # what fit the client's window, plus twice the bound.
            window_answers = 65535 // len(value) + 2
            assert served <= 2 * limit + window_answers, served
            code, message = await raw.status(stream_id)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "stopped reading" in message
        finally:
            await raw.aclose()


async def test_stop_answers_what_is_in_flight_then_ends_unavailable() -> None:
    started = trio.Event()

    async def slow_get(request: pb.GetRequest) -> pb.GetResponse:
        started.set()
        await trio.sleep(0.3)
        return pb.GetResponse(found=True, value=request.key)

    async with session_server({"get": slow_get}) as server, within(20):
        raw = await RawH2.connect(str(server.address))
        try:
            stream_id = raw.start_call(SESSION)
            request = pb.SessionRequest(id=1, get=pb.GetRequest(key=b"k"))
            raw.conn.send_data(stream_id, grpc_frame(request.SerializeToString()))
            await raw.flush()
            await started.wait()
            server.stop()
            answers = await read_answers(raw, stream_id, 2)
            assert answers[1].get.value == b"k"
            # The drain closes connections as soon as no call is in flight,
            # which can beat the trailers out (as for a unary call's).
            with contextlib.suppress(EOFError):
                code, _ = await raw.status(stream_id)
                assert code == grpc.StatusCode.UNAVAILABLE.value[0]
        finally:
            await raw.aclose()


# -- mkv.Client --------------------------------------------------------------


async def test_client_multiplexes_small_calls_onto_one_session(mkv_node: mkv.Node) -> None:
    async with mkv.Client.connect(mkv_node.data_address) as client:
        results: dict[int, object] = {}

        async def one(i: int) -> None:
            key = b"key%d" % (i % 20)
            if i % 5 == 0:
                results[i] = await client.upsert({key: b"v%d" % i})
            elif i % 5 == 1:
                results[i] = await client.get(key)
            elif i % 5 == 2:
                results[i] = await client.increment(b"n")
            elif i % 5 == 3:
                results[i] = await client.batch_get([key, b"n"])
            else:
                results[i] = await client.remove(key)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(400):
                    nursery.start_soon(one, i)
        assert len(results) == 400
        assert client.session_requests == 400
        counters = sorted(v for i, v in results.items() if i % 5 == 2)
        assert counters == list(range(1, 81))
        # A large batch and a scan go on calls of their own.
        await client.upsert({b"big%d" % i: bytes(1000) for i in range(100)})
        assert [k async for k, _ in client.scan(b"big", b"bih", keys_only=True)]
        assert client.session_requests == 400
    async with mkv.Client.connect(mkv_node.data_address, session=False) as unary:
        assert await unary.get(b"n") == b"80"
        assert unary.session_requests == 0


async def test_a_session_lost_after_sending_retries_reads_and_reports_writes_unknown() -> None:
    """The connection breaks while a get and an upsert wait for answers: the
    get is asked again on a new session, the upsert's outcome is unknown."""
    calls: Counter[str] = Counter()
    waiting = trio.Event()
    reading = trio.Event()
    never = trio.Event()

    async def get(request: pb.GetRequest) -> pb.GetResponse:
        calls["get"] += 1
        if calls["get"] == 1:
            reading.set()
            await never.wait()
        return pb.GetResponse(found=True, value=b"fresh", partition_id="p")

    async def upsert(request: pb.UpsertRequest) -> pb.UpsertResponse:
        calls["upsert"] += 1
        waiting.set()
        await never.wait()
        raise AssertionError("unreachable")

    async def partition_map(request: pb.PartitionMapRequest) -> pb.PartitionMapResponse:
        return pb.PartitionMapResponse(version=1, partitions=[pb.PartitionRange(id="p")])

    extra = {"PartitionMap": (pb.PartitionMapRequest, partition_map)}
    async with (
        session_server({"get": get, "upsert": upsert}, extra=extra) as server,
        within(20),
        mkv.Client.connect(server.address) as client,
    ):
        got: list[bytes | None] = []
        lost: list[Exception] = []

        async def read() -> None:
            got.append(await client.get(b"k"))

        async def write() -> None:
            try:
                await client.upsert({b"k": b"v"})
            except mkv.UnavailableError as exc:
                lost.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(write)
            await waiting.wait()
            await reading.wait()
            # The connection ends under the session, as when its reader
            # finds the socket gone (mkv.client.channel._ClientSocket).
            socket = client._channel._socket
            assert socket is not None
            socket.fail_pending()
        assert got == [b"fresh"]
        assert calls["get"] == 2, "the read was asked again"
        assert len(lost) == 1
        assert "unknown" in str(lost[0])
        assert calls["upsert"] == 1, "the write was not sent again"


# -- helpers ---------------------------------------------------------------


@asynccontextmanager
async def within(seconds: float) -> AsyncIterator[None]:
    """``trio.fail_after`` for an ``async with`` beside async managers."""
    with trio.fail_after(seconds):
        yield


async def read_answers(
    raw: RawH2, stream_id: int, count: int, *, skip: int = 0
) -> list[pb.SessionResponse]:
    """The first ``skip + count`` messages of a session's answer stream, less
    the first ``skip``: read (and acknowledged) as they arrive."""
    import h2.events

    while True:
        data = b"".join(
            event.data
            for event in raw.events
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id
        )
        messages = []
        while len(data) >= 5:
            length = int.from_bytes(data[1:5], "big")
            if len(data) < 5 + length:
                break
            messages.append(pb.SessionResponse.FromString(data[5 : 5 + length]))
            data = data[5 + length :]
        if len(messages) >= skip + count:
            return messages[skip : skip + count]
        if raw.closed:
            raise EOFError("the connection closed")
        await raw.receive()


@asynccontextmanager
async def session_server(
    handlers: dict[str, Any], extra: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[RpcServer]:
    """An RpcServer serving DataPlane/Session over the given handlers (and the
    unary methods in ``extra``), on a free port."""
    server = RpcServer(
        DATA_SERVICE,
        {
            "Session": (
                pb.SessionRequest,
                Multiplexed(
                    {field: (field.title(), h) for field, h in handlers.items()},
                    pb.SessionResponse,
                ),
            ),
            **(extra or {}),
        },
        parse_address("127.0.0.1:0"),
        **settings,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.stop()
