"""A FUSE file system that loses whatever was not fsynced when its "power" is cut.

Power-cut tests (tests/powercut.py) run the server on it. A process kill
alone proves little: the kernel keeps everything written, fsynced or not, so
a server that never fsyncs survives kill -9. This file system keeps, like
Jepsen's LazyFS, what was not fsynced in its own memory:

- file data: writes land in in-memory pages (and a truncate in an in-memory
  size) until the file is fsynced (``fsync`` or ``fdatasync``); only then
  do they reach the backing directory;
- names: creating, deleting and renaming a file or directory is done in the
  backing directory at once, with a line in a journal that says how to undo
  it, until every directory it changed is fsynced. A deleted or replaced
  file waits in a trash directory meanwhile.

A power cut is kill -9 of this process (``LazyFS`` in tests/powercut.py does
it): the in-memory pages die with it, and :func:`recover` (run by the next
mount, or directly) undoes, newest first, every name change whose directory
was never fsynced. What is left in the backing directory is exactly what a
file system that keeps only fsynced state would hold after a power cut.

The host is not really losing power, so nothing here fsyncs the backing
files: fsyncing them would only slow the tests down.

Run: ``python -m tests.lazyfs BACKING STATE MOUNTPOINT`` (root, /dev/fuse,
libfuse2). It recovers STATE first, then serves until killed or unmounted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import attrs

PAGE = 4096
JOURNAL = "journal"
TRASH = "trash"


@attrs.define
class _File:
    """One backing file's unsynced state, shared by every handle open on it."""

    fd: int  # the backing file, read-write, held while this state exists
    size: int  # as the file's users see it
    # A truncate not yet fsynced: backing bytes at or above this read as zeros.
    zero_from: int
    pages: dict[int, bytearray] = attrs.field(factory=dict)  # unsynced, by page index
    handles: int = 0

    @property
    def dirty(self) -> bool:
        backing = _size(self.fd)
        return bool(self.pages) or self.zero_from != backing or self.size != backing

    def read_backing(self, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` of the file as last fsynced (zeros past its end)."""
        data = os.pread(self.fd, end - start, start) if start < self.zero_from else b""
        data = data[: max(0, self.zero_from - start)]
        return data + bytes(end - start - len(data))

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        parts = []
        position = offset
        while position < end:
            index = position // PAGE
            page = self.pages.get(index)
            if page is not None:
                stop = min(end, (index + 1) * PAGE)
                parts.append(bytes(page[position - index * PAGE : stop - index * PAGE]))
            else:
                # A run of clean pages is one read of the backing file.
                stop = (index + 1) * PAGE
                while stop < end and stop // PAGE not in self.pages:
                    stop += PAGE
                stop = min(stop, end)
                parts.append(self.read_backing(position, stop))
            position = stop
        return b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        position = offset
        end = offset + len(data)
        while position < end:
            index = position // PAGE
            page = self.pages.get(index)
            if page is None:
                page = bytearray(self.read_backing(index * PAGE, (index + 1) * PAGE))
                self.pages[index] = page
            stop = min(end, (index + 1) * PAGE)
            page[position - index * PAGE : stop - index * PAGE] = data[
                position - offset : stop - offset
            ]
            position = stop
        self.size = max(self.size, end)

    def truncate(self, length: int) -> None:
        for index in [i for i in self.pages if i * PAGE >= length]:
            del self.pages[index]
        if (index := length // PAGE) in self.pages:
            page = self.pages[index]
            cut = length - index * PAGE
            page[cut:] = bytes(PAGE - cut)
        self.zero_from = min(self.zero_from, length)
        self.size = length

    def sync(self) -> None:
        """fsync: the backing file becomes what the file's users see."""
        if _size(self.fd) > self.zero_from:
            os.ftruncate(self.fd, self.zero_from)
        for index, page in sorted(self.pages.items()):
            os.pwrite(self.fd, page[: max(0, min(PAGE, self.size - index * PAGE))], index * PAGE)
        os.ftruncate(self.fd, self.size)
        self.pages.clear()
        self.zero_from = self.size


def _size(fd: int) -> int:
    return os.fstat(fd).st_size


def _parent(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) or "/"


def _fuse_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class LazyOperations:
    """The file system's operations (mfusepy's ``Operations`` protocol).

    Paths are the file system's own ("/a/b"); ``_real`` maps them into the
    backing directory. Runs single-threaded (``nothreads``): no locks.
    """

    use_ns = True

    def __init__(self, backing: Path, state: Path) -> None:
        self.backing = backing
        self.trash = state / TRASH
        self.trash.mkdir(parents=True, exist_ok=True)
        self._journal = os.open(state / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._files: dict[int, _File] = {}  # by backing inode number
        self._handles: dict[int, int] = {}  # fh -> inode number
        self._next_handle = 1
        self._next_op = 1
        # Name changes whose directories are not all fsynced yet: op id ->
        # (inode numbers of the directories still to fsync, trash entry or "").
        self._pending: dict[int, tuple[set[int], str]] = {}

    # -- helpers -------------------------------------------------------------------

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _dir_ino(self, path: str) -> int:
        return os.lstat(self._real(path)).st_ino

    def _log(self, entry: dict[str, Any]) -> None:
        # Unbuffered: a kill -9 of this process must not lose the line (the
        # host keeps it; only this process "loses power").
        os.write(self._journal, (json.dumps(entry) + "\n").encode())

    def _record(self, op: str, dirs: list[str], trash: str = "", **fields: Any) -> None:
        op_id = self._next_op
        self._next_op += 1
        inos = {self._dir_ino(d) for d in dirs}
        self._log({"id": op_id, "op": op, "dirs": sorted(inos), "trash": trash, **fields})
        self._pending[op_id] = (inos, trash)

    def _to_trash(self, real: str) -> str:
        target = str(self.trash / f"{self._next_op}-{os.path.basename(real)}")
        os.rename(real, target)
        return target

    def _file(self, fh: int | None, path: str | None) -> _File:
        if fh is not None and fh in self._handles:
            return self._files[self._handles[fh]]
        assert path is not None
        return self._open_file(self._real(path))

    def _open_file(self, real: str, flags: int = 0) -> _File:
        fd = os.open(real, os.O_RDWR | flags)
        ino = os.fstat(fd).st_ino
        state = self._files.get(ino)
        if state is not None:
            os.close(fd)  # the inode's fd is already held (so its number is not reused)
            return state
        size = _size(fd)
        state = self._files[ino] = _File(fd=fd, size=size, zero_from=size)
        return state

    def _handle(self, state: _File) -> int:
        fh = self._next_handle
        self._next_handle += 1
        self._handles[fh] = os.fstat(state.fd).st_ino
        state.handles += 1
        return fh

    # -- attributes and directories --------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        attributes = {
            key: getattr(st, key)
            for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
        }
        attributes |= {"st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns}
        attributes["st_ctime"] = st.st_ctime_ns
        if (state := self._files.get(st.st_ino)) is not None:
            attributes["st_size"] = state.size
        return attributes

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise _fuse_error(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        return {key: getattr(st, key) for key in (*keys, "f_flag", "f_frsize", "f_namemax")}

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._real(path))
        else:
            os.utime(self._real(path), ns=times)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        ino = self._dir_ino(path)
        self._log({"op": "fsyncdir", "ino": ino})
        for op_id, (dirs, trash) in list(self._pending.items()):
            dirs.discard(ino)
            if not dirs:
                del self._pending[op_id]
                _remove(trash)
        return 0

    # -- name changes (journaled until their directories are fsynced) ----------------

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        self._record("mkdir", [_parent(path)], path=path)
        return 0

    def rmdir(self, path: str) -> int:
        real = self._real(path)
        if os.listdir(real):
            raise _fuse_error(errno.ENOTEMPTY)
        self._record("remove", [_parent(path)], trash=self._to_trash(real), path=path)
        return 0

    def unlink(self, path: str) -> int:
        trash = self._to_trash(self._real(path))
        self._record("remove", [_parent(path)], trash=trash, path=path)
        return 0

    def rename(self, old: str, new: str) -> int:
        real_new = self._real(new)
        trash = ""
        if os.path.lexists(real_new):
            if os.path.isdir(real_new) and os.listdir(real_new):
                raise _fuse_error(errno.ENOTEMPTY)
            trash = self._to_trash(real_new)
        os.rename(self._real(old), real_new)
        self._record("rename", [_parent(old), _parent(new)], trash=trash, old=old, new=new)
        return 0

    def link(self, target: str, source: str) -> int:
        """A new name ``target`` for the file ``source``: undone like a creation."""
        real = self._real(target)
        os.link(self._real(source), real)
        self._record("create", [_parent(target)], path=target, ino=os.lstat(real).st_ino)
        return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        real = self._real(path)
        existed = os.path.lexists(real)
        fd = os.open(real, os.O_CREAT | os.O_WRONLY, mode)
        os.close(fd)
        if not existed:
            self._record("create", [_parent(path)], path=path, ino=os.lstat(real).st_ino)
        state = self._open_file(real)
        if flags & os.O_TRUNC:
            state.truncate(0)
        return self._handle(state)

    # -- file data (in memory until fsynced) -----------------------------------------

    def open(self, path: str, flags: int) -> int:
        state = self._open_file(self._real(path))
        if flags & os.O_TRUNC:
            state.truncate(0)
        return self._handle(state)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self._file(fh, path).read(offset, size)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self._file(fh, path).write(offset, data)
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        state = self._file(fh, path)
        state.truncate(length)
        self._forget_if_clean(state)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close() promises nothing about durability

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self._file(fh, path).sync()
        return 0

    def release(self, path: str | None, fh: int) -> int:
        state = self._files[self._handles.pop(fh)]
        state.handles -= 1
        self._forget_if_clean(state)
        return 0

    def _forget_if_clean(self, state: _File) -> None:
        # Unsynced data outlives the last close (until a cut); clean state goes.
        if state.handles == 0 and not state.dirty:
            del self._files[os.fstat(state.fd).st_ino]
            os.close(state.fd)


def _remove(path: str) -> None:
    if not path:
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def recover(backing: Path, state: Path) -> list[str]:
    """After a cut: undo, newest first, every journaled name change whose
    directories were not all fsynced. Returns what was undone (for logs)."""
    journal = state / JOURNAL
    if not journal.exists():
        return []
    ops: dict[int, dict[str, Any]] = {}
    for line in journal.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry["op"] == "fsyncdir":
            for op_id, op in list(ops.items()):
                op["dirs"] = [d for d in op["dirs"] if d != entry["ino"]]
                if not op["dirs"]:
                    del ops[op_id]
                    _remove(op["trash"])
        else:
            ops[entry["id"]] = entry

    def real(path: str) -> str:
        return os.path.join(backing, path.lstrip("/"))

    undone = []
    for op in sorted(ops.values(), key=lambda op: -int(op["id"])):
        kind = op["op"]
        undone.append(f"{kind} {op.get('path') or op.get('old')} -> {op.get('new', '')}")
        try:
            if kind == "mkdir":
                shutil.rmtree(real(op["path"]), ignore_errors=True)
            elif kind == "create":
                if os.lstat(real(op["path"])).st_ino == op["ino"]:
                    os.unlink(real(op["path"]))
            elif kind == "remove":
                os.rename(op["trash"], real(op["path"]))
            elif kind == "rename":
                os.rename(real(op["new"]), real(op["old"]))
                if op["trash"]:
                    os.rename(op["trash"], real(op["new"]))
        except FileNotFoundError:
            pass  # a directory it was in is gone already
    shutil.rmtree(state / TRASH, ignore_errors=True)
    journal.unlink()
    return undone


def main(argv: list[str]) -> int:
    from mfusepy import FUSE  # imported here: it needs libfuse, which recover() does not

    backing, state, mountpoint = (Path(arg) for arg in argv)
    backing.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    for line in recover(backing, state):
        print(f"lazyfs: undone after the cut: {line}", file=sys.stderr, flush=True)
    FUSE(
        LazyOperations(backing, state),
        str(mountpoint),
        foreground=True,
        nothreads=True,
        big_writes=True,
        max_write=131072,
        max_read=131072,
        fsname="lazyfs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
