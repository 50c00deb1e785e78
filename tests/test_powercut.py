"""Durability against a power cut, not only a process kill (see tests/powercut.py).

A kill -9 leaves everything the server wrote in the kernel's page cache, so
it cannot tell "fsynced" from "says it fsynced". Here the data directory is
on tests/lazyfs.py, which keeps whatever was not fsynced in memory; each
cycle kills the server and cuts the power under it at the same moment, and
the next start must still hold every acknowledged write. Run on the default
partition (SQLite, with the log) and on a memory partition with a log, where
only the log can save a write.

CI runs a short version with fixed seeds; the soak (``-m slow``) a long one
with a seed it prints (MKV_SOAK_SEED=<seed> replays one).
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import mkv
from mkv.snapshots.manifest import verify_snapshot
from mkv.store.files import make_directory
from tests.crash import crash_cycles
from tests.powercut import LazyFS, fuse_unusable, mounted
from tests.processes import ServerProcess

_UNUSABLE = fuse_unusable()
# Under CI a missing FUSE must fail the run, never skip it silently.
pytestmark = pytest.mark.skipif(
    _UNUSABLE is not None and os.environ.get("CI") != "true",
    reason=f"power-cut tests need a FUSE mount: {_UNUSABLE}",
)

MEMORY_WAL = ("--default-store", "memory", "--default-pipeline", "timestamp wal")
# 1 MiB log segments: the log rolls to a new segment every batch or so, and
# (behind SQLite) checkpoints delete old ones, all under power cuts.
SMALL_SEGMENTS = ("--default-pipeline", "timestamp wal:always,segment=1048576")


@pytest.fixture
async def lazyfs(tmp_path: Path) -> AsyncIterator[LazyFS]:
    assert _UNUSABLE is None, f"power-cut tests need a FUSE mount: {_UNUSABLE}"
    async with mounted(tmp_path / "fs") as fs:
        yield fs


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_some_fsynced_some_not(root: Path) -> None:
    (root / "dir").mkdir()
    _fsync(root)
    kept, tail, unnamed = root / "dir" / "kept", root / "dir" / "tail", root / "dir" / "new"
    for path in (kept, tail):
        path.write_bytes(b"a" * 10_000)
        _fsync(path)
    _fsync(root / "dir")
    with open(tail, "ab") as f:
        f.write(b"b" * 5000)  # not fsynced: lost
    unnamed.write_bytes(b"c")
    _fsync(unnamed)  # its data is fsynced, but not its name in the directory
    replacement = root / "dir" / ".kept.tmp"
    replacement.write_bytes(b"new")
    _fsync(replacement)
    os.replace(replacement, kept)  # the directory is not fsynced: undone
    (root / "gone").mkdir()  # the root is not fsynced again: gone, with its files
    (root / "gone" / "f").write_bytes(b"d")
    _fsync(root / "gone" / "f")
    _fsync(root / "gone")
    assert kept.read_bytes() == b"new"
    assert tail.stat().st_size == 15_000


def _check_only_fsynced_is_left(root: Path) -> None:
    assert sorted(os.listdir(root)) == ["dir"]
    assert sorted(os.listdir(root / "dir")) == ["kept", "tail"]
    assert (root / "dir" / "kept").read_bytes() == b"a" * 10_000
    assert (root / "dir" / "tail").read_bytes() == b"a" * 10_000


async def test_lazyfs_keeps_only_what_was_fsynced(lazyfs: LazyFS) -> None:
    """The file system itself: without this, a passing power-cut test proves nothing."""
    await trio.to_thread.run_sync(_write_some_fsynced_some_not, lazyfs.mountpoint)
    await lazyfs.cut()
    await trio.to_thread.run_sync(_check_only_fsynced_is_left, lazyfs.mountpoint)


def _make_directories(root: Path) -> None:
    make_directory(root / "made" / "by" / "mkv")
    (root / "plain" / "mkdir").mkdir(parents=True)


async def test_make_directory_survives_a_power_cut(lazyfs: LazyFS) -> None:
    await trio.to_thread.run_sync(_make_directories, lazyfs.mountpoint)
    await lazyfs.cut()
    assert (lazyfs.mountpoint / "made" / "by" / "mkv").is_dir()
    # What mkv did before make_directory: gone (the test file system works).
    assert not (lazyfs.mountpoint / "plain").exists()


async def _write_keys(server: ServerProcess, keys: range) -> None:
    async with mkv.Client.connect(server.data_addr) as client:
        for start in range(keys.start, keys.stop, 100):
            await client.upsert({b"k%05d" % i: b"v%05d" % i for i in range(start, start + 100)})


async def test_snapshots_and_restores_survive_a_power_cut(lazyfs: LazyFS) -> None:
    """A snapshot (its directories, file and manifest) and a partition restored
    from it are on disk once acknowledged: a power cut right after keeps them."""
    root = lazyfs.mountpoint / "backups"
    source = ServerProcess(
        lazyfs.mountpoint / "a", "--snapshot-root", str(root), stderr_path=lazyfs.root / "a.log"
    )
    target = ServerProcess(
        lazyfs.mountpoint / "b", "--snapshot-root", str(root), stderr_path=lazyfs.root / "b.log"
    )
    with trio.fail_after(120):
        try:
            await source.start()
            await _write_keys(source, range(500))
            async with mkv.AdminClient.connect(source.control_addr) as admin:
                done = await admin.wait_operation(await admin.snapshot("default", "nightly/deep"))
            await source.kill()
            await lazyfs.cut()
            assert done.snapshot is not None
            manifest, _ = await trio.to_thread.run_sync(
                verify_snapshot, root / done.snapshot.manifest_path
            )
            assert manifest.seq == 5

            await target.start()
            async with mkv.AdminClient.connect(target.control_addr) as admin:
                await admin.remove_partition("default")
                await admin.add_partition(
                    partition_id="restored", snapshot=done.snapshot.manifest_path
                )
            async with mkv.Client.connect(target.data_addr) as client:
                await client.upsert({b"after": b"restore"})
            await target.kill()
            await lazyfs.cut()

            await target.start()
            async with mkv.Client.connect(target.data_addr) as client:
                assert await client.get(b"after") == b"restore"
                for i in range(0, 500, 7):
                    assert await client.get(b"k%05d" % i) == b"v%05d" % i
            await target.stop()
        finally:
            await source.kill()
            await target.kill()


async def _cycles(fs: LazyFS, server_args: tuple[str, ...], cycles: int, seed: int) -> None:
    with trio.fail_after(cycles * 15):
        model = await crash_cycles(
            fs.mountpoint / "data",
            cycles=cycles,
            seed=seed,
            server_args=server_args,
            power=fs,
            server_log=fs.root / "server.log",
        )
    print(
        f"{cycles} power cuts: {model.acks} writes acknowledged"
        f" ({sum(model.batch_acknowledged.values())} of them 1 MiB batches)"
    )
    assert fs.cuts == cycles
    assert model.acks > 5 * cycles, "the writers got real work done between cuts"
    assert sum(model.batch_acknowledged.values()) > 0, "some 1 MiB batches were acknowledged"


async def _server_args(variant: str, fs: LazyFS) -> tuple[str, ...]:
    """``mkv serve`` arguments for the default partition of each variant."""
    if variant == "sqlite-wal":
        return ()
    if variant == "memory-wal":
        return (*MEMORY_WAL[:3], f"{MEMORY_WAL[3]}:always,segment=1048576")
    if variant == "small-segments":
        # A small watch retention, so checkpoints need not wait for 16 MiB of log.
        config = fs.root / "mkv.toml"
        await trio.Path(config).write_text("watch_retention_bytes = 65536\n")
        return (*SMALL_SEGMENTS, "--config", str(config))
    assert variant == "caching"
    durable = ("--durable-dir", str(fs.mountpoint / "durable"))
    return ("--default-store", "caching", *durable, *SMALL_SEGMENTS)


async def test_power_cut_loses_no_acknowledged_write(lazyfs: LazyFS) -> None:
    """The default partition: SQLite (commits not fsynced) behind the log."""
    await _cycles(lazyfs, await _server_args("sqlite-wal", lazyfs), 4, 20261205)


async def test_power_cut_memory_partition_with_log(lazyfs: LazyFS) -> None:
    """A memory store keeps nothing: after each cut only the log can bring a write back."""
    await _cycles(lazyfs, await _server_args("memory-wal", lazyfs), 4, 20261206)


async def test_power_cut_while_log_segments_roll_and_checkpoint(lazyfs: LazyFS) -> None:
    await _cycles(lazyfs, await _server_args("small-segments", lazyfs), 4, 20261207)
    segments = await trio.Path(lazyfs.backing / "data/partitions/default/wal").iterdir()
    assert "00000000000000000001.wal" not in {p.name for p in segments}, (
        "checkpoints deleted old segments"
    )


async def test_power_cut_caching_partition(lazyfs: LazyFS) -> None:
    """A caching store: its durable SQLite behind the log, its cache in memory,
    and the durable store in a directory of its own (``--durable-dir``)."""
    await _cycles(lazyfs, await _server_args("caching", lazyfs), 4, 20261208)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["sqlite-wal", "memory-wal", "small-segments", "caching"])
async def test_soak_power_cut(lazyfs: LazyFS, variant: str) -> None:
    seed = int(os.environ.get("MKV_SOAK_SEED") or random.randrange(2**32))
    cycles = int(os.environ.get("MKV_SOAK_CYCLES", "100"))
    print(f"soak: {cycles} power cuts of {variant}, MKV_SOAK_SEED={seed}")
    await _cycles(lazyfs, await _server_args(variant, lazyfs), cycles=cycles, seed=seed)
