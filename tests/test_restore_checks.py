"""Restores that do not trust their input: a snapshot whose checksum matches
its manifest but whose file is not what mkv writes (a trigger, a view, extra
objects, another column type, rows outside the range, non-blob values,
numbers out of range) is refused, leaves nothing behind, and the node goes on;
and a restore brings back the partition's pipeline."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import mkv
from mkv.limits import MAX_LOADED, MAX_STORED
from mkv.records import Write
from mkv.snapshots.check import SnapshotFile, check_snapshot_file
from mkv.snapshots.manifest import Manifest, read_manifest, verify_snapshot
from mkv.store import LayoutReader, SqliteStore
from mkv.testing import running_node
from tests.test_snapshot_cli import mkvctl

TIMEOUT = 60
PIPELINE = (
    "timestamp",
    "reject-prefix:u/internal/",
    "sanitize-json:password",
    "max-value-size:64",
    "wal",
)
KEYS = {b"apple": b"1", b"banana": b"2", b"kiwi": b"3"}


@attrs.frozen
class Snapshot:
    """A snapshot of partition ``src`` ([a, v), ``PIPELINE``), removed since."""

    root: Path
    manifest_path: str
    data: Path
    manifest: Path
    good_data: bytes
    good_manifest: str


@asynccontextmanager
async def node_with_snapshot(
    data_dir: Path, root: Path
) -> AsyncIterator[tuple[mkv.Node, mkv.Client, mkv.AdminClient, Snapshot]]:
    async with (
        # Many control-plane calls, fast: not a test of the rate limit.
        running_node(data_dir, snapshot_root=root, control_rate=1000, control_burst=1000) as node,
        mkv.Client.connect(node.data_address) as client,
        mkv.AdminClient.connect(node.control_address) as admin,
    ):
        await admin.remove_partition("default")
        await admin.add_partition(partition_id="src", start=b"a", end=b"v", pipeline=PIPELINE)
        await client.upsert(KEYS)
        done = await admin.wait_operation(await admin.snapshot("src", "s"))
        assert done.snapshot is not None
        await admin.remove_partition("src")
        snapshot = Snapshot(
            root=root,
            manifest_path=done.snapshot.manifest_path,
            data=root / done.snapshot.data_path,
            manifest=root / done.snapshot.manifest_path,
            good_data=(root / done.snapshot.data_path).read_bytes(),
            good_manifest=(root / done.snapshot.manifest_path).read_text(),
        )
        yield node, client, admin, snapshot


def forge(snapshot: Snapshot, change: Callable[[sqlite3.Connection], None]) -> None:
    """Change the snapshot's data file with SQLite, then give its manifest the
    new size and SHA-256, as anyone who can write the snapshot can."""
    snapshot.data.write_bytes(snapshot.good_data)
    conn = sqlite3.connect(snapshot.data, isolation_level=None)
    try:
        change(conn)
    finally:
        conn.close()
    rewrite_manifest(snapshot, lambda document: None)
    verify_snapshot(snapshot.manifest)  # the forgery passes the checksum


def rewrite_manifest(snapshot: Snapshot, change: Callable[[dict[str, Any]], None]) -> None:
    data = snapshot.data.read_bytes()
    document = json.loads(snapshot.good_manifest)
    document["size"] = len(data)
    document["sha256"] = hashlib.sha256(data).hexdigest()
    change(document)
    snapshot.manifest.write_text(json.dumps(document))


def restore_good(snapshot: Snapshot) -> None:
    snapshot.data.write_bytes(snapshot.good_data)
    snapshot.manifest.write_text(snapshot.good_manifest)


async def assert_nothing_left(
    node: mkv.Node, client: mkv.Client, admin: mkv.AdminClient, partition_id: str
) -> None:
    assert await admin.list_partitions() == []
    assert not (node.config.data_dir / "partitions" / partition_id).exists()
    assert list((node.config.data_dir / "partitions").iterdir()) == []
    catalog = json.loads((node.config.data_dir / "catalog.json").read_text())
    assert catalog["partitions"] == []
    with pytest.raises(mkv.BadNodeError):
        await client.get(b"apple")


def _rebuild_kv(conn: sqlite3.Connection, value_type: str) -> None:
    conn.executescript(
        f"""
        BEGIN;
        CREATE TABLE kv2 (key BLOB PRIMARY KEY NOT NULL, value {value_type} NOT NULL,
            seq INTEGER NOT NULL, ts INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        INSERT INTO kv2 SELECT * FROM kv;
        DROP TABLE kv;
        ALTER TABLE kv2 RENAME TO kv;
        COMMIT;
        """
    )


# name -> (change to the file, what the refusal says)
FORGERIES: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "trigger": (
        lambda c: c.execute(
            "CREATE TRIGGER wipe AFTER INSERT ON kv BEGIN DELETE FROM kv WHERE key <> new.key; END"
        ),
        "trigger 'wipe'",
    ),
    "update trigger": (
        lambda c: c.execute("CREATE TRIGGER wipe2 AFTER UPDATE ON kv BEGIN DELETE FROM kv; END"),
        "trigger 'wipe2'",
    ),
    "view": (lambda c: c.execute("CREATE VIEW v AS SELECT key FROM kv"), "view 'v'"),
    "extra table": (lambda c: c.execute("CREATE TABLE extra (x)"), "table 'extra'"),
    "extra index": (
        lambda c: c.execute("CREATE INDEX by_value ON kv (value)"),
        "index 'by_value'",
    ),
    "column type": (lambda c: _rebuild_kv(c, "TEXT"), "kv columns"),
    "rowid table": (
        lambda c: c.executescript(
            """
            BEGIN;
            CREATE TABLE kv2 (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                seq INTEGER NOT NULL, ts INTEGER NOT NULL DEFAULT 0);
            INSERT INTO kv2 SELECT * FROM kv;
            DROP TABLE kv;
            ALTER TABLE kv2 RENAME TO kv;
            COMMIT;
            """
        ),
        "index 'sqlite_autoindex_kv_1'",
    ),
    "check constraint": (
        lambda c: c.executescript(
            """
            BEGIN;
            CREATE TABLE kv2 (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                seq INTEGER NOT NULL CHECK (seq > 1), ts INTEGER NOT NULL DEFAULT 0)
                WITHOUT ROWID;
            INSERT INTO kv2 SELECT * FROM kv WHERE seq > 1;
            DROP TABLE kv;
            ALTER TABLE kv2 RENAME TO kv;
            COMMIT;
            """
        ),
        "its table definitions differ from mkv's",
    ),
    "extra meta": (
        lambda c: c.execute("INSERT INTO meta (name, value) VALUES ('owner', 1)"),
        "meta table holds last_seq, last_ts, owner",
    ),
    "key outside the range": (
        lambda c: c.execute("INSERT INTO kv VALUES (x'7a7a', x'00', 1, 0)"),
        "key zz is outside the partition's range",
    ),
    "key below the range": (
        lambda c: c.execute("INSERT INTO kv VALUES (x'00', x'00', 1, 0)"),
        "outside the partition's range",
    ),
    "text value": (
        lambda c: c.execute("UPDATE kv SET value = 'text' WHERE key = x'6b697769'"),
        "key kiwi has a value of type text",
    ),
    "integer value": (
        lambda c: c.execute("UPDATE kv SET value = 7 WHERE key = x'6b697769'"),
        "value of type integer",
    ),
    "text key": (
        lambda c: c.execute("INSERT INTO kv VALUES ('banana2', x'00', 1, 0)"),
        "a key of type text",
    ),
    "empty key": (
        lambda c: c.execute("INSERT INTO kv VALUES (x'', x'00', 1, 0)"),
        "a key of 0 bytes",
    ),
    "seq past last_seq": (
        lambda c: c.execute("UPDATE kv SET seq = seq + 1 WHERE key = x'6b697769'"),
        "key kiwi has seq 2",
    ),
    "seq 2^63-1 in a row": (
        lambda c: c.execute("UPDATE kv SET seq = ? WHERE key = x'6b697769'", (MAX_STORED,)),
        f"seq {MAX_STORED}",
    ),
    "float seq": (
        lambda c: c.execute("UPDATE kv SET seq = 1.5 WHERE key = x'6b697769'"),
        "seq 1.5",
    ),
    "timestamp out of range": (
        lambda c: c.execute("UPDATE kv SET ts = ? WHERE key = x'6b697769'", (MAX_STORED,)),
        f"timestamp {MAX_STORED}",
    ),
}


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_a_forged_snapshot_is_refused_and_leaves_nothing(tmp_path: Path, store: str) -> None:
    """Every forgery matches its manifest's checksum; each is refused with a
    clear message, nothing is left, and the good snapshot still restores."""
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            node,
            client,
            admin,
            snapshot,
        ):
            # Every case is tried, and the test names each one not refused as it should be.
            wrong: dict[str, str] = {}
            for name, (change, fragment) in FORGERIES.items():
                forge(snapshot, change)
                try:
                    await admin.add_partition(
                        partition_id="bad", snapshot=snapshot.manifest_path, store=store
                    )
                except mkv.InvalidArgumentError as exc:
                    if "not one mkv wrote" not in exc.message or fragment not in exc.message:
                        wrong[name] = exc.message
                else:
                    wrong[name] = "restored"
                    await admin.remove_partition("bad")
                await assert_nothing_left(node, client, admin, "bad")
            assert wrong == {}

            restore_good(snapshot)
            info = await admin.add_partition(
                partition_id="good", snapshot=snapshot.manifest_path, store=store
            )
            assert info.key_count == len(KEYS)
            for key, value in KEYS.items():
                assert await client.get(key) == value


def test_without_the_check_a_trigger_would_wipe_the_partition(tmp_path: Path) -> None:
    """What the trigger of the issue does in a store that keeps it: the
    reason restore builds a fresh store rather than checking a little less."""
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    try:
        store.apply([Write(puts=list(KEYS.items()), seq=1)])
    finally:
        store.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER wipe AFTER INSERT ON kv BEGIN DELETE FROM kv WHERE key <> new.key; END"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    try:
        store.apply([Write(puts=[(b"cherry", b"4")], seq=2)])
        assert store.get(b"apple") is None
    finally:
        store.close()


async def test_a_restored_store_is_a_fresh_file_not_the_snapshot(tmp_path: Path) -> None:
    """Whatever the snapshot's file holds beyond its rows (free pages, its
    own header) does not reach the partition: the store is made by mkv."""
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            node,
            client,
            admin,
            snapshot,
        ):
            await admin.add_partition(partition_id="back", snapshot=snapshot.manifest_path)
            store = node.config.data_dir / "partitions" / "back" / "store.sqlite3"
            assert store.read_bytes() != snapshot.good_data
            (ack,) = await client.upsert({b"cherry": b"4"})
            assert ack.seq == read_manifest(snapshot.manifest).seq + 1
            for key, value in KEYS.items():
                assert await client.get(key) == value
            assert sorted(p.name for p in store.parent.iterdir() if "restore" in p.name) == []


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("manifest and meta", f"seq {MAX_STORED} is outside the range"),
        ("meta", f"last_seq {MAX_STORED} is outside the range"),
        ("manifest timestamp", f"timestamp {MAX_STORED} is outside the range"),
        ("manifest seq as a string", "seq '5' is outside the range"),
        ("manifest seq as a bool", "seq True is outside the range"),
    ],
)
async def test_a_seq_out_of_range_is_refused_and_the_node_restarts_fine(
    tmp_path: Path, where: str, fragment: str
) -> None:
    data_dir, root = tmp_path / "data", tmp_path / "snapshots"
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(data_dir, root) as (node, client, admin, snapshot):
            if where in ("manifest and meta", "meta"):
                forge(
                    snapshot,
                    lambda c: c.execute(
                        "UPDATE meta SET value = ? WHERE name = 'last_seq'", (MAX_STORED,)
                    ),
                )
            if where == "manifest and meta":
                rewrite_manifest(snapshot, lambda d: d.update(seq=MAX_STORED))
            elif where == "manifest timestamp":
                rewrite_manifest(snapshot, lambda d: d.update(timestamp=MAX_STORED))
            elif where == "manifest seq as a string":
                rewrite_manifest(snapshot, lambda d: d.update(seq="5"))
            elif where == "manifest seq as a bool":
                rewrite_manifest(snapshot, lambda d: d.update(seq=True))
            with pytest.raises(mkv.InvalidArgumentError) as refused:
                await admin.add_partition(partition_id="big", snapshot=snapshot.manifest_path)
            assert fragment in refused.value.message
            await assert_nothing_left(node, client, admin, "big")
            # The node goes on: a partition added now serves.
            await admin.add_partition(partition_id="other", start=b"a", end=b"m")
            await client.upsert({b"apple": b"again"})
        # And it starts again, with what it had.
        async with (
            running_node(data_dir, snapshot_root=root) as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            assert await client.get(b"apple") == b"again"
            (ack,) = await client.upsert({b"banana": b"x"})
            assert ack.seq == 2


async def test_a_seq_at_the_bound_restores(tmp_path: Path) -> None:
    """The bound itself is what mkv can still load: accepted (writes are then
    refused as for any partition at the bound)."""
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            _,
            client,
            admin,
            snapshot,
        ):
            forge(
                snapshot,
                lambda c: c.execute(
                    "UPDATE meta SET value = ? WHERE name = 'last_seq'", (MAX_LOADED,)
                ),
            )
            rewrite_manifest(snapshot, lambda d: d.update(seq=MAX_LOADED))
            info = await admin.add_partition(partition_id="edge", snapshot=snapshot.manifest_path)
            assert info.last_seq == MAX_LOADED
            assert await client.get(b"kiwi") == b"3"
            with pytest.raises(mkv.InternalError, match="used up its numbers"):
                await client.upsert({b"kiwi": b"4"})


async def test_a_restore_brings_back_the_pipeline(tmp_path: Path) -> None:
    data_dir, root = tmp_path / "data", tmp_path / "snapshots"
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(data_dir, root) as (_, client, admin, snapshot):
            assert read_manifest(snapshot.manifest).pipeline == PIPELINE
            info = await admin.add_partition(partition_id="back", snapshot=snapshot.manifest_path)
            assert (info.pipeline, info.warnings) == (PIPELINE, ())
            await check_pipeline_enforced(client)
            # The snapshot of the restored partition records it too.
            done = await admin.wait_operation(await admin.snapshot("back", "again"))
            assert done.snapshot is not None
            assert done.snapshot.manifest.pipeline == PIPELINE
        # And after a restart.
        async with (
            running_node(data_dir, snapshot_root=root) as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            await check_pipeline_enforced(client)


async def check_pipeline_enforced(client: mkv.Client) -> None:
    with pytest.raises(mkv.PermissionDeniedError, match="u/internal/"):
        await client.upsert({b"u/internal/x": b"1"})
    with pytest.raises(mkv.InvalidArgumentError, match="limit"):
        await client.upsert({b"big": b"x" * 65})
    await client.upsert({b"user": b'{"name":"ada","password":"x"}'})
    assert await client.get(b"user") == b'{"name":"ada"}'


async def test_a_manifest_without_a_pipeline_restores_with_a_warning(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            node,
            client,
            admin,
            snapshot,
        ):
            # As mkv wrote manifests before it recorded pipelines.
            document = json.loads(snapshot.good_manifest)
            del document["pipeline"]
            snapshot.manifest.write_text(json.dumps(document))
            info = await admin.add_partition(partition_id="old", snapshot=snapshot.manifest_path)
            assert info.pipeline == ("timestamp", "wal")
            [warning] = info.warnings
            assert "does not record the pipeline of partition src" in warning
            assert "'timestamp wal'" in warning
            await client.upsert({b"u/internal/x": b"1"})  # as the warning says: not filtered
            await admin.remove_partition("old")

            # mkvctl shows it on stderr; the restore itself succeeded.
            code, out, err = await mkvctl(
                node, "partitions", "restore", snapshot.manifest_path, "--id", "old2"
            )
            assert code == 0, err
            assert out.startswith("restored partition old2 ")
            [line] = err.splitlines()
            assert line.startswith("mkvctl: warning: The snapshot's manifest does not record")
            await admin.remove_partition("old2")
            code, out, err = await mkvctl(
                node, "--json", "partitions", "restore", snapshot.manifest_path, "--id", "old3"
            )
            assert code == 0, err
            assert json.loads(out)["warnings"] == [warning]


async def test_a_pipeline_named_in_the_request_wins(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            node,
            client,
            admin,
            snapshot,
        ):
            info = await admin.add_partition(
                partition_id="mine",
                snapshot=snapshot.manifest_path,
                pipeline=["timestamp", "wal"],
            )
            assert (info.pipeline, info.warnings) == (("timestamp", "wal"), ())
            await client.upsert({b"u/internal/x": b"1"})
            await admin.remove_partition("mine")

            # A recorded pipeline this node cannot build is refused, with the way out.
            rewrite_manifest(snapshot, lambda d: d.update(pipeline=["timestamp", "teleport"]))
            with pytest.raises(mkv.InvalidArgumentError, match="name a pipeline in the request"):
                await admin.add_partition(partition_id="x", snapshot=snapshot.manifest_path)
            await assert_nothing_left(node, client, admin, "x")
            code, _, err = await mkvctl(
                node,
                "partitions",
                "restore",
                snapshot.manifest_path,
                "--id",
                "y",
                "--stage",
                "timestamp",
                "--stage",
                "wal",
            )
            assert code == 0, err
            assert err == ""


async def sidecar(*argv: str) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "mkv.cli.sidecar", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_sidecar_download_refuses_a_forged_snapshot(tmp_path: Path) -> None:
    """A bucket is an attack path: a forged snapshot is refused by the
    download (nothing is kept), and by the restore if put there by hand."""
    remote = tmp_path / "remote"
    remote.mkdir()
    with trio.fail_after(TIMEOUT):
        async with node_with_snapshot(tmp_path / "data", tmp_path / "snapshots") as (
            node,
            client,
            admin,
            snapshot,
        ):
            forge(snapshot, FORGERIES["trigger"][0])
            (remote / snapshot.data.name).write_bytes(snapshot.data.read_bytes())
            (remote / snapshot.manifest.name).write_text(snapshot.manifest.read_text())

            local = snapshot.root / "fetched"
            code, out, err = await sidecar(
                "download", str(remote / snapshot.manifest.name), str(local)
            )
            assert (code, out) == (1, ""), err
            assert "not one mkv wrote" in err
            assert "trigger 'wipe'" in err
            assert list(local.iterdir()) == []

            # Placed there by other means, the restore refuses it the same way.
            for name in (snapshot.data.name, snapshot.manifest.name):
                (local / name).write_bytes((remote / name).read_bytes())
            with pytest.raises(mkv.InvalidArgumentError, match="trigger 'wipe'"):
                await admin.add_partition(
                    partition_id="bad", snapshot=f"fetched/{snapshot.manifest.name}"
                )
            await assert_nothing_left(node, client, admin, "bad")


def test_a_store_made_by_mkv_0_1_and_upgraded_passes_the_schema_check(tmp_path: Path) -> None:
    """Its CREATE text differs (ts added by ALTER TABLE); its layout does not."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS kv (
            key BLOB PRIMARY KEY NOT NULL,
            value BLOB NOT NULL,
            seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS meta (
            name TEXT PRIMARY KEY NOT NULL,
            value INTEGER NOT NULL
        );
        INSERT OR IGNORE INTO meta (name, value) VALUES ('last_seq', 0);
        INSERT INTO kv VALUES (x'61', x'31', 1);
        """
    )
    conn.close()
    SqliteStore(path).close()  # upgrades it, as a node would
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = 1 WHERE name = 'last_seq'")
    conn.close()
    manifest = Manifest(
        partition_id="old", start=b"", end=None, store_kind="sqlite", seq=1, timestamp=0,
        file=path.name, size=0, sha256="", created="",
    )  # fmt: skip
    check_snapshot_file(path, manifest)
    with SnapshotFile(path, manifest) as snapshot:
        snapshot.copy_into(tmp_path / "fresh.sqlite3")
    with LayoutReader(tmp_path / "fresh.sqlite3") as reader:
        assert [(k, i.value, i.seq) for b in reader.batches() for k, i in b] == [(b"a", b"1", 1)]
