"""The partition catalog: which partitions this node has, persisted as JSON.

``<data-dir>/catalog.json`` is replaced atomically (temporary file, fsync,
rename, directory fsync) on every change, so a crash leaves either the old or
the new catalog. Keys are stored as hex, so the file stays readable::

    {"format": 1, "map_version": 3, "partitions": [
        {"id": "default", "start": "", "end": null, "store": "sqlite",
         "pipeline": ["timestamp", "wal"]}]}

Two optional fields make splits crash-safe (``docs/partitions.md``):
``"split"`` at the top names a split in progress (``{"parent": ...,
"child": ...}``) whose child is not in the catalog yet: recovery deletes the
child's files, and the parent keeps its whole range. A partition's
``"purge"`` lists ranges it gave away whose keys its store may still hold:
they are removed in the background, and the field cleared once they are.
``"merge"`` (``{"left": ..., "right": ...}``) names a merge in progress:
while the catalog still names the right partition it did not commit (the
left one purges the right one's range from its store, which may hold some of
it); once it does not, it did, and the right one's files are deleted.
``"copies"`` names partitions being copied in from another node (a move,
``docs/replication.md``): their files are deleted at start; ``"retired"``
names partitions moved away whose files wait out a grace period: deleted at
start too; an entry's ``"held"`` marks a partition copied in whose move has
not yet said to serve it. A
merge's survivor keeps ``"history_floor"``, the seq it numbers from: watch
positions below it are refused even after a restart, when its log again
holds its own older history but none of the absorbed partition's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from mkv.errors import InvalidArgumentError, StorageError
from mkv.limits import in_range
from mkv.router import KeyRange
from mkv.store.files import write_atomically

__all__ = [
    "Catalog",
    "CatalogEntry",
    "MergeInProgress",
    "SplitInProgress",
    "check_partition_id",
]

FORMAT = 1
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_partition_id(partition_id: str) -> None:
    """Partition ids name directories, so they are kept path-safe.

    Raises:
        InvalidArgumentError: the id is not 1 to 64 letters, digits, ``_.-``,
            starting with a letter or digit.
    """
    if not _ID_PATTERN.fullmatch(partition_id):
        raise InvalidArgumentError(
            "A partition id is 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )


@attrs.frozen
class CatalogEntry:
    id: str
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]
    # Ranges given away (split off) whose keys the store may still hold.
    purge: tuple[KeyRange, ...] = ()
    # Watch positions below this are refused: a merge's survivor numbers from
    # here, and its log holds only its own history before it, not the
    # absorbed partition's (a watcher of that range would miss changes).
    history_floor: int = 0
    # Copied from another node and installed, but not to be served until the
    # move that copied it says so (``PartitionRegistry.serve``): a node
    # restarted in between must not serve it beside its old owner.
    held: bool = False


@attrs.frozen
class SplitInProgress:
    parent: str
    child: str


@attrs.frozen
class MergeInProgress:
    left: str
    right: str


@attrs.frozen
class Catalog:
    partitions: Sequence[CatalogEntry]
    # Grows on every change, so clients can tell a stale partition map.
    map_version: int
    split: SplitInProgress | None = None
    merge: MergeInProgress | None = None
    # Partitions being copied here from another node (``registry.follow``),
    # not yet installed: their files are garbage after a restart.
    copies: tuple[str, ...] = ()
    # Partitions moved to another node whose files wait out the grace
    # period: deleted at the next start.
    retired: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "format": FORMAT,
            "map_version": self.map_version,
            "partitions": [
                {
                    "id": p.id,
                    "start": p.range.start.hex(),
                    "end": None if p.range.end is None else p.range.end.hex(),
                    "store": p.store,
                    "pipeline": list(p.pipeline),
                    **(
                        {"purge": [[r.start.hex(), _hex(r.end)] for r in p.purge]}
                        if p.purge
                        else {}
                    ),
                    **({"history_floor": p.history_floor} if p.history_floor else {}),
                    **({"held": True} if p.held else {}),
                }
                for p in self.partitions
            ],
        }
        if self.split is not None:
            doc["split"] = {"parent": self.split.parent, "child": self.split.child}
        if self.merge is not None:
            doc["merge"] = {"left": self.merge.left, "right": self.merge.right}
        if self.copies:
            doc["copies"] = list(self.copies)
        if self.retired:
            doc["retired"] = list(self.retired)
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Catalog:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unsupported catalog format {doc.get('format')!r}")
        for p in doc["partitions"]:
            # Ids name directories: one that is not path-safe could point
            # anywhere on disk.
            if not isinstance(p["id"], str) or not _ID_PATTERN.fullmatch(p["id"]):
                raise ValueError(f"bad partition id {p['id']!r}")
        split = None
        if (pending := doc.get("split")) is not None:
            for name in ("parent", "child"):
                if not isinstance(pending[name], str) or not _ID_PATTERN.fullmatch(pending[name]):
                    raise ValueError(f"bad partition id {pending[name]!r} in the split")
            split = SplitInProgress(pending["parent"], pending["child"])
        merge = None
        if (merging := doc.get("merge")) is not None:
            for name in ("left", "right"):
                if not isinstance(merging[name], str) or not _ID_PATTERN.fullmatch(merging[name]):
                    raise ValueError(f"bad partition id {merging[name]!r} in the merge")
            merge = MergeInProgress(merging["left"], merging["right"])
        listed: dict[str, tuple[str, ...]] = {}
        for name in ("copies", "retired"):
            ids = doc.get(name, [])
            if not isinstance(ids, list) or not all(
                isinstance(i, str) and _ID_PATTERN.fullmatch(i) for i in ids
            ):
                raise ValueError(f"bad partition ids {ids!r} in {name!r}")
            listed[name] = tuple(ids)
        return cls(
            partitions=[
                CatalogEntry(
                    id=p["id"],
                    range=KeyRange(
                        bytes.fromhex(p["start"]),
                        None if p["end"] is None else bytes.fromhex(p["end"]),
                    ),
                    store=p["store"],
                    # Catalogs from before pipelines: those partitions had none.
                    pipeline=tuple(p.get("pipeline", ())),
                    purge=tuple(
                        KeyRange(bytes.fromhex(start), None if end is None else bytes.fromhex(end))
                        for start, end in p.get("purge", ())
                    ),
                    history_floor=_history_floor(p),
                    held=p.get("held", False) is True,
                )
                for p in doc["partitions"]
            ],
            map_version=int(doc["map_version"]),
            split=split,
            merge=merge,
            copies=listed["copies"],
            retired=listed["retired"],
        )

    @staticmethod
    def load(path: Path) -> Catalog | None:
        """The catalog at ``path``, or None when there is none yet; blocking.

        Raises:
            StorageError: the file exists but cannot be read or parsed.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Could not read the partition catalog {path}.") from exc
        try:
            return Catalog.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"The partition catalog {path} is damaged ({exc}); put it back from a "
                "backup (the node will not guess which partitions it had)."
            ) from exc

    def save(self, path: Path) -> None:
        """Replace the catalog at ``path`` atomically; blocking."""
        try:
            write_atomically(path, self.to_json())
        except OSError as exc:
            raise StorageError(f"Could not write the partition catalog {path}.") from exc


def _hex(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


def _history_floor(partition: dict[str, object]) -> int:
    floor = partition.get("history_floor", 0)
    if not in_range(floor):
        raise ValueError(f"bad history_floor {floor!r} for partition {partition['id']!r}")
    assert isinstance(floor, int)
    return floor
