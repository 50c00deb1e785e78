"""A SQLite store written before write timestamps (mkv 0.1) opens, gains the
column, and keeps its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mkv.records import Write
from mkv.store import Item
from mkv.store.sqlite import PAGE_SIZE, SqliteStore


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


def page_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    return int(size)


def test_a_new_store_has_large_pages(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    SqliteStore(path).close()
    assert page_size(path) == PAGE_SIZE


def test_a_store_with_small_pages_keeps_them_and_takes_large_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            """
            CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                             seq INTEGER NOT NULL, ts INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
            CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
            INSERT INTO kv VALUES (x'6b', x'76', 3, 5);
            INSERT INTO meta VALUES ('last_seq', 3), ('last_ts', 5);
            """
        )
    conn.close()

    store = SqliteStore(path)
    try:
        puts = [(b"j%05d" % i, b"w" * 1000) for i in range(3000)]  # 1 KB values overflow 4 KiB
        store.apply([Write(puts=puts, seq=4, timestamp=7)])
        assert store.get(b"k") == Item(b"v", 3, 5)
        assert store.get(b"j02999") == Item(b"w" * 1000, 4, 7)
    finally:
        store.close()
    assert page_size(path) == 4096
