"""kill -9 of a real server in the middle of a snapshot: no manifest for the
partial file, the data intact, and the next snapshot fine."""

from __future__ import annotations

from pathlib import Path

import trio

import mkv
from mkv.snapshots.manifest import verify_snapshot
from mkv.testing import prefill_key, prefill_sqlite_partition
from tests.processes import ServerProcess

# Large enough that the copy takes a good fraction of a second, so the test
# catches it half-way; written straight to disk in a few seconds.
KEYS = 150_000
VALUE_SIZE = 900


async def test_kill_9_during_a_snapshot(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await trio.to_thread.run_sync(
        lambda: prefill_sqlite_partition(data_dir, keys=KEYS, value_size=VALUE_SIZE)
    )
    # Outside the data directory, through the flag.
    root = tmp_path / "backups"
    server = ServerProcess(data_dir, "--snapshot-root", str(root))
    with trio.fail_after(180):
        await server.start()
        try:
            async with mkv.Client.connect(server.data_addr) as client:
                (ack,) = await client.upsert({b"late": b"write"})
            assert ack.seq == KEYS + 1
            async with mkv.AdminClient.connect(server.control_addr) as admin:
                operation_id = await admin.snapshot("default", "nightly")
                while True:
                    info = await admin.get_operation(operation_id)
                    assert info.running, "the copy finished before the test could kill it"
                    if info.phase == "copy" and 0 < info.done < info.total / 2:
                        break
            await server.kill()
        finally:
            if server.process is not None:
                await server.kill()

        left = sorted(p.name for p in (root / "nightly").iterdir())
        assert left == [f".mkv-snapshot-{operation_id}.tmp"], left
        assert not list(root.rglob("*.manifest.json"))

        await server.start()
        try:
            async with (
                mkv.AdminClient.connect(server.control_addr) as admin,
                mkv.Client.connect(server.data_addr) as client,
            ):
                [info] = await admin.list_partitions()
                assert (info.key_count, info.last_seq) == (KEYS + 1, KEYS + 1)
                assert await client.get(b"late") == b"write"
                for i in (0, KEYS // 2, KEYS - 1):
                    item = await client.get_item(prefill_key(i))
                    assert item is not None
                    assert (len(item.value), item.seq) == (VALUE_SIZE, i + 1)
                with trio.fail_after(120):
                    done = await admin.wait_operation(await admin.snapshot("default", "nightly"))
        finally:
            await server.stop()
    assert done.snapshot is not None
    # The partial file of the killed operation is gone; the new snapshot is whole.
    assert sorted(p.name for p in (root / "nightly").iterdir()) == [
        f"default-{KEYS + 1}.sqlite3",
        f"default-{KEYS + 1}.sqlite3.manifest.json",
    ]
    manifest, _ = verify_snapshot(root / done.snapshot.manifest_path)
    assert manifest.seq == KEYS + 1
