"""The README and docs tried line by line: every shell and Python block runs as written.

Each Markdown file gets a fresh node started as the Quick start says (``mkv
serve`` in a temporary working directory, so its data lives in
``./mkv-data``), then its ```` ```sh ````, ```` ```bash ````, ```` ```console ````
and ```` ```python ```` blocks run in document order against it, so a later
block sees what an earlier one did, as a reader following the page would.

- The node listens on free ports (other tests and other nodes may hold
  7070/7071). Shell blocks get its addresses through ``MKV_DATA_ADDR`` /
  ``MKV_CONTROL_ADDR``, which mkvctl reads when no flag names one, so their
  text runs unchanged. The Python client has no such variable, so in Python
  blocks the default addresses ``127.0.0.1:7070`` / ``127.0.0.1:7071`` are
  replaced by the node's: the one edit the runner makes to a block.
- Shell blocks run as one bash script (``set -e -o pipefail``, so every line
  must succeed) in the working directory, with the repo's ``.venv/bin`` first
  on ``PATH`` and ``.venv``, ``README.md``, ``docs``, ``protos`` and
  ``examples`` linked there, as in a checkout.
- In a ``console`` block (a transcript) the ``$ `` lines run; "block line N"
  then counts those commands.
- Python blocks run with the venv's python. A fragment with ``await`` at the
  top level (the README shows those inside an async function) runs inside a
  Trio ``main`` where ``db`` is an ``mkv.Client`` and ``admin`` an
  ``mkv.AdminClient`` of the node.
- A block marked ``<!-- run: on mkv demo -->`` runs against a cluster of its
  own, started by ``mkv demo --nodes 3`` (etcd and three nodes; skipped
  without etcd, except under ``CI=true``), with ``MKV_DATA_ADDR`` /
  ``MKV_CONTROL_ADDR`` naming node1, as the demo's printed ``export`` line
  does; then Ctrl-C (SIGINT) stops it.
- A block that cannot run in a test (installs, ``mkv serve`` itself, remote
  hosts, commands that run until Ctrl-C) has ``<!-- not run: REASON -->`` on
  the line before its fence. A block with neither a marker nor a clean run
  fails the test, naming the file, the line and the output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"sh": "shell", "bash": "shell", "console": "shell", "python": "python"}
DEFAULT_DATA, DEFAULT_CONTROL = "127.0.0.1:7070", "127.0.0.1:7071"
LINKED = (".venv", "README.md", "docs", "protos", "examples")
BLOCK_TIMEOUT = 30.0
START_TIMEOUT = 30.0

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")
_FRESH = "<!-- run: on a fresh node -->"
_PYTEST = "<!-- run: with pytest -->"
_DEMO = "<!-- run: on mkv demo -->"
_DEMO_NODE = re.compile(r"^mkv demo: node1 data (\S+) control (\S+), pid \d+$")
_LISTENING = re.compile(r"mkv: (data|control) plane listening on (\S+)")


@attrs.frozen
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    kind: str  # "shell" or "python"
    text: str
    not_run: str | None  # the marker's reason
    fresh: bool  # runs on a new Quick start node, not on the page's so far
    pytest: bool  # a test module: pytest runs it (its fixtures start their own node)
    demo: bool = False  # runs on a cluster `mkv demo` starts, not on a single node

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        kind = RUNNABLE.get(opening[1])
        if kind is not None:
            before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            marker = _NOT_RUN.match(before)
            known = (_FRESH, _PYTEST, _DEMO)
            if before.startswith("<!--") and marker is None and before not in known:
                # A misspelt marker must not quietly run, or quietly skip, a block.
                raise ValueError(
                    f"{path}:{i}: unknown marker {before!r}; "
                    f"use '<!-- not run: REASON -->', '{_FRESH}', '{_PYTEST}' or '{_DEMO}'"
                )
            body = lines[i + 1 : end]
            if opening[1] == "console":
                # A transcript: the commands are the "$ " lines, the rest is output.
                body = [line[2:] for line in body if line.startswith("$ ")]
            text = "\n".join(body) + "\n"
            found.append(
                Block(
                    path,
                    i + 1,
                    kind,
                    text,
                    marker[1] if marker else None,
                    fresh=before == _FRESH,
                    pytest=before == _PYTEST,
                    demo=before == _DEMO,
                )
            )
        i = end + 1
    return found


class Node:
    """``mkv serve`` as the Quick start runs it, in ``workdir``, on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir.parent / "mkv-serve.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    VENV_BIN / "mkv",
                    "serve",
                    *("--data-addr", "127.0.0.1:0"),
                    *("--control-addr", "127.0.0.1:0"),
                ],
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                text=True,
            )
        addresses: dict[str, str] = {}
        assert self.process.stdout is not None
        # readline blocks, so a server that never prints is caught by the
        # watchdog below rather than by this loop.
        timer = _Watchdog(self.process, START_TIMEOUT)
        try:
            while len(addresses) < 2:
                line = self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"mkv serve exited before listening:\n{self.log_text()}")
                if match := _LISTENING.search(line):
                    addresses[match[1]] = match[2]
        except BaseException:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            raise
        finally:
            timer.cancel()
        self.data_addr, self.control_addr = addresses["data"], addresses["control"]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


class DemoCluster:
    """``mkv demo --nodes 3`` as a reader starts it, its temporary directory
    under ``workdir``'s parent; the addresses are node1's, as the demo prints."""

    def __init__(self, workdir: Path) -> None:
        from tests.test_demo import find_etcd_or_skip

        etcd = find_etcd_or_skip()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [VENV_BIN / "mkv", "demo", "--nodes", "3", "--etcd-binary", etcd],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(workdir.parent)},
            text=True,
        )
        assert self.process.stdout is not None
        timer = _Watchdog(self.process, 2 * START_TIMEOUT)
        addresses: tuple[str, str] | None = None
        try:
            for line in self.process.stdout:
                self.output.append(line)
                if match := _DEMO_NODE.match(line.rstrip("\n")):
                    addresses = (match[1], match[2])
                if line.startswith("mkv demo: ready"):
                    break
            if addresses is None or self.process.poll() is not None:
                raise RuntimeError(f"mkv demo did not start:\n{self.log_text()}")
        except BaseException:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            raise
        finally:
            timer.cancel()
        self.data_addr, self.control_addr = addresses

    def log_text(self) -> str:
        return "".join(self.output)[-4000:]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # the reader's Ctrl-C
        assert self.process.stdout is not None
        timer = _Watchdog(self.process, 90)
        try:
            self.output.append(self.process.stdout.read())
            self.process.wait()
        finally:
            timer.cancel()
            self.process.stdout.close()


class _Watchdog:
    def __init__(self, process: subprocess.Popen[str], seconds: float) -> None:
        import threading

        self._timer = threading.Timer(seconds, process.kill)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _python_source(block: Block, node: Node) -> str:
    text = block.text.replace(DEFAULT_DATA, node.data_addr).replace(
        DEFAULT_CONTROL, node.control_addr
    )
    try:
        # compile, not ast.parse: only compiling refuses a top-level await.
        compile(text, block.where, "exec")
    except SyntaxError:
        # A fragment shown inside an async function: give it one, with the
        # names the surrounding prose gives it.
        body = textwrap.indent(text, " " * 12)
        return (
            "import trio\nimport mkv\n\n"
            "async def main():\n"
            f"    async with mkv.Client.connect({node.data_addr!r}) as db:\n"
            f"        async with mkv.AdminClient.connect({node.control_addr!r}) as admin:\n"
            f"{body}\n"
            "trio.run(main)\n"
        )
    return text


def run_block(block: Block, node: Node, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MKV_DATA_ADDR": node.data_addr,
        "MKV_CONTROL_ADDR": node.control_addr,
        "PYTHONUNBUFFERED": "1",
    }
    if block.kind == "shell":
        # The trap names the failing line of the block; -e stops there.
        header = (
            "set -e -o pipefail\n"
            "trap 'echo \"readme-runner: exit status $? at block line $((LINENO - 2))\" >&2' ERR\n"
        )
        argv = ["bash", "-c", header + block.text]
    elif block.pytest:
        # As the README's pytest-trio setting says; exit status 5 (no test
        # collected) fails the block too.
        script = workdir.parent / f"test_block_{block.line}.py"
        script.write_text(block.text)
        # The pytest script, not `python -m pytest`: -m puts the cwd on sys.path,
        # where the README's protoc block leaves an `mkv/` that shadows mkv.
        argv = [str(VENV_BIN / "pytest"), "-q", "-p", "no:cacheprovider"]
        argv += ["-o", "trio_mode=true", "--rootdir", str(workdir.parent), str(script)]
    else:
        script = workdir.parent / f"block-{block.line}.py"  # not in the cwd, as a user's
        script.write_text(_python_source(block, node))
        argv = [str(VENV_BIN / "python"), str(script)]
    try:
        return subprocess.run(
            argv,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(argv, -1, out, err + f"\ntimed out after {e.timeout} s")


def _files_with_blocks() -> list[Path]:
    # Parsing every page here also refuses a misspelt marker at collection.
    return [path for path in DOCS if any(b.not_run is None for b in blocks(path))]


def run_page(path: Path, tmp_path: Path) -> str:
    """Run every block of ``path``; returns the first failure, described ("" if none)."""
    nodes = 0

    def fresh() -> tuple[Path, Node]:
        nonlocal nodes
        nodes += 1
        workdir = tmp_path / f"node-{nodes}" / "work"
        workdir.mkdir(parents=True)
        for name in LINKED:
            (workdir / name).symlink_to(ROOT / name)
        return workdir, Node(workdir)

    workdir, node = fresh()
    try:
        for block in blocks(path):
            if block.not_run is not None:
                continue
            if block.demo:
                # A cluster of its own; the page's node goes on after it.
                nodes += 1
                own_workdir = tmp_path / f"demo-{nodes}" / "work"
                own_workdir.mkdir(parents=True)
                for name in LINKED:
                    (own_workdir / name).symlink_to(ROOT / name)
                cluster = DemoCluster(own_workdir)
                try:
                    done = run_block(block, cluster, own_workdir)
                finally:
                    cluster.stop()
                if done.returncode != 0:
                    done.stderr += f"\n--- mkv demo\n{cluster.log_text()}"
            elif block.fresh:
                # A block of its own, on its own node; the page's node goes on after it.
                own_workdir, own_node = fresh()
                try:
                    done = run_block(block, own_node, own_workdir)
                finally:
                    own_node.stop()
            else:
                done = run_block(block, node, workdir)
            if done.returncode != 0:
                # Later blocks build on this one: their failures would be noise.
                return (
                    f"{block.where} ({block.kind} block) exited {done.returncode}:\n"
                    f"--- block\n{block.text}--- stdout\n{done.stdout[-3000:]}"
                    f"--- stderr\n{done.stderr[-3000:]}"
                    f"--- server log\n{node.log_text()}"
                )
    finally:
        node.stop()
    return ""


@pytest.mark.parametrize("path", _files_with_blocks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs_as_written(path: Path, tmp_path: Path) -> None:
    failure = run_page(path, tmp_path)
    assert not failure, failure


PAGE = """\
# A page

```sh
mkvctl put greeting hello
```

<!-- not run: it would fail -->
```sh
exit 3
```

```python
import mkv

with mkv.connect("127.0.0.1:7070") as db:
    assert db.get(b"greeting") == b"hello"
```

```python
assert (await db.get(b"greeting")) == b"hello"
```

```console
$ mkvctl get greeting
hello
```

```sh
mkvctl get greeting
mkvctl get --no-such-flag greeting
```
"""


def test_the_runner_reports_the_block_that_fails(tmp_path: Path) -> None:
    """The runner itself: marked blocks are skipped, Python blocks reach the
    node at the documented address, fragments get ``db``, and a broken
    command fails the page, naming its block's line and the line in it."""
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    failure = run_page(page, tmp_path / "run")
    assert failure.startswith(f"{page}:28 (shell block) exited 2"), failure
    assert "readme-runner: exit status 2 at block line 2" in failure, failure
    assert "--no-such-flag" in failure, failure

    # The same page with the broken line fixed passes: the failure was that line.
    page.write_text(PAGE.replace("mkvctl get --no-such-flag greeting\n", ""))
    assert run_page(page, tmp_path / "fixed") == ""


def test_a_misspelt_marker_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- not-run: typo -->\n```sh\nexit 1\n```\n")
    with pytest.raises(ValueError, match="unknown marker"):
        blocks(page)


def test_the_example_runs_as_its_docstring_says(tmp_path: Path) -> None:
    """examples/session_counter.py's "Run it next to mkv serve" instructions,
    taken from its docstring: the program counts a click put with mkvctl."""
    doc = (ROOT / "examples" / "session_counter.py").read_text()
    [command] = re.findall(r"^ {4}(python examples/\S+\.py .*)$", doc, re.MULTILINE)
    put, get = re.findall(r"``(mkvctl [^`]+)``", doc)
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in LINKED:
        (workdir / name).symlink_to(ROOT / name)
    node = Node(workdir)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MKV_DATA_ADDR": node.data_addr,
        "MKV_CONTROL_ADDR": node.control_addr,
    }
    # The documented command names the default address; the node is elsewhere.
    argv = ["bash", "-c", "exec " + command.replace(DEFAULT_DATA, node.data_addr)]
    counter = subprocess.Popen(argv, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            # The program says nothing once it watches, and a click put before
            # that is not counted (a first run starts from now): put it again
            # until one is, as a user would.
            subprocess.run(["bash", "-c", put], cwd=workdir, env=env, check=True, timeout=30)
            done = subprocess.run(
                ["bash", "-c", get], cwd=workdir, env=env, capture_output=True, text=True
            )
            if done.returncode == 0:
                count, seq = done.stdout.split()
                assert int(count) >= 1, done.stdout
                assert int(seq) >= 1, done.stdout
                break
            assert counter.poll() is None, f"{command} exited:\n{counter.communicate()[1]}"
            assert time.monotonic() < deadline, f"{get}: {done.stdout}{done.stderr}"
            time.sleep(0.2)
    finally:
        counter.terminate()
        counter.communicate(timeout=30)
        node.stop()
