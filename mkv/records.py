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
from pathlib import Path
from typing import Any

import attrs

from mkv.errors import InvalidArgumentError, shown
from mkv.limits import MAX_LOADED, in_range

__all__ = ["MANIFEST_FORMAT", "Item", "Manifest", "Write"]


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


# The snapshot manifest format this version writes and reads.
MANIFEST_FORMAT = "mkv-snapshot/1"


# A pipeline is a few short specs; anything much longer is not one.
_MAX_PIPELINE_STAGES = 64
_MAX_STAGE_SPEC = 1024


@attrs.frozen(kw_only=True)
class Manifest:
    partition_id: str
    start: bytes
    end: bytes | None
    store_kind: str
    seq: int
    timestamp: int
    # The data file's name, in the manifest's directory.
    file: str
    size: int
    sha256: str
    # UTC, ISO 8601.
    created: str
    # The partition's stage specs; None: not recorded (a manifest written
    # before mkv recorded them).
    pipeline: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "partition_id": self.partition_id,
            "range": {
                "start": self.start.hex(),
                "end": None if self.end is None else self.end.hex(),
            },
            "store_kind": self.store_kind,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
            "created": self.created,
        }
        if self.pipeline is not None:
            document["pipeline"] = list(self.pipeline)
        return document

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Raises:
        InvalidArgumentError: not an mkv snapshot manifest this version reads.
        """
        try:
            if data["format"] != MANIFEST_FORMAT:
                raise InvalidArgumentError(
                    f"Unknown snapshot format '{shown(str(data['format']))}'; "
                    f"expected {MANIFEST_FORMAT}."
                )
            end = data["range"]["end"]
            manifest = cls(
                partition_id=str(data["partition_id"]),
                start=bytes.fromhex(data["range"]["start"]),
                end=None if end is None else bytes.fromhex(end),
                store_kind=str(data["store_kind"]),
                seq=_number(data, "seq"),
                timestamp=_number(data, "timestamp"),
                file=str(data["file"]),
                size=_size(data),
                sha256=str(data["sha256"]),
                created=str(data["created"]),
                pipeline=_pipeline(data.get("pipeline")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgumentError(f"The snapshot manifest is malformed ({exc}).") from None
        if manifest.end is not None and manifest.end <= manifest.start:
            # A partition with that range would own no key: not one mkv had.
            raise InvalidArgumentError(
                "The snapshot manifest's range is empty (its end is not after its start)."
            )
        if Path(manifest.file).name != manifest.file or manifest.file in ("", ".", ".."):
            raise InvalidArgumentError("The snapshot manifest names a file outside its directory.")
        return manifest


def _number(data: Any, name: str) -> int:
    """A seq or timestamp: an integer (not a float or a string) mkv can handle."""
    value = data[name]
    if not in_range(value):
        raise InvalidArgumentError(
            f"The snapshot manifest's {name} {shown(repr(value))} is outside the range mkv "
            f"can handle (an integer from 0 to {MAX_LOADED})."
        )
    assert isinstance(value, int)
    return value


def _size(data: Any) -> int:
    value = data["size"]
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(
            f"The snapshot manifest's size {shown(repr(value))} is not a number of bytes."
        )
    return value


def _pipeline(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > _MAX_PIPELINE_STAGES
        or not all(isinstance(spec, str) and len(spec) <= _MAX_STAGE_SPEC for spec in value)
    ):
        raise InvalidArgumentError("The snapshot manifest's pipeline is not a list of stage specs.")
    return tuple(value)
