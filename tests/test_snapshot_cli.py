"""mkvctl snapshot, operations get and partitions restore, in-process against a real node."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import trio

import mkv
from mkv.cli.ctl import run
from mkv.snapshots.manifest import verify_snapshot

TIMEOUT = 60


async def mkvctl(node: mkv.Node, *argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    addresses = [f"--data-addr={node.data_address}", f"--control-addr={node.control_address}"]
    code = await run([*addresses, *argv], out, err, env={})
    return code, out.getvalue().decode(), err.getvalue()


# ISO 8601, UTC, with or without milliseconds.
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


def fields(text: str) -> dict[str, str]:
    """``name  value`` lines as a dict."""
    return dict(line.split(None, 1) for line in text.splitlines())


async def test_snapshot_wait_then_restore(mkv_node: mkv.Node, mkv_client: mkv.Client) -> None:
    with trio.fail_after(TIMEOUT):
        await mkv_client.upsert({b"k%03d" % i: b"v" * 100 for i in range(300)})

        code, out, err = await mkvctl(mkv_node, "snapshot", "default", "cli", "--wait")
        assert code == 0, err
        shown = fields(out)
        assert shown["manifest"] == "cli/default-1.sqlite3.manifest.json"
        assert shown["data"] == "cli/default-1.sqlite3"
        assert shown["seq"] == "1"
        assert shown["partition"] == "default ['', ∞) (sqlite)"
        manifest, _ = verify_snapshot(mkv_node.config.snapshot_dir / shown["manifest"])
        assert shown["sha256"] == manifest.sha256
        assert shown["size"].endswith(f"({manifest.size} bytes)")
        # The progress bar went to stderr (one line per step: not a terminal).
        lines = err.splitlines()
        assert lines, "a progress bar"
        assert all(line.startswith("[") for line in lines), err
        assert lines[-1].startswith("[" + "#" * 30 + "]"), err
        assert "done" in lines[-1]

        # Without --wait: just the id, which operations get then describes.
        code, out, err = await mkvctl(mkv_node, "snapshot", "default", "cli")
        assert code == 0, err
        operation_id = out.strip()
        assert len(operation_id) == 16
        async with mkv.AdminClient.connect(mkv_node.control_address) as admin:
            await admin.wait_operation(operation_id)
        code, out, err = await mkvctl(mkv_node, "operations", "get", operation_id)
        assert code == 0, err
        shown = fields(out)
        assert (shown["id"], shown["state"], shown["kind"]) == (operation_id, "done", "snapshot")
        assert shown["data"] == "cli/default-1-2.sqlite3"
        # The partition once, in its long form (it used to come twice).
        assert [line.split()[0] for line in out.splitlines()].count("partition") == 1
        assert shown["partition"] == "default ['', ∞) (sqlite)"
        assert ISO_UTC.fullmatch(shown["started"]), shown
        assert ISO_UTC.fullmatch(shown["finished"]), shown
        code, out, err = await mkvctl(mkv_node, "--json", "operations", "get", operation_id)
        document = json.loads(out)
        assert document["state"] == "done"
        # Every moment in JSON is ISO 8601 UTC text, never a unix float.
        for moment in (
            document["started"],
            document["finished"],
            document["snapshot"]["manifest"]["created"],
        ):
            assert isinstance(moment, str)
            assert ISO_UTC.fullmatch(moment), moment
        assert document["snapshot"]["manifest"]["seq"] == 1
        assert document["snapshot"]["manifest"]["format"] == "mkv-snapshot/1"

        code, out, err = await mkvctl(mkv_node, "partitions", "remove", "default")
        assert code == 0, err
        code, out, err = await mkvctl(
            mkv_node,
            "partitions",
            "restore",
            "cli/default-1.sqlite3.manifest.json",
            "--id",
            "back",
            "--store",
            "memory",
        )
        assert code == 0, err
        assert out == (
            "restored partition back ['', ∞) (memory) [timestamp wal] at seq 1 "
            "from cli/default-1.sqlite3.manifest.json\n"
        )
        assert await mkv_client.get(b"k123") == b"v" * 100
        code, out, err = await mkvctl(mkv_node, "--json", "partitions", "list")
        assert [(p["id"], p["key_count"]) for p in json.loads(out)["partitions"]] == [("back", 300)]


async def test_snapshot_wait_json_prints_the_manifest(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    with trio.fail_after(TIMEOUT):
        await mkv_client.upsert({b"a": b"1"})
        code, out, err = await mkvctl(mkv_node, "--json", "snapshot", "default", "", "--wait")
    assert code == 0, err
    document = json.loads(out)
    assert document["manifest_path"] == "default-1.sqlite3.manifest.json"
    on_disk = json.loads((mkv_node.config.snapshot_dir / document["manifest_path"]).read_text())
    assert document["manifest"] == on_disk


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("snapshot", "nope", "x"), "No partition with id nope"),
        (("snapshot", "default", "../x", "--wait"), "must not contain '..'"),
        (("operations", "get", "feedfacefeedface"), "No operation with id feedfacefeedface"),
        (("partitions", "restore", "missing.manifest.json"), "No snapshot manifest"),
    ],
)
async def test_refusals_are_one_line(
    mkv_node: mkv.Node, argv: tuple[str, ...], fragment: str
) -> None:
    with trio.fail_after(TIMEOUT):
        code, out, err = await mkvctl(mkv_node, *argv)
    assert (code, out) == (1, "")
    assert err.startswith("mkvctl: ")
    assert err.count("\n") == 1
    assert fragment in err


async def test_usage_errors(tmp_path: Path) -> None:
    out, err = io.BytesIO(), io.StringIO()
    assert await run(["snapshot", "default"], out, err, env={}) == 2
    assert "PATH" in err.getvalue()
    err = io.StringIO()
    assert await run(["operations"], out, err, env={}) == 2
