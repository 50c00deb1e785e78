"""The README's partition, caching-store, mkvctl and restore examples do what
they say, each from a Quick start node (one `default` partition owning every key).

tests/test_readme.py runs the README's blocks as written and checks that each
command succeeds; this file checks what they leave behind (the sanitized value,
the store kind, the merged map), which a block's exit status does not show.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

import mkv
from mkv.cli.ctl import run
from mkv.testing import running_node

PIPELINE = "timestamp reject-prefix:u/internal/,u/tmp/ max-value-size:64KiB sanitize-json:password,ssn,profile.token wal"  # noqa: E501


async def mkvctl(node: mkv.Node, *argv: str) -> str:
    stdout, stderr = io.BytesIO(), io.StringIO()
    env = {
        "MKV_CONTROL_ADDR": str(node.control_address),
        "MKV_DATA_ADDR": str(node.data_address),
    }
    code = await run(list(argv), stdout, stderr, env=env)
    assert code == 0, f"mkvctl {' '.join(argv)}: {stderr.getvalue()}"
    return stdout.getvalue().decode()


async def test_pipelines_and_snapshot_examples(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_node(tmp_path / "data") as node:
            await mkvctl(node, "put", "greeting", "hello")
            await mkvctl(
                node, "partitions", "split", "default", "u/", "--new-id", "users", "--wait"
            )
            await mkvctl(
                node, "partitions", "split", "users", "v/", "--new-id", "after-v", "--wait"
            )
            await mkvctl(node, "partitions", "remove", "users")
            stages = [arg for stage in PIPELINE.split() for arg in ("--stage", stage)]
            await mkvctl(
                node, "partitions", "add", "--id", "users", "--start", "u/", "--end", "v/", *stages
            )
            await mkvctl(node, "partitions", "remove", "users")
            await mkvctl(
                node, "partitions", "add", "--id", "users", "--start", "u/", "--end", "v/",
                "--pipeline", PIPELINE,
            )  # fmt: skip
            await mkvctl(node, "put", "u/1", '{"name": "ada", "password": "x"}')
            assert await mkvctl(node, "get", "u/1") == '{"name":"ada"}'
            assert await mkvctl(node, "get", "greeting") == "hello"

            # Snapshots and restore.
            done = json.loads(
                await mkvctl(node, "--json", "snapshot", "users", "nightly", "--wait")
            )
            await mkvctl(node, "partitions", "remove", "users")
            await mkvctl(
                node, "partitions", "restore", done["manifest_path"], "--id", "users2",
                "--store", "memory",
            )  # fmt: skip
            assert await mkvctl(node, "get", "u/1") == '{"name":"ada"}'


async def test_caching_store_example(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_node(tmp_path / "data", durable_dir=tmp_path / "managed") as node:
            await mkvctl(node, "partitions", "split", "default", "h/", "--new-id", "hot", "--wait")
            await mkvctl(node, "partitions", "split", "hot", "i/", "--new-id", "after-i", "--wait")
            await mkvctl(node, "partitions", "remove", "hot")
            await mkvctl(
                node, "partitions", "add", "--id", "hot", "--start", "h/", "--end", "i/",
                "--store", "caching",
            )  # fmt: skip
            await mkvctl(node, "put", "h/1", "warm")
            assert await mkvctl(node, "get", "h/1") == "warm"
            listed = json.loads(await mkvctl(node, "--json", "partitions", "list"))
            assert {p["id"]: p["store"] for p in listed["partitions"]}["hot"] == "caching"


async def test_mkvctl_split_and_merge_examples(tmp_path: Path) -> None:
    """The README's split, then merge at once: `merge --wait` waits while the
    parent still purges the keys it gave away, rather than failing."""
    with trio.fail_after(60):
        async with running_node(tmp_path / "data") as node:
            await mkvctl(node, "put", "zebra", "z")
            # Enough keys above m that the purge (500 a round) is still going
            # when the merge arrives.
            async with mkv.Client.connect(node.data_address) as client:
                for batch in range(5):
                    await client.upsert({b"n%d-%05d" % (batch, i): b"v" for i in range(10_000)})
            out = await mkvctl(
                node, "partitions", "split", "default", "m", "--new-id", "high", "--wait"
            )
            assert "high" in out
            assert await mkvctl(node, "get", "zebra") == "z"
            out = await mkvctl(node, "partitions", "merge", "default", "high", "--wait")
            assert "merged partition high into default" in out
            assert await mkvctl(node, "get", "zebra") == "z"
            listed = json.loads(await mkvctl(node, "--json", "partitions", "list"))
            assert [p["id"] for p in listed["partitions"]] == ["default"]
            assert listed["partitions"][0]["key_count"] == 50_001
