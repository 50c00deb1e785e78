"""Data directories for tools/bench.py built without a server: fast, and in mkv's layout.

Restart and replay are measured on states far larger than the load
generators could write in a benchmark's time (10M keys through the RPC path
take minutes), so they are written here straight into the files a node
reads at start: ``catalog.json``, a partition's SQLite store (created by
``SqliteStore`` itself, so its schema is the real one, then filled by one
SQL statement that runs entirely inside SQLite), and its write-ahead log
(records written by ``WriteAheadLog`` itself).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from bench_worker import KEY_BYTES, state_key

from mkv.node.catalog import Catalog, CatalogEntry
from mkv.pipeline import default_pipeline
from mkv.router import KeyRange
from mkv.store.sqlite import SqliteStore
from mkv.v1 import data_pb2 as pb
from mkv.wal import WriteAheadLog

__all__ = ["extend_sqlite", "partition_dir", "spread_ranges", "write_catalog", "write_log"]

# Records handed to WriteAheadLog.append at once while building a log.
_APPEND_RECORDS = 10_000


def partition_dir(data_dir: Path, partition_id: str = "default") -> Path:
    path = data_dir / "partitions" / partition_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def spread_ranges(count: int) -> list[KeyRange]:
    """``count`` ranges covering every key, cut at even two-byte prefixes, so
    uniformly random keys fall evenly on them."""
    cuts = [((i << 16) // count).to_bytes(2, "big") for i in range(1, count)]
    bounds: list[bytes | None] = [b"", *cuts, None]
    return [KeyRange(bounds[i] or b"", bounds[i + 1]) for i in range(count)]


def write_catalog(data_dir: Path, ranges: Sequence[KeyRange], store: str = "sqlite") -> list[str]:
    """A catalog of one partition per range (ids ``default`` for one, else
    ``p000``…), each with the store's default pipeline; returns the ids."""
    ids = ["default"] if len(ranges) == 1 else [f"p{i:03d}" for i in range(len(ranges))]
    pipeline = default_pipeline(store)
    entries = [CatalogEntry(i, r, store, pipeline) for i, r in zip(ids, ranges, strict=True)]
    data_dir.mkdir(parents=True, exist_ok=True)
    Catalog(partitions=entries, map_version=1).save(data_dir / "catalog.json")
    for partition_id in ids:
        partition_dir(data_dir, partition_id)
    return ids


def extend_sqlite(directory: Path, start: int, stop: int, value: bytes) -> None:
    """Add keys ``state_key(i)`` for ``start <= i < stop`` to the partition's
    SQLite store (created if missing), each holding ``value`` at seq 1.

    One ``INSERT … SELECT`` over a recursive CTE: the rows never exist as
    Python objects (~1M rows/s here). Journaling is off while it runs; the
    benchmark owns the file and rebuilds it if this is interrupted.
    """
    path = directory / "store.sqlite3"
    store = SqliteStore(path, logged=True)  # creates the schema and meta rows
    store.close()
    assert state_key(0) == b"r" + b"0" * (KEY_BYTES - 1)  # what the SQL below makes
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while building
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT OR REPLACE INTO kv (key, value, seq, ts) "
            f"SELECT CAST('r' || printf('%0{KEY_BYTES - 1}d', i) AS BLOB), ?, 1, 0 FROM n",
            (start, stop, value),
        )
        conn.execute("UPDATE meta SET value = max(value, 1) WHERE name = 'last_seq'")
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def upsert_payload(key: bytes, value: bytes) -> bytes:
    """A one-entry upsert's log payload: its request bytes, as the server logs them."""
    return bytes(pb.UpsertRequest(entries=[pb.Entry(key=key, value=value)]).SerializeToString())


def write_log(directory: Path, records: int, value: bytes, key_tag: bytes = b"w") -> bytes:
    """A write-ahead log of ``records`` one-key upserts (seq 1, 2, …) that no
    store has applied; returns the last key written."""
    template = upsert_payload(b"\0" * KEY_BYTES, value)
    at = template.index(b"\0" * KEY_BYTES)
    head, tail = template[:at], template[at + KEY_BYTES :]
    wal, _ = WriteAheadLog.open(directory / "wal")
    key = b""
    try:
        for first in range(1, records + 1, _APPEND_RECORDS):
            batch = []
            for seq in range(first, min(records + 1, first + _APPEND_RECORDS)):
                key = key_tag + b"%0*d" % (KEY_BYTES - len(key_tag), seq)
                batch.append((seq, 0, head + key + tail))
            wal.append(batch)
        wal.sync()
    finally:
        wal.close()
    return key
