"""A least-recently-used map bounded in bytes: the caching store's memory.

Sans-I/O and not thread-safe: ``CachingStore`` wraps every call in its lock.

Each entry is charged ``len(key) + len(value) + ENTRY_OVERHEAD`` bytes. The
overhead is an estimate of what CPython spends per entry beyond the payload:
the key's and value's ``bytes`` headers (33 each), the ``Item`` (64) and its
two integers (28 to 36 each), and the ordered dict's slot and link node. It
was measured with ``tracemalloc`` at 236 to 278 bytes per entry for 1,000 to
100,000 entries (the dict's table grows in powers of two), so 320 keeps the
charged total above the real one. Absent keys (negative entries) are charged
the same, though they hold no ``Item``.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from mkv.store.base import Item

__all__ = ["ENTRY_OVERHEAD", "BoundedLru", "LruStatistics"]

ENTRY_OVERHEAD = 320


@attrs.frozen
class LruStatistics:
    entries: int
    # Charged bytes (keys + values + ENTRY_OVERHEAD each); never above max_bytes.
    bytes: int
    max_bytes: int
    evictions: int


class BoundedLru:
    """Key → ``Item`` or ``None`` (known absent), evicting the least recently
    used entries so the charged size never exceeds ``max_bytes``.

    ``lookup`` tells a miss (the key is not cached) from a cached absence by
    returning ``(False, None)`` and ``(True, None)``.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"a cache bound cannot be negative ({max_bytes})")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, Item | None] = OrderedDict()
        self._bytes = 0
        self._evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def lookup(self, key: bytes) -> tuple[bool, Item | None]:
        """Whether ``key`` is cached and what it holds; a hit becomes the most recent."""
        entries = self._entries
        try:
            item = entries[key]
        except KeyError:
            return False, None
        entries.move_to_end(key)
        return True, item

    def peek(self, key: bytes) -> tuple[bool, Item | None]:
        """As ``lookup``, without touching the recency order."""
        if key in self._entries:
            return True, self._entries[key]
        return False, None

    def put(self, key: bytes, item: Item | None) -> None:
        """Cache ``item`` (``None``: known absent) as the most recent entry.

        An entry too big for the whole bound is not cached, and any older
        entry for the key goes, so the cache never answers with an old value.
        """
        self.discard(key)
        size = entry_size(key, item)
        if size > self.max_bytes:
            return
        self._entries[key] = item
        self._bytes += size
        self._evict()

    def discard(self, key: bytes) -> None:
        entries = self._entries
        if key in entries:
            self._bytes -= entry_size(key, entries.pop(key))

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def keys(self) -> list[bytes]:
        """Cached keys, least recently used first (for tests and debugging)."""
        return list(self._entries)

    def statistics(self) -> LruStatistics:
        return LruStatistics(len(self._entries), self._bytes, self.max_bytes, self._evictions)

    def _evict(self) -> None:
        entries = self._entries
        while self._bytes > self.max_bytes:
            key, item = entries.popitem(last=False)
            self._bytes -= entry_size(key, item)
            self._evictions += 1


def entry_size(key: bytes, item: Item | None) -> int:
    """The bytes an entry is charged."""
    return len(key) + (0 if item is None else len(item.value)) + ENTRY_OVERHEAD
