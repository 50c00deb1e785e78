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
    # The write already encoded as a log payload (an upsert's request bytes),
    # so the log need not encode it again in Python. The partition drops it
    # when a stage changes the write's puts (see mkv.pipeline.payload).
    payload: bytes | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def size(self) -> int:
        """Payload bytes, for batching bounds."""
        return sum(len(k) + len(v) for k, v in self.puts) + sum(map(len, self.deletes))
