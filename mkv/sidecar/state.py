"""What the sidecar has shipped, kept in a small JSON file across restarts.

The file is replaced atomically (temporary name, fsync, rename, directory
fsync) after every change, so a crash leaves the previous or the next
version, never a torn one::

    {"format": "mkv-sidecar-state/1",
     "destination": "s3://bucket/prefix",
     "shipped": {"p1/p1-7.sqlite3@<sha256>": {
         "path": "p1/p1-7.sqlite3", "sha256": "…", "size": 8192,
         "local": [8192, 1764162000000000000, 1234],  # size, mtime_ns, inode
         "shipped_at": "2026-11-26T13:00:00Z", "pruning": false}},
     "corrupt": {"p1/p1-8.sqlite3@<sha256>": {
         "local": [...], "reason": "…", "seen_at": "…"}}}

A snapshot's identity is its data file's path relative to the snapshot root
plus the SHA-256 its manifest records: a new snapshot written to the same
path is a different snapshot. ``local`` is the data file's fingerprint when
it was checked, so the sidecar notices a file replaced in place without
hashing every file on every pass.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import attrs

from mkv.errors import shown
from mkv.sidecar.errors import SidecarConfigError
from mkv.store.files import write_atomically

__all__ = [
    "FORMAT",
    "Corrupt",
    "Fingerprint",
    "Shipped",
    "ShippedState",
    "StateLock",
    "fingerprint",
    "identity",
]

FORMAT = "mkv-sidecar-state/1"

# size, mtime_ns, inode: changes whenever the file is rewritten or replaced.
Fingerprint = tuple[int, int, int]


def fingerprint(path: Path) -> Fingerprint:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def identity(relpath: str, sha256: str) -> str:
    return f"{relpath}@{sha256}"


@attrs.define(kw_only=True)
class Shipped:
    path: str
    sha256: str
    size: int
    local: Fingerprint
    shipped_at: str
    # Set, and saved, before the first local file is deleted: a crash mid-prune
    # is finished by the next pass instead of leaving a stray data file.
    pruning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "local": list(self.local),
            "shipped_at": self.shipped_at,
            "pruning": self.pruning,
        }

    @classmethod
    def from_json(cls, data: Any) -> Shipped:
        return cls(
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            local=_fingerprint(data["local"]),
            shipped_at=str(data["shipped_at"]),
            pruning=bool(data.get("pruning", False)),
        )


@attrs.define(kw_only=True)
class Corrupt:
    local: Fingerprint
    reason: str
    seen_at: str


def _fingerprint(value: Any) -> Fingerprint:
    size, mtime_ns, inode = (int(v) for v in value)
    return (size, mtime_ns, inode)


@attrs.define
class ShippedState:
    """The state file's contents: plain data, no I/O but ``load`` and ``save``."""

    destination: str
    shipped: dict[str, Shipped] = attrs.field(factory=dict)
    corrupt: dict[str, Corrupt] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "destination": self.destination,
            "shipped": {key: entry.to_json() for key, entry in sorted(self.shipped.items())},
            "corrupt": {
                key: {"local": list(c.local), "reason": c.reason, "seen_at": c.seen_at}
                for key, c in sorted(self.corrupt.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> ShippedState:
        try:
            if data["format"] != FORMAT:
                raise SidecarConfigError(
                    f"The state file {shown(str(path))} has format "
                    f"'{shown(str(data['format']))}'; this sidecar reads {FORMAT}."
                )
            return cls(
                destination=str(data["destination"]),
                shipped={str(k): Shipped.from_json(v) for k, v in data["shipped"].items()},
                corrupt={
                    str(k): Corrupt(
                        local=_fingerprint(v["local"]),
                        reason=str(v["reason"]),
                        seen_at=str(v["seen_at"]),
                    )
                    for k, v in data["corrupt"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SidecarConfigError(
                f"The state file {shown(str(path))} is malformed ({exc}); "
                "move it away to start afresh (already shipped snapshots are "
                "recognised at the destination and not sent again)."
            ) from None

    @classmethod
    def load(cls, path: Path, destination: str) -> ShippedState:
        """The state in ``path``, or an empty one if there is none yet.

        Raises:
            SidecarConfigError: unreadable or malformed, or it records uploads
                to another destination (its "already shipped" would be wrong
                there).
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(destination=destination)
        except OSError as exc:
            raise SidecarConfigError(
                f"Cannot read the state file {shown(str(path))} ({exc.strerror})."
            ) from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise SidecarConfigError(
                f"The state file {shown(str(path))} is not JSON ({exc})."
            ) from None
        state = cls.from_json(data, path)
        if state.destination != destination:
            raise SidecarConfigError(
                f"The state file {shown(str(path))} records uploads to "
                f"{shown(state.destination, 80)}; give each destination its own --state-file."
            )
        return state

    def save(self, path: Path) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        write_atomically(path, text.encode())


class StateLock:
    """An exclusive lock on ``<state file>.lock`` for the life of the process.

    Two sidecars sharing one state file would each overwrite the other's
    record of what it shipped; the second one is refused instead. The lock is
    released by the kernel when the process ends, however it ends.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises:
        SidecarConfigError: another process holds it, or it cannot be created.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SidecarConfigError(
                f"Cannot create the lock file {shown(str(self.path))} ({exc.strerror})."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SidecarConfigError(
                f"Another mkv-sidecar is using the state file next to {shown(str(self.path))}."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
