"""``mkv serve``: run a node until SIGINT or SIGTERM.

mkv serve                                   # 127.0.0.1:7070 / :7071, ./mkv-data
mkv serve --data-addr 0.0.0.0:7070 --data-dir /var/lib/mkv
mkv serve --config mkv.toml                 # same names, in TOML
MKV_TOKEN=... mkv serve --control-addr 0.0.0.0:7071   # or --token-file PATH
mkv serve --snapshot-root /backups/mkv      # where snapshots may go (default DATA_DIR/snapshots)
mkv serve --metrics-addr 127.0.0.1:9464 --log-format json
mkv serve --etcd http://127.0.0.1:2379 --cluster prod --advertise-addr 10.0.0.7   # cluster mode
mkv demo --nodes 3                          # etcd and a 3-node cluster, until Ctrl-C
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from mkv.cli import demo
from mkv.errors import MkvError, leaves
from mkv.node.config import DEFAULT_CONTROL_ADDR, DEFAULT_DATA_ADDR, Config, ConfigError
from mkv.node.server import Node
from mkv.observe.logs import LOG_FORMATS, configure_logging, fields
from mkv.version import version_line
from mkv.worker import DEFAULT_POOL_SIZE

__all__ = ["main"]

log = logging.getLogger("mkv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkv", description="The mkv key-value server.")
    parser.add_argument("--version", action="version", version=version_line("mkv"))
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a node until SIGINT or SIGTERM")
    serve.add_argument("--config", type=Path, help="a TOML file of settings")
    serve.add_argument("--data-addr", help=f"data plane HOST:PORT (default {DEFAULT_DATA_ADDR})")
    serve.add_argument(
        "--control-addr", help=f"control plane HOST:PORT (default {DEFAULT_CONTROL_ADDR})"
    )
    serve.add_argument("--data-dir", type=Path, help="where data lives (default ./mkv-data)")
    serve.add_argument(
        "--default-store", help="store kind of the default partition (default sqlite)"
    )
    serve.add_argument(
        "--default-pipeline",
        metavar="'SPEC ...'",
        help="pipeline of partitions added without one (default: the store kind's)",
    )
    serve.add_argument(
        "--durable-dir",
        type=Path,
        help="where caching partitions keep their durable SQLite (default: in the partition)",
    )
    serve.add_argument(
        "--cache-bytes",
        metavar="SIZE",
        help="memory bound of each caching partition's cache, in bytes or with a unit "
        "such as 64MiB (default 64MiB)",
    )
    serve.add_argument(
        "--worker-threads",
        type=int,
        metavar="N",
        help="threads of the pool running every partition's store and log work "
        f"(at least 3; default: cores + 4, at most 16, so {DEFAULT_POOL_SIZE} here)",
    )
    serve.add_argument(
        "--snapshot-root",
        type=Path,
        help="the only directory snapshots are written to and restored from "
        "(default DATA_DIR/snapshots)",
    )
    serve.add_argument(
        "--metrics-addr",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )
    serve.add_argument(
        "--metrics-allow-remote",
        action="store_true",
        default=None,
        help="allow a non-loopback --metrics-addr (the endpoint has no authentication)",
    )
    serve.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, help="human lines (default) or JSON lines, on stderr"
    )
    serve.add_argument(
        "--slow-request-seconds",
        type=float,
        help="log unary calls at least this slow (default 1.0; 0: never)",
    )
    serve.add_argument(
        "--token-file",
        type=Path,
        help="file holding the control plane's token (else $MKV_TOKEN; else loopback only)",
    )
    serve.add_argument(
        "--data-token-file",
        type=Path,
        help="file holding the data plane's token (else $MKV_DATA_TOKEN; else none)",
    )
    serve.add_argument("--tls-cert", type=Path, help="serve TLS: certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, help="serve TLS: private key (PEM)")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates signed by this CA (mTLS)"
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        help="seconds of NOT_SERVING health before the ports close on shutdown (default 0)",
    )
    cluster = serve.add_argument_group("cluster mode (docs/cluster.md)")
    cluster.add_argument(
        "--etcd",
        action="append",
        metavar="URL",
        help="an etcd endpoint (repeat for several); cluster mode. Without it: one node",
    )
    cluster.add_argument("--cluster", metavar="NAME", help="the cluster's name (default mkv)")
    cluster.add_argument(
        "--advertise-addr",
        metavar="HOST",
        help="the host other nodes and clients reach this node by (default: the bound host)",
    )
    cluster.add_argument(
        "--node-id", metavar="ID", help="this node's id, on its first start only (default: made)"
    )
    cluster.add_argument(
        "--lease-ttl",
        type=int,
        metavar="S",
        help="seconds of the node's etcd lease; it serves nothing past it (default 5)",
    )
    cluster.add_argument(
        "--replicas",
        type=int,
        metavar="R",
        help="replicas of a partition added without a count, on distinct nodes (default 3)",
    )
    cluster.add_argument(
        "--min-isr",
        type=int,
        metavar="N",
        help="in-sync replicas below which writes are refused (default 2 when R >= 3, else 1)",
    )
    cluster.add_argument(
        "--replica-lag-timeout",
        type=float,
        metavar="S",
        help="seconds a follower may lag before it leaves the in-sync set (default 10)",
    )
    cluster.add_argument(
        "--node-dead-timeout",
        type=float,
        metavar="S",
        help="seconds a node may be gone before its replicas are re-created (default 60)",
    )
    cluster.add_argument(
        "--replicate",
        choices=("sync", "async"),
        help="acknowledge a write once the in-sync set has it durable (sync, the default) "
        "or once this node's log has it (async: a failover can lose it)",
    )
    demo.add_arguments(
        commands.add_parser(
            "demo",
            help="run etcd and a cluster of nodes on this machine until Ctrl-C, to try it",
            description="A local cluster in one command: etcd and N nodes on loopback, "
            "in a temporary directory, stopped (nodes first) on Ctrl-C.",
        )
    )
    return parser


async def serve(config: Config) -> None:
    # Signals are caught before anything starts, so a Ctrl-C during start-up
    # is a clean shutdown too rather than a KeyboardInterrupt mid-open.
    unstarted = Node(config)  # a ConfigError (token, TLS files) surfaces here, unwrapped
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            started = False

            async def on_signal() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    log.info(
                        "received %s: shutting down",
                        name,
                        extra=fields(event="signal", signal=name),
                    )
                    if started:
                        unstarted.stop()
                    else:
                        # Still starting (cluster mode waits for etcd): nothing
                        # is served yet, so the start is abandoned.
                        nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
            node: Node = await nursery.start(unstarted.run)
            started = True
            # Printed (not logged) and flushed: scripts and tests wait for these lines.
            print(f"mkv: data plane listening on {node.data_address}", flush=True)
            print(f"mkv: control plane listening on {node.control_address}", flush=True)
            print(f"mkv: data directory {config.data_dir.resolve()}", flush=True)
            if node.snapshots is not None:
                print(f"mkv: snapshot root {node.snapshots.root.path}", flush=True)
            if node.cluster is not None:
                print(
                    f"mkv: node {node.cluster.node_id} of cluster {node.cluster.settings.name}",
                    flush=True,
                )
            if node.metrics_address is not None:
                print(f"mkv: metrics on http://{node.metrics_address}/metrics", flush=True)
    print("mkv: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo.main(args)
    try:
        config = Config.load(
            args.config,
            data_addr=args.data_addr,
            control_addr=args.control_addr,
            data_dir=args.data_dir,
            default_store=args.default_store,
            default_pipeline=args.default_pipeline,
            durable_dir=args.durable_dir,
            cache_bytes=args.cache_bytes,
            worker_threads=args.worker_threads,
            snapshot_root=args.snapshot_root,
            metrics_addr=args.metrics_addr,
            metrics_allow_remote=args.metrics_allow_remote,
            log_level=args.log_level,
            log_format=args.log_format,
            slow_request_seconds=args.slow_request_seconds,
            token_file=args.token_file,
            data_token_file=args.data_token_file,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_client_ca_file=args.tls_client_ca,
            shutdown_grace=args.shutdown_grace,
            etcd=args.etcd,
            cluster=args.cluster,
            advertise_addr=args.advertise_addr,
            node_id=args.node_id,
            lease_ttl=args.lease_ttl,
            replicas=args.replicas,
            min_isr=args.min_isr,
            replica_lag_timeout=args.replica_lag_timeout,
            node_dead_timeout=args.node_dead_timeout,
            replicate=args.replicate,
        )
        configure_logging(config.log_level, config.log_format)
    except (ConfigError, ValueError) as exc:
        print(f"mkv: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(serve, config)
    except ConfigError as exc:
        print(f"mkv: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MkvError, BaseExceptionGroup) as exc:  # ConfigError too, in a group
        causes = leaves(exc)
        if not all(isinstance(leaf, OSError | MkvError | ConfigError) for leaf in causes):
            raise
        for leaf in causes:
            print(f"mkv: cannot start: {leaf}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
