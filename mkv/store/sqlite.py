"""A store in one SQLite database per partition, in WAL mode.

Writes go through one connection owned by the partition's worker thread: each
``apply`` is one ``BEGIN IMMEDIATE`` … ``COMMIT``. On its own the store
commits with ``synchronous=FULL`` (an fsync of SQLite's WAL per commit);
behind mkv's write-ahead log, which already made the writes durable, it
commits with ``synchronous=NORMAL`` (no fsync per commit, never a corrupt
file) and ``sync`` makes everything durable when the log wants to drop
records. Point reads
use a second connection on the event loop; WAL mode lets that reader see the
last commit without waiting on the writer.

Layout: ``kv(key, value, seq, ts)`` keyed by the key (``WITHOUT ROWID``, so
the table is the only B-tree) and ``meta(name, value)`` holding ``last_seq``
and ``last_ts``, updated in the same transaction as the data they describe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import sqlite_utils

from mkv.errors import StorageError
from mkv.pipeline.write import Write
from mkv.store.base import Item, StoreStats

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('last_seq', 0), ('last_ts', 0);
"""

# Well under SQLite's default limit on bound parameters (32766 since 3.32).
_VARIABLES_PER_QUERY = 500

_UPSERT = (
    "INSERT INTO kv (key, value, seq, ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq, ts = excluded.ts"
)


class SqliteStore:
    kind = "sqlite"
    persistent = True

    def __init__(self, path: Path, *, logged: bool = False) -> None:
        """Open (creating if needed) the database at ``path``.

        Call from the worker thread that will call ``apply``: the write
        connection belongs to the thread that made it.

        Args:
            logged: a write-ahead log in front makes writes durable, so
                commits need not fsync.

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
            self._writer.execute(f"PRAGMA synchronous={'NORMAL' if logged else 'FULL'}")
            self._writer.executescript(_SCHEMA)
            _upgrade(self._writer)
            meta = dict(self._writer.execute("SELECT name, value FROM meta").fetchall())
            self._last_seq: int = meta["last_seq"]
            self._last_timestamp: int = meta["last_ts"]
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
        return self._last_seq

    def last_timestamp(self) -> int:
        return self._last_timestamp

    def get(self, key: bytes) -> Item | None:
        try:
            row = self._reader.execute(
                "SELECT value, seq, ts FROM kv WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StorageError("Reading from the SQLite store failed.") from exc
        return None if row is None else Item(row[0], row[1], row[2])

    def get_many(self, keys: Sequence[bytes]) -> list[Item | None]:
        found: dict[bytes, Item] = {}
        try:
            for i in range(0, len(keys), _VARIABLES_PER_QUERY):
                chunk = keys[i : i + _VARIABLES_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows = self._writer.execute(
                    f"SELECT key, value, seq, ts FROM kv WHERE key IN ({marks})", chunk
                )
                found.update((row[0], Item(row[1], row[2], row[3])) for row in rows)
        except sqlite3.Error as exc:
            raise StorageError("Reading from the SQLite store failed.") from exc
        return [found.get(key) for key in keys]

    def scan(
        self,
        start: bytes,
        end: bytes | None,
        limit: int,
        *,
        keys_only: bool = False,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, Item]]:
        # The writer's connection, on the worker thread between applies: the
        # page is one view at last_seq, and the reader stays free for Gets.
        value = "X''" if keys_only else "value"
        below = "" if end is None else "AND key < :end"
        query = (
            f"SELECT key, {value}, seq, ts FROM kv WHERE key >= :start {below} "
            "ORDER BY key LIMIT :limit"
        )
        page: list[tuple[bytes, Item]] = []
        size = 0
        try:
            cursor = self._writer.execute(query, {"start": start, "end": end, "limit": limit})
            try:
                for key, data, seq, ts in cursor:
                    page.append((key, Item(data, seq, ts)))
                    size += len(key) + len(data)
                    if max_bytes is not None and size >= max_bytes:
                        break
            finally:
                cursor.close()  # ends the statement's read transaction at once
        except sqlite3.Error as exc:
            raise StorageError("Reading from the SQLite store failed.") from exc
        return page

    def apply(self, writes: Sequence[Write]) -> list[int]:
        if not writes:
            return []
        conn = self._writer
        removed: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                timestamp = self._last_timestamp
                # Puts of consecutive writes go in one executemany: a group
                # commit or a replay of many small writes is one statement
                # loop, not one per write. Deletes flush them first, to keep
                # the writes' order.
                rows: list[tuple[bytes, bytes, int, int]] = []
                for write in writes:
                    seq, ts = write.seq, write.timestamp
                    rows.extend((k, v, seq, ts) for k, v in write.puts)
                    count = 0
                    if write.deletes:
                        if rows:
                            conn.executemany(_UPSERT, rows)
                            rows = []
                        cursor = conn.executemany(
                            "DELETE FROM kv WHERE key = ?", [(k,) for k in write.deletes]
                        )
                        count = cursor.rowcount
                    removed.append(count)
                    timestamp = ts or timestamp
                if rows:
                    conn.executemany(_UPSERT, rows)
                top = writes[-1].seq
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE name = ?",
                    [(top, "last_seq"), (timestamp, "last_ts")],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError("Writing to the SQLite store failed; nothing was applied.") from exc
        self._last_seq, self._last_timestamp = top, timestamp
        return removed

    def sync(self) -> int:
        # A TRUNCATE checkpoint copies SQLite's WAL into the database file and
        # fsyncs it, whatever the synchronous setting.
        try:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StorageError("Checkpointing the SQLite store failed.") from exc
        return self._last_seq

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


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older mkv up to the current schema."""
    table = sqlite_utils.Database(conn).table("kv")
    if "ts" not in table.columns_dict:  # before write timestamps (mkv 0.1)
        table.add_column("ts", int, not_null_default=0)


def _database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
