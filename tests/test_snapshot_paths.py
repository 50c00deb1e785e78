"""Snapshot paths stay inside the snapshot root: every way out is refused, and
nothing is ever written outside it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import mkv
from mkv.snapshots.paths import SnapshotRoot
from mkv.testing import running_node

TIMEOUT = 60


def tree(path: Path) -> set[str]:
    """Every path under ``path``, not following symlinks."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), path))
    return found


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A snapshot root, and a directory outside it that symlinks point into."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").mkdir()
    (root / "escape").symlink_to(outside)
    (root / "escape-deep").symlink_to(outside / "victim")
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real")
    (root / "relative-escape").symlink_to(Path("..") / "outside")
    (root / "a-file").write_text("not a directory")
    (root / "loop").symlink_to(root / "loop")
    return root, outside


def bad_paths(root: Path, outside: Path) -> dict[str, str]:
    """path -> a fragment of the refusal."""
    return {
        "..": "'..'",
        "../outside": "'..'",
        "real/../../outside": "'..'",
        "real/..": "'..'",
        str(outside): "outside the snapshot root",
        str(outside / "new"): "outside the snapshot root",
        "/": "outside the snapshot root",
        "/etc": "outside the snapshot root",
        str(root) + "-sibling": "outside the snapshot root",
        "escape": "outside the snapshot root",
        "escape/new": "outside the snapshot root",
        "escape-deep": "outside the snapshot root",
        "relative-escape/x": "outside the snapshot root",
        "real/\0/x": "NUL",
        "\0": "NUL",
        "x" * 256: "255 bytes",
        "real/" + "y" * 300 + "/z": "255 bytes",
        "/".join(["d"] * 2100): "4096",
        "a-file": "a symlink or a file is in the way",
        "a-file/sub": "a symlink or a file is in the way",
        "loop": "a symlink or a file is in the way",
    }


@pytest.fixture
async def node(layout: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[mkv.Node]:
    root, _ = layout
    async with running_node(tmp_path / "data", snapshot_root=root) as node:
        yield node


async def test_every_way_out_of_the_root_is_refused(
    node: mkv.Node, layout: tuple[Path, Path], tmp_path: Path
) -> None:
    root, outside = layout
    with trio.fail_after(TIMEOUT):
        async with (
            mkv.AdminClient.connect(node.control_address) as admin,
            mkv.Client.connect(node.data_address) as client,
        ):
            await client.upsert({b"k": b"v"})
            before = tree(tmp_path)
            for path, fragment in bad_paths(root, outside).items():
                with pytest.raises(mkv.InvalidArgumentError) as caught:
                    await admin.snapshot("default", path)
                assert fragment in caught.value.message, (path, caught.value.message)
                with pytest.raises(mkv.InvalidArgumentError):
                    await admin.add_partition(partition_id="r", start=b"z", snapshot=path)
            assert [p.id for p in await admin.list_partitions()] == ["default"]
    # Nothing appeared anywhere: not outside the root, and not inside it either.
    assert tree(tmp_path) == before
    assert tree(outside) == {"victim"}


async def test_paths_inside_the_root_work_through_symlinks_too(
    node: mkv.Node, layout: tuple[Path, Path]
) -> None:
    root, outside = layout
    with trio.fail_after(TIMEOUT):
        async with (
            mkv.AdminClient.connect(node.control_address) as admin,
            mkv.Client.connect(node.data_address) as client,
        ):
            await client.upsert({b"k": b"v"})
            places = {
                "": "",
                ".": "",
                "new/nested/dir": "new/nested/dir",
                "alias": "real",
                "alias/sub": "real/sub",
                str(root / "absolute"): "absolute",
                "./dots/./here": "dots/here",
            }
            for path, lands in places.items():
                done = await admin.wait_operation(await admin.snapshot("default", path))
                assert done.snapshot is not None
                assert done.snapshot.data_path.rpartition("/")[0] == lands, path
                assert (root / done.snapshot.data_path).is_file()
            # Restore takes the same kinds of paths.
            await admin.remove_partition("default")
            for n, path in enumerate(
                [
                    str(root / "real/default-1.sqlite3.manifest.json"),
                    "alias/default-1.sqlite3.manifest.json",
                ]
            ):
                info = await admin.add_partition(partition_id=f"copy{n}", snapshot=path)
                assert info.key_count == 1
                await admin.remove_partition(info.id)
    assert tree(outside) == {"victim"}


def test_a_symlink_swapped_in_after_the_check_is_refused(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    root, outside = layout
    snapshot_root = SnapshotRoot(root)
    target = snapshot_root.check_directory("moving/deeper")
    # Between the check and the walk, someone replaces a directory on the way.
    (root / "moving").symlink_to(outside)
    with pytest.raises(mkv.InvalidArgumentError, match="a symlink or a file is in the way"):
        snapshot_root.open_directory(target, create=True)
    assert tree(outside) == {"victim"}

    # The same after the walk created a directory: a swap below it is caught.
    (root / "moving").unlink()
    target = snapshot_root.check_directory("made/deeper")
    (root / "made").mkdir()
    (root / "made" / "deeper").symlink_to(outside / "victim")
    with pytest.raises(mkv.InvalidArgumentError, match="a symlink or a file is in the way"):
        snapshot_root.open_directory(target, create=True)
    assert tree(outside) == {"victim"}


def test_a_missing_directory_is_not_created_for_a_restore(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    snapshot_root = SnapshotRoot(root)
    target = snapshot_root.check_file("nowhere/x.manifest.json")
    with pytest.raises(mkv.InvalidArgumentError, match="no directory"):
        snapshot_root.open_directory(target, create=False)
    assert not (root / "nowhere").exists()
    with pytest.raises(mkv.InvalidArgumentError, match="not a file"):
        snapshot_root.check_file("")


def test_the_snapshot_root_setting(tmp_path: Path) -> None:
    assert mkv.Config(data_dir=tmp_path).snapshot_dir == tmp_path / "snapshots"
    config_file = tmp_path / "mkv.toml"
    config_file.write_text(f'snapshot_root = "{tmp_path / "elsewhere"}"\n')
    assert mkv.Config.load(config_file).snapshot_dir == tmp_path / "elsewhere"
    assert mkv.Config.load(config_file, snapshot_root=tmp_path / "flag").snapshot_dir == (
        tmp_path / "flag"
    )
