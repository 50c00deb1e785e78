"""Abuse from every side at once leaves the server's memory bounded and other
clients served: clients that never read their responses, a thousand calls on
one connection, a compression bomb. Measured on a real ``mkv serve``
subprocess (VmRSS in /proc/<pid>/status)."""

from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path

import trio

import mkv
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE
from tests.grpcio_stubs import grpcio_channel
from tests.h2_raw import RawH2, grpc_frame
from tests.processes import ServerProcess

GET = f"/{DATA_SERVICE}/Get"
MIB = 1024 * 1024
VALUE_BYTES = 256 * 1024
STALLED_CONNECTIONS = 4
STREAMS_EACH = 25  # within the default 100 a connection
STALL_TIMEOUT = 1.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@functools.cache
def bomb() -> bytes:
    """256 MiB of zeros in about 256 KiB (zlib), far under the 1 MiB limit."""
    compressor = zlib.compressobj(6)
    return b"".join(compressor.compress(bytes(MIB)) for _ in range(256)) + compressor.flush()


async def stall(address: str, hold: float) -> None:
    """Ask for big values and never read the answers, then hang up."""
    raw = await RawH2.connect(address)
    try:
        for _ in range(STREAMS_EACH):
            await raw.call(GET, grpc_frame(pb.GetRequest(key=b"big").SerializeToString()))
        await trio.sleep(hold)
    finally:
        await raw.aclose()


async def detonate(address: str) -> None:
    raw = await RawH2.connect(address)
    try:
        stream_id = await raw.call(GET, grpc_frame(bomb(), compressed=True))
        assert (await raw.status(stream_id))[0] != 0
    finally:
        await raw.aclose()


def thousand_calls(address: str) -> int:
    with grpcio_channel(address) as channel:
        get = channel.unary_unary(
            GET,
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        futures = [get.future(pb.GetRequest(key=b"small"), timeout=60) for _ in range(1000)]
        return sum(f.result().found for f in futures)


async def test_abuse_leaves_rss_bounded_and_others_served(tmp_path: Path) -> None:
    config = tmp_path / "mkv.toml"
    config.write_text(f"stream_stall_timeout = {STALL_TIMEOUT}\n")
    process = ServerProcess(tmp_path / "mkv-data", "--config", str(config))
    # RSS should show what mkv keeps, not what glibc keeps of what mkv freed:
    # with one arena per thread (the worker pool, Trio's thread cache) and
    # trimming only at the heap's top, a wave's freed pieces stayed resident
    # at random, 45 to 100 MiB after the same wave, hiding or faking a leak.
    # Large blocks mapped on their own go back to the OS when freed.
    await process.start(
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2"}
    )
    await trio.to_thread.run_sync(bomb)  # made before the clock starts
    try:
        with trio.fail_after(50):
            async with mkv.Client.connect(process.data_addr) as client:
                await client.upsert({b"big": bytes(VALUE_BYTES), b"small": b"s"})
                for _ in range(200):  # warm the caches, the allocator, the code paths
                    await client.get(b"big")
                baseline = rss_bytes(process.pid)
                peaks, after = [], []
                for _wave in range(2):
                    peak = baseline
                    served = 0
                    thousand_found = 0

                    async def sample(cancel: trio.CancelScope) -> None:
                        nonlocal peak
                        while True:
                            peak = max(peak, rss_bytes(process.pid))
                            await trio.sleep(0.02)

                    async def well_behaved() -> None:
                        nonlocal served
                        for i in range(20):
                            with trio.fail_after(10):
                                await client.upsert({f"ok{i}": b"v"})
                                assert await client.get(f"ok{i}") == b"v"
                            served += 1

                    async def grpcio_burst() -> None:
                        nonlocal thousand_found
                        thousand_found = await trio.to_thread.run_sync(
                            thousand_calls, process.data_addr
                        )

                    async with trio.open_nursery() as sampler:
                        sampler.start_soon(sample, sampler.cancel_scope)
                        async with trio.open_nursery() as abuse:
                            for _ in range(STALLED_CONNECTIONS):
                                abuse.start_soon(stall, process.data_addr, 3 * STALL_TIMEOUT)
                            abuse.start_soon(detonate, process.data_addr)
                            abuse.start_soon(grpcio_burst)
                            abuse.start_soon(well_behaved)
                        sampler.cancel_scope.cancel()
                    assert served == 20
                    assert thousand_found == 1000
                    await trio.sleep(2 * STALL_TIMEOUT)
                    peaks.append(peak)
                    after.append(rss_bytes(process.pid))
        held = STALLED_CONNECTIONS * STREAMS_EACH * VALUE_BYTES  # 25 MiB of unread answers
        print(
            f"baseline {baseline / MIB:.0f} MiB, peaks {[round(p / MIB) for p in peaks]} MiB, "
            f"after {[round(a / MIB) for a in after]} MiB, unread answers {held / MIB:.0f} MiB"
        )
        # Bounded by what the limits allow (an inflated bomb alone is 256 MiB) ...
        for peak in peaks:
            assert peak - baseline < held + 100 * MIB
        # ... and given back: a second wave costs nothing the first did not.
        assert after[1] - after[0] < 32 * MIB
    finally:
        await process.stop()
