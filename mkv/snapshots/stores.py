"""How each store kind is snapshotted and restored: the one place that dispatches on kind.

Capture (``begin_capture``) runs on the partition's worker thread as a
``Read``, so between two applied writes: what it captures is exactly the
state at the partition's last sequence number. It must be quick, since
writes wait meanwhile; the long copy (``Capture.write``) then runs in another
thread while writes go on.

- ``sqlite``: a second connection opens a read transaction there (a WAL
  snapshot) and SQLite's backup API copies the database from it, a step at a
  time. Because that connection holds its transaction for the whole copy, a
  step never sees a later commit, and the backup never restarts (SQLite
  restarts a backup when the source changes under it through another
  connection, but only when the backup's own connection begins a new read
  transaction, which it does not while one is open).
- ``memory``: the lists of its sorted records are copied (not the records:
  bytes are immutable), then unpacked and written, already in key order,
  into a new file in the SQLite layout, off the worker thread.
- a store with a ``durable`` store inside (``caching``): the durable one. It
  holds every acknowledged write (the cache in front holds a subset).

Restore (``install``) turns the fresh store a restore built from a checked
snapshot (``mkv.snapshots.check``) into the state a new partition's store
opens with: the database itself for ``sqlite``; for
``caching``, its durable database (wherever ``durable_dir`` puts it; the
cache starts cold); the base file a ``memory`` store loads at every start;
and for any other kind, a new store of that kind filled through ``apply``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mkv.errors import InvalidArgumentError, StorageError, shown
from mkv.operations import Stopped
from mkv.records import Write
from mkv.store import MEMORY_BASE_FILE, SQLITE_FILE, StateStore, StoreOptions, open_store
from mkv.store.caching import DURABLE_FILE, durable_directory
from mkv.store.files import fsync_directory, make_directory
from mkv.store.memory import MemoryStore, unpack_record
from mkv.store.sqlite import LayoutReader, SqliteStore, create_layout

__all__ = ["Capture", "Report", "begin_capture", "install"]

# Pages per backup step: 8 MiB at SQLite's default page size. Each step is one
# call with the GIL released; between steps progress is reported and a stop
# request noticed.
BACKUP_STEP_PAGES = 2048
# Rows per INSERT batch when writing a memory store's snapshot.
_ROWS_PER_BATCH = 10_000
_INSERT_ROW = "INSERT INTO kv (key, value, seq, ts) VALUES (?, ?, ?, ?)"
# Rows per apply when filling a store of another kind from a snapshot.
_ROWS_PER_APPLY = 10_000

# report(done, total, unit)
Report = Callable[[int, int, str], None]


class Capture(Protocol):
    """A store's state at one sequence number, ready to be written out."""

    seq: int
    timestamp: int

    def write(self, path: str, report: Report, stop: threading.Event) -> None:
        """Write the state as a database in mkv's layout at ``path`` (an
        empty file); blocking, in any thread. Raises ``Stopped`` once ``stop``
        is set."""
        ...

    def close(self) -> None:
        """Let go of the captured state; from any thread."""
        ...


def begin_capture(store: StateStore) -> Capture:
    """Capture ``store`` as it is now; on the worker thread, between applies.

    Raises:
        InvalidArgumentError: the store kind cannot be snapshotted.
        StorageError: the store cannot be read.
    """
    durable = getattr(store, "durable", None)
    if durable is not None:
        return begin_capture(durable)
    if isinstance(store, SqliteStore):
        return _SqliteCapture(store)
    if isinstance(store, MemoryStore):
        return _MemoryCapture(store)
    raise InvalidArgumentError(f"Partitions of store kind {shown(store.kind)} have no snapshots.")


class _SqliteCapture:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._conn, self.seq, self.timestamp = store.open_pinned_reader()
        if self.seq != store.last_seq():
            store.release_pinned_reader(self._conn)
            raise StorageError("The SQLite store's view does not match its last write.")

    def write(self, path: str, report: Report, stop: threading.Event) -> None:
        try:
            (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
            target = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError("Could not open the snapshot file.") from exc
        try:
            # Until it is renamed the copy is only a temporary file, fsynced
            # once at the end: no journal, no syncs, no lock taken per step.
            target.execute("PRAGMA journal_mode=OFF")
            target.execute("PRAGMA synchronous=OFF")
            target.execute("PRAGMA locking_mode=EXCLUSIVE")

            def progress(status: int, remaining: int, total: int) -> None:
                if stop.is_set():
                    raise Stopped  # aborts the backup
                report((total - remaining) * page_size, total * page_size, "bytes")

            self._conn.backup(target, pages=BACKUP_STEP_PAGES, progress=progress)
        except sqlite3.Error as exc:
            raise StorageError("Copying the SQLite store failed.") from exc
        finally:
            target.close()

    def close(self) -> None:
        self._store.release_pinned_reader(self._conn)


class _MemoryCapture:
    def __init__(self, store: MemoryStore) -> None:
        self._chunks, self.seq, self.timestamp = store.copy_records()

    def write(self, path: str, report: Report, stop: threading.Event) -> None:
        total = sum(map(len, self._chunks))
        try:
            target = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError("Could not open the snapshot file.") from exc
        try:
            target.execute("PRAGMA journal_mode=OFF")
            target.execute("PRAGMA synchronous=OFF")
            create_layout(target)
            target.execute("BEGIN")
            done = 0
            rows: list[tuple[bytes, bytes, int, int]] = []
            # The records are already in key order: no sort.
            for chunk in self._chunks:
                if stop.is_set():
                    raise Stopped
                for record in chunk:
                    key, item = unpack_record(record)
                    rows.append((key, item.value, item.seq, item.timestamp))
                if len(rows) >= _ROWS_PER_BATCH:
                    target.executemany(_INSERT_ROW, rows)
                    done += len(rows)
                    rows = []
                    report(done, total, "keys")
            target.executemany(_INSERT_ROW, rows)
            target.executemany(
                "UPDATE meta SET value = ? WHERE name = ?",
                [(self.seq, "last_seq"), (self.timestamp, "last_ts")],
            )
            target.execute("COMMIT")
            report(total, total, "keys")
        except sqlite3.Error as exc:
            raise StorageError("Writing the memory store's snapshot failed.") from exc
        finally:
            target.close()

    def close(self) -> None:
        self._chunks = []


def install(kind: str, directory: Path, data: Path, options: StoreOptions) -> None:
    """Make ``data`` (in ``directory``: a store in mkv's layout that
    ``mkv.snapshots.check`` built from a checked snapshot) the state a new
    store of ``kind`` in ``directory`` opens with; blocking.

    Raises:
        StorageError: the store of ``kind`` cannot be written.
    """
    if kind == "sqlite":
        os.replace(data, directory / SQLITE_FILE)
    elif kind == "caching":
        durable = durable_directory(directory, options)
        make_directory(durable)
        _move(data, durable / DURABLE_FILE)
        fsync_directory(durable)
    elif kind == "memory":
        os.replace(data, directory / MEMORY_BASE_FILE)
    else:
        _fill(kind, directory, data, options)
        data.unlink()
    fsync_directory(directory)


def _move(source: Path, target: Path) -> None:
    """Rename, or copy and fsync when ``target`` is on another file system
    (a caching store's managed disk)."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
        source.unlink()


def _fill(kind: str, directory: Path, data: Path, options: StoreOptions) -> None:
    """Fill a new store of ``kind`` with the snapshot's rows, through ``apply``.

    Each row keeps its own sequence number and timestamp; a last, empty write
    at the snapshot's sequence number leaves the store's ``last_seq`` there.
    """
    store = open_store(kind, directory, options=options)
    try:
        with LayoutReader(data) as reader:
            for batch in reader.batches(_ROWS_PER_APPLY):
                store.apply(
                    [
                        Write(puts=[(key, item.value)], seq=item.seq, timestamp=item.timestamp)
                        for key, item in batch
                    ]
                )
            store.apply([Write(seq=reader.last_seq, timestamp=reader.last_ts)])
        store.sync()
    finally:
        store.close()
