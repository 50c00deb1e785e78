"""The snapshot root: every path a control-plane caller names must stay inside it.

A caller gives a path as text, relative to the root or absolute; it is
refused (``InvalidArgumentError``) when it holds a NUL byte or a ``..``
component, is longer than ``MAX_PATH_BYTES`` or has a component longer than
``MAX_NAME_BYTES``, or when, with symlinks resolved, it lands outside the
root. That is checked before anything is created.

Checking a path and then using it by name leaves a window in which someone
could swap a directory for a symlink. So after the check, mkv walks the
resolved path from a descriptor of the root, one component at a time with
``O_NOFOLLOW``, creating missing directories relative to their parent's
descriptor: a symlink found on that walk is refused, and every file mkv then
creates is created relative to the last directory's descriptor. The one
exception is SQLite, which opens files by name only: it gets the name
through ``/proc/self/fd/<descriptor>`` of the checked directory, and the
caller checks afterwards that the file it wrote is the one in that directory
(see ``mkv.snapshots.take``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import attrs

from mkv.errors import InvalidArgumentError, StorageError, shown
from mkv.store.files import make_directory

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "SnapshotRoot", "Target"]

# Linux's PATH_MAX and NAME_MAX: anything longer fails in the kernel anyway,
# and a clear refusal up front is better than an ENAMETOOLONG half-way.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@attrs.frozen
class Target:
    """A checked place in the root: directories below it, and maybe a file name."""

    parts: tuple[str, ...]
    name: str | None = None

    @property
    def relative(self) -> str:
        """The place as a path relative to the root ("" for the root itself)."""
        return "/".join(self.parts + ((self.name,) if self.name else ()))


class SnapshotRoot:
    """The directory snapshots are written under and restored from.

    Args:
        path: the root; created if missing. Resolved once, here: the operator
            may make it a symlink, but nothing a caller names may leave it.
    """

    def __init__(self, path: Path) -> None:
        make_directory(path)
        self.path = Path(os.path.realpath(path))

    def check_directory(self, text: str) -> Target:
        """Check a directory path a caller gave (it need not exist yet).

        Raises:
            InvalidArgumentError: the path is malformed or leaves the root.
        """
        return Target(self._resolve(text))

    def check_file(self, text: str) -> Target:
        """Check the path of a file a caller gave (a manifest to restore).

        Raises:
            InvalidArgumentError: the path is malformed, leaves the root, or
                names the root itself.
        """
        parts = self._resolve(text)
        if not parts:
            raise InvalidArgumentError("The path names the snapshot root, not a file in it.")
        return Target(parts[:-1], parts[-1])

    def _resolve(self, text: str) -> tuple[str, ...]:
        if "\0" in text:
            raise InvalidArgumentError("A snapshot path must not contain a NUL byte.")
        raw = os.fsencode(text)
        if len(raw) > MAX_PATH_BYTES:
            raise InvalidArgumentError(
                f"The snapshot path is {len(raw)} bytes long; the limit is {MAX_PATH_BYTES}."
            )
        given = Path(text)
        if ".." in given.parts:
            raise InvalidArgumentError(f"The snapshot path {shown(text)} must not contain '..'.")
        _check_names(given.parts, text)
        candidate = given if given.is_absolute() else self.path / given
        # realpath resolves every symlink on the part that exists and keeps
        # the rest as written; the missing rest has no symlinks to follow.
        resolved = Path(os.path.realpath(candidate))
        if resolved != self.path and self.path not in resolved.parents:
            raise InvalidArgumentError(
                f"The snapshot path {shown(text)} is outside the snapshot root."
            )
        parts = resolved.relative_to(self.path).parts
        if len(os.fsencode(str(resolved))) > MAX_PATH_BYTES:
            raise InvalidArgumentError(
                f"The snapshot path {shown(text)} is longer than {MAX_PATH_BYTES} bytes "
                "once resolved."
            )
        _check_names(parts, text)
        return parts

    def open_directory(self, target: Target, *, create: bool) -> int:
        """Open the directory of ``target`` by walking from the root without
        following symlinks, creating (and making durable) missing ones when
        ``create``. Blocking. The caller closes the descriptor.

        Raises:
            InvalidArgumentError: a component is missing (``create`` False),
                not a directory, or a symlink (which the check before the walk
                resolved: it was swapped in since).
            StorageError: the file system refused (permissions, disk full).
        """
        try:
            fd = os.open(self.path, _DIR_FLAGS)
        except OSError as exc:
            raise StorageError(f"The snapshot root cannot be opened ({exc.strerror}).") from exc
        for part in target.parts:
            fd = _step(fd, part, create, target.relative)  # closes fd, even when it fails
        return fd


def _check_names(parts: tuple[str, ...], text: str) -> None:
    for part in parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise InvalidArgumentError(
                f"A component of the snapshot path {shown(text)} is longer than "
                f"{MAX_NAME_BYTES} bytes."
            )


def _step(parent: int, name: str, create: bool, shown_path: str) -> int:
    """Open directory ``name`` under ``parent`` (closing ``parent``); no symlinks."""
    try:
        try:
            child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise InvalidArgumentError(
                    f"There is no directory {shown(shown_path)} in the snapshot root."
                ) from None
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                # The new entry must survive a crash along with what goes in it.
                os.fsync(parent)
            except FileExistsError:
                pass  # made by someone else since: opened (and checked) below
            child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidArgumentError(
                f"The snapshot path {shown(shown_path)} does not lead to a directory "
                "inside the snapshot root (a symlink or a file is in the way)."
            ) from None
        raise StorageError(
            f"Cannot open or create {shown(shown_path)} in the snapshot root ({exc.strerror})."
        ) from exc
    finally:
        os.close(parent)
    return child
