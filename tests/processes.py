"""Run ``mkv serve`` as a real subprocess, for tests where crashes and restarts matter."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

_LISTENING = re.compile(rb"mkv: (data|control) plane listening on (\S+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ServerProcess:
    """``python -m mkv.cli.server serve`` on free ports with a given data dir.

    ``start`` waits until both ports are bound and reads them from the
    server's stdout; ``stop`` sends SIGTERM and waits; ``kill`` is kill -9.
    The same object can be started again on the same data dir.
    """

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        stderr_path: Path | None = None,
        data_host: str = "127.0.0.1",
        control_host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> None:
        """Args:
        stderr_path: where the server's log goes (default: next to ``data_dir``).
        data_host: the host the data plane binds (a port of its choosing).
        control_host: the host the control plane binds; beyond loopback the
            server needs a control token (``--token-file`` among ``extra_args``).
        prefix: a command the server runs under (``ip netns exec NAME``).
        """
        self.data_host = data_host
        self.control_host = control_host
        self.prefix = prefix
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.process: trio.Process | None = None
        self.data_addr = ""
        self.control_addr = ""
        self.stderr_path = stderr_path or data_dir.parent / f"{data_dir.name}-stderr.log"

    async def start(self, *, same_ports: bool = False, env: dict[str, str] | None = None) -> None:
        """Start and wait until both ports listen.

        Args:
            env: the server's environment (default: this process's).
            same_ports: listen where the previous run did (clients that
                reconnect by address find the restarted server).
        """
        assert self.process is None, "already running"
        data_addr, control_addr = f"{self.data_host}:0", f"{self.control_host}:0"
        if same_ports:
            data_addr, control_addr = self.data_addr, self.control_addr
        stderr = await trio.to_thread.run_sync(open, self.stderr_path, "ab")
        try:
            self.process = await trio.lowlevel.open_process(
                [
                    *self.prefix,
                    sys.executable,
                    "-m",
                    "mkv.cli.server",
                    "serve",
                    "--data-addr",
                    data_addr,
                    "--control-addr",
                    control_addr,
                    "--data-dir",
                    str(self.data_dir),
                    *self.extra_args,
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
            )
        finally:
            stderr.close()
        addresses: dict[str, str] = {}
        output = b""
        assert self.process.stdout is not None
        with trio.fail_after(START_TIMEOUT):
            while len(addresses) < 2:
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    code = await self.process.wait()
                    await _close_pipes(self.process)
                    self.process = None
                    raise RuntimeError(
                        f"mkv serve exited with {code} before listening:\n{self.stderr()}"
                    )
                output += chunk
                for match in _LISTENING.finditer(output):
                    addresses[match[1].decode()] = match[2].decode()
        self.data_addr = addresses["data"]
        self.control_addr = addresses["control"]

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM), then wait for the exit; returns the exit code."""
        return await self._end(sig)

    async def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        if self.process is not None:
            await self._end(signal.SIGKILL)

    async def _end(self, sig: signal.Signals) -> int:
        process = self.process
        assert process is not None, "not running"
        process.send_signal(sig)
        with trio.fail_after(STOP_TIMEOUT):
            code = await process.wait()
        await _close_pipes(process)
        self.process = None
        return code


async def _close_pipes(process: trio.Process) -> None:
    if process.stdout is not None:
        await process.stdout.aclose()
