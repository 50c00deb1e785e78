"""Many writers on one partition: one order, no lost update, nothing reordered."""

from __future__ import annotations

import itertools
import random

import attrs
import pytest
import trio

import mkv
from mkv.testing import running_node

WRITERS = 32
WRITES_EACH = 25
KEYS = [f"key-{i}".encode() for i in range(8)]


@attrs.frozen
class Ack:
    writer: int
    key: bytes
    value: bytes
    seq: int
    timestamp: int
    sent: float
    acked: float


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_32_concurrent_writers_on_one_partition(store: str) -> None:
    acks: list[Ack] = []
    rng = random.Random(7)
    plans = [[rng.choice(KEYS) for _ in range(WRITES_EACH)] for _ in range(WRITERS)]

    async with running_node(default_store=store) as node:

        async def writer(n: int) -> None:
            # A connection per writer: the server sees 32 independent clients.
            async with mkv.Client.connect(node.data_address) as client:
                for i, key in enumerate(plans[n]):
                    value = f"w{n}-{i}".encode()
                    sent = trio.current_time()
                    [ack] = await client.upsert({key: value})
                    acks.append(
                        Ack(n, key, value, ack.seq, ack.timestamp, sent, trio.current_time())
                    )

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(WRITERS):
                    nursery.start_soon(writer, n)

            async with mkv.Client.connect(node.data_address) as client:
                final = {key: await client.get_item(key) for key in KEYS}

    assert len(acks) == WRITERS * WRITES_EACH
    seqs = [a.seq for a in acks]
    assert len(set(seqs)) == len(seqs), "every write has its own sequence number"

    # The final state is the last acknowledged write per key (by sequence).
    last: dict[bytes, Ack] = {}
    for ack in sorted(acks, key=lambda a: a.seq):
        last[ack.key] = ack
    for key in KEYS:
        item = final[key]
        if key in last:
            assert item == mkv.Item(last[key].value, last[key].seq, last[key].timestamp)
        else:
            assert item is None

    # The partition clock stamps writes in sequence order.
    stamps = [a.timestamp for a in sorted(acks, key=lambda a: a.seq)]
    assert all(a < b for a, b in itertools.pairwise(stamps)), "timestamps follow seq order"

    # Real-time order: a write sent after another was acknowledged has a
    # higher sequence number (so each writer's own numbers strictly increase).
    by_ack_time = sorted(acks, key=lambda a: a.acked)
    highest_acked, i = 0, 0
    for ack in sorted(acks, key=lambda a: a.sent):
        while i < len(by_ack_time) and by_ack_time[i].acked < ack.sent:
            highest_acked = max(highest_acked, by_ack_time[i].seq)
            i += 1
        assert ack.seq > highest_acked, f"{ack} numbered before a write acknowledged earlier"
    for n in range(WRITERS):
        own = [a.seq for a in acks if a.writer == n]
        assert own == sorted(own)


async def test_a_read_after_an_acknowledged_write_sees_it(mkv_node: mkv.Node) -> None:
    """Linearizable reads: from another connection, right after the ack."""
    with trio.fail_after(30):
        async with (
            mkv.Client.connect(mkv_node.data_address) as writer,
            mkv.Client.connect(mkv_node.data_address) as reader,
        ):
            for i in range(200):
                [ack] = await writer.upsert({b"counter": str(i).encode()})
                assert await reader.get_item(b"counter") == mkv.Item(
                    str(i).encode(), ack.seq, ack.timestamp
                )
