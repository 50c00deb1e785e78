"""A snapshot's whole trip: the server writes it, mkv-sidecar ships it to a
directory and fetches it back, and the server restores from what came back."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import mkv
from mkv.testing import running_node

TIMEOUT = 60


async def sidecar(*argv: str) -> str:
    done = await trio.run_process(
        [sys.executable, "-m", "mkv.cli.sidecar", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_snapshot_ship_fetch_restore(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    remote = tmp_path / "remote"
    remote.mkdir()
    with trio.fail_after(TIMEOUT):
        async with (
            running_node(tmp_path / "data", snapshot_root=root) as node,
            mkv.Client.connect(node.data_address) as client,
            mkv.AdminClient.connect(node.control_address) as admin,
        ):
            await client.upsert({b"k%d" % i: b"v%d" % i for i in range(50)})
            done = await admin.wait_operation(await admin.snapshot("default", "nightly"))
            assert done.snapshot is not None
            await sidecar("--root", str(root), "--destination", str(remote), "--once")
            shipped = remote / done.snapshot.manifest_path
            assert shipped.is_file()

            await admin.remove_partition("default")
            fetched = await sidecar("download", str(shipped), str(root / "fetched"))
            manifest_path = Path(fetched.strip()).relative_to(root)
            info = await admin.add_partition(partition_id="back", snapshot=str(manifest_path))
            assert (info.key_count, info.last_seq) == (50, done.snapshot.manifest.seq)
            assert await client.get(b"k42") == b"v42"
