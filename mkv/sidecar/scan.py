"""Find the snapshots under the snapshot root: every manifest, and what it names.

Only manifests are looked for: a data file without one is a snapshot still
being written (or abandoned by a crash), which is not a snapshot at all.
Symlinked directories are not followed, so a link cannot lead the sidecar
outside the root or round a loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import attrs

from mkv.errors import InvalidArgumentError, shown
from mkv.snapshots.manifest import MANIFEST_SUFFIX, Manifest

__all__ = ["Found", "Unreadable", "scan"]

# A manifest is a few hundred bytes; anything far larger is not one.
MAX_MANIFEST_BYTES = 1 << 20


@attrs.frozen(kw_only=True)
class Found:
    """A manifest that parses: a snapshot, complete unless its data proves otherwise."""

    manifest: Manifest
    # The manifest file's exact bytes: uploaded as they are, compared as they are.
    manifest_bytes: bytes
    manifest_path: Path
    data_path: Path
    # The data file's path relative to the root, with "/" separators: its
    # remote key below the destination's prefix.
    relpath: str

    @property
    def identity(self) -> str:
        return f"{self.relpath}@{self.manifest.sha256}"

    @property
    def manifest_relpath(self) -> str:
        return self.relpath + MANIFEST_SUFFIX


@attrs.frozen(kw_only=True)
class Unreadable:
    """A file named like a manifest that is not a valid one."""

    manifest_path: Path
    relpath: str
    reason: str
    # Hash of the file's bytes: the same broken file is reported once.
    digest: str


def scan(root: Path, errors: list[OSError] | None = None) -> Iterator[Found | Unreadable]:
    """Every ``*.manifest.json`` under ``root``, in a stable order; blocking.

    Args:
        errors: receives the directories that could not be listed (the root
            itself included), so the caller knows the listing is incomplete.
    """
    for dirpath, dirnames, filenames in os.walk(
        root, onerror=errors.append if errors is not None else None
    ):
        dirnames.sort()
        directory = Path(dirpath)
        for name in sorted(filenames):
            if not name.endswith(MANIFEST_SUFFIX) or name == MANIFEST_SUFFIX:
                continue
            path = directory / name
            if path.is_symlink() or not path.is_file():
                continue
            relpath = PurePosixPath(*path.relative_to(root).parts).as_posix()
            item = _read(path, relpath)
            if item is not None:
                yield item


def _read(path: Path, relpath: str) -> Found | Unreadable | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None  # deleted since the directory was listed: nothing to do
    except OSError as exc:
        return Unreadable(
            manifest_path=path,
            relpath=relpath,
            reason=f"cannot read it ({exc.strerror})",
            digest="",
        )
    digest = hashlib.sha256(raw).hexdigest()

    def unreadable(reason: str) -> Unreadable:
        return Unreadable(manifest_path=path, relpath=relpath, reason=reason, digest=digest)

    if len(raw) > MAX_MANIFEST_BYTES:
        return unreadable("it is too large to be a snapshot manifest")
    try:
        manifest = Manifest.from_json(json.loads(raw))
    except ValueError:
        return unreadable("it is not JSON")
    except InvalidArgumentError as exc:
        return unreadable(exc.message)
    # The format ties the names together: <data file>.manifest.json. A manifest
    # renamed or copied away from its data file would land at the wrong
    # remote key, and a download could not find its data.
    if manifest.file + MANIFEST_SUFFIX != path.name:
        return unreadable(f"it names the data file '{shown(manifest.file)}', not its own")
    data_relpath = relpath[: -len(MANIFEST_SUFFIX)]
    return Found(
        manifest=manifest,
        manifest_bytes=raw,
        manifest_path=path,
        data_path=path.with_name(manifest.file),
        relpath=data_relpath,
    )
