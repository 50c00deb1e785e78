"""A store in one SQLite database per partition, in WAL mode.

Writes go through one connection owned by the partition's worker thread: each
``apply`` is one ``BEGIN IMMEDIATE`` … ``COMMIT`` and, with
``synchronous=FULL``, one fsync of SQLite's WAL before it returns. Point reads
use a second connection on the event loop; WAL mode lets that reader see the
last commit without waiting on the writer.

Layout: ``kv(key, value, seq)`` keyed by the key (``WITHOUT ROWID``, so the
table is the only B-tree) and ``meta(name, value)`` holding ``last_seq``,
updated in the same transaction as the data it numbers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import sqlite_utils

from mkv.errors import StorageError
from mkv.store.base import Item, Mutation, StoreStats

__all__ = ["SqliteStore"]

_SCHEMA = """
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
"""

_UPSERT = (
    "INSERT INTO kv (key, value, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq"
)


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the database at ``path``.

        Call from the worker thread that will call ``apply``: the write
        connection belongs to the thread that made it.

        Raises:
            StorageError: the file cannot be opened or is not an mkv database.
        """
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._writer = self._connect(path)
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            # FULL: fsync SQLite's WAL at every commit, so an acknowledged
            # write survives power loss, not only a process crash.
            self._writer.execute("PRAGMA synchronous=FULL")
            self._writer.executescript(_SCHEMA)
            (self._last_seq,) = self._writer.execute(
                "SELECT value FROM meta WHERE name = 'last_seq'"
            ).fetchone()
            # The reader runs on the event loop's thread, never concurrently
            # with itself; the partition serialises every use of it.
            self._reader = self._connect(path, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            self._writer.close()
            raise StorageError(f"Could not open the SQLite store at {path}.") from exc

    @staticmethod
    def _connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
        try:
            return sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
        except sqlite3.Error as exc:
            raise StorageError(f"Could not open the SQLite store at {path}.") from exc

    def last_seq(self) -> int:
        return int(self._last_seq)

    def get(self, key: bytes) -> Item | None:
        try:
            row = self._reader.execute("SELECT value, seq FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError("Reading from the SQLite store failed.") from exc
        return None if row is None else Item(row[0], row[1])

    def apply(self, mutations: Sequence[Mutation]) -> list[int]:
        if not mutations:
            return []
        conn = self._writer
        removed: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for mutation in mutations:
                    seq = mutation.seq
                    if mutation.puts:
                        conn.executemany(_UPSERT, [(k, v, seq) for k, v in mutation.puts])
                    count = 0
                    if mutation.deletes:
                        cursor = conn.executemany(
                            "DELETE FROM kv WHERE key = ?", [(k,) for k in mutation.deletes]
                        )
                        count = cursor.rowcount
                    removed.append(count)
                top = mutations[-1].seq
                conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (top,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError("Writing to the SQLite store failed; nothing was applied.") from exc
        self._last_seq = top
        return removed

    def stats(self) -> StoreStats:
        # A connection of its own: this runs in a thread of the control plane,
        # and counting must not wait on the writer (WAL lets it read alongside).
        try:
            db = sqlite_utils.Database(sqlite3.connect(self.path))
            try:
                key_count = db.table("kv").count
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageError("Reading SQLite store statistics failed.") from exc
        size = sum(p.stat().st_size for p in _database_files(self.path) if p.exists())
        return StoreStats(key_count=key_count, size_bytes=size)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def _database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
