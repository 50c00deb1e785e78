"""The snapshot manifest: round trip, and every way a snapshot can fail its check."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkv.errors import InvalidArgumentError
from mkv.snapshots.manifest import (
    Manifest,
    SnapshotCorruptError,
    file_sha256,
    read_manifest,
    verify_snapshot,
    write_manifest,
)


def _snapshot(tmp_path: Path, data: bytes = b"snapshot bytes") -> Path:
    data_file = tmp_path / "p1-7.sqlite3"
    data_file.write_bytes(data)
    manifest = Manifest(
        partition_id="p1",
        start=b"",
        end=b"m",
        store_kind="sqlite",
        seq=7,
        timestamp=0,
        file=data_file.name,
        size=len(data),
        sha256=file_sha256(data_file),
        created="2026-11-26T13:00:00Z",
    )
    return write_manifest(data_file, manifest)


def test_a_written_manifest_verifies_and_reads_back(tmp_path: Path) -> None:
    path = _snapshot(tmp_path)
    assert path.name == "p1-7.sqlite3.manifest.json"
    manifest, data_file = verify_snapshot(path)
    assert (manifest.partition_id, manifest.end, manifest.seq) == ("p1", b"m", 7)
    assert data_file == tmp_path / "p1-7.sqlite3"
    assert read_manifest(path) == manifest


def test_a_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    path = _snapshot(tmp_path)
    data_file = tmp_path / "p1-7.sqlite3"
    data = bytearray(data_file.read_bytes())
    data[3] ^= 0x01
    data_file.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorruptError, match="SHA-256"):
        verify_snapshot(path)


def test_a_truncated_or_missing_data_file_is_refused(tmp_path: Path) -> None:
    path = _snapshot(tmp_path)
    data_file = tmp_path / "p1-7.sqlite3"
    data_file.write_bytes(b"snap")
    with pytest.raises(SnapshotCorruptError, match="bytes"):
        verify_snapshot(path)
    data_file.unlink()
    with pytest.raises(SnapshotCorruptError, match="missing"):
        verify_snapshot(path)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"format": "mkv-snapshot/9"}',
        '{"format": "mkv-snapshot/1", "partition_id": "p1"}',
    ],
)
def test_a_malformed_manifest_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.manifest.json"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError):
        read_manifest(path)


def test_a_manifest_cannot_point_outside_its_directory(tmp_path: Path) -> None:
    path = _snapshot(tmp_path)
    path.write_text(path.read_text().replace('"p1-7.sqlite3"', '"../p1-7.sqlite3"'))
    with pytest.raises(InvalidArgumentError, match="outside"):
        read_manifest(path)
