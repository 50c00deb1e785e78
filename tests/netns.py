"""A network namespace joined to the host by a veth pair, and nftables rules
that cut it off from one TCP port: a node that loses etcd while etcd, the
other nodes and the test itself go on (docs/cluster.md's cut-off test).

Needs root (``ip netns``, ``nft``); ``available()`` says whether this
machine allows it, so tests can skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

__all__ = ["Namespace", "available", "namespace"]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


def available() -> str | None:
    """None when namespaces and nftables can be used here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    name = f"mkvprobe{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "netns", "del", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot make a network namespace: {exc}"
    return None


@attrs.frozen
class Namespace:
    name: str
    # The host's end of the veth pair, and the namespace's.
    host_ip: str
    inside_ip: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command inside: ``(*prefix, command ...)``."""
        return ("ip", "netns", "exec", self.name)

    def cut(self, port: int) -> None:
        """Drop every packet between the namespace and the host's ``port``."""
        rules = (
            "table inet mkvcut {\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {self.host_ip} tcp dport {port} drop\n  }}\n"
            "  chain in { type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {self.host_ip} tcp sport {port} drop\n  }}\n"
            "}\n"
        )
        self._load(rules)

    def cut_off(self, etcd_port: int, *ports: int) -> None:
        """Cut the namespace off from etcd (the host's ``etcd_port``, both
        ways) and, given ``ports``, from its clients: nothing from the host
        reaches those ports. What it sends out still leaves, so an answer it gives
        while cut off reaches its client at once (not later, when a healed
        link lets TCP retransmit it): a late answer shows when it was given."""
        served = ", ".join(str(port) for port in ports)
        clients = f"    ip saddr {self.host_ip} tcp dport {{ {served} }} drop\n" if ports else ""
        rules = (
            "table inet mkvcut {\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {self.host_ip} tcp dport {etcd_port} drop\n  }}\n"
            "  chain in { type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {self.host_ip} tcp sport {etcd_port} drop\n"
            f"{clients}  }}\n"
            "}\n"
        )
        self._load(rules)

    def isolate(self, answering: int, *, reachable: bool = False) -> None:
        """Cut the namespace off from the host entirely: from etcd, its
        clients and the other nodes (their control ports and its own, so no
        follower fetches from it and none of its fetches reach a leader).
        Nothing from the host gets in; nothing leaves but what its port
        ``answering`` (its data port) sends, so an answer it gives while cut
        off reaches its client at once, and a late one shows when it was
        given (as in ``cut_off``). ``reachable``: its clients still reach
        that port (a leader cut off from etcd and its peers alone, whom
        clients still ask)."""
        clients = f"    ip saddr {self.host_ip} tcp dport {answering} accept\n" if reachable else ""
        rules = (
            "table inet mkvcut {\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {self.host_ip} tcp sport != {answering} drop\n"
            f"    ip daddr {self.host_ip} meta l4proto != tcp drop\n  }}\n"
            "  chain in { type filter hook input priority 0; policy accept;\n"
            f"{clients}"
            f"    ip saddr {self.host_ip} drop\n  }}\n"
            "}\n"
        )
        self._load(rules)

    def _load(self, rules: str) -> None:
        """Load an nftables ruleset (the ``mkvcut`` table) inside the namespace."""
        subprocess.run(
            [*self.prefix, "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
            timeout=10,
        )

    def heal(self) -> None:
        _run(*self.prefix, "nft", "delete", "table", "inet", "mkvcut")


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace with a veth pair to the host, removed afterwards."""
    # Unique among the suite's workers running at once (pytest-xdist's gw0,
    # gw1, ...: pids alone could meet modulo 50), and within 10.231.20-219.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    n = 20 + 50 * (int(worker) % 4 if worker.isdigit() else 0) + os.getpid() % 50
    name, host_if, inside_if = f"mkvcut{n}", f"mkvh{n}", f"mkvn{n}"
    ns = Namespace(name, f"10.231.{n}.1", f"10.231.{n}.2")
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", inside_if, "netns", name)
        _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{ns.inside_ip}/30", "dev", inside_if)
        _run("ip", "-n", name, "link", "set", inside_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
