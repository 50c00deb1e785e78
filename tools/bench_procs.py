"""Child processes and /proc sampling for tools/bench.py (Linux only).

The orchestrator is plain blocking code: it only starts processes, writes a
line, waits for a line, and sleeps until the edges of a measurement window,
so it needs no event loop and stays out of the way of the processes it measures.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the orchestrator dies.

    The smoke test kills the orchestrator on timeout; without this a server or
    load generator would outlive it and keep a core busy.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A subprocess spoken to in lines: JSON in, text or JSON out, with timeouts."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stderr: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        # Just before the process exists (time.monotonic): start-up is timed from here.
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            bufsize=0,
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.proc.stdin.fileno(), data) :]

    def readline(self, timeout: float) -> str:
        """The next line of stdout.

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
            RuntimeError: the process exited.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} said nothing for {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited with code {self.proc.wait()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def receive(self, timeout: float) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.readline(timeout))
        return message

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read lines until one matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if match := pattern.search(line):
                return match

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, and SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return code


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def host_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@attrs.define
class Usage:
    """CPU and memory of the server, the load generators and the host over a window."""

    server_cpu_pct: float
    server_rss_mb: float
    client_cpu_pct: float
    host_busy_pct: float
    # CPU that neither the server nor the load generators used, in % of one
    # core: other work on the machine, which makes the figures low.
    other_cpu_pct: float


class Sampler:
    """Samples at the start and end of a window, and RSS in between."""

    def __init__(self, server: int, clients: Sequence[int]) -> None:
        self.server = server
        self.clients = list(clients)
        self._start = time.monotonic()
        self._server0 = cpu_seconds(server)
        self._clients0 = sum(cpu_seconds(pid) for pid in self.clients)
        self._host0 = host_ticks()
        self._rss = rss_mb(server)

    def sample_rss(self) -> None:
        self._rss = max(self._rss, rss_mb(self.server))

    def finish(self) -> Usage:
        wall = time.monotonic() - self._start
        self.sample_rss()
        busy, total = host_ticks()
        host_busy = (busy - self._host0[0]) / max(1, total - self._host0[1])
        server = 100 * (cpu_seconds(self.server) - self._server0) / wall
        clients = 100 * (sum(cpu_seconds(pid) for pid in self.clients) - self._clients0) / wall
        return Usage(
            server_cpu_pct=server,
            server_rss_mb=self._rss,
            client_cpu_pct=clients,
            host_busy_pct=100 * host_busy,
            other_cpu_pct=max(0.0, 100 * host_busy * (os.cpu_count() or 1) - server - clients),
        )


def busy_elsewhere(seconds: float = 1.0) -> float:
    """CPU the machine spends in ``seconds``, in % of one core, before we start."""
    busy0, total0 = host_ticks()
    time.sleep(seconds)
    busy, total = host_ticks()
    return 100 * (os.cpu_count() or 1) * (busy - busy0) / max(1, total - total0)


def watch(sampler: Sampler, until: float, every: float = 0.25) -> Usage:
    """Sleep until ``until`` (monotonic), sampling RSS on the way."""
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(every, left))
        sampler.sample_rss()
    return sampler.finish()
