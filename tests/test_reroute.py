"""The client keeps routing a request the node refuses while the partition
map moves, instead of failing it (mkv.client.data, _Rerouting)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import mkv
from mkv.testing import running_node
from tests.test_split import split


async def test_writes_to_a_moving_range_go_through_splits_in_a_row(tmp_path: Path) -> None:
    """16 writers on keys that ten splits in a row move, each time to the
    newest partition. A write refused by the old owner is re-routed by the
    refreshed map to a partition whose own split may be cutting over: it is
    refused again. A client that re-routed only once failed such writes
    (found as a rare failure of test_split's linearizability test); this one
    routes again, backing off while the map has not moved."""
    failures: list[BaseException] = []
    written = 0
    with trio.fail_after(120):
        async with (
            running_node(tmp_path / "data") as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await client.upsert({f"fill{i:05d}".encode(): b"x" * 100 for i in range(2000)})
            stop = trio.Event()

            async def writer(n: int) -> None:
                nonlocal written
                i = 0
                while not stop.is_set():
                    try:
                        await client.upsert({f"z{n:02d}{i % 20:02d}".encode(): b"v" * 1024})
                        written += 1
                    except mkv.BadNodeError as exc:
                        failures.append(exc)
                    i += 1

            async with trio.open_nursery() as nursery:
                for n in range(16):
                    nursery.start_soon(writer, n)
                await trio.sleep(0.1)
                owner = "default"
                for n, at in enumerate(b"cegikmoqsu"):
                    await split(admin, owner, bytes([at]), f"p{n}")
                    owner = f"p{n}"
                await trio.sleep(0.1)
                stop.set()
    assert written > 0
    assert not failures, f"{len(failures)} of {written} writes failed: {failures[0]}"


async def test_a_key_no_partition_owns_is_refused_at_once(tmp_path: Path) -> None:
    """Re-routing waits only while the map may still move: a key the node's
    current map gives to no partition is BAD_NODE without the wait."""
    with trio.fail_after(60):
        async with (
            running_node(tmp_path / "data") as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await split(admin, "default", b"m", "upper")
            await client.upsert({b"a": b"1", b"x": b"1"})
            await admin.remove_partition("upper")
            start = trio.current_time()
            with pytest.raises(mkv.BadNodeError):
                await client.get(b"x")
            with pytest.raises(mkv.BadNodeError):
                await client.upsert({b"x": b"2"})
            assert trio.current_time() - start < 2
