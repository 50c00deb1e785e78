"""The record a mutation is while it travels through a partition's pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["Write"]


@attrs.frozen
class Write:
    """One atomic mutation request: its puts, then its deletes.

    ``seq`` is given by the partition once the synchronous stages have let the
    write through; ``timestamp`` by the timestamp stage (0 without one).
    Stages never mutate a Write: they return a changed copy (``attrs.evolve``).
    """

    puts: Sequence[tuple[bytes, bytes]] = ()
    deletes: Sequence[bytes] = ()
    seq: int = 0
    timestamp: int = 0

    @property
    def size(self) -> int:
        """Payload bytes, for batching bounds."""
        return sum(len(k) + len(v) for k, v in self.puts) + sum(map(len, self.deletes))
