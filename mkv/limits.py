"""The range of sequence numbers and timestamps mkv can handle, checked on
everything it reads from disk.

SQLite keeps integers as signed 64-bit, so a store cannot hold a seq or a
timestamp above ``MAX_STORED`` = 2^63 - 1 (Python raises ``OverflowError``
at the bind): a log record above it can never be applied. Where a partition
starts numbering from (store meta, the log's last record, a reservation, a
snapshot) may be at most ``MAX_LOADED`` = 2^63 - 2^32, and a partition gives
out nothing above it either (a write that would is refused), so what mkv
writes always loads again, and a value above it on disk is damage or
forgery, never something mkv wrote. Pure code, no I/O.
"""

from __future__ import annotations

from mkv.errors import StorageError

__all__ = ["MAX_LOADED", "MAX_STORED", "check_loaded", "in_range"]

# The largest integer SQLite stores (signed 64-bit).
MAX_STORED = 2**63 - 1
# The largest seq or timestamp accepted from a file: MAX_STORED less room for
# 2^32 writes.
MAX_LOADED = MAX_STORED - 2**32


def in_range(value: object) -> bool:
    """True when ``value`` is an int (not a bool) in ``0 .. MAX_LOADED``."""
    return type(value) is int and 0 <= value <= MAX_LOADED


def check_loaded(where: str, **numbers: object) -> None:
    """Check sequence numbers and timestamps read from a file.

    Args:
        where: the file, for the message ("store meta of /x/store.sqlite3").
        numbers: name to value, e.g. ``last_seq=..., last_ts=...``.

    Raises:
        StorageError: a value is not an integer in ``0 .. MAX_LOADED``.
    """
    for name, value in numbers.items():
        if not in_range(value):
            raise StorageError(
                f"{where}: {name} {value!r} is outside the range mkv can handle "
                f"(an integer from 0 to {MAX_LOADED})."
            )
