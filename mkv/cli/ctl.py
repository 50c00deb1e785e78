"""``mkvctl``: manage partitions and read and write keys on a running mkv node.

mkvctl partitions list                      # a table: id, range, store, state, ...
mkvctl partitions add --id users --start user: --end user;
mkvctl partitions remove users              # deletes the partition's data too
mkvctl partitions reopen users              # a failed partition, on its files, as a restart
mkvctl partitions restore nightly/users-42.sqlite3.manifest.json --id users
mkvctl snapshot users nightly --wait        # progress on stderr, the manifest at the end
mkvctl operations get 3f9a0c1d2e4b5a69      # a snapshot's state, progress and result
mkvctl partitions split default u/ --new-id users --wait   # [u/, ∞) moves to "users"
mkvctl partitions merge default users --wait   # and back
mkvctl status                               # version, uptime, directories, partitions' queues
mkvctl cluster status                       # nodes, leases, partitions per node, health
mkvctl nodes list                           # a cluster's nodes: alive, addresses, partitions
mkvctl partitions add --id users --start user: --end user; --node node2
mkvctl partitions move users node3 --wait   # online, to another node of the cluster
mkvctl nodes drain node3 --wait             # every partition off node3, one at a time
mkvctl put greeting hello
mkvctl put photo --file photo.jpg           # the value from a file; `put KEY -`: from stdin
mkvctl get greeting                         # the value's bytes, as stored
mkvctl del greeting other                   # how many of the keys existed
mkvctl incr visits 5                        # add to a counter; prints its new value
mkvctl scan user: 'user;'                   # KEY<TAB>VALUE lines, in key order
mkvctl watch user: 'user;' --from-seq 42    # SEQ<TAB>put|del<TAB>KEY[<TAB>VALUE], live
mkvctl --json partitions list               # one JSON document, for scripts
mkvctl --version
source <(mkvctl completion bash)            # tab completion, generated from this parser

Addresses come from ``--data-addr`` / ``--control-addr``, else the environment
(``MKV_DATA_ADDR`` / ``MKV_CONTROL_ADDR``), else the server's defaults; the
data plane of a cluster may be several seeds, comma-separated
(``--data-addr db1:7070,db2:7070``). Options may go before or after the command.

A token (the control plane's, or the data plane's when it requires one) comes
from ``--token-file PATH``, else ``MKV_TOKEN`` (partitions) / ``MKV_DATA_TOKEN``
(keys); never from a flag's value, which ``ps`` would show. TLS: ``--ca`` (the
CA that signed the server), ``--cert`` and ``--key`` (a client certificate,
for mTLS), or ``--tls`` alone to verify against the system's CAs.

Keys, values and range bounds are UTF-8 text, or hex with ``--hex`` (which also
prints them as hex in human output). ``get`` writes the value's exact bytes, adding a newline
only when stdout is a terminal; a missing key is exit status 1 with
``mkvctl: key not found: KEY`` on stderr, so ``if mkvctl get k`` works in shell.

In ``--json`` output every bytes field ``x`` comes as two members: ``x``, the
text when it is valid UTF-8 (else null), and ``x_base64``, always exact. An
unbounded range end is ``"end": null, "end_base64": null``. ``scan`` and
``watch`` print one JSON document per line (JSON Lines), since they stream.
Every moment is ISO 8601 text in UTC (``2026-05-01T12:00:00.123Z``), never a
Unix number; ``get`` adds the write's ``timestamp`` (as stored) and ``time``.

``scan`` and ``watch`` refuse (exit status 2) a range whose END does not
sort after START: an unquoted ``user;`` loses its ``;`` to the shell, and an
empty answer would read as "no keys". ``put KEY -`` and ``put KEY --file
PATH`` store the exact bytes read (``--hex`` applies to arguments only).

``cluster status``, ``nodes``, ``partitions move`` and ``--node`` are for a
cluster (``mkv serve --etcd URL --cluster NAME``, or ``mkv demo``); any node's
control address will do. ``cluster status`` asks every node for its own
status (lease, revision) as well, and exits 0 whenever it could report, a
degraded cluster included ("healthy": false and the problems, in --json);
against a single node it prints one line saying so, and exits 0. The other
cluster commands against a single node fail (exit 1) with a line saying it
is not in cluster mode.

``watch`` runs until interrupted, or until ``--count`` changes were printed;
``--timeout`` does not apply to it (it applies to connecting and to every
other command, ``scan`` included).

Snapshot and manifest paths are relative to the server's snapshot root.
``snapshot`` without ``--wait`` prints only the operation id, for scripts.
With ``--wait`` it polls until the snapshot is done, drawing a progress bar on
stderr, and ``--timeout`` bounds each call to the server rather than the
whole wait (the snapshot itself goes on if mkvctl is interrupted).

Exit status: 0 on success, 1 when mkv (or the network) refuses or fails, with
one line ``mkvctl: <message>`` on stderr; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO, TypeVar

import attrs
import trio

from mkv.errors import (
    ConfigError,
    FailedPreconditionError,
    MkvError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnimplementedError,
)
from mkv.router import format_key
from mkv.units import format_size, format_utc, format_utc_millis
from mkv.version import version_line
from mkv.wire import DEFAULT_CONTROL_ADDR, DEFAULT_DATA_ADDR, Address, parse_address

if TYPE_CHECKING:
    # Imported where used: each command loads only the client it needs, and
    # `--help`, `--version` and usage errors load neither (start-up time).
    from mkv.client.admin import (
        AdminClient,
        NodeInfo,
        NodeStatus,
        OperationInfo,
        PartitionInfo,
        PartitionStatus,
        SnapshotInfo,
    )
    from mkv.client.data import Client

__all__ = ["ParseExit", "Request", "execute", "main", "parse", "run"]

# Long enough for RemovePartition to drain a busy partition; short enough that
# a hung server does not hang a script forever.
DEFAULT_TIMEOUT = 30.0


class ParseExit(Exception):
    """The command line asks for help, or is wrong: print ``stdout``/``stderr``, exit ``code``."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(code)
        self.code, self.stdout, self.stderr = code, stdout, stderr


class CommandError(Exception):
    """The command ran but cannot succeed (a missing key); exit status 1."""


@attrs.frozen(kw_only=True)
class Request:
    """A parsed, validated command line: what to do and where, no I/O yet."""

    command: str  # "partitions list", "put", ...
    address: Address  # the data or control plane, whichever the command uses
    # Data plane: every node given (--data-addr h1:7070,h2:7070), address first.
    seeds: tuple[Address, ...] = ()
    json: bool = False
    hex: bool = False
    timeout: float = DEFAULT_TIMEOUT
    keys: tuple[bytes, ...] = ()
    value: bytes = b""
    # put: read the value from this file ("-": stdin) when running, not here.
    value_file: str | None = None
    start: bytes = b""
    end: bytes | None = None
    partition_id: str | None = None
    store: str | None = None
    pipeline: tuple[str, ...] | None = None
    delta: int = 1
    keys_only: bool = False
    limit: int | None = None
    from_seq: int = 0
    count: int | None = None
    # snapshot, operations get, partitions restore
    path: str = ""
    wait: bool = False
    operation_id: str = ""
    # partitions add --node, partitions move, nodes drain: a node id.
    node: str | None = None
    # partitions add --replicas (cluster mode; 0: the cluster's default).
    replicas: int = 0

    # Credentials (read when connecting): a token file, else the token from
    # the environment; TLS files.
    token_file: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def credentials(self) -> dict[str, Any]:
        """Keyword arguments of ``Client.connect`` / ``AdminClient.connect``."""
        return {
            "token": self.token if self.token_file is None else None,
            "token_file": self.token_file,
            "tls": self.tls,
            "ca": self.ca,
            "cert": self.cert,
            "key": self.key,
        }


# Commands that talk to the control plane (the rest use the data plane).
_CONTROL_COMMANDS = ("partitions", "snapshot", "operations", "status", "nodes", "cluster")
# Commands with an action: `partitions list`, `nodes drain`, ...
_GROUPED = ("partitions", "operations", "nodes", "cluster")


class _Parser(argparse.ArgumentParser):
    # argparse writes to sys.stdout/sys.stderr and calls sys.exit itself; raising
    # instead lets ``run`` own the streams and the exit code (in-process tests).
    def print_help(self, file: Any = None) -> NoReturn:
        raise ParseExit(0, stdout=self.format_help())

    def error(self, message: str) -> NoReturn:
        raise ParseExit(2, stderr=f"{self.format_usage()}{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    # argparse's own "version" action prints and exits by itself; this one
    # raises like the rest of _Parser, so ``run`` owns the output.
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print mkvctl's version and exit")

    def __call__(self, *args: Any) -> NoReturn:
        raise ParseExit(0, stdout=version_line("mkvctl") + "\n")


def _build_parser() -> _Parser:
    # SUPPRESS keeps a subcommand's copy of an option from overwriting the value
    # given before the command, so `mkvctl --json get k` and `get k --json` both work.
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--data-addr",
        metavar="HOST:PORT",
        help=f"data plane HOST:PORT, or seeds H1:P1,H2:P2 (default {DEFAULT_DATA_ADDR})",
    )
    common.add_argument(
        "--control-addr",
        metavar="HOST:PORT",
        help=f"control plane HOST:PORT (default {DEFAULT_CONTROL_ADDR})",
    )
    common.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the token (default $MKV_TOKEN, or $MKV_DATA_TOKEN for keys)",
    )
    common.add_argument("--tls", action="store_true", help="connect over TLS")
    common.add_argument("--ca", metavar="PATH", help="TLS: CA bundle to verify the server (PEM)")
    common.add_argument("--cert", metavar="PATH", help="TLS: client certificate (PEM), for mTLS")
    # dest: "key" is the KEY of put and get.
    common.add_argument(
        "--key", dest="cert_key", metavar="PATH", help="TLS: client certificate's key (PEM)"
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print JSON: one document, or one per line (JSON Lines) for scan and watch",
    )
    common.add_argument("--hex", action="store_true", help="keys, values and bounds are hex")
    common.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT})",
    )
    parser = _Parser(prog="mkvctl", parents=[common], description="Manage and query an mkv node.")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    partitions = commands.add_parser(
        "partitions", parents=[common], help="list, add, remove, reopen or restore"
    )
    actions = partitions.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="show every partition")
    add = actions.add_parser("add", parents=[common], help="create a partition for [START, END)")
    add.add_argument("--id", help="partition id (default: the server picks one)")
    add.add_argument("--start", required=True, help="first key of the range ('' for the lowest)")
    add.add_argument("--end", default="", help="first key after the range (default: unbounded)")
    add.add_argument(
        "--store", help="store kind: sqlite, memory or caching (default: the server's)"
    )
    add.add_argument(
        "--stage",
        action="append",
        metavar="SPEC",
        help="a pipeline stage, repeated in order (default: the store's pipeline)",
    )
    add.add_argument(
        "--pipeline", metavar="'SPEC SPEC ...'", help="the whole pipeline as one string"
    )
    add.add_argument(
        "--node", help="cluster: the node to place it on (default: the least loaded live node)"
    )
    add.add_argument(
        "--replicas",
        type=int,
        metavar="R",
        help="cluster: replicas on distinct nodes (default: the cluster's, 3; capped at the "
        "live nodes, with a warning)",
    )
    remove = actions.add_parser("remove", parents=[common], help="drain and delete a partition")
    remove.add_argument("id", help="partition id")
    reopen = actions.add_parser(
        "reopen", parents=[common], help="reopen a failed partition, as a restart would"
    )
    reopen.add_argument("id", help="partition id")
    split = actions.add_parser(
        "split", parents=[common], help="split a partition online: KEY and above move to a new one"
    )
    split.add_argument("id", help="partition id")
    split.add_argument("at", metavar="KEY", help="the first key of the new partition")
    split.add_argument("--new-id", help="the new partition's id (default: the server picks one)")
    split.add_argument(
        "--wait", action="store_true", help="show progress until done, then print both partitions"
    )
    merge = actions.add_parser(
        "merge", parents=[common], help="merge RIGHT into LEFT, the partition just below it"
    )
    merge.add_argument("left", metavar="LEFT", help="the lower partition: it survives")
    merge.add_argument(
        "right", metavar="RIGHT", help="the partition whose range starts at LEFT's end"
    )
    merge.add_argument(
        "--wait",
        action="store_true",
        help="wait until done (first, while LEFT still purges keys it gave RIGHT), "
        "then print the survivor",
    )
    move = actions.add_parser(
        "move", parents=[common], help="cluster: move a partition to another node, online"
    )
    move.add_argument("id", help="partition id")
    move.add_argument("node", metavar="NODE", help="the target node's id")
    move.add_argument(
        "--wait", action="store_true", help="show progress until done, then print the partition"
    )
    transfer = actions.add_parser(
        "transfer-leader",
        parents=[common],
        help="cluster: make NODE, an in-sync replica, the partition's leader",
    )
    transfer.add_argument("id", help="partition id")
    transfer.add_argument("node", metavar="NODE", help="the new leader's node id")
    restore = actions.add_parser(
        "restore", parents=[common], help="add a partition that starts from a snapshot"
    )
    restore.add_argument(
        "manifest", metavar="MANIFEST", help="a manifest path in the snapshot root"
    )
    restore.add_argument("--id", help="partition id (default: the server picks one)")
    restore.add_argument("--store", help="store kind (default: the snapshot's)")
    restore.add_argument("--stage", action="append", metavar="SPEC", help="as for add")
    restore.add_argument("--pipeline", metavar="'SPEC SPEC ...'", help="as for add")
    snapshot = commands.add_parser(
        "snapshot", parents=[common], help="snapshot a partition into a directory"
    )
    snapshot.add_argument("partition", metavar="PARTITION", help="partition id")
    snapshot.add_argument(
        "path", metavar="PATH", help="directory in the snapshot root ('' for the root)"
    )
    snapshot.add_argument(
        "--wait", action="store_true", help="show progress until done, then print the manifest"
    )
    nodes = commands.add_parser(
        "nodes", parents=[common], help="cluster: list the nodes, or drain one"
    )
    node_actions = nodes.add_subparsers(dest="action", metavar="ACTION", required=True)
    node_actions.add_parser(
        "list", parents=[common], help="every node: alive, addresses, partitions it leads"
    )
    drain = node_actions.add_parser(
        "drain", parents=[common], help="move every partition off a node, one at a time"
    )
    drain.add_argument("node", metavar="NODE", help="the node's id")
    drain.add_argument(
        "--wait", action="store_true", help="show progress until done, then print what moved"
    )
    cluster = commands.add_parser("cluster", parents=[common], help="cluster: status and health")
    cluster_actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    cluster_actions.add_parser(
        "status",
        parents=[common],
        help="nodes, their leases and partitions, and health (any node's control address)",
    )
    operations = commands.add_parser("operations", parents=[common], help="follow operations")
    operation_actions = operations.add_subparsers(dest="action", metavar="ACTION", required=True)
    get_operation = operation_actions.add_parser(
        "get", parents=[common], help="show an operation's state, progress and result"
    )
    get_operation.add_argument("operation_id", metavar="ID")
    completion = commands.add_parser(
        "completion", help="print a bash completion script: source <(mkvctl completion bash)"
    )
    completion.add_argument("shell", choices=["bash"], help="the shell (bash only, for now)")
    commands.add_parser(
        "status",
        parents=[common],
        help="the node's version, uptime, directories and each partition's queues",
    )
    put = commands.add_parser(
        "put", parents=[common], help="store VALUE (or stdin with '-', or --file PATH) under KEY"
    )
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", help="the value; '-' reads it from stdin")
    put.add_argument("--file", metavar="PATH", help="read the value from this file")
    get = commands.add_parser("get", parents=[common], help="print the value stored under KEY")
    get.add_argument("key", metavar="KEY")
    delete = commands.add_parser(
        "del", parents=[common], help="remove keys; print how many existed"
    )
    delete.add_argument("keys", metavar="KEY", nargs="+")
    incr = commands.add_parser(
        "incr", parents=[common], help="add DELTA (default 1) to the counter at KEY"
    )
    incr.add_argument("key", metavar="KEY")
    incr.add_argument("delta", metavar="DELTA", nargs="?", type=int, default=1)
    scan = commands.add_parser("scan", parents=[common], help="list keys in [START, END)")
    scan.add_argument("start", metavar="START", nargs="?", default="")
    scan.add_argument("end", metavar="END", nargs="?", default="", help="default: unbounded")
    scan.add_argument("--keys-only", action="store_true", help="print keys, not values")
    scan.add_argument("--limit", type=int, metavar="N", help="stop after N keys")
    watch = commands.add_parser(
        "watch", parents=[common], help="print changes to keys in [START, END) as they happen"
    )
    watch.add_argument("start", metavar="START", nargs="?", default="")
    watch.add_argument("end", metavar="END", nargs="?", default="", help="default: unbounded")
    watch.add_argument(
        "--from-seq", type=int, default=0, metavar="SEQ", help="changes after SEQ (default: now)"
    )
    watch.add_argument("--count", type=int, metavar="N", help="exit after N changes")
    return parser


def _completion_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion function generated from the parser itself, so it
    cannot fall behind the commands: the words that may follow each command
    path (subcommands and options), and file names where none fit."""
    table: dict[str, list[str]] = {}

    def walk(node: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        words = [option for action in node._actions for option in action.option_strings]
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    words.append(name)
                    walk(sub, (*path, name))
        table[" ".join(path)] = sorted(set(words))

    # Keyed by the whole path, program name first: bash refuses an empty key.
    walk(parser, ("mkvctl",))
    entries = "\n".join(f'    ["{path}"]="{" ".join(words)}"' for path, words in table.items())
    return f"""# bash completion for mkvctl: source <(mkvctl completion bash)
declare -gA _mkvctl_words=(
{entries}
)
_mkvctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path=mkvctl next i
    for ((i = 1; i < COMP_CWORD; i++)); do
        next="$path ${{COMP_WORDS[i]}}"
        [[ -n "${{_mkvctl_words[$next]+set}}" ]] && path="$next"
    done
    COMPREPLY=($(compgen -W "${{_mkvctl_words[$path]}}" -- "$cur"))
}}
complete -o default -F _mkvctl mkvctl
"""


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Request:
    """Turn a command line into a ``Request``.

    Raises:
        ParseExit: help was asked for (code 0), or the line is wrong (code 2),
            or a completion script was asked for (code 0, the script).
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        # Nothing to run: printed like help, before any event loop.
        raise ParseExit(0, stdout=_completion_script(parser))
    opts = vars(args)
    as_hex = bool(opts.get("hex", False))
    grouped = args.command in _GROUPED
    command = f"{args.command} {args.action}" if grouped else args.command
    plane = "control" if args.command in _CONTROL_COMMANDS else "data"

    def raw(text: str, what: str) -> bytes:
        if not as_hex:
            # surrogateescape: argv bytes that are not UTF-8 reach the server unchanged.
            return text.encode("utf-8", "surrogateescape")
        try:
            return bytes.fromhex(text)
        except ValueError:
            parser.error(f"{what} {text!r} is not hex")

    flag, var = f"--{plane}-addr", f"MKV_{plane.upper()}_ADDR"
    default = DEFAULT_CONTROL_ADDR if plane == "control" else DEFAULT_DATA_ADDR
    address_text, source = opts.get(f"{plane}_addr"), flag
    if address_text is None:
        address_text, source = env.get(var) or default, var
    try:
        # A cluster's data plane may be named by several seeds, comma-separated.
        texts = address_text.split(",") if plane == "data" else [address_text]
        seeds = tuple(parse_address(text.strip()) for text in texts if text.strip())
        address = seeds[0] if seeds else parse_address(address_text)
    except ValueError as exc:
        parser.error(f"{source}: {exc}")
    timeout = opts.get("timeout", DEFAULT_TIMEOUT)
    if not timeout > 0:
        parser.error("--timeout must be a positive number of seconds")

    fields: dict[str, Any] = {}
    if command == "partitions add":
        end = raw(args.end, "--end")
        fields.update(start=raw(args.start, "--start"), end=end or None)
        fields.update(partition_id=args.id, store=args.store)
        if args.stage and args.pipeline is not None:
            parser.error("give --stage or --pipeline, not both")
        stages = args.stage or (args.pipeline.split() if args.pipeline is not None else None)
        fields.update(pipeline=None if stages is None else tuple(stages), node=args.node)
        if args.replicas is not None and args.replicas < 1:
            parser.error("--replicas must be 1 or more")
        fields.update(replicas=args.replicas or 0)
    elif command in ("partitions remove", "partitions reopen"):
        fields.update(partition_id=args.id)
    elif command == "partitions restore":
        fields.update(path=args.manifest, partition_id=args.id, store=args.store)
        if args.stage and args.pipeline is not None:
            parser.error("give --stage or --pipeline, not both")
        stages = args.stage or (args.pipeline.split() if args.pipeline is not None else None)
        fields.update(pipeline=None if stages is None else tuple(stages))
    elif command == "snapshot":
        fields.update(partition_id=args.partition, path=args.path, wait=args.wait)
    elif command == "partitions merge":
        fields.update(partition_id=args.left, path=args.right, wait=args.wait)
    elif command == "partitions split":
        fields.update(
            partition_id=args.id,
            keys=(raw(args.at, "KEY"),),
            wait=args.wait,
            path=args.new_id or "",
        )
    elif command == "partitions move":
        fields.update(partition_id=args.id, node=args.node, wait=args.wait)
    elif command == "partitions transfer-leader":
        fields.update(partition_id=args.id, node=args.node)
    elif command == "nodes drain":
        fields.update(node=args.node, wait=args.wait)
    elif command == "operations get":
        fields.update(operation_id=args.operation_id)
    elif command in ("put", "get"):
        fields.update(keys=(raw(args.key, "KEY"),))
        if command == "put":
            if (args.value is None) == (args.file is None):
                parser.error("give VALUE, '-' (stdin) or --file PATH: exactly one")
            if args.file is not None:
                fields.update(value_file=args.file)
            elif args.value == "-":
                fields.update(value_file="-")
            else:
                fields.update(value=raw(args.value, "VALUE"))
    elif command == "del":
        fields.update(keys=tuple(raw(key, "KEY") for key in args.keys))
    elif command == "incr":
        fields.update(keys=(raw(args.key, "KEY"),), delta=args.delta)
    elif command in ("scan", "watch"):
        start, end = raw(args.start, "START"), raw(args.end, "END")
        if end and end <= start:
            # What a shell makes of an unquoted `user;` (the ';' ends the
            # command), and a range nothing can be in: refused rather than an
            # empty answer that looks like "no keys".
            parser.error(
                f"the range [{_text(start, as_hex)}, {_text(end, as_hex)}) is empty: END must "
                "sort after START (quote arguments holding shell characters: 'user;')"
            )
        fields.update(start=start, end=end or None)
        if command == "scan":
            if args.limit is not None and args.limit < 1:
                parser.error("--limit must be at least 1")
            fields.update(keys_only=args.keys_only, limit=args.limit)
        else:
            if args.from_seq < 0 or (args.count is not None and args.count < 1):
                parser.error("--from-seq must be 0 or more, and --count at least 1")
            fields.update(from_seq=args.from_seq, count=args.count)
    if (opts.get("cert") is None) != (opts.get("cert_key") is None):
        parser.error("give --cert and --key together")
    token_var = "MKV_TOKEN" if plane == "control" else "MKV_DATA_TOKEN"
    return Request(
        command=command,
        address=address,
        seeds=seeds if len(seeds) > 1 else (),
        json=bool(opts.get("json", False)),
        hex=as_hex,
        timeout=timeout,
        token_file=opts.get("token_file"),
        token=env.get(token_var) or None,
        tls=bool(opts.get("tls", False)),
        ca=opts.get("ca"),
        cert=opts.get("cert"),
        key=opts.get("cert_key"),
        **fields,
    )


# -- rendering: pure functions from results to the bytes printed --------------


def _text(data: bytes, as_hex: bool) -> str:
    if as_hex:
        return data.hex() or "''"
    return format_key(data)


def _json_bytes(name: str, data: bytes | None) -> dict[str, str | None]:
    if data is None:
        return {name: None, f"{name}_base64": None}
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    return {name: text, f"{name}_base64": base64.b64encode(data).decode("ascii")}


def _json_timestamp(timestamp: int) -> dict[str, Any]:
    """A write's hybrid timestamp: the number as stored, and as ISO 8601 UTC
    (``time``: milliseconds, ``/N`` when its logical counter is not zero);
    both null for a partition without a timestamp stage."""
    if not timestamp:
        return {"timestamp": None, "time": None}
    physical, logical = timestamp >> 16, timestamp & 0xFFFF
    text = format_utc_millis(physical)
    return {"timestamp": timestamp, "time": f"{text}/{logical}" if logical else text}


def _json_time(seconds: float | None) -> str | None:
    """Every moment in --json output is ISO 8601 UTC text (None: not yet)."""
    return None if seconds is None else format_utc(seconds)


def _json(document: Any) -> bytes:
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()


def _json_line(document: Any) -> bytes:
    """One document on one line (JSON Lines), for the commands that stream."""
    return (json.dumps(document, ensure_ascii=False) + "\n").encode()


def _partition_json(info: PartitionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        **_json_bytes("start", info.range.start),
        **_json_bytes("end", info.range.end),
        "store": info.store,
        "pipeline": list(info.pipeline),
        "state": info.state,
        "key_count": info.key_count,
        "size_bytes": info.size_bytes,
        "last_seq": info.last_seq,
        # Cluster mode: the node leading it and its epoch; null on a single node.
        "node": info.node,
        "epoch": info.epoch,
        # Cluster mode: its replicas and in-sync set in etcd; [] on a single
        # node. The commit seq and each replica's progress, from its leader.
        "replicas": list(info.replicas),
        "isr": list(info.isr),
        "commit_seq": info.commit_seq,
        "replica_states": [
            {
                "node": r.node,
                "leader": r.leader,
                "in_sync": r.in_sync,
                "durable_seq": r.durable_seq,
                "lag_records": r.lag_records,
                "lag_seconds": round(r.lag_seconds, 3),
            }
            for r in info.replica_states
        ],
    }


def _range(info: PartitionInfo | PartitionStatus, as_hex: bool) -> str:
    end = "∞" if info.range.end is None else _text(info.range.end, as_hex)
    return f"[{_text(info.range.start, as_hex)}, {end})"


def _render_partitions(infos: Sequence[PartitionInfo], as_hex: bool = False) -> str:
    """A table, numbers right-aligned so their magnitudes line up. Pipelines
    are left out (they made rows too wide to read): --json has them. A NODE
    column only when some partition has a node (a cluster): a single node's
    table stays as it was, for the scripts that read it."""
    clustered = any(p.node is not None for p in infos)
    # Replicas, the in-sync set and the epoch: a cluster's records carry them.
    replicated = any(p.replicas for p in infos)
    node: tuple[str, ...] = ("NODE",) if clustered or replicated else ()
    if replicated:
        node += ("EPOCH", "REPLICAS", "ISR")
    header = ("ID", "RANGE", *node, "STORE", "STATE", "KEYS", "SIZE", "LAST SEQ")

    def cluster_cells(p: PartitionInfo) -> tuple[str, ...]:
        if not node:
            return ()
        cells: tuple[str, ...] = (p.node or "-",)
        if replicated:
            cells += (
                str(p.epoch or "-"),
                ",".join(p.replicas) or "-",
                ",".join(p.isr) or "-",
            )
        return cells

    rows = [header] + [
        (
            p.id,
            _range(p, as_hex),
            *cluster_cells(p),
            p.store,
            p.state,
            str(p.key_count),
            format_size(p.size_bytes),
            str(p.last_seq),
        )
        for p in infos
    ]
    return _table(rows, first_number=4 + len(node))


def _table(rows: Sequence[Sequence[str]], first_number: int) -> str:
    """Columns two spaces apart; from ``first_number`` on, right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i >= first_number else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


# -- running: one async function per command, returning what to print ---------


def _admin(request: Request) -> AbstractAsyncContextManager[AdminClient]:
    from mkv.client.admin import AdminClient  # here: see the TYPE_CHECKING imports

    return AdminClient.connect(request.address, **request.credentials())


def _client(request: Request) -> AbstractAsyncContextManager[Client]:
    from mkv.client.data import Client  # here: see the TYPE_CHECKING imports

    return Client.connect(*(request.seeds or [request.address]), **request.credentials())


async def _partitions_list(request: Request) -> bytes:
    async with _admin(request) as admin:
        infos = await admin.list_partitions()
    if request.json:
        return _json({"partitions": [_partition_json(p) for p in infos]})
    return _render_partitions(infos, request.hex).encode()


async def _partitions_add(request: Request) -> bytes:
    async with _admin(request) as admin:
        adding = admin.add_partition(
            start=request.start,
            end=request.end,
            partition_id=request.partition_id,
            store=request.store,
            pipeline=request.pipeline,
            node=request.node,
            replicas=request.replicas,
        )
        # --node and --replicas mean a cluster: a single node refuses them as
        # "not in cluster mode".
        clustered = request.node or request.replicas
        info = await (_in_cluster(request, admin, adding) if clustered else adding)
    if request.json:
        return _json({**_partition_json(info), "warnings": list(info.warnings)})
    where = "" if info.node is None else f" on {info.node}"
    if len(info.replicas) > 1:
        where += f" (replicas {','.join(info.replicas)})"
    warned = "".join(f"warning: {warning}\n" for warning in info.warnings)
    return (
        f"added partition {info.id} {_range(info, request.hex)} ({info.store}){where}\n" + warned
    ).encode()


async def _partitions_remove(request: Request) -> bytes:
    assert request.partition_id is not None
    async with _admin(request) as admin:
        info = await admin.remove_partition(request.partition_id)
    if request.json:
        return _json(_partition_json(info))
    keys = "1 key" if info.key_count == 1 else f"{info.key_count} keys"
    return f"removed partition {info.id} {_range(info, request.hex)} and its {keys}\n".encode()


async def _partitions_transfer_leader(request: Request) -> bytes:
    assert request.partition_id is not None
    assert request.node is not None
    async with _admin(request) as admin:
        transferring = admin.transfer_leader(request.partition_id, request.node)
        info = await _in_cluster(request, admin, transferring)
    if request.json:
        return _json(_partition_json(info))
    epoch = "" if info.epoch is None else f" (epoch {info.epoch})"
    return f"partition {info.id} is led by {info.node or request.node}{epoch}\n".encode()


async def _partitions_reopen(request: Request) -> bytes:
    assert request.partition_id is not None
    async with _admin(request) as admin:
        info = await admin.reopen_partition(request.partition_id)
    if request.json:
        return _json(_partition_json(info))
    return f"reopened partition {info.id} at seq {info.last_seq}\n".encode()


async def _put(request: Request) -> bytes:
    async with _client(request) as client:
        # One key lives in one partition, so there is exactly one acknowledgement.
        (ack,) = await client.upsert([(request.keys[0], request.value)])
    if request.json:
        return _json({"partition": ack.partition_id, "seq": ack.seq})
    return f"OK (partition {ack.partition_id}, seq {ack.seq})\n".encode()


async def _get(request: Request) -> bytes:
    key = request.keys[0]
    async with _client(request) as client:
        item = await client.get_item(key)
    if item is None:
        raise CommandError(f"key not found: {_text(key, request.hex)}")
    if request.json:
        return _json(
            {
                **_json_bytes("key", key),
                **_json_bytes("value", item.value),
                "seq": item.seq,
                **_json_timestamp(item.timestamp),
            }
        )
    return (item.value.hex() + "\n").encode() if request.hex else item.value


async def _del(request: Request) -> bytes:
    async with _client(request) as client:
        acks = await client.remove(*request.keys)
    removed = sum(ack.count for ack in acks)
    if request.json:
        return _json(
            {
                "removed": removed,
                "acks": [
                    {"partition": a.partition_id, "seq": a.seq, "removed": a.count} for a in acks
                ],
            }
        )
    return f"{removed}\n".encode()


async def _incr(request: Request) -> bytes:
    async with _client(request) as client:
        value = await client.increment(request.keys[0], request.delta)
    if request.json:
        return _json({**_json_bytes("key", request.keys[0]), "value": value})
    return f"{value}\n".encode()


def _item_line(request: Request, key: bytes, value: bytes | None, seq: int, kind: str) -> bytes:
    if request.json:
        document: dict[str, Any] = {"seq": seq, **_json_bytes("key", key)}
        if kind == "watch":
            document["op"] = "del" if value is None else "put"
        if value is not None and not request.keys_only:
            document.update(_json_bytes("value", value))
        return _json_line(document)
    fields = [_text(key, request.hex)]
    if kind == "watch":
        fields.insert(0, str(seq))
        fields.insert(1, "del" if value is None else "put")
    if value is not None and not request.keys_only:
        fields.append(_text(value, request.hex))
    return ("\t".join(fields) + "\n").encode()


async def _scan(request: Request, stdout: BinaryIO) -> None:
    async with _client(request) as client:
        count = 0
        async for key, item in client.scan(request.start, request.end, keys_only=request.keys_only):
            stdout.write(_item_line(request, key, item.value, item.seq, "scan"))
            count += 1
            if request.limit is not None and count >= request.limit:
                break
        stdout.flush()


async def _watch(request: Request, stdout: BinaryIO) -> None:
    async with (
        _client(request) as client,
        client.watch(request.start, request.end, from_seq=request.from_seq) as changes,
    ):
        count = 0
        async for change in changes:
            stdout.write(_item_line(request, change.key, change.value, change.seq, "watch"))
            stdout.flush()  # a live feed: each line as it happens
            count += 1
            if request.count is not None and count >= request.count:
                return


# Commands that print as they go, rather than returning their output.
_STREAMING: dict[str, Callable[[Request, BinaryIO], Awaitable[None]]] = {
    "scan": _scan,
    "watch": _watch,
}


# -- snapshots and operations -------------------------------------------------


def _snapshot_json(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "manifest_path": info.manifest_path,
        "data_path": info.data_path,
        "manifest": info.manifest.to_json(),
    }


def _render_snapshot(info: SnapshotInfo, as_hex: bool) -> list[tuple[str, str]]:
    m = info.manifest
    end = "∞" if m.end is None else _text(m.end, as_hex)
    return [
        ("manifest", info.manifest_path),
        ("data", info.data_path),
        ("partition", f"{m.partition_id} [{_text(m.start, as_hex)}, {end}) ({m.store_kind})"),
        ("seq", str(m.seq)),
        ("size", f"{format_size(m.size)} ({m.size} bytes)"),
        ("sha256", m.sha256),
        ("created", m.created),
    ]


def _fields(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name.ljust(width)}  {value}\n" for name, value in rows)


def _amount(n: int, unit: str) -> str:
    return format_size(n) if unit == "bytes" else f"{n} {unit}"


def _progress_text(op: OperationInfo) -> str:
    """ "copy 45% (450.0 MiB of 1.0 GiB)", or without a percentage while the total is unknown."""
    if op.total <= 0:
        return f"{op.phase} {_amount(op.done, op.unit)}" if op.done else op.phase
    percent = min(100, op.done * 100 // op.total)
    return f"{op.phase} {percent}% ({_amount(op.done, op.unit)} of {_amount(op.total, op.unit)})"


def _operation_json(op: OperationInfo) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "partition": op.partition_id,
        "state": op.state,
        "phase": op.phase,
        "progress": {"done": op.done, "total": op.total, "unit": op.unit},
        "snapshot": None if op.snapshot is None else _snapshot_json(op.snapshot),
        "error": None if op.error is None else op.error.message,
        "started": _json_time(op.started),
        "finished": _json_time(op.finished),
    }


def _render_operation(op: OperationInfo, as_hex: bool) -> str:
    snapshot = [] if op.snapshot is None else _render_snapshot(op.snapshot, as_hex)
    # A finished snapshot names its partition with the range and store: that
    # row replaces the bare id rather than repeating it.
    partition = dict(snapshot).get("partition", op.partition_id)
    rows = [
        ("id", op.id),
        ("kind", op.kind),
        ("partition", partition),
        ("state", op.state),
        ("started", format_utc(op.started)),
    ]
    if op.finished is not None:
        rows.append(("finished", format_utc(op.finished)))
    if op.running:
        rows.append(("progress", _progress_text(op)))
    if op.error is not None:
        rows.append(("error", op.error.message))
    rows.extend(row for row in snapshot if row[0] != "partition")
    return _fields(rows)


class _ProgressBar:
    """Draws an operation's progress on stderr: redrawn in place on a terminal,
    else a line at each phase and every tenth of the way (logs stay short)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last: tuple[str, int] | None = None

    def show(self, op: OperationInfo) -> None:
        fraction = min(1.0, op.done / op.total) if op.total > 0 else 0.0
        filled = int(fraction * self.WIDTH)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {_progress_text(op)}"
        if self._tty:
            self._stream.write(f"\r\x1b[K{line}")
        else:
            step = (op.phase, int(fraction * 10))
            if step == self._last:
                return
            self._last = step
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


async def _partitions_restore(request: Request, stderr: TextIO) -> bytes:
    async with _admin(request) as admin:
        info = await admin.add_partition(
            partition_id=request.partition_id,
            store=request.store,
            pipeline=request.pipeline,
            snapshot=request.path,
        )
    # On stderr, one line each, whatever the output format: the restore
    # succeeded, and scripts reading stdout keep their format.
    for warning in info.warnings:
        print("mkvctl: warning:", " ".join(warning.split()), file=stderr)
    if request.json:
        return _json({**_partition_json(info), "warnings": list(info.warnings)})
    return (
        f"restored partition {info.id} {_range(info, request.hex)} ({info.store}) "
        f"[{' '.join(info.pipeline)}] at seq {info.last_seq} from {request.path}\n"
    ).encode()


def _bounded(request: Request) -> Callable[[Awaitable[Any]], Awaitable[Any]]:
    """A wrapper bounding one call by --timeout. With --wait the whole
    command of a long operation may take hours: each call is bounded instead."""

    async def call(work: Awaitable[Any]) -> Any:
        with trio.move_on_after(request.timeout) as scope:
            return await work
        if scope.cancelled_caught:
            raise CommandError(
                f"No answer from mkv at {request.address} within {request.timeout:g} seconds."
            )

    return call


def _started(request: Request, operation_id: str) -> bytes:
    """The output of a long operation's command without --wait: its id."""
    if request.json:
        return _json({"operation_id": operation_id})
    return f"{operation_id}\n".encode()


async def _wait_operation(
    admin: AdminClient,
    operation_id: str,
    call: Callable[[Awaitable[Any]], Awaitable[Any]],
    stderr: TextIO,
) -> OperationInfo:
    """Poll the operation until it ends, its progress on stderr.

    Raises:
        MkvError: the operation failed.
    """
    bar = _ProgressBar(stderr)
    try:
        while True:
            op: OperationInfo = await call(admin.get_operation(operation_id))
            bar.show(op)
            if not op.running:
                break
            await trio.sleep(_POLL_INTERVAL)
    finally:
        bar.close()
    if op.error is not None:
        raise op.error
    return op


async def _snapshot(request: Request, stderr: TextIO) -> bytes:
    assert request.partition_id is not None
    call = _bounded(request)
    async with _admin(request) as admin:
        operation_id = await call(admin.snapshot(request.partition_id, request.path))
        if not request.wait:
            return _started(request, operation_id)
        op = await _wait_operation(admin, operation_id, call, stderr)
    assert op.snapshot is not None
    if request.json:
        return _json({"operation_id": op.id, **_snapshot_json(op.snapshot)})
    return _fields(_render_snapshot(op.snapshot, request.hex)).encode()


async def _partitions_split(request: Request, stderr: TextIO) -> bytes:
    assert request.partition_id is not None
    call = _bounded(request)
    merging = request.command == "partitions merge"
    async with _admin(request) as admin:
        if merging:
            operation_id = await _start_merge(request, admin, call, stderr)
        else:
            operation_id = await call(
                admin.split_partition(
                    request.partition_id, request.keys[0], new_id=request.path or None
                )
            )
        if not request.wait:
            return _started(request, operation_id)
        op = await _wait_operation(admin, operation_id, call, stderr)
    if merging:
        assert op.merged is not None
        if request.json:
            return _json({"operation_id": op.id, "partition": _partition_json(op.merged)})
        return (
            f"merged partition {request.path} into {op.merged.id}: "
            f"{_range(op.merged, request.hex)} from seq {op.merged.last_seq + 1}\n"
        ).encode()
    assert op.split is not None
    parent, child = op.split
    if request.json:
        return _json(
            {
                "operation_id": op.id,
                "parent": _partition_json(parent),
                "partition": _partition_json(child),
            }
        )
    return (
        f"split partition {parent.id}: it keeps {_range(parent, request.hex)}, "
        f"{child.id} has {_range(child, request.hex)} from seq {child.last_seq + 1}\n"
    ).encode()


async def _start_merge(
    request: Request,
    admin: AdminClient,
    call: Callable[[Awaitable[Any]], Awaitable[Any]],
    stderr: TextIO,
) -> str:
    """Start a merge. With --wait, a left partition still purging the keys of
    an earlier split of the right one's range is waited for too: right after
    `split ... --wait` (the README's own sequence) that purge is often still
    running, and a command told to wait should not fail on a state that ends
    by itself. Bounded by --timeout, as each other wait is."""
    assert request.partition_id is not None
    deadline = trio.current_time() + request.timeout
    told = False
    while True:
        try:
            operation_id: str = await call(
                admin.merge_partitions(request.partition_id, request.path)
            )
            return operation_id
        except FailedPreconditionError as exc:
            # The server has no distinct code for "purging": its message says so.
            if not request.wait or "purging" not in str(exc):
                raise
            if trio.current_time() >= deadline:
                raise
            if not told:
                stderr.write(f"waiting for {request.partition_id} to finish purging...\n")
                told = True
            await trio.sleep(_POLL_INTERVAL)


async def _operations_get(request: Request) -> bytes:
    async with _admin(request) as admin:
        op = await admin.get_operation(request.operation_id)
    if request.json:
        return _json(_operation_json(op))
    return _render_operation(op, request.hex).encode()


def _status_json(status: NodeStatus) -> dict[str, Any]:
    return {
        "version": status.version,
        "python_version": status.python_version,
        "started": status.started,
        "uptime_seconds": round(status.uptime_seconds, 3),
        "data_dir": status.data_dir,
        "snapshot_root": status.snapshot_root,
        "data_address": status.data_address,
        "control_address": status.control_address,
        # Cluster mode: null on a single node.
        "node_id": status.node_id,
        "cluster": status.cluster,
        "lease": _lease_json(status) if status.clustered else None,
        "cluster_revision": status.cluster_revision if status.clustered else None,
        "partitions": [
            {
                "id": p.id,
                **_json_bytes("start", p.range.start),
                **_json_bytes("end", p.range.end),
                "store": p.store,
                "state": p.state,
                "inbox_depth": p.inbox_depth,
                "in_flight": p.in_flight,
                "last_seq": p.last_seq,
                "wal_synced_seq": p.wal_synced_seq,
                "wal_sync_lag": p.wal_sync_lag,
                "watchers": p.watchers,
            }
            for p in status.partitions
        ],
    }


def _duration(seconds: float) -> str:
    """ "3d 4h 5m 6s", largest unit first, zero units left out (but "0s")."""
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or not parts:
        parts.append(f"{whole}s")
    return " ".join(parts)


def _render_status(status: NodeStatus, as_hex: bool) -> str:
    head = _fields(
        [
            ("version", f"mkv {status.version} (Python {status.python_version})"),
            ("started", status.started),
            ("uptime", _duration(status.uptime_seconds)),
            ("data dir", status.data_dir),
            ("snapshots", status.snapshot_root),
            ("data", status.data_address),
            ("control", status.control_address),
            *(
                [
                    ("cluster", f"{status.cluster} at etcd revision {status.cluster_revision}"),
                    ("node", status.node_id or "-"),
                    ("lease", _lease_text(status)),
                ]
                if status.clustered
                else []
            ),
        ]
    )
    header = ("ID", "RANGE", "STATE", "INBOX", "IN FLIGHT", "LAST SEQ", "WAL LAG", "WATCHERS")
    rows = [header] + [
        (
            p.id,
            _range(p, as_hex),
            p.state,
            str(p.inbox_depth),
            str(p.in_flight),
            str(p.last_seq),
            "-" if p.wal_sync_lag is None else str(p.wal_sync_lag),
            str(p.watchers),
        )
        for p in status.partitions
    ]
    return head + "\n" + _table(rows, first_number=3)


async def _status(request: Request) -> bytes:
    async with _admin(request) as admin:
        try:
            status = await admin.node_status()
        except UnimplementedError:
            raise CommandError(
                f"The node at {request.address} does not answer NodeStatus: it is older "
                f"than this mkvctl ({version_line('mkvctl')})."
            ) from None
    if request.json:
        return _json(_status_json(status))
    return _render_status(status, request.hex).encode()


# How often ``snapshot --wait`` asks for progress.
_POLL_INTERVAL = 0.2


# -- cluster: nodes, moves, drains and the cluster's status -------------------

# How long `cluster status` waits for each node's own NodeStatus (at most;
# half of --timeout when that is shorter): one node that does not answer is
# reported as such, not a status that never comes.
_PROBE_TIMEOUT = 5.0

T = TypeVar("T")


def _single_node_message(request: Request) -> str:
    return (
        f"{request.command} needs cluster mode: mkv at {request.address} is a single "
        "node (start nodes with mkv serve --etcd URL --cluster NAME, or try mkv demo)."
    )


async def _is_single_node(admin: AdminClient) -> bool:
    try:
        status = await admin.node_status()
    except UnimplementedError:
        return True  # older than cluster mode
    return not status.clustered


async def _in_cluster(request: Request, admin: AdminClient, work: Awaitable[T]) -> T:
    """``work``, a call that needs cluster mode. A single node refuses it with
    FAILED_PRECONDITION, as it refuses much else (a partition not active):
    its NodeStatus, not the message's wording, tells which, and then the
    error names the mkvctl command rather than the gRPC method."""
    try:
        return await work
    except FailedPreconditionError:
        if await _is_single_node(admin):
            raise CommandError(_single_node_message(request)) from None
        raise


def _node_json(node: NodeInfo) -> dict[str, Any]:
    return {
        "id": node.id,
        "alive": node.alive,
        "data_address": node.data_address,
        "control_address": node.control_address,
        "replication_address": node.replication_address,
        "version": node.version,
        "started": node.started or None,
        "partitions": list(node.partitions),
        "drained": node.drained,
    }


def _alive_text(node: NodeInfo) -> str:
    if not node.alive:
        return "no"
    return "yes, drained" if node.drained else "yes"


def _render_nodes(nodes: Sequence[NodeInfo]) -> str:
    header = ("ID", "ALIVE", "DATA", "CONTROL", "VERSION", "STARTED", "PARTITIONS")
    rows = [header] + [
        (
            n.id,
            _alive_text(n),
            n.data_address,
            n.control_address,
            n.version,
            n.started or "-",
            ",".join(n.partitions) or "-",
        )
        for n in nodes
    ]
    return _table(rows, first_number=len(header))


async def _nodes_list(request: Request) -> bytes:
    async with _admin(request) as admin:
        nodes = await _in_cluster(request, admin, admin.list_nodes())
    if request.json:
        return _json({"nodes": [_node_json(n) for n in nodes]})
    return _render_nodes(nodes).encode()


async def _partitions_move(request: Request, stderr: TextIO) -> bytes:
    assert request.partition_id is not None
    assert request.node is not None
    call = _bounded(request)
    async with _admin(request) as admin:
        moving = admin.move_partition(request.partition_id, request.node)
        operation_id: str = await call(_in_cluster(request, admin, moving))
        if not request.wait:
            return _started(request, operation_id)
        op = await _wait_operation(admin, operation_id, call, stderr)
    moved = op.moved
    if request.json:
        return _json(
            {"operation_id": op.id, "partition": None if moved is None else _partition_json(moved)}
        )
    if moved is None:
        return f"moved partition {request.partition_id} to {request.node}\n".encode()
    epoch = "" if moved.epoch is None else f" (epoch {moved.epoch})"
    return (
        f"moved partition {moved.id} {_range(moved, request.hex)} to {moved.node or request.node}"
        f"{epoch}\n"
    ).encode()


async def _nodes_drain(request: Request, stderr: TextIO) -> bytes:
    assert request.node is not None
    call = _bounded(request)
    async with _admin(request) as admin:
        draining = admin.drain_node(request.node)
        operation_id: str = await call(_in_cluster(request, admin, draining))
        if not request.wait:
            return _started(request, operation_id)
        op = await _wait_operation(admin, operation_id, call, stderr)
    if request.json:
        return _json(
            {
                "operation_id": op.id,
                "node": request.node,
                "moved": [_partition_json(p) for p in op.drained],
            }
        )
    if not op.drained:
        return f"drained node {request.node}: it led no partition\n".encode()
    moves = ", ".join(f"{p.id} to {p.node or '?'}" for p in op.drained)
    return f"drained node {request.node}: moved {moves}\n".encode()


@attrs.frozen
class _Probe:
    """One node's own answer to NodeStatus, or why there was none."""

    status: NodeStatus | None
    error: str | None


async def _probe(request: Request, node: NodeInfo, seconds: float) -> _Probe:
    from mkv.client.admin import AdminClient  # here: see the TYPE_CHECKING imports

    try:
        with trio.fail_after(seconds):
            async with AdminClient.connect(
                node.control_address, **request.credentials(), rate_limit_wait=0
            ) as admin:
                return _Probe(await admin.node_status(), None)
    except trio.TooSlowError:
        return _Probe(None, f"no answer within {seconds:g} seconds")
    except (MkvError, ConfigError, ValueError) as exc:
        return _Probe(None, " ".join(str(getattr(exc, "message", exc)).split()))


@attrs.frozen
class _ClusterView:
    """What `cluster status` found: the answering node's view and each node's own word."""

    entry: NodeStatus
    nodes: tuple[NodeInfo, ...]
    partitions: tuple[PartitionInfo, ...]
    probes: Mapping[str, _Probe]

    def problems(self) -> list[str]:
        """Why the cluster is not healthy, one sentence each; empty when it is."""
        found = []
        alive = {n.id for n in self.nodes if n.alive}
        for node in self.nodes:
            probe = self.probes[node.id]
            if not node.alive:
                found.append(f"node {node.id} is not alive (no live lease in etcd)")
            elif probe.status is None:
                found.append(
                    f"node {node.id} does not answer at {node.control_address}: {probe.error}"
                )
            elif not probe.status.lease_valid:
                found.append(f"node {node.id} has no valid lease: it serves nothing")
        for p in self.partitions:
            if p.node is None:
                found.append(f"partition {p.id} has no leader")
            elif p.node not in alive:
                found.append(f"partition {p.id} is led by {p.node}, which is not alive")
            elif p.state != "active":
                found.append(f"partition {p.id} is {p.state}")
            if p.replicas and len(p.isr) < len(p.replicas):
                behind = ",".join(r for r in p.replicas if r not in p.isr)
                found.append(
                    f"partition {p.id} is under-replicated: {len(p.isr)} of its "
                    f"{len(p.replicas)} replicas in sync ({behind} not)"
                )
            # The nodes' min_isr is their own setting; this is its default.
            floor = min(2 if len(p.replicas) >= 3 else 1, len(p.replicas))
            if p.replicas and len(p.isr) < floor:
                found.append(
                    f"partition {p.id} has {len(p.isr)} replica(s) in sync, below min_isr "
                    f"({floor} by default): it refuses writes"
                )
        return found


async def _cluster_view(request: Request, admin: AdminClient) -> _ClusterView | None:
    """The cluster as the node at the address sees it, plus every node's
    NodeStatus asked of it directly (leases are each node's own clock);
    None for a single node."""
    entry = await admin.node_status()
    if not entry.clustered:
        return None
    nodes = tuple(await admin.list_nodes())
    partitions = tuple(await admin.list_partitions())
    probes: dict[str, _Probe] = {}
    seconds = min(_PROBE_TIMEOUT, request.timeout / 2)

    async def probe(node: NodeInfo) -> None:
        if node.id == entry.node_id:
            probes[node.id] = _Probe(entry, None)
        elif not node.alive:
            probes[node.id] = _Probe(None, "not alive")
        else:
            probes[node.id] = await _probe(request, node, seconds)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(probe, node)
    return _ClusterView(entry, nodes, partitions, probes)


def _lease_json(status: NodeStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "valid": status.lease_valid,
        "remaining_seconds": round(status.lease_remaining_seconds, 3),
    }


def _cluster_json(view: _ClusterView, request: Request) -> dict[str, Any]:
    problems = view.problems()
    nodes = []
    for node in view.nodes:
        probe = view.probes[node.id]
        nodes.append(
            {
                **_node_json(node),
                "reachable": probe.status is not None,
                "error": probe.error,
                "lease": _lease_json(probe.status),
                "revision": None if probe.status is None else probe.status.cluster_revision,
                "uptime_seconds": (
                    None if probe.status is None else round(probe.status.uptime_seconds, 3)
                ),
            }
        )
    return {
        "cluster": view.entry.cluster,
        "revision": view.entry.cluster_revision,
        "answered_by": {"node": view.entry.node_id, "address": str(request.address)},
        "healthy": not problems,
        "problems": problems,
        "nodes": nodes,
        "partitions": [_partition_json(p) for p in view.partitions],
    }


def _lease_text(status: NodeStatus | None) -> str:
    if status is None:
        return "-"
    if not status.lease_valid:
        return "expired"
    return f"valid {status.lease_remaining_seconds:.1f}s"


def _render_cluster(view: _ClusterView, request: Request) -> str:
    problems = view.problems()
    health = "healthy" if not problems else f"degraded: {len(problems)} problem(s)"
    head = _fields(
        [
            ("cluster", f"{view.entry.cluster} at etcd revision {view.entry.cluster_revision}"),
            ("through", f"{view.entry.node_id} at {request.address}"),
            ("health", health),
        ]
    )
    head += "".join(f"  - {problem}\n" for problem in problems)
    header = ("NODE", "ALIVE", "ANSWERS", "LEASE", "DATA", "CONTROL", "VERSION", "PARTITIONS")
    node_rows = [header] + [
        (
            n.id,
            _alive_text(n),
            "yes" if view.probes[n.id].status is not None else "no",
            _lease_text(view.probes[n.id].status),
            n.data_address,
            n.control_address,
            n.version,
            ",".join(n.partitions) or "-",
        )
        for n in view.nodes
    ]
    return (
        head
        + "\n"
        + _table(node_rows, first_number=len(header))
        + "\n"
        + _render_partitions(view.partitions, request.hex)
    )


async def _cluster_status(request: Request) -> bytes:
    async with _admin(request) as admin:
        try:
            view = await _cluster_view(request, admin)
        except UnimplementedError:
            view = None  # a node older than cluster mode
    if view is None:
        if request.json:
            return _json({"cluster": None, "address": str(request.address)})
        return (
            f"mkv at {request.address} is a single node, not in cluster mode "
            "(mkv serve --etcd URL --cluster NAME starts a cluster's node)\n"
        ).encode()
    if request.json:
        return _json(_cluster_json(view, request))
    return _render_cluster(view, request).encode()


_COMMANDS: dict[str, Callable[[Request], Awaitable[bytes]]] = {
    "partitions list": _partitions_list,
    "partitions add": _partitions_add,
    "partitions remove": _partitions_remove,
    "partitions reopen": _partitions_reopen,
    "partitions transfer-leader": _partitions_transfer_leader,
    "operations get": _operations_get,
    "status": _status,
    "nodes list": _nodes_list,
    "cluster status": _cluster_status,
    "put": _put,
    "get": _get,
    "del": _del,
    "incr": _incr,
}


async def _read_value(request: Request, stdin: BinaryIO | None) -> Request:
    """``put KEY -`` / ``put KEY --file PATH``: the value's exact bytes, read
    before any deadline starts (a slow pipe into stdin is not the server's
    slowness), on a thread (a file or a pipe may block)."""
    source = request.value_file
    if source is None:
        return request
    if source == "-":
        stream = sys.stdin.buffer if stdin is None else stdin
        value = await trio.to_thread.run_sync(stream.read, abandon_on_cancel=True)
    else:
        try:
            value = await trio.to_thread.run_sync(Path(source).read_bytes)
        except OSError as exc:
            raise CommandError(
                f"cannot read the value from {source}: {exc.strerror or exc}"
            ) from None
    return attrs.evolve(request, value=value, value_file=None)


def _token_hint(request: Request) -> str:
    """Where mkvctl takes a token from, for the plane the command talks to (the
    server's own message is for any gRPC client, and names only the header)."""
    control = request.command.split()[0] in _CONTROL_COMMANDS
    variable = "MKV_TOKEN" if control else "MKV_DATA_TOKEN"
    return f"Give mkvctl the token with --token-file PATH or ${variable}."


async def execute(
    request: Request, stdout: BinaryIO, stderr: TextIO, stdin: BinaryIO | None = None
) -> int:
    """Run a parsed command against the server; print its result or one error line.

    Args:
        stdin: where ``put KEY -`` reads its value (default ``sys.stdin.buffer``).

    Returns:
        The exit status: 0, or 1 when the command failed.
    """
    output = b""
    error = ""
    try:
        request = await _read_value(request, stdin)
    except CommandError as exc:
        print("mkvctl:", " ".join(str(exc).split()), file=stderr)
        return 1
    # A watch is meant to run until stopped, and snapshot --wait bounds each of
    # its calls instead (see _snapshot): no deadline for either.
    unbounded = request.command == "watch" or request.wait
    with trio.move_on_after(math.inf if unbounded else request.timeout) as deadline:
        try:
            if request.command in _STREAMING:
                await _STREAMING[request.command](request, stdout)
            elif request.command == "snapshot":
                output = await _snapshot(request, stderr)
            elif request.command == "partitions restore":
                output = await _partitions_restore(request, stderr)
            elif request.command in ("partitions split", "partitions merge"):
                output = await _partitions_split(request, stderr)
            elif request.command == "partitions move":
                output = await _partitions_move(request, stderr)
            elif request.command == "nodes drain":
                output = await _nodes_drain(request, stderr)
            else:
                output = await _COMMANDS[request.command](request)
        except CommandError as exc:
            error = str(exc)
        except (UnauthenticatedError, PermissionDeniedError) as exc:
            # Missing or wrong token (a permission refused for another reason
            # still reads right: the hint only says where tokens come from).
            error = f"{exc.message} {_token_hint(request)}"
        except MkvError as exc:
            error = exc.message
        except ConfigError as exc:
            error = f"{exc}."
    if deadline.cancelled_caught:
        error = f"No answer from mkv at {request.address} within {request.timeout:g} seconds."
    if error:
        # One line, always: scripts read it and `2>&1 | tail -1` must not cut it.
        print("mkvctl:", " ".join(error.split()), file=stderr)
        return 1
    if request.command == "get" and not request.hex and not request.json and stdout.isatty():
        output += b"\n"  # keep the shell prompt off the value's line
    stdout.write(output)
    stdout.flush()
    return 0


async def run(
    argv: Sequence[str],
    stdout: BinaryIO,
    stderr: TextIO,
    env: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """``mkvctl`` from a running Trio program (tests): parse ``argv``, execute it,
    write to the given streams, and return the exit status instead of exiting.

    Args:
        env: where ``MKV_DATA_ADDR`` / ``MKV_CONTROL_ADDR`` are looked up
            (default ``os.environ``).
        stdin: where ``put KEY -`` reads its value (default ``sys.stdin.buffer``).
    """
    try:
        request = parse(argv, os.environ if env is None else env)
    except ParseExit as exc:
        stdout.write(exc.stdout.encode())
        stdout.flush()
        stderr.write(exc.stderr)
        return exc.code
    return await execute(request, stdout, stderr, stdin)


def main() -> NoReturn:
    try:
        # Parsed before Trio starts: help and usage errors need no event loop.
        request = parse(sys.argv[1:], os.environ)
    except ParseExit as exc:
        sys.stdout.write(exc.stdout)
        sys.stderr.write(exc.stderr)
        sys.exit(exc.code)
    try:
        code = trio.run(execute, request, sys.stdout.buffer, sys.stderr)
    except KeyboardInterrupt:
        code = 130  # what a shell reports for a command ended by SIGINT
    sys.exit(code)


if __name__ == "__main__":
    main()
