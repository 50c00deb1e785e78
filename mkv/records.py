"""Records the client and the server both speak in, in a leaf module.

``Write`` is a mutation on its way through a partition's pipeline to a store;
``Item`` a stored value as a store returns it and ``mkv.Client`` hands it to
applications; ``Manifest`` what a snapshot holds, as the control plane reports
it and the snapshot's JSON file records it. They live here, importing nothing
of mkv but its errors, so that the client, the stores and the pipeline can
share them without importing each other (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["Item", "Write"]


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


@attrs.frozen
class Item:
    """A value, with the sequence number and timestamp of the write that set it.

    The same record on both sides: stores return it, and ``mkv.Client``
    hands it to applications (``mkv.Item``).
    """

    value: bytes
    seq: int
    # Hybrid logical time (ms since the epoch << 16 | counter); 0 without a
    # timestamp stage. mkv.pipeline.clock.format_timestamp prints it.
    timestamp: int = 0
