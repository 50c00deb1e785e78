"""Linearizability of get, upsert, compare-and-set and increment, checked on
recorded histories of concurrent clients against a real node, including a
kill -9 and restart in the middle (the checker: tests/linearizability.py)."""

from __future__ import annotations

import random
from pathlib import Path

import trio

import mkv
from tests.linearizability import (
    CounterModel,
    History,
    Model,
    Outcome,
    RegisterModel,
    assert_linearizable,
)
from tests.processes import ServerProcess

REGISTERS = [b"r0", b"r1", b"r2"]
COUNTERS = [b"c0", b"c1"]
MODELS: dict[bytes, Model] = {
    **{key: RegisterModel() for key in REGISTERS},
    **{key: CounterModel() for key in COUNTERS},
}
# A call that takes longer counts as indeterminate (its outcome is unknown).
CALL_TIMEOUT = 5.0


class Progress:
    """How many calls the clients have finished, and a way to wait for a count."""

    def __init__(self) -> None:
        self.done = 0
        self._changed = trio.Event()

    def step(self) -> None:
        self.done += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while self.done < count:
            await self._changed.wait()


async def client_loop(
    address: str, n: int, calls: int, history: History, progress: Progress
) -> None:
    """``calls`` random operations, each recorded with its outcome. Every value
    written is unique, so a sequence number names one value and a CAS on it
    can be recorded as a CAS on that value."""
    async with mkv.Client.connect(address) as client:
        await operations(client, n, calls, history, progress)


async def operations(
    client: mkv.Client, n: int, calls: int, history: History, progress: Progress
) -> None:
    """The calls of ``client_loop`` as client ``n`` of the history, on ``client``
    (which other tasks may share)."""
    rng = random.Random(n)
    last_read: dict[bytes, mkv.Item | None] = {}
    for i in range(calls):
        key = rng.choice(REGISTERS + COUNTERS)
        if key in COUNTERS:
            kind = rng.choice(["read", "incr"])
        else:
            kind = rng.choice(["read", "write", "cas-value", "cas-seq"])
        value = b"%d-%d" % (n, i)
        seen = last_read.get(key)
        if kind == "read":
            token = history.invoke(n, key, "read")
        elif kind == "write":
            token = history.invoke(n, key, "write", (value,))
        elif kind == "incr":
            delta = rng.randint(1, 3)
            token = history.invoke(n, key, "incr", (delta,))
        else:
            token = history.invoke(n, key, "cas", (None if seen is None else seen.value, value))
        try:
            with trio.fail_after(CALL_TIMEOUT):
                result: object = None
                if kind == "read":
                    item = last_read[key] = await client.get_item(key)
                    result = None if item is None else item.value
                    if key in COUNTERS and item is not None:
                        result = int(item.value)
                elif kind == "write":
                    await client.upsert({key: value})
                elif kind == "incr":
                    result = await client.increment(key, delta)
                elif kind == "cas-value":
                    if seen is None:
                        await client.upsert({key: value}, if_seq={key: 0})
                    else:
                        await client.upsert({key: value}, if_value={key: seen.value})
                    result = True
                else:
                    await client.upsert({key: value}, if_seq={key: 0 if seen is None else seen.seq})
                    result = True
        except mkv.ConditionFailedError:
            history.complete(token, Outcome.OK, False)
        except (mkv.UnavailableError, trio.TooSlowError):
            # Lost connection, server killed or restarting: may or may not
            # have happened. Back off a little while the server is away.
            history.complete(token, Outcome.INDETERMINATE)
            await trio.sleep(0.05)
        else:
            history.complete(token, Outcome.OK, result)
        progress.step()


async def test_concurrent_clients_are_linearizable(mkv_node: mkv.Node) -> None:
    history = History()
    progress = Progress()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(
                    client_loop, str(mkv_node.data_address), n, 150, history, progress
                )
    assert len(history) == 12 * 150
    verdict = assert_linearizable(history, MODELS)
    assert verdict.linearizable


async def test_clients_sharing_one_session_are_linearizable(mkv_node: mkv.Node) -> None:
    """Twelve tasks share one mkv.Client: their calls interleave on one
    DataPlane.Session, answered out of order (issue 17)."""
    history = History()
    progress = Progress()
    with trio.fail_after(120):
        async with mkv.Client.connect(mkv_node.data_address) as client:
            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(operations, client, n, 150, history, progress)
            assert client.session_requests >= 12 * 150, "the calls went on the session"
    assert len(history) == 12 * 150
    verdict = assert_linearizable(history, MODELS)
    assert verdict.linearizable


async def test_linearizable_across_a_kill_9_and_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    await server.start()
    history = History()
    progress = Progress()
    try:
        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(client_loop, server.data_addr, n, 150, history, progress)
                for when in (300, 700):  # two crashes, part-way through
                    await progress.wait_for(when)
                    await server.kill()
                    await server.start(same_ports=True)
    finally:
        await server.kill()
    outcomes = [op.outcome for op in history]
    assert outcomes.count(Outcome.INDETERMINATE) > 0, "the kills hit calls in flight"
    assert outcomes.count(Outcome.OK) > 800
    assert_linearizable(history, MODELS)
