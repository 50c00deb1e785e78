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
New stores have 16 KiB pages (``PAGE_SIZE``); stores made earlier with
SQLite's default 4 KiB keep them, and open and work as before.
Snapshots are files in this same layout, whatever the partition's store kind
(``create_layout``, ``LayoutReader``).

A snapshot reads a consistent view through a connection of its own that holds
a read transaction open for the whole copy (``open_pinned_reader``). WAL mode
lets the writer go on meanwhile, but no checkpoint can move the WAL past a
view still being read, so ``sync`` then fsyncs the WAL instead of waiting.
"""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mkv.errors import StorageError
from mkv.limits import MAX_LOADED, check_loaded
from mkv.records import Write
from mkv.store.base import Item, StoreStats
from mkv.store.files import fsync_directory

__all__ = ["LayoutReader", "SqliteStore", "StoreDamagedError", "create_layout"]

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

# The page size of a new store (SQLite's default is 4 KiB). With 4 KiB pages
# a row of a WITHOUT ROWID table over ~1 KB spills into overflow pages, and a
# 1 MiB batch of 1 KB values took 20-24 ms to apply against 5 ms with 16 KiB
# pages (or in a rowid table); with 100-byte values 16 KiB pages are ~20%
# faster too (fewer pages and WAL frames, and SQLite's automatic checkpoint,
# every 1000 pages, comes a quarter as often). SQLite's page cache is sized
# in bytes (2 MB), so memory is unchanged.
PAGE_SIZE = 16 * 1024

# Well under SQLite's default limit on bound parameters (32766 since 3.32).
_VARIABLES_PER_QUERY = 500

Row = tuple[bytes, Item]

_ON_CONFLICT = (
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq, ts = excluded.ts"
)
_UPSERT = f"INSERT INTO kv (key, value, seq, ts) VALUES (?, ?, ?, ?) {_ON_CONFLICT}"

# A large write's puts go in statements of this many rows (see _insert_rows);
# 2 parameters a row and the write's seq and ts stay under 999, the limit of
# SQLite before 3.32.
ROWS_PER_INSERT = 256
# Rows of many small writes (a group commit, or replay) go four parameters
# a row (key, value, seq, ts), this many rows a statement: under 999 too.
GATHERED_ROWS_PER_INSERT = 249
_UPSERT_GATHERED = (
    "INSERT INTO kv (key, value, seq, ts) VALUES "
    + ",".join(["(?, ?, ?, ?)"] * GATHERED_ROWS_PER_INSERT)
    + f" {_ON_CONFLICT}"
)
# The columns of a (key, value, seq, ts) row.
_KEY, _VALUE, _SEQ, _TS = map(operator.itemgetter, range(4))
_UPSERT_ROWS = (
    "INSERT INTO kv (key, value, seq, ts) VALUES "
    + ",".join(
        f"(?{2 * i + 1}, ?{2 * i + 2}, ?{2 * ROWS_PER_INSERT + 1}, ?{2 * ROWS_PER_INSERT + 2})"
        for i in range(ROWS_PER_INSERT)
    )
    + f" {_ON_CONFLICT}"
)


# After an unclean stop a store up to this size gets SQLite's quick_check
# (every page and B-tree order, no index cross-check) and a scan of its
# rows: 0.3-0.5 s for a 140 MiB store of 1M keys, warm, linear in size. A
# larger one gets the structural check only (the file holds every page
# SQLite counts: what a truncation breaks).
FULL_CHECK_BYTES = 1024**3
# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = (11, 26)


class StoreDamagedError(StorageError):
    """The store's file is damaged (found at open, or by the check after an
    unclean stop); ``path`` names it. The partition can rebuild the store
    from its log when the log still holds every write."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"The SQLite store {path} is damaged: {detail}.")
        self.path = path
        self.detail = detail


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
            StoreDamagedError: the file is damaged, or after an unclean stop
                the check found damage.
            StorageError: the file cannot be opened, is not an mkv database,
                or holds a seq or timestamp out of range (``mkv.limits``).
        """
        self.path = path
        # SQLite deletes the -wal file when its last connection closes; one
        # left over means the last process to use the store died with it open.
        if _database_files(path)[1].exists():
            _check_after_crash(path)
        created = not path.exists()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        # check_same_thread=False: the store's jobs run on a lane of the
        # node's worker pool (mkv/worker.py), one at a time and in order but
        # on whichever pool thread takes the lane. sqlite3's check guards
        # against concurrent use, which the lane already rules out; SQLite's
        # default serialized threading mode lets a connection move between
        # threads, and an open transaction never spans two jobs.
        self._writer = self._connect(path, check_same_thread=False)
        try:
            # Only a new, empty database takes it (before WAL mode writes the
            # header); an existing store keeps the page size it was made with.
            self._writer.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._writer.execute("PRAGMA journal_mode=WAL")
            # FULL: fsync SQLite's WAL at every commit, so an acknowledged
            # write survives power loss, not only a process crash.
            self._writer.execute(f"PRAGMA synchronous={'NORMAL' if logged else 'FULL'}")
            self._writer.executescript(_SCHEMA)
            _upgrade(self._writer)
            if created:
                # The file's name, like any new file's, lasts through a power
                # cut only once its directory is fsynced; a log checkpointed
                # into a store whose name was then lost could not be replayed.
                fsync_directory(path.parent)
            meta = dict(self._writer.execute("SELECT name, value FROM meta").fetchall())
            check_loaded(
                f"The store meta of {path}",
                last_seq=meta.get("last_seq"),
                last_ts=meta.get("last_ts"),
            )
            self._last_seq: int = meta["last_seq"]
            self._last_timestamp: int = meta["last_ts"]
            # The reader runs on the event loop's thread, never concurrently
            # with itself; the partition serialises every use of it.
            self._reader = self._connect(path, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            self._writer.close()
            if _damaged(exc):
                raise StoreDamagedError(path, str(exc)) from exc
            raise StorageError(f"Could not open the SQLite store at {path}.") from exc
        except StorageError:
            self._writer.close()
            raise
        except OSError as exc:
            self._writer.close()
            raise StorageError(f"Could not open the SQLite store at {path}.") from exc
        # Connections handed out by open_pinned_reader and not yet released;
        # released from whichever thread finished the snapshot.
        self._pinned: set[sqlite3.Connection] = set()
        self._pinned_lock = threading.Lock()

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
        removed: list[int] = []

        def write_all(conn: sqlite3.Connection) -> int:
            timestamp = self._last_timestamp
            # Puts of consecutive small writes are gathered and go together
            # (_upsert_gathered): a group commit of many small writes is a few
            # statements, not one per write. A large write's puts go in
            # statements of their own (_insert_rows); the rows gathered before
            # it, and deletes, are flushed first, to keep the writes' order.
            rows: list[tuple[bytes, bytes, int, int]] = []
            for write in writes:
                seq, ts = write.seq, write.timestamp
                puts = write.puts
                if len(puts) >= ROWS_PER_INSERT:
                    if rows:
                        _upsert_gathered(conn, rows)
                        rows = []
                    puts = _insert_rows(conn, puts, seq, ts)
                rows.extend((k, v, seq, ts) for k, v in puts)
                count = 0
                if write.deletes:
                    if rows:
                        _upsert_gathered(conn, rows)
                        rows = []
                    cursor = conn.executemany(
                        "DELETE FROM kv WHERE key = ?", [(k,) for k in write.deletes]
                    )
                    count = cursor.rowcount
                removed.append(count)
                timestamp = ts or timestamp
            if rows:
                _upsert_gathered(conn, rows)
            return timestamp

        self._transaction(write_all, writes[-1].seq)
        return removed

    def apply_puts(self, rows: Sequence[tuple[bytes, bytes, int, int]]) -> None:
        """Replay's fast path (mkv.partition.recovery): ``(key, value, seq, ts)`` rows
        straight to SQLite, no ``Write`` per row."""
        if not rows:
            return

        def write_all(conn: sqlite3.Connection) -> int:
            _upsert_gathered(conn, rows)
            return next((row[3] for row in reversed(rows) if row[3]), self._last_timestamp)

        self._transaction(write_all, rows[-1][2])

    def _transaction(self, write_all: Callable[[sqlite3.Connection], int], top: int) -> None:
        """Run ``write_all`` (which returns the last timestamp it wrote) in one
        ``BEGIN IMMEDIATE`` … ``COMMIT`` with ``meta`` moved to ``top``; all or none.

        Raises:
            StorageError: nothing was applied.
        """
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                timestamp = write_all(conn)
                conn.executemany(
                    "UPDATE meta SET value = ? WHERE name = ?",
                    [(top, "last_seq"), (timestamp, "last_ts")],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, TypeError, OverflowError) as exc:
            # TypeError: a key or value that is not bytes (_insert_rows).
            # OverflowError: a seq or timestamp past SQLite's signed 64 bits.
            raise StorageError("Writing to the SQLite store failed; nothing was applied.") from exc
        self._last_seq, self._last_timestamp = top, timestamp

    def sync(self) -> int:
        with self._pinned_lock:
            pinned = bool(self._pinned)
        try:
            if not pinned:
                # A TRUNCATE checkpoint copies SQLite's WAL into the database
                # file and fsyncs it, whatever the synchronous setting.
                (busy, _, _) = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return self._last_seq
                # Another reader (a statistics count) outlasted the busy
                # timeout: frames are left in the WAL; the fsync below keeps
                # them as durable as checkpointed ones.
            else:
                # A snapshot reads an older view: a TRUNCATE checkpoint would
                # wait for it (the busy timeout, 5 s, holding up every write)
                # and then give up with frames left in the WAL. Committed
                # frames in an fsynced WAL are as durable as checkpointed
                # ones, so copy what can be copied without waiting and fsync
                # the WAL itself.
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            _fsync_file(self.path.with_name(self.path.name + "-wal"))
        except sqlite3.Error as exc:
            raise StorageError("Checkpointing the SQLite store failed.") from exc
        except OSError as exc:
            raise StorageError("Syncing the SQLite store's WAL failed.") from exc
        return self._last_seq

    def open_pinned_reader(self) -> tuple[sqlite3.Connection, int, int]:
        """A connection holding a read transaction on everything applied so far.

        Call from the worker thread between applies (a partition's ``Read``),
        so the view is exactly at ``last_seq()``. The connection may then be
        used from any one thread at a time; writes go on meanwhile and it
        keeps seeing this view. Give it back with ``release_pinned_reader``.

        Returns:
            The connection, and the ``last_seq`` and ``last_ts`` its view holds.

        Raises:
            StorageError: the database cannot be opened or read.
        """
        conn = self._connect(self.path, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=ON")
            # A deferred BEGIN takes no snapshot until the first read: the
            # SELECT pins it, and the transaction stays open until release.
            conn.execute("BEGIN")
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError("Could not open a snapshot view of the SQLite store.") from exc
        with self._pinned_lock:
            self._pinned.add(conn)
        return conn, int(meta["last_seq"]), int(meta["last_ts"])

    def release_pinned_reader(self, conn: sqlite3.Connection) -> None:
        """End the read transaction and close ``conn``; from any thread."""
        with self._pinned_lock:
            self._pinned.discard(conn)
        conn.close()

    def stats(self) -> StoreStats:
        # A connection of its own: this runs in a thread of the control plane,
        # and counting must not wait on the writer (WAL lets it read alongside).
        import sqlite_utils  # only when asked: see _upgrade

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


def _insert_rows(
    conn: sqlite3.Connection, puts: Sequence[tuple[bytes, bytes]], seq: int, ts: int
) -> Sequence[tuple[bytes, bytes]]:
    """Upsert the puts of one write, ``ROWS_PER_INSERT`` rows a statement, as
    far as whole statements go; returns the puts left over (fewer than that).

    ``executemany`` costs ~2.4 µs a row, most of it in the sqlite3 module
    rather than in SQLite: it steps the statement (releasing and retaking the
    GIL) once per row, and passes every ``bytes`` parameter through its
    adapter lookup (a tuple, a dict lookup, two attribute lookups), which
    only ``int``, ``float``, ``str`` and ``bytearray`` skip. Rows bound many
    to a statement, keys and values as bytearrays, cost ~0.7 µs a row (a
    1 MiB batch of 100-byte values: 21 → 7 ms); SQLite stores the same BLOBs.
    Rows of one statement are inserted in order, so a later put of the same
    key still wins.

    Raises:
        TypeError: a key or value is not bytes.
        sqlite3.Error: from SQLite.
    """
    whole = len(puts) - len(puts) % ROWS_PER_INSERT
    if not whole:
        return puts
    # Built with map and chain, in C: no Python code runs per row.
    flat = list(map(bytearray, itertools.chain.from_iterable(puts[:whole])))
    step = 2 * ROWS_PER_INSERT
    for start in range(0, len(flat), step):
        conn.execute(_UPSERT_ROWS, (*flat[start : start + step], seq, ts))
    return puts[whole:]


def _upsert_gathered(
    conn: sqlite3.Connection, rows: Sequence[tuple[bytes, bytes, int, int]]
) -> None:
    """Upsert ``(key, value, seq, ts)`` rows, in order: as many as fill whole
    statements of ``GATHERED_ROWS_PER_INSERT`` rows that way, the rest by
    ``executemany`` (see ``_insert_rows`` for why).

    Raises:
        TypeError: a key or value is not bytes.
        sqlite3.Error: from SQLite.
    """
    whole = len(rows) - len(rows) % GATHERED_ROWS_PER_INSERT
    if whole:
        head = rows[:whole]
        # Flattened, keys and values as bytearrays, by map and zip in C.
        columns = (
            map(bytearray, map(_KEY, head)),
            map(bytearray, map(_VALUE, head)),
            map(_SEQ, head),
            map(_TS, head),
        )
        flat = list(itertools.chain.from_iterable(zip(*columns, strict=True)))
        step = 4 * GATHERED_ROWS_PER_INSERT
        for start in range(0, len(flat), step):
            conn.execute(_UPSERT_GATHERED, flat[start : start + step])
    if whole < len(rows):
        conn.executemany(_UPSERT, rows[whole:])


def create_layout(conn: sqlite3.Connection) -> None:
    """Create mkv's tables in an empty database (a snapshot of a memory store),
    with a store's page size unless the database is already in WAL mode."""
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.executescript(_SCHEMA)


class LayoutReader:
    """A file in mkv's layout (a snapshot), read in key order; blocking.

    Use as a context manager; ``last_seq`` and ``last_ts`` are its ``meta``.

    Raises:
        StorageError: the file is not a database in mkv's layout.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"Could not open {path}.") from exc
        try:
            self._conn.execute("PRAGMA query_only=ON")
            meta = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
            self.last_seq = int(meta["last_seq"])
            self.last_ts = int(meta.get("last_ts", 0))
            self._conn.execute("SELECT key, value, seq, ts FROM kv LIMIT 0").fetchall()
            check_loaded(f"The meta of {path}", last_seq=self.last_seq, last_ts=self.last_ts)
        except StorageError:
            self._conn.close()
            raise
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            self._conn.close()
            raise StorageError(f"{path} is not a database in mkv's layout.") from exc

    def batches(self, size: int = 10_000) -> Iterator[list[Row]]:
        """Every row, in key order, ``size`` at a time."""
        try:
            cursor = self._conn.execute("SELECT key, value, seq, ts FROM kv ORDER BY key")
            while rows := cursor.fetchmany(size):
                yield [(row[0], Item(row[1], row[2], row[3])) for row in rows]
        except sqlite3.Error as exc:
            raise StorageError(f"Reading {self.path} failed.") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LayoutReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # no WAL: nothing written since the last checkpoint
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older mkv up to the current schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(kv)")}
    if "ts" in columns:
        return
    # Imported only when needed (here and in stats): sqlite-utils and what it
    # pulls in (click, dateutil, pluggy) are 12 MB of every server's memory
    # and 70 ms of every start, and a current store never needs them to open.
    import sqlite_utils

    # Before write timestamps (mkv 0.1).
    sqlite_utils.Database(conn).table("kv").add_column("ts", int, not_null_default=0)


def _damaged(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE_CODES


def _check_after_crash(path: Path) -> None:
    """Check a store that was not closed cleanly before it serves; blocking.

    A crash alone never damages SQLite in WAL mode, but the file system under
    it can (a power cut on a disk that lies about flushes, a file truncated
    or copied half-way), and SQLite only notices when a damaged page is read:
    the node would answer not-found, or INTERNAL, for some keys. Small stores
    get ``quick_check`` and a check of every row's seq and timestamp; large
    ones a structural check sized to stay cheap (``FULL_CHECK_BYTES``).

    The check reads through a read-only connection, so that a damaged store
    is left exactly as found: closing a writer would checkpoint the WAL into
    it.

    Raises:
        StoreDamagedError: what was found.
        StorageError: the store could not be read.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"Could not open the SQLite store at {path}.") from exc
    try:
        _check_pages(conn, path)
    except sqlite3.Error as exc:
        if _damaged(exc):
            raise StoreDamagedError(path, str(exc)) from exc
        raise StorageError(f"Could not check the SQLite store at {path}.") from exc
    finally:
        conn.close()


def _check_pages(conn: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"kv", "meta"} <= tables:
        # A store whose creation a crash cut short: its schema (committed
        # without an fsync when a log is in front) never reached the disk.
        # It holds nothing to check; opening it makes the schema, and replay
        # brings back every write from the log (or refuses, if the log was
        # checkpointed: that fsyncs the schema first, so it cannot happen).
        return
    db_size, wal_size, _ = (p.stat().st_size if p.exists() else 0 for p in _database_files(path))
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    # Pages SQLite counts must be in the file or in its WAL (an over-estimate
    # of what the WAL holds: this never calls a sound store damaged).
    if db_size + wal_size < pages * page_size:
        raise StoreDamagedError(
            path, f"it holds {db_size} bytes but SQLite counts {pages} pages of {page_size}"
        )
    if db_size + wal_size > FULL_CHECK_BYTES:
        return
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)") if row[0] != "ok"]
    if problems:
        # SQLite's report spans lines; the log gets one.
        raise StoreDamagedError(path, " ".join(" ".join(problems).split())[:300])
    # Only mkv writes these rows, each with the seq of its write (1 ..
    # last_seq), a timestamp and blobs.
    last_seq = conn.execute("SELECT value FROM meta WHERE name = 'last_seq'").fetchone()
    (bad,) = conn.execute(
        "SELECT count(*) FROM kv WHERE NOT (typeof(seq) = 'integer' AND seq BETWEEN 1 AND ?"
        " AND typeof(ts) = 'integer' AND ts BETWEEN 0 AND ?"
        " AND typeof(key) = 'blob' AND typeof(value) = 'blob')",
        (last_seq and last_seq[0], MAX_LOADED),
    ).fetchone()
    if bad:
        raise StoreDamagedError(
            path, f"{bad} rows have a seq, timestamp, key or value mkv never writes"
        )


def _database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
