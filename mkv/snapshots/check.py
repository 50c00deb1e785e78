"""Checking a snapshot's data file, and rebuilding it as a fresh store.

A snapshot's SHA-256 only says the file is the one its manifest names, not
that mkv wrote it: anyone who can write to the snapshot root or to the
bucket ``mkv-sidecar download`` reads from can write a manifest too. And a
SQLite file is more than rows: a trigger in it (``AFTER INSERT ON kv ...
DELETE FROM kv``) would run inside the restored partition's store on every
write. So a restore never serves the snapshot's file. It:

1. opens the (already hash-checked, private) copy read-only and immutable
   (``mode=ro&immutable=1``: SQLite writes nothing, not even a journal or a
   ``-shm``; ``trusted_schema=OFF``), and runs ``quick_check``;
2. checks its schema against the layout mkv's store code creates
   (``mkv.store.sqlite.create_layout``, built in memory for the comparison):
   exactly the tables ``kv`` and ``meta`` and meta's primary-key index,
   with the same columns (name, declared type, NOT NULL, default, primary
   key), indexes, foreign keys and ``WITHOUT ROWID``, and the same
   ``CREATE`` text once spaces and quotes are normalized (for what no
   pragma shows: a CHECK or COLLATE clause); a trigger, view, extra table
   or index, or a changed column is refused;
3. checks ``meta``: ``last_seq`` and ``last_ts`` only, integers in the range
   mkv handles (``mkv.limits``), equal to the manifest's ``seq`` and
   ``timestamp``;
4. checks every row: key and value are blobs, the key is 1 to
   ``MAX_KEY_BYTES`` long and inside the partition's range, ``seq`` is an
   integer in 1 .. ``last_seq`` and ``ts`` one in 0 .. ``MAX_LOADED``;
5. copies the rows, in chunks, into a new file made by ``create_layout``
   (``copy_into``): what the partition opens is a store mkv created, whose
   rows passed 4. It runs in a worker thread, never on the event loop.

4 and 5 are one pass: the statement that copies a chunk turns the seq of a
row that fails 4 into NULL, which the new table's NOT NULL refuses, ending
the copy; only then is the snapshot searched for the row, to name it. (A
separate scan to check first cost as much as the copy: 0.3 s a million
rows.) ``check_snapshot_file`` runs 4 on its own, without a copy.

Anything else is refused with ``InvalidArgumentError`` naming what was found.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkv.errors import InvalidArgumentError, StorageError, shown
from mkv.limits import MAX_LOADED, check_loaded
from mkv.operations import Stopped
from mkv.router import KeyRange
from mkv.snapshots.manifest import Manifest
from mkv.store.sqlite import create_layout
from mkv.wire import MAX_KEY_BYTES

__all__ = ["ROWS_PER_CHUNK", "SnapshotFile", "check_snapshot_file"]

# Rows copied per statement into the new store: each chunk is one call into
# SQLite, between which a stop request is noticed and progress reported.
ROWS_PER_CHUNK = 50_000

_TABLES = ("kv", "meta")
# A row mkv writes, as an SQL condition on the columns of kv (parameters:
# SnapshotFile._row_limits). Blob comparisons are memcmp, as bytes compare.
_VALID_ROW = (
    "typeof(key) = 'blob' AND typeof(value) = 'blob'"
    " AND length(key) BETWEEN 1 AND :max_key"
    " AND key >= :start AND (:end IS NULL OR key < :end)"
    " AND typeof(seq) = 'integer' AND seq BETWEEN 1 AND :last_seq"
    " AND typeof(ts) = 'integer' AND ts BETWEEN 0 AND :max_ts"
)
_META_NAMES = {"last_seq", "last_ts"}
_SNAPSHOT_ALIAS = "snapshot"


class SnapshotFile:
    """A snapshot's data file, opened read-only and checked; blocking.

    Use as a context manager. Construction runs checks 1 to 3 of the module
    docstring; ``copy_into`` then builds a fresh store from its rows,
    checking each (4), and ``check_rows`` checks them without a copy.

    Raises:
        InvalidArgumentError: the file is not what mkv writes for ``manifest``.
    """

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.range = KeyRange(manifest.start, manifest.end)
        try:
            self._conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise _refused(f"it cannot be opened as SQLite ({exc})") from None
        try:
            self._conn.execute("PRAGMA trusted_schema=OFF")
            self._check_pages()
            check_schema(self._conn, "main")
            self._check_meta()
        except sqlite3.Error as exc:
            self._conn.close()
            raise _refused(f"reading it failed ({exc})") from None
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SnapshotFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_pages(self) -> None:
        problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise _refused("it is damaged: " + " ".join(" ".join(problems).split())[:200])

    def _check_meta(self) -> None:
        rows = self._conn.execute("SELECT name, value FROM meta").fetchall()
        meta = dict(rows)
        if len(rows) != len(meta) or set(meta) != _META_NAMES:
            names = ", ".join(sorted(shown(str(name)) for name in meta))
            raise _refused(f"its meta table holds {names}, not last_seq and last_ts")
        try:
            check_loaded("its meta", last_seq=meta["last_seq"], last_ts=meta["last_ts"])
        except StorageError as exc:
            raise _refused(str(exc)) from None
        if meta["last_seq"] != self.manifest.seq:
            raise InvalidArgumentError(
                f"The snapshot's data file is at sequence number {meta['last_seq']}; "
                f"its manifest says {self.manifest.seq}."
            )
        if meta["last_ts"] != self.manifest.timestamp:
            raise InvalidArgumentError(
                f"The snapshot's data file is at timestamp {meta['last_ts']}; "
                f"its manifest says {self.manifest.timestamp}."
            )

    def _row_limits(self) -> dict[str, object]:
        """The parameters of ``_VALID_ROW``."""
        return {
            "max_key": MAX_KEY_BYTES,
            "start": self.range.start,
            "end": self.range.end,
            "last_seq": self.manifest.seq,
            "max_ts": MAX_LOADED,
        }

    def check_rows(self) -> None:
        """One scan, in SQLite, for the first row mkv would never have written.

        Raises:
            InvalidArgumentError: naming that row.
        """
        try:
            bad = self._conn.execute(
                f"SELECT key, typeof(key), typeof(value), seq, ts FROM kv "
                f"WHERE NOT ({_VALID_ROW}) LIMIT 1",
                self._row_limits(),
            ).fetchone()
        except sqlite3.Error as exc:
            raise _refused(f"reading it failed ({exc})") from None
        if bad is not None:
            raise _refused(f"it holds a row mkv never writes ({_describe(bad, self)})")

    def copy_into(
        self,
        target: Path,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Write a new store at ``target`` (must not exist) in mkv's layout,
        holding this file's rows and meta, and fsync it; blocking.

        ``progress`` gets the number of rows copied so far; ``stop``, once
        set, ends the copy with ``Stopped``. On any failure ``target`` is removed.

        Raises:
            StorageError: the new store cannot be written.
        """
        try:
            # absolute(): as_uri() refuses the relative paths of a node
            # whose data dir is relative (the Quick start's ./mkv-data).
            uri = target.absolute().as_uri() + "?mode=rwc"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot create the restored store ({exc}).") from exc
        try:
            # A file nobody reads until it is complete and fsynced: no journal.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            create_layout(conn)
            conn.execute(f"ATTACH DATABASE ? AS {_SNAPSHOT_ALIAS}", (_read_only_uri(self.path),))
            # Checked again through the connection that copies: it is the
            # schema this statement reads that must be mkv's.
            check_schema(conn, _SNAPSHOT_ALIAS)
            try:
                copied = self._copy_rows(conn, stop, progress)
            except sqlite3.IntegrityError:
                # A row failed the check (its seq became NULL), or a key
                # came twice (a damaged B-tree): name it.
                self.check_rows()
                raise _refused("it holds a key twice") from None
            conn.execute(f"DETACH DATABASE {_SNAPSHOT_ALIAS}")
            conn.executemany(
                "UPDATE meta SET value = ? WHERE name = ?",
                [(self.manifest.seq, "last_seq"), (self.manifest.timestamp, "last_ts")],
            )
            (count,) = conn.execute("SELECT count(*) FROM kv").fetchone()
            if count != copied:
                raise StorageError(f"The restored store holds {count} rows, not {copied}.")
        except sqlite3.Error as exc:
            conn.close()
            target.unlink(missing_ok=True)
            raise StorageError(f"Writing the restored store failed ({exc}).") from exc
        except BaseException:
            conn.close()
            target.unlink(missing_ok=True)
            raise
        conn.close()
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _copy_rows(
        self,
        conn: sqlite3.Connection,
        stop: threading.Event | None,
        progress: Callable[[int], None] | None,
    ) -> int:
        """Copy ``kv`` a chunk at a time, in key order, each chunk one
        statement (no Python per row); returns the rows copied.

        Raises:
            sqlite3.IntegrityError: a row fails ``_VALID_ROW`` (its seq is
                copied as NULL, which the new table refuses), or a key comes
                twice (a plain INSERT).
        """
        select = (
            f"INSERT INTO main.kv (key, value, seq, ts) "
            f"SELECT key, value, CASE WHEN {_VALID_ROW} THEN seq END, ts "
            f"FROM {_SNAPSHOT_ALIAS}.kv "
        )
        first = select + "ORDER BY key LIMIT :n"
        after = select + "WHERE key > :after ORDER BY key LIMIT :n"
        limits = self._row_limits()
        copied = 0
        last: bytes | None = None
        conn.execute("BEGIN")
        while True:
            if stop is not None and stop.is_set():
                raise Stopped
            if last is None:
                cursor = conn.execute(first, {**limits, "n": ROWS_PER_CHUNK})
            else:
                cursor = conn.execute(after, {**limits, "n": ROWS_PER_CHUNK, "after": last})
            if cursor.rowcount <= 0:
                break
            copied += cursor.rowcount
            (last,) = conn.execute("SELECT max(key) FROM main.kv").fetchone()
            if progress is not None:
                progress(copied)
            if cursor.rowcount < ROWS_PER_CHUNK:
                break
        conn.execute("COMMIT")
        return copied


def check_snapshot_file(path: Path, manifest: Manifest) -> None:
    """Check that ``path`` is what mkv writes as the data of ``manifest``
    (the checks of ``SnapshotFile``), without copying it; blocking.

    Raises:
        InvalidArgumentError: it is not.
    """
    with SnapshotFile(path, manifest) as snapshot:
        snapshot.check_rows()


def check_schema(conn: sqlite3.Connection, schema: str) -> None:
    """Check that the database ``schema`` of ``conn`` has exactly the layout
    ``create_layout`` makes.

    Raises:
        InvalidArgumentError: naming the first difference.
    """
    found = _layout(conn, schema)
    expected = _reference_layout()
    if found == expected:
        return
    objects, expected_objects = found["objects"], expected["objects"]
    extra = sorted(set(objects) - set(expected_objects))
    if extra:
        kind, name, _ = extra[0]
        raise _refused(
            f"it holds {'an' if kind == 'index' else 'a'} {kind} '{shown(str(name))}' "
            "that mkv never creates"
            + (f" (and {len(extra) - 1} more objects)" if len(extra) > 1 else "")
        )
    missing = sorted(set(expected_objects) - set(objects))
    if missing:
        kind, name, _ = missing[0]
        raise _refused(f"it has no {kind} {name}")
    # The text last: a changed column is better named by its pragma.
    for key in sorted(expected, key=lambda key: (key == "definitions", key)):
        if found.get(key) == expected[key]:
            continue
        if key == "definitions":
            raise _refused(
                "its table definitions differ from mkv's (a CHECK, COLLATE or other "
                "clause mkv never writes)"
            )
        raise _refused(f"its {key.replace('_', ' ')} is not mkv's layout")
    raise _refused("its schema is not mkv's layout")  # pragma: no cover (every key differs above)


def _layout(conn: sqlite3.Connection, schema: str) -> dict[str, Any]:
    """What defines a layout, as comparable values: every schema object, and
    for each table its columns, indexes, foreign keys and storage."""
    rows = conn.execute(f"SELECT type, name, tbl_name, sql FROM {schema}.sqlite_schema").fetchall()
    objects = sorted((str(kind), str(name), str(table)) for kind, name, table, _ in rows)
    layout: dict[str, Any] = {"objects": objects}
    # The CREATE text too, for what no pragma shows (a CHECK or COLLATE
    # clause), normalized so that the same definition spelled differently
    # compares equal: a store made by mkv 0.1 had ts added by ALTER TABLE,
    # which SQLite appends to the text as `, "ts" INTEGER ...`.
    layout["definitions"] = sorted(
        (str(name), _normalized(sql)) for _, name, _, sql in rows if isinstance(sql, str)
    )
    tables = {name: (kind, ncol, wr, strict) for _, name, kind, ncol, wr, strict in
              conn.execute(f"PRAGMA {schema}.table_list")}  # fmt: skip
    for table in _TABLES:
        if ("table", table, table) not in objects:
            continue  # reported as missing
        layout[f"{table}_columns"] = conn.execute(
            f"PRAGMA {schema}.table_xinfo({table})"
        ).fetchall()
        layout[f"{table}_indexes"] = conn.execute(f"PRAGMA {schema}.index_list({table})").fetchall()
        layout[f"{table}_foreign_keys"] = conn.execute(
            f"PRAGMA {schema}.foreign_key_list({table})"
        ).fetchall()
        layout[f"{table}_storage"] = tables.get(table)
    return layout


def _normalized(sql: str) -> str:
    """``sql`` lower case, without identifier quotes, spaces around
    punctuation, or runs of spaces."""
    text = _QUOTES.sub("", sql.lower())
    text = _AROUND_PUNCTUATION.sub(r"\1", text)
    return " ".join(text.split())


_QUOTES = re.compile(r'["`\[\]]')
_AROUND_PUNCTUATION = re.compile(r"\s*([(),])\s*")

_REFERENCE: dict[str, Any] | None = None


def _reference_layout() -> dict[str, Any]:
    global _REFERENCE
    if _REFERENCE is None:
        conn = sqlite3.connect(":memory:")
        try:
            create_layout(conn)
            _REFERENCE = _layout(conn, "main")
        finally:
            conn.close()
    return _REFERENCE


def _read_only_uri(path: Path) -> str:
    # immutable: SQLite takes no lock and opens no journal, WAL or -shm: it
    # reads the file's bytes and nothing else (the file is a private copy
    # nothing else writes).
    return path.resolve().as_uri() + "?mode=ro&immutable=1"


def _refused(detail: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"The snapshot's data file is not one mkv wrote: {detail}.")


def _describe(row: tuple[Any, ...], file: SnapshotFile) -> str:
    key, key_type, value_type, seq, ts = row
    shown_key = shown(key) if isinstance(key, bytes | str) else repr(key)
    if key_type != "blob":
        return f"a key of type {key_type}"
    if value_type != "blob":
        return f"key {shown_key} has a value of type {value_type}"
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        return f"a key of {len(key)} bytes"
    if key not in file.range:
        return f"key {shown_key} is outside the partition's range {file.range}"
    if type(seq) is not int or not 1 <= seq <= file.manifest.seq:
        return f"key {shown_key} has seq {seq!r}, outside 1 .. {file.manifest.seq}"
    return f"key {shown_key} has timestamp {ts!r}, outside 0 .. {MAX_LOADED}"
