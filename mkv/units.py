"""Byte sizes as people write them (``4096``, ``64KiB``, ``8MiB``, ``1GiB``):
one parser for every flag, config key and stage argument that takes a size,
so that what one accepts, all accept, and one formatter for output; and the
one way mkv prints a moment (ISO 8601, UTC, milliseconds). Pure code, no I/O."""

from __future__ import annotations

import datetime
import re

__all__ = ["SIZE_EXAMPLE", "format_size", "format_utc", "format_utc_millis", "parse_size"]

_SIZE = re.compile(r"([0-9]{1,18})(B|KiB|MiB|GiB|TiB)?")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

# For error messages: what a size looks like.
SIZE_EXAMPLE = "a number of bytes such as 4096, or with a unit: 64KiB, 8MiB, 1GiB"


def parse_size(text: str) -> int:
    """``"64MiB"`` → 67108864. Binary units only: "MB" is ambiguous, so refused.

    Raises:
        ValueError: not a size (the message shows what one looks like).
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected {SIZE_EXAMPLE}; got {text!r}")
    return int(match[1]) * _UNITS[match[2]]


def format_size(n: int) -> str:
    """``67108864`` → ``"64.0 MiB"``; below 1 KiB, ``"512 B"``."""
    if n < 1024:
        return f"{n} B"
    size, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.1f} {units[0]}"


def format_utc_millis(millis: int) -> str:
    """Milliseconds since the Unix epoch as ISO 8601 UTC: ``2024-05-01T12:00:00.123Z``,
    the one form mkv prints times in (logs, timestamps, JSON output)."""
    try:
        moment = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        # Past datetime's year 9999: still say what the number means.
        return f"{millis}ms"
    # Milliseconds from the integer: a float division may round them.
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


def format_utc(seconds: float) -> str:
    """Seconds since the Unix epoch (``time.time()``) as ``format_utc_millis`` prints them."""
    return format_utc_millis(round(seconds * 1000))
