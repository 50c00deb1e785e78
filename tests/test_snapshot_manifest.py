"""The snapshot manifest: round trip, and every way a snapshot can fail its check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from mkv.errors import InvalidArgumentError
from mkv.limits import MAX_LOADED, MAX_STORED
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


def _document(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads(_snapshot(tmp_path).read_text()))


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("seq", MAX_STORED, f"seq {MAX_STORED} is outside the range"),
        ("seq", MAX_LOADED + 1, "is outside the range"),
        ("seq", -1, "seq -1 is outside the range"),
        ("seq", "7", "seq '7' is outside the range"),
        ("seq", 7.0, "seq 7.0 is outside the range"),
        ("seq", True, "seq True is outside the range"),
        ("seq", None, "seq None is outside the range"),
        ("timestamp", MAX_STORED, f"timestamp {MAX_STORED} is outside the range"),
        ("size", -1, "size -1 is not a number of bytes"),
        ("size", "14", "is not a number of bytes"),
        ("pipeline", "timestamp wal", "pipeline is not a list of stage specs"),
        ("pipeline", ["timestamp", 7], "pipeline is not a list of stage specs"),
        ("pipeline", ["x" * 2000], "pipeline is not a list of stage specs"),
    ],
)
def test_numbers_and_pipelines_out_of_what_mkv_writes_are_refused(
    tmp_path: Path, field: str, value: Any, fragment: str
) -> None:
    document = _document(tmp_path)
    document[field] = value
    with pytest.raises(InvalidArgumentError, match=re.escape(fragment)):
        Manifest.from_json(document)


@pytest.mark.parametrize(("start", "end"), [("6d", "6d"), ("6d", "61"), ("", "")])
def test_an_empty_range_is_refused(tmp_path: Path, start: str, end: str) -> None:
    document = _document(tmp_path)
    document["range"] = {"start": start, "end": end}
    with pytest.raises(InvalidArgumentError, match="range is empty"):
        Manifest.from_json(document)


def test_a_seq_at_the_bound_is_accepted(tmp_path: Path) -> None:
    document = _document(tmp_path)
    document.update(seq=MAX_LOADED, timestamp=MAX_LOADED)
    assert Manifest.from_json(document).seq == MAX_LOADED


def test_the_pipeline_is_an_optional_field_old_readers_ignore(tmp_path: Path) -> None:
    document = _document(tmp_path)
    assert document["format"] == "mkv-snapshot/1"
    # Every field the first version of the format had is still there, as it was.
    old_fields = {"format", "partition_id", "range", "store_kind", "seq", "timestamp", "file",
                  "size", "sha256", "created"}  # fmt: skip
    assert set(document) == old_fields
    manifest = Manifest.from_json(document)
    assert manifest.pipeline is None
    assert "pipeline" not in manifest.to_json()

    with_pipeline = attrs.evolve(manifest, pipeline=("timestamp", "reject-prefix:a/", "wal"))
    written = with_pipeline.to_json()
    assert written["pipeline"] == ["timestamp", "reject-prefix:a/", "wal"]
    assert set(written) - old_fields == {"pipeline"}
    assert Manifest.from_json(written) == with_pipeline
