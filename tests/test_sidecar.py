"""mkv-sidecar against real remote storage: moto's S3 server on loopback, and a directory.

Each behaviour runs against both destinations (the ``remote`` fixture). The
sidecar runs in-process through ``main`` (its CLI), except where a kill or a
signal must hit a real process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from mkv.cli.sidecar import STATE_FILE_NAME, main
from mkv.sidecar.backoff import RetryPolicy, retrying
from mkv.sidecar.destination import TransferOptions
from mkv.sidecar.directory import DirectoryDestination
from mkv.sidecar.errors import DestinationError
from mkv.sidecar.state import StateLock
from mkv.snapshots.manifest import (
    Manifest,
    file_sha256,
    manifest_path_for,
    verify_snapshot,
    write_manifest,
)
from mkv.store.sqlite import create_layout

SUBPROCESS_TIMEOUT = 60.0
MiB = 1 << 20


# --- remote storage -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server in a thread on a free loopback port, with fake credentials."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Never pick up the real ~/.aws of whoever runs the tests.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield f"http://{host}:{port}"
    server.stop()


class Remote:
    """One destination as the tests see it: its URL, and what is stored there."""

    url: str
    args: list[str]

    def objects(self) -> dict[str, bytes]:
        """Every complete object, by key."""
        raise NotImplementedError

    def unfinished(self) -> list[str]:
        """Leftovers of interrupted uploads (multipart uploads, temporary files)."""
        raise NotImplementedError

    def writes(self) -> dict[str, Any]:
        """Something that changes whenever a key is written again."""
        raise NotImplementedError

    def overwrite(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def remove(self, key: str) -> None:
        raise NotImplementedError

    def location(self, key: str) -> str:
        raise NotImplementedError


class S3Remote(Remote):
    def __init__(self, endpoint: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.bucket = f"snapshots-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        # Every PUT makes a version: counting them proves nothing was sent twice.
        self.client.put_bucket_versioning(
            Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        self.prefix = "node-a"
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.args = ["--endpoint-url", endpoint]

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def objects(self) -> dict[str, bytes]:
        listing = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {
            o["Key"].removeprefix(self.prefix + "/"): self.client.get_object(
                Bucket=self.bucket, Key=o["Key"]
            )["Body"].read()
            for o in listing
        }

    def unfinished(self) -> list[str]:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return [u["Key"] for u in uploads]

    def writes(self) -> dict[str, Any]:
        versions = self.client.list_object_versions(Bucket=self.bucket)
        return {
            "versions": sorted(v["VersionId"] for v in versions.get("Versions", [])),
            "deletes": len(versions.get("DeleteMarkers", [])),
        }

    def overwrite(self, key: str, data: bytes) -> None:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        # Keep the metadata: the corruption is in the bytes only, as bit rot would be.
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, Metadata=head["Metadata"]
        )

    def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def location(self, key: str) -> str:
        return f"{self.url}/{key}"


class DirRemote(Remote):
    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = base.as_uri()
        self.args = []

    def _files(self) -> list[Path]:
        return [p for p in self.base.rglob("*") if p.is_file()] if self.base.exists() else []

    def objects(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.base).as_posix(): p.read_bytes()
            for p in self._files()
            if not p.name.startswith(".")
        }

    def unfinished(self) -> list[str]:
        return [
            p.relative_to(self.base).as_posix() for p in self._files() if p.name.startswith(".")
        ]

    def writes(self) -> dict[str, Any]:
        # A write is a rename of a new file into place: a new inode.
        return {
            p.relative_to(self.base).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in self._files()
        }

    def overwrite(self, key: str, data: bytes) -> None:
        (self.base / key).write_bytes(data)

    def remove(self, key: str) -> None:
        (self.base / key).unlink()

    def location(self, key: str) -> str:
        return str(self.base / key)


@pytest.fixture(params=["s3", "dir"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "s3":
        return S3Remote(request.getfixturevalue("moto_endpoint"))
    return DirRemote(tmp_path / "remote")


# --- snapshots ----------------------------------------------------------------------------


def make_snapshot(root: Path, rel: str, size: int = 4096, seed: int = 0) -> Path:
    """A complete snapshot (random data, then its manifest); returns the manifest's path."""
    data_file = root / rel
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_bytes(random.Random(f"{rel}/{seed}").randbytes(size))
    manifest = Manifest(
        partition_id=data_file.stem,
        start=b"",
        end=None,
        store_kind="sqlite",
        seq=seed + 1,
        timestamp=0,
        file=data_file.name,
        size=size,
        sha256=file_sha256(data_file),
        created="2026-11-26T13:00:00Z",
    )
    return write_manifest(data_file, manifest)


def make_layout_snapshot(root: Path, rel: str, keys: int) -> Path:
    """A snapshot whose data file is what mkv writes: its store layout, ``keys``
    rows at seq 1 .. ``keys``; returns the manifest's path."""
    data_file = root / rel
    data_file.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_file, isolation_level=None)
    try:
        create_layout(conn)
        conn.executemany(
            "INSERT INTO kv (key, value, seq, ts) VALUES (?, ?, ?, 0)",
            ((b"k%06d" % i, b"v" * 100, i + 1) for i in range(keys)),
        )
        conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (keys,))
    finally:
        conn.close()
    manifest = Manifest(
        partition_id=data_file.stem,
        start=b"",
        end=None,
        store_kind="sqlite",
        seq=keys,
        timestamp=0,
        file=data_file.name,
        size=data_file.stat().st_size,
        sha256=file_sha256(data_file),
        created="2026-11-26T13:00:00Z",
    )
    return write_manifest(data_file, manifest)


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def expected_objects(root: Path, *rels: str) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    for rel in rels:
        objects[rel] = (root / rel).read_bytes()
        manifest = manifest_path_for(root / rel)
        objects[rel + ".manifest.json"] = manifest.read_bytes()
    return objects


def run(remote: Remote, root: Path, *args: str) -> int:
    return main(["--root", str(root), "--destination", remote.url, *remote.args, *args])


def sidecar_process(remote: Remote, root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mkv.cli.sidecar",
            "--root",
            str(root),
            "--destination",
            remote.url,
            *remote.args,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- shipping -----------------------------------------------------------------------------


def test_ships_exactly_the_complete_snapshots_once(
    remote: Remote,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mkv.sidecar")
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1/p1-7.sqlite3")
    make_snapshot(root, "p2-3.sqlite3", size=100_000)
    # Partial: the data file without its manifest (a snapshot still being written).
    (root / "p3").mkdir()
    (root / "p3" / "p3-9.sqlite3").write_bytes(b"half a snapshot")
    (root / "p3" / ".p3-9.sqlite3.manifest.json.tmp").write_text("{")
    # Corrupt: one byte flipped after the manifest was written.
    flip_byte(make_snapshot(root, "p4-1.sqlite3").with_name("p4-1.sqlite3"))
    # Not a manifest at all, though named like one.
    (root / "junk.manifest.json").write_text("not json")
    # A valid manifest copied away from its data file: it would upload under the wrong name.
    (root / "copy.sqlite3.manifest.json").write_bytes(
        (root / "p1" / "p1-7.sqlite3.manifest.json").read_bytes()
    )

    assert run(remote, root, "--once") == 0
    assert remote.objects() == expected_objects(root, "p1/p1-7.sqlite3", "p2-3.sqlite3")
    assert "uploaded 2, already shipped 0" in capsys.readouterr().out
    corrupt_lines = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(corrupt_lines) == 1
    assert "p4-1.sqlite3" in corrupt_lines[0].getMessage()
    assert "SHA-256" in corrupt_lines[0].getMessage()
    assert any("junk.manifest.json" in r.getMessage() for r in caplog.records)
    assert any(
        "copy.sqlite3.manifest.json" in r.getMessage() and "names the data file" in r.getMessage()
        for r in caplog.records
    )
    written = remote.writes()

    # A second run (a restarted sidecar: a new Shipper reading the state file)
    # sends nothing, and does not hash the corrupt file again to complain twice.
    caplog.clear()
    assert run(remote, root, "--once") == 0
    assert "uploaded 0, already shipped 2, pruned 0, corrupt 1" in capsys.readouterr().out
    assert not [r for r in caplog.records if "corrupt and will not" in r.getMessage()]
    assert remote.writes() == written

    # Without the state file, the sidecar finds both complete at the destination.
    (root / STATE_FILE_NAME).unlink()
    assert run(remote, root, "--once") == 0
    assert "uploaded 0, already shipped 2" in capsys.readouterr().out
    assert remote.writes() == written

    # A new snapshot is the only thing the next pass sends.
    make_snapshot(root, "p1/p1-8.sqlite3")
    assert run(remote, root, "--once") == 0
    assert "uploaded 1, already shipped 2" in capsys.readouterr().out
    assert remote.objects() == expected_objects(
        root, "p1/p1-7.sqlite3", "p1/p1-8.sqlite3", "p2-3.sqlite3"
    )
    assert remote.unfinished() == []
    state = json.loads((root / STATE_FILE_NAME).read_text())
    assert sorted(e["path"] for e in state["shipped"].values()) == [
        "p1/p1-7.sqlite3",
        "p1/p1-8.sqlite3",
        "p2-3.sqlite3",
    ]
    assert [e for e in state["corrupt"]] == [
        f"p4-1.sqlite3@{json.loads((root / 'p4-1.sqlite3.manifest.json').read_text())['sha256']}"
    ]


def test_symlinked_directories_are_not_followed_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_snapshot(outside, "secret-1.sqlite3")
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1-1.sqlite3")
    (root / "link").symlink_to(outside, target_is_directory=True)
    remote = DirRemote(tmp_path / "remote")
    assert run(remote, root, "--once") == 0
    assert remote.objects() == expected_objects(root, "p1-1.sqlite3")


def test_a_partial_snapshot_is_shipped_once_its_manifest_appears(
    remote: Remote, tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    manifest = make_snapshot(root, "p1-1.sqlite3")
    text = manifest.read_bytes()
    manifest.unlink()
    assert run(remote, root, "--once") == 0
    assert remote.objects() == {}
    manifest.write_bytes(text)
    assert run(remote, root, "--once") == 0
    assert remote.objects() == expected_objects(root, "p1-1.sqlite3")


class RecordingDirectory(DirectoryDestination):
    """A real directory destination that also notes the order of its writes."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, TransferOptions())
        self.calls: list[tuple[str, str]] = []

    def put_file(self, key: str, source: Path, **kwargs: Any) -> None:
        self.calls.append(("put_file", key))
        super().put_file(key, source, **kwargs)

    def put_small(self, key: str, data: bytes) -> None:
        self.calls.append(("put_small", key))
        super().put_small(key, data)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        super().delete(key)


def test_a_new_snapshot_at_a_shipped_path_never_looks_complete_over_old_data(
    tmp_path: Path,
) -> None:
    from mkv.sidecar.shipper import Shipper

    root = tmp_path / "snapshots"
    destination = RecordingDirectory(tmp_path / "remote")
    make_snapshot(root, "p1/latest.sqlite3", seed=1)
    Shipper(root, destination, tmp_path / "state.json").run_pass()
    make_snapshot(root, "p1/latest.sqlite3", size=5000, seed=2)
    destination.calls.clear()
    report = Shipper(root, destination, tmp_path / "state.json").run_pass()
    assert report.uploaded == ["p1/latest.sqlite3"]
    # The old manifest goes before the new data arrives; the new manifest comes last.
    assert destination.calls == [
        ("delete", "p1/latest.sqlite3.manifest.json"),
        ("put_file", "p1/latest.sqlite3"),
        ("put_small", "p1/latest.sqlite3.manifest.json"),
    ]
    assert DirRemote(tmp_path / "remote").objects() == expected_objects(root, "p1/latest.sqlite3")


# --- killed mid-upload --------------------------------------------------------------------


def test_killed_mid_upload_resumes_and_the_remote_ends_exactly_right(
    remote: Remote, tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p0-1.sqlite3")
    assert run(remote, root, "--once") == 0
    make_snapshot(root, "p1/p1-5.sqlite3", size=16 * MiB)
    # 16 MiB at 4 MiB/s: four seconds of upload to hit, in 5 MiB parts for S3.
    process = sidecar_process(
        remote, root, "--once", "--max-bandwidth", "4MiB", "--chunk-size", "5MiB"
    )
    try:
        wait_until(lambda: remote.unfinished() != [], "the upload to start")
        time.sleep(1.0)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.wait(SUBPROCESS_TIMEOUT)
    finally:
        process.kill()
        process.communicate()
    # Killed mid-upload: nothing of the big snapshot is visible as an object.
    objects = remote.objects()
    assert "p1/p1-5.sqlite3.manifest.json" not in objects
    assert "p1/p1-5.sqlite3" not in objects
    assert remote.unfinished() != []

    restarted = sidecar_process(remote, root, "--once")
    out, err = restarted.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert restarted.returncode == 0, err.decode()
    assert b"uploaded 1, already shipped 1" in out
    assert remote.objects() == expected_objects(root, "p0-1.sqlite3", "p1/p1-5.sqlite3")
    # The interrupted multipart upload (or temporary file) was cleaned up.
    assert remote.unfinished() == []


# --- pruning ------------------------------------------------------------------------------


def test_prune_deletes_only_confirmed_uploads(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1/p1-1.sqlite3")
    make_snapshot(root, "p2-1.sqlite3")
    (root / "p3-1.sqlite3").write_bytes(b"partial: no manifest")
    corrupt = make_snapshot(root, "p4-1.sqlite3")
    flip_byte(root / "p4-1.sqlite3")
    # Shipped earlier, without --prune; then its remote copy is lost.
    make_snapshot(root, "p5-1.sqlite3")
    assert run(remote, root, "--once") == 0
    shipped = expected_objects(root, "p1/p1-1.sqlite3", "p2-1.sqlite3", "p5-1.sqlite3")
    remote.remove("p5-1.sqlite3")
    capsys.readouterr()

    assert run(remote, root, "--once", "--prune") == 0
    assert "pruned 2" in capsys.readouterr().out
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert left == [
        STATE_FILE_NAME,
        STATE_FILE_NAME + ".lock",
        "p3-1.sqlite3",
        "p4-1.sqlite3",
        "p4-1.sqlite3.manifest.json",
        "p5-1.sqlite3",
        "p5-1.sqlite3.manifest.json",
    ]
    assert corrupt.exists()
    # The unconfirmed one is uploaded again, and pruned once confirmed.
    assert run(remote, root, "--once", "--prune") == 0
    assert "uploaded 1, already shipped 0, pruned 1" in capsys.readouterr().out
    assert not (root / "p5-1.sqlite3").exists()
    assert remote.objects() == shipped


def test_a_prune_killed_between_its_two_deletions_is_finished(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    remote = DirRemote(tmp_path / "remote")
    manifest = make_snapshot(root, "p1-1.sqlite3")
    assert run(remote, root, "--once") == 0
    # What a kill right after the manifest's deletion leaves: the state file
    # says "pruning", the data file is still there.
    state_path = root / STATE_FILE_NAME
    state = json.loads(state_path.read_text())
    for entry in state["shipped"].values():
        entry["pruning"] = True
    state_path.write_text(json.dumps(state))
    manifest.unlink()
    assert run(remote, root, "--once") == 0
    assert not (root / "p1-1.sqlite3").exists()
    assert json.loads(state_path.read_text())["shipped"] == {}
    assert remote.objects() != {}


# --- download -----------------------------------------------------------------------------


def test_download_round_trips_and_refuses_a_corrupt_remote_copy(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "snapshots"
    make_layout_snapshot(root, "p1/p1-7.sqlite3", keys=2000)
    # Random bytes with a manifest that matches them: not what mkv writes.
    make_snapshot(root, "p2/p2-7.sqlite3", size=300_000)
    assert run(remote, root, "--once") == 0
    capsys.readouterr()
    location = remote.location("p1/p1-7.sqlite3.manifest.json")

    restore = tmp_path / "restore"
    assert main(["download", location, str(restore), *remote.args]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == restore / "p1-7.sqlite3.manifest.json"
    _, data_file = verify_snapshot(printed)
    assert data_file.read_bytes() == (root / "p1/p1-7.sqlite3").read_bytes()
    assert printed.read_bytes() == (root / "p1/p1-7.sqlite3.manifest.json").read_bytes()
    # Again into the same place: already there, nothing to do.
    assert main(["download", location, str(restore), *remote.args]) == 0

    original = remote.objects()["p1/p1-7.sqlite3"]
    corrupted = bytearray(original)
    corrupted[12345] ^= 0x80
    remote.overwrite("p1/p1-7.sqlite3", bytes(corrupted))
    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()
    assert main(["download", location, str(elsewhere), *remote.args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mkv-sidecar: ")
    assert err.count("\n") == 1
    assert "corrupt" in err
    assert list(elsewhere.iterdir()) == []  # nothing kept, not even a temporary file

    location = remote.location("p2/p2-7.sqlite3.manifest.json")
    assert main(["download", location, str(elsewhere), *remote.args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not one mkv wrote" in err
    assert list(elsewhere.iterdir()) == []

    assert (
        main(["download", remote.location("nope.manifest.json"), str(elsewhere), *remote.args]) == 1
    )
    assert "no snapshot manifest" in capsys.readouterr().err


# --- failures, retries, signals, usage ----------------------------------------------------


def test_retry_policy_backs_off_exponentially_within_its_cap() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(7)
    delays = [policy.delay(4, rng) for _ in range(200)]
    assert all(0 <= d <= 3.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed wait


def test_retrying_gives_up_after_its_attempts_and_at_once_on_permanent_errors() -> None:
    stop = threading.Event()
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DestinationError("Connection reset.")
        return "done"

    assert retrying(policy, stop, "test", flaky) == "done"
    assert len(calls) == 3

    calls.clear()

    def always() -> str:
        calls.append(1)
        raise DestinationError("Connection reset.")

    with pytest.raises(DestinationError):
        retrying(policy, stop, "test", always)
    assert len(calls) == 3

    calls.clear()

    def denied() -> str:
        calls.append(1)
        raise DestinationError("Access denied.", retryable=False)

    with pytest.raises(DestinationError):
        retrying(policy, stop, "test", denied)
    assert len(calls) == 1


def test_a_failing_destination_is_retried_then_reported_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1-1.sqlite3")
    blocked = tmp_path / "remote"
    blocked.write_text("a file where the destination directory should be")
    code = main(
        [
            *("--root", str(root), "--destination", str(blocked), "--once"),
            *("--retries", "3", "--retry-delay", "0.01"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mkv-sidecar: The upload of p1-1.sqlite3")
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [
        ("attempt 1 of 3" in r.getMessage(), "attempt 2 of 3" in r.getMessage()) for r in retries
    ] == [
        (True, False),
        (False, True),
    ]
    assert (
        not (root / STATE_FILE_NAME).exists()
        or json.loads((root / STATE_FILE_NAME).read_text())["shipped"] == {}
    )


def test_a_missing_bucket_is_not_retried(
    moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1-1.sqlite3")
    started = time.monotonic()
    code = main(
        [
            *("--root", str(root), "--destination", "s3://no-such-bucket/x", "--once"),
            *("--endpoint-url", moto_endpoint, "--retry-delay", "5"),
        ]
    )
    assert code == 1
    assert time.monotonic() - started < 5  # no backoff wait happened
    assert "NoSuchBucket" in capsys.readouterr().err


def test_a_long_running_sidecar_ships_new_snapshots_and_stops_on_sigterm(
    remote: Remote, tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1-1.sqlite3")
    process = sidecar_process(remote, root, "--interval", "0.1")
    try:
        wait_until(lambda: "p1-1.sqlite3.manifest.json" in remote.objects(), "the first upload")
        make_snapshot(root, "p1-2.sqlite3")
        wait_until(lambda: "p1-2.sqlite3.manifest.json" in remote.objects(), "the second upload")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"received SIGTERM: stopping" in err
    assert remote.objects() == expected_objects(root, "p1-1.sqlite3", "p1-2.sqlite3")


def test_sigterm_mid_upload_stops_at_once_and_leaves_nothing_half_done(
    remote: Remote, tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    make_snapshot(root, "p1-1.sqlite3", size=16 * MiB)
    process = sidecar_process(remote, root, "--max-bandwidth", "4MiB", "--chunk-size", "5MiB")
    try:
        wait_until(lambda: remote.unfinished() != [], "the upload to start")
        time.sleep(0.3)
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        stopped_in = time.monotonic() - stopping
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 0, err.decode()
    # Over three seconds of upload were left: it was abandoned, not waited for.
    assert stopped_in < 3.0
    assert remote.objects() == {}
    assert remote.unfinished() == []  # the multipart upload was aborted, the temporary file removed
    assert run(remote, root, "--once") == 0
    assert remote.objects() == expected_objects(root, "p1-1.sqlite3")


def test_usage_and_configuration_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "snapshots"
    root.mkdir()
    dest = str(tmp_path / "remote")
    assert main(["--root", str(root)]) == 2
    assert main(["--root", str(root), "--destination", dest, "--chunk-size", "1MiB"]) == 2
    assert main(["--root", str(root / "missing"), "--destination", dest, "--once"]) == 2
    assert main(["--root", str(root), "--destination", str(root / "up"), "--once"]) == 2
    assert main(["--root", str(root), "--destination", "ftp://host/x", "--once"]) == 2
    capsys.readouterr()

    # A state file that records another destination is refused, not trusted.
    make_snapshot(root, "p1-1.sqlite3")
    assert main(["--root", str(root), "--destination", dest, "--once"]) == 0
    assert main(["--root", str(root), "--destination", str(tmp_path / "other"), "--once"]) == 1
    assert "give each destination its own --state-file" in capsys.readouterr().err

    # Two sidecars on one state file: the second is refused.
    lock = StateLock(root / STATE_FILE_NAME)
    lock.acquire()
    try:
        assert main(["--root", str(root), "--destination", dest, "--once"]) == 1
        assert "Another mkv-sidecar" in capsys.readouterr().err
    finally:
        lock.release()
