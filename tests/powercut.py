"""Power cuts for crash tests: tests/lazyfs.py mounted as a subprocess.

``LazyFS.cut`` is a power cut under a killed server: kill -9 of the file
system's process (what it had not fsynced dies with it), unmount, and mount
again, which first undoes every name change whose directory was never
fsynced. ``crash_cycles(..., power=fs)`` (tests/crash.py) calls it after
every kill -9 of the server, so every restart sees only what was fsynced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
MOUNT_TIMEOUT = 20.0


class LazyFS:
    """tests/lazyfs.py on ``root/mnt``, backed by ``root/backing``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backing = root / "backing"
        self.state = root / "state"
        self.mountpoint = root / "mnt"
        self.log_path = root / "lazyfs.log"
        self.cuts = 0
        self._process: trio.Process | None = None

    async def mount(self) -> None:
        assert self._process is None, "already mounted"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log = await trio.to_thread.run_sync(open, self.log_path, "ab")
        try:
            self._process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "tests.lazyfs",
                    str(self.backing),
                    str(self.state),
                    str(self.mountpoint),
                ],
                cwd=REPO,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        with trio.fail_after(MOUNT_TIMEOUT):
            while not is_mounted(self.mountpoint):
                if self._process.poll() is not None:
                    self._process = None
                    raise RuntimeError(f"lazyfs did not mount:\n{self.log_path.read_text()}")
                await trio.sleep(0.02)

    async def cut(self) -> None:
        """The power goes and comes back: only what was fsynced is left."""
        await self._kill()
        self.cuts += 1
        await self.mount()

    async def unmount(self) -> None:
        """Ends like a cut, without mounting again."""
        await self._kill()

    async def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            await self._process.wait()
            self._process = None
        if is_mounted(self.mountpoint):
            # The process is gone, so the mount only answers ENOTCONN; a lazy
            # unmount detaches it even if something still has it open.
            await trio.run_process(["umount", "-l", str(self.mountpoint)])


def is_mounted(path: Path) -> bool:
    """From the mount table: ``os.path.ismount`` says False for a FUSE mount
    whose process died (stat fails with ENOTCONN), which still needs unmounting."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


@asynccontextmanager
async def mounted(root: Path) -> AsyncIterator[LazyFS]:
    fs = LazyFS(root)
    await fs.mount()
    try:
        yield fs
    finally:
        with trio.CancelScope(shield=True):
            await fs.unmount()


def fuse_unusable() -> str | None:
    """Why a lazyfs cannot be mounted here (None: it can), found by mounting
    one. Synchronous: for a module-level skip condition."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("umount") is None:
        return "no umount command"
    try:
        import mfusepy  # noqa: F401 (loads libfuse)
    except (ImportError, OSError) as exc:
        return f"mfusepy or libfuse2 is missing ({exc})"
    root = Path(tempfile.mkdtemp(prefix="lazyfs-probe-"))
    fs = LazyFS(root)
    fs.mountpoint.mkdir()
    with open(fs.log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.lazyfs", fs.backing, fs.state, fs.mountpoint],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(fs.mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                return f"mounting a FUSE file system failed: {fs.log_path.read_text()[-500:]}"
            time.sleep(0.02)
        return None
    finally:
        process.kill()
        process.wait()
        if is_mounted(fs.mountpoint):
            subprocess.run(["umount", "-l", fs.mountpoint], check=False)
        shutil.rmtree(root, ignore_errors=True)
