"""A SQLite store written before write timestamps (mkv 0.1) opens, gains the
column, and keeps its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mkv.pipeline.write import Write
from mkv.store import Item
from mkv.store.sqlite import SqliteStore


def test_a_store_without_timestamps_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                             seq INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
            INSERT INTO kv VALUES (x'6b', x'76', 3);
            INSERT INTO meta VALUES ('last_seq', 3), ('last_ts', 0);
            """
        )
    conn.close()

    store = SqliteStore(path)
    try:
        assert store.get(b"k") == Item(b"v", 3, 0)
        store.apply([Write(puts=[(b"j", b"w")], seq=4, timestamp=7)])
        assert store.get(b"j") == Item(b"w", 4, 7)
        assert store.last_seq() == 4
    finally:
        store.close()
    # Opening it again finds nothing more to do.
    SqliteStore(path).close()
