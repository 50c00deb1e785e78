"""Kill -9 a real server under load, again and again, and check what it kept.

Used by tests/test_crash.py (a short run in CI) and `just soak` (a long one),
and with a power cut after each kill by tests/test_powercut.py. Each cycle
starts ``mkv serve`` on the same data directory, checks every acknowledged
write so far, runs concurrent writers (single upserts and ~1 MiB batches)
for a random while, and kills the server with SIGKILL (then, given a
``power``, cuts the power under it).

What must hold after every restart:
- every acknowledged write is there, with its value or a later one;
- nothing is there that was never written (values name their version);
- a batch is all or nothing (sampled keys of a batch share one version);
- SQLite's ``integrity_check`` passes on the killed server's files.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import attrs
import trio

import mkv
from tests.processes import ServerProcess

SINGLE_WRITERS = 14
BATCH_WRITERS = 2
KEYS_PER_WRITER = 20
BATCH_KEYS = 7000  # of 100-byte values: one request just under 1 MiB
VALUE_PAD = 90


class Power(Protocol):
    async def cut(self) -> None:
        """Lose whatever the data directory's storage holds but did not fsync,
        and be ready for the next start. Called with the server dead."""


@attrs.define
class Model:
    """What the writers attempted and what the server acknowledged, per key."""

    attempted: dict[bytes, int] = attrs.field(factory=lambda: defaultdict(int))
    acknowledged: dict[bytes, int] = attrs.field(factory=lambda: defaultdict(int))
    batch_attempted: dict[int, int] = attrs.field(factory=lambda: defaultdict(int))
    batch_acknowledged: dict[int, int] = attrs.field(factory=lambda: defaultdict(int))
    acks: int = 0
    # Keys written and then removed, each once (the remover's): the remove's
    # ack means the key must never be found again.
    removes_attempted: set[bytes] = attrs.field(factory=set)
    removes_acknowledged: set[bytes] = attrs.field(factory=set)


def value_of(version: int) -> bytes:
    return f"v{version:08d}".encode().ljust(VALUE_PAD, b".")


def version_of(value: bytes) -> int:
    assert value.startswith(b"v"), value[:20]
    assert value.endswith(b"."), value[:20]
    return int(value[1:9])


def batch_key(writer: int, i: int) -> bytes:
    return f"b{writer}-{i:05d}".encode()


async def single_writer(client: mkv.Client, writer: int, model: Model, rng: random.Random) -> None:
    while True:
        key = f"s{writer:02d}-{rng.randrange(KEYS_PER_WRITER):02d}".encode()
        version = model.attempted[key] + 1
        model.attempted[key] = version
        try:
            await client.upsert({key: value_of(version)})
        except mkv.UnavailableError:
            return
        # One writer per key, writing in sequence: acks come in version order.
        model.acknowledged[key] = version
        model.acks += 1


async def batch_writer(client: mkv.Client, writer: int, model: Model) -> None:
    while True:
        version = model.batch_attempted[writer] + 1
        model.batch_attempted[writer] = version
        value = value_of(version)
        try:
            await client.upsert({batch_key(writer, i): value for i in range(BATCH_KEYS)})
        except mkv.UnavailableError:
            return
        model.batch_acknowledged[writer] = version
        model.acks += 1


async def remover(client: mkv.Client, model: Model) -> None:
    """Write keys and remove them, each key once: none may come back."""
    n = len(model.removes_attempted)
    while True:
        key = f"r{n:06d}".encode()
        n += 1
        try:
            await client.upsert({key: value_of(1)})
            model.removes_attempted.add(key)
            await client.remove(key)
        except mkv.UnavailableError:
            return
        model.removes_acknowledged.add(key)
        model.acks += 1


async def verify(server: ServerProcess, model: Model, rng: random.Random) -> None:
    async with mkv.Client.connect(server.data_addr) as client:
        for key in model.removes_acknowledged:
            assert await client.get(key) is None, f"{key!r} came back after its remove"
        for key, attempted in model.attempted.items():
            item = await client.get_item(key)
            acked = model.acknowledged[key]
            if item is None:
                assert acked == 0, f"{key!r}: acknowledged version {acked} is lost"
                continue
            version = version_of(item.value)
            assert acked <= version <= attempted, (
                f"{key!r}: has version {version}, acknowledged {acked}, attempted {attempted}"
            )
        for writer, attempted in model.batch_attempted.items():
            sample = {0, BATCH_KEYS - 1, *rng.sample(range(BATCH_KEYS), 30)}
            items = [await client.get_item(batch_key(writer, i)) for i in sorted(sample)]
            versions = {None if item is None else version_of(item.value) for item in items}
            assert len(versions) == 1, f"batch writer {writer}: a torn batch {versions}"
            [version] = versions
            acked = model.batch_acknowledged[writer]
            assert (version or 0) >= acked, f"batch {writer}: acknowledged {acked} lost"
            assert (version or 0) <= attempted


# Where splits cut (never inside a batch writer's keys: a batch that spans
# partitions is not atomic, by design).
SPLIT_POINTS = [b"b1-", b"c", *(f"s{w:02d}-".encode() for w in range(1, SINGLE_WRITERS))] + [
    f"s{w:02d}-{k:02d}".encode() for w in range(SINGLE_WRITERS) for k in range(1, KEYS_PER_WRITER)
]


async def splitter(server: ServerProcess, rng: random.Random) -> None:
    """Split partitions at random points, and merge neighbours back, one
    after another, until killed."""
    async with mkv.AdminClient.connect(server.control_addr) as admin:
        while True:
            await trio.sleep(rng.uniform(0, 0.2))
            at = rng.choice(SPLIT_POINTS)
            try:
                parts = sorted(await admin.list_partitions(), key=lambda p: p.range.start)
                if len(parts) > 1 and rng.random() < 0.4:
                    i = rng.randrange(len(parts) - 1)
                    operation_id = await admin.merge_partitions(parts[i].id, parts[i + 1].id)
                    await admin.wait_operation(operation_id, poll_interval=0.01)
                    continue
                owners = [p for p in parts if at in p.range and at != p.range.start]
                if not owners:
                    continue
                operation_id = await admin.split_partition(owners[0].id, at)
                await admin.wait_operation(operation_id, poll_interval=0.01)
            except (mkv.UnavailableError, mkv.NotFoundError):
                return
            except mkv.MkvError:
                continue  # refused (still purging, say): try another


async def check_partitions(server: ServerProcess, data_dir: Path) -> None:
    """The partitions cover every key exactly once, and no directory is left
    of a split that never committed."""
    async with mkv.AdminClient.connect(server.control_addr) as admin:
        parts = sorted(await admin.list_partitions(), key=lambda p: p.range.start)
    assert parts[0].range.start == b"", parts
    assert parts[-1].range.end is None, parts
    for low, high in itertools.pairwise(parts):
        assert low.range.end == high.range.start, f"a gap or overlap: {low} {high}"
    for p in parts:
        assert p.state == "active", p
    on_disk = {d.name for d in (data_dir / "partitions").iterdir() if d.is_dir()}
    assert on_disk == {p.id for p in parts}, f"left behind: {on_disk - {p.id for p in parts}}"


def integrity_check(data_dir: Path) -> None:
    for database in data_dir.glob("partitions/*/store.sqlite3"):
        conn = sqlite3.connect(database)
        try:
            [(result,)] = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert result == "ok", f"{database}: {result}"


async def crash_cycles(
    data_dir: Path,
    cycles: int,
    seed: int,
    *,
    server_args: tuple[str, ...] = (),
    power: Power | None = None,
    server_log: Path | None = None,
    splits: bool = False,
) -> Model:
    """Run ``cycles`` kill -9 cycles; raise AssertionError on the first violation.

    Args:
        server_args: more ``mkv serve`` arguments (a partition's store and
            pipeline, say).
        power: cut after every kill -9, so each restart sees only what was
            fsynced.
        server_log: where the server's log goes (off the storage a power cut
            takes away); default next to ``data_dir``.
        splits: split and merge partitions online during each cycle, so
            kills land at every stage of both, while a remover writes and
            removes keys; the partitions are checked after each restart to
            cover every key once, and no removed key to be back.
    """
    rng = random.Random(seed)
    model = Model()
    server = ServerProcess(data_dir, *server_args, stderr_path=server_log)
    for cycle in range(cycles):
        await server.start()
        try:
            await verify(server, model, rng)
            if splits:
                await check_partitions(server, data_dir)
            async with (
                mkv.Client.connect(server.data_addr) as client,
                trio.open_nursery() as nursery,
            ):
                if splits:
                    nursery.start_soon(splitter, server, random.Random(rng.random()))
                    nursery.start_soon(remover, client, model)
                for writer in range(SINGLE_WRITERS):
                    writer_rng = random.Random(rng.random())
                    nursery.start_soon(single_writer, client, writer, model, writer_rng)
                for writer in range(BATCH_WRITERS):
                    nursery.start_soon(batch_writer, client, writer, model)
                await trio.sleep(rng.uniform(0.05, 0.6))
                await server.kill()
        except BaseException as exc:
            exc.add_note(f"crash cycle {cycle} of seed {seed}; server log: {server.stderr_path}")
            raise
        finally:
            await server.kill()
            if power is not None:
                await power.cut()
        integrity_check(data_dir)
    await server.start()
    try:
        await verify(server, model, rng)
        if splits:
            await check_partitions(server, data_dir)
    finally:
        await server.stop()
    integrity_check(data_dir)
    return model
