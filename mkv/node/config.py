"""Server settings: defaults, a TOML file, then command-line flags, in that order.

A TOML file holds the same names as the flags, with underscores::

    data_addr = "127.0.0.1:7070"
    control_addr = "127.0.0.1:7071"
    data_dir = "/var/lib/mkv"
    default_store = "sqlite"
    default_pipeline = ["timestamp", "wal:always"]
    durable_dir = "/mnt/managed-disk/mkv"
    cache_bytes = "256MiB"                # any *_bytes: a number, or with KiB, MiB, GiB
    worker_threads = 8                # the pool every partition's store and log work runs on
    snapshot_root = "/var/lib/mkv/snapshots"
    metrics_addr = "127.0.0.1:9464"   # Prometheus /metrics; off when absent
    log_format = "json"               # or "human" (the default)
    log_level = "INFO"
    slow_request_seconds = 0.5        # log unary calls at least this slow
    token_file = "/etc/mkv/token"          # or MKV_TOKEN; never a flag value
    tls_cert_file = "/etc/mkv/node.pem"
    tls_key_file = "/etc/mkv/node.key"
    tls_client_ca_file = "/etc/mkv/clients-ca.pem"   # mTLS

    [cluster]                         # cluster mode (docs/cluster.md); absent: one node
    etcd = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    name = "prod"
    advertise_addr = "10.0.0.7"       # the host other nodes and clients are told
    node_id = "n-1"                   # first start only; kept in DATA_DIR/node-id
    lease_ttl = 5
    replicas = 3                      # per partition added without a count
    min_isr = 2                       # default: 2 when replicas >= 3, else 1
    replica_lag_timeout = 10          # seconds before a lagging follower leaves the ISR
    node_dead_timeout = 60            # seconds before a gone node's replicas are re-created
    replicate = "sync"                # or "async": acknowledged before followers have it

Security settings (docs/security.md): with no control-plane token the control
plane may only listen on loopback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from mkv.errors import ConfigError
from mkv.observe.logs import LOG_FORMATS, LogFormat
from mkv.partition.feed import WATCH_RETENTION_BYTES
from mkv.rpc.connection_limits import ConnectionLimits
from mkv.rpc.server import MAX_CONCURRENT_STREAMS, MAX_CONNECTIONS_PER_ADDRESS, STREAM_STALL_TIMEOUT
from mkv.rpc.session import DEFAULT_MAX_IN_FLIGHT
from mkv.store.base import DEFAULT_CACHE_BYTES
from mkv.units import parse_size
from mkv.wire import (
    DEFAULT_CONTROL_ADDR,
    DEFAULT_DATA_ADDR,
    MAX_REQUEST_BYTES,
    Address,
    is_loopback,
    parse_address,
)
from mkv.worker import DEFAULT_POOL_SIZE

__all__ = ["DEFAULT_CONTROL_ADDR", "DEFAULT_DATA_ADDR", "Config", "ConfigError"]


def _address(value: str | Address) -> Address:
    if isinstance(value, Address):
        return value
    try:
        return parse_address(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _optional_address(value: str | Address | None) -> Address | None:
    return None if value is None else _address(value)


def _endpoints(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{attribute.name} {value!r} must be 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


_WILDCARDS = ("0.0.0.0", "::", "[::]", "")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The [cluster] table of a TOML file, and the settings its keys are.
_CLUSTER_KEYS = {
    "etcd": "etcd",
    "name": "cluster",
    "advertise_addr": "advertise_addr",
    "node_id": "node_id",
    "lease_ttl": "lease_ttl",
    "replicas": "replicas",
    "min_isr": "min_isr",
    "replica_lag_timeout": "replica_lag_timeout",
    "node_dead_timeout": "node_dead_timeout",
    "replicate": "replicate",
}
REPLICATE_MODES = ("sync", "async")


def _count(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number, 1 or more (got {value!r})")


def _seconds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number of seconds above 0 (got {value!r})")


def _replicate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in REPLICATE_MODES:
        raise ValueError(
            f"{attribute.name} must be one of {', '.join(REPLICATE_MODES)}, not {value!r}"
        )


def _log_format(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in LOG_FORMATS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(LOG_FORMATS)}, not {value!r}")


def _stage_list(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Stage specs from a TOML list or a space-separated flag value."""
    return tuple(value.split() if isinstance(value, str) else value)


def _size(value: object) -> object:
    """A size from TOML or a flag may be text with a unit ("64MiB"), as stage
    arguments may. Text that is not a size stays text, for the validator to
    refuse naming the setting."""
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError:
            return value
    return value


def _byte_count(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"{attribute.name} must be a number of bytes, 0 or more, or a size such as "
            f"64MiB (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class Config:
    data_addr: Address = attrs.field(default=parse_address(DEFAULT_DATA_ADDR), converter=_address)
    control_addr: Address = attrs.field(
        default=parse_address(DEFAULT_CONTROL_ADDR), converter=_address
    )
    data_dir: Path = attrs.field(default=Path("mkv-data"), converter=Path)
    # The store of the default partition and of AddPartition calls naming none.
    default_store: str = "sqlite"
    # Their pipeline; None: the store kind's default (sqlite: timestamp, wal).
    default_pipeline: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_stage_list)
    )
    # Where ``caching`` partitions keep their durable SQLite stores (the
    # "managed disk"), one subdirectory per partition; None: in each
    # partition's own directory.
    durable_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    # The byte bound of each ``caching`` partition's memory cache.
    cache_bytes: int = attrs.field(
        default=DEFAULT_CACHE_BYTES, converter=_size, validator=_byte_count
    )
    # Snapshots are written, and restored from, only inside this directory;
    # None: <data_dir>/snapshots.
    snapshot_root: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    max_request_bytes: int = attrs.field(default=MAX_REQUEST_BYTES, converter=_size)
    # How long shutdown waits for in-flight requests before closing connections.
    drain_timeout: float = 10.0
    # Recent mutations each partition keeps for watchers to resume from (and
    # its write-ahead log keeps at least as much, so restarts keep them too).
    watch_retention_bytes: int = attrs.field(default=WATCH_RETENTION_BYTES, converter=_size)
    # Threads of the node-wide pool that runs every partition's store and log
    # jobs (mkv/worker.py). A partition's jobs run one at a time, so a slow
    # partition holds at most two of them (its store's and its log's turn):
    # with the default, one slow partition never stalls the others.
    worker_threads: int = attrs.field(default=DEFAULT_POOL_SIZE, validator=attrs.validators.ge(3))
    # How long a response stream (Scan, Watch) waits for a client that does
    # not read before ending it with RESOURCE_EXHAUSTED.
    stream_stall_timeout: float = STREAM_STALL_TIMEOUT
    # Requests one data-plane Session runs at once (advertised in its first
    # message); more are answered RESOURCE_EXHAUSTED.
    session_max_in_flight: int = attrs.field(
        default=DEFAULT_MAX_IN_FLIGHT, validator=attrs.validators.ge(1)
    )
    # Where to serve Prometheus metrics over HTTP (``/metrics``); None: nowhere.
    metrics_addr: Address | None = attrs.field(default=None, converter=_optional_address)
    # The metrics hold no keys or values, but do describe the workload and
    # the partitions: a non-loopback address must be asked for explicitly.
    metrics_allow_remote: bool = False
    # "human" lines or "json" lines, on stderr.
    log_format: LogFormat = attrs.field(default="human", validator=_log_format)
    log_level: str = "INFO"
    # Unary calls taking at least this long are logged; 0 or less: none.
    slow_request_seconds: float = 1.0

    def __attrs_post_init__(self) -> None:
        self._check_tls()
        if self.etcd and self.advertise_addr is None:
            for name, bound in (("data_addr", self.data_addr), ("control_addr", self.control_addr)):
                if bound.host in _WILDCARDS:
                    # Other nodes and clients are told where this node is.
                    raise ValueError(
                        f"{name} {bound} is a wildcard address: in cluster mode set "
                        "advertise_addr (--advertise-addr) to the host others reach this node by"
                    )
        if self.connection_buffer_bytes < 2 * self.max_request_bytes:
            # A largest request must fit beside another, or a client that
            # sends two at once would have one of them refused.
            raise ValueError(
                f"connection_buffer_bytes ({self.connection_buffer_bytes}) must be at least "
                f"twice max_request_bytes ({self.max_request_bytes})"
            )
        if self.request_buffer_bytes < 2 * self.max_request_bytes:
            # New calls need room for a largest request in the budget.
            raise ValueError(
                f"request_buffer_bytes ({self.request_buffer_bytes}) must be at least "
                f"twice max_request_bytes ({self.max_request_bytes})"
            )
        if self.min_isr is not None and self.min_isr > self.replicas:
            # Every partition at the default count would refuse every write.
            raise ValueError(f"min_isr ({self.min_isr}) must not exceed replicas ({self.replicas})")
        addr = self.metrics_addr
        if addr is not None and not self.metrics_allow_remote and not is_loopback(addr.host):
            raise ValueError(
                f"metrics_addr {addr} is not a loopback address; the metrics endpoint has "
                "no authentication, so set metrics_allow_remote to serve it there anyway"
            )

    # -- cluster mode (docs/cluster.md) ---------------------------------
    # etcd endpoints; empty: a single node, exactly as without cluster mode.
    etcd: tuple[str, ...] = attrs.field(default=(), converter=_endpoints)
    cluster: str = attrs.field(default="mkv", validator=_name)
    # The host (no port) this node's addresses are advertised with; None:
    # the host each port is bound to (which must then not be a wildcard).
    advertise_addr: str | None = None
    # Set on the first start only (the id is kept in DATA_DIR/node-id).
    node_id: str | None = attrs.field(default=None, validator=attrs.validators.optional(_name))
    # Seconds of the node's etcd lease: past its deadline (this, less a
    # margin, after the last keepalive etcd answered) it serves nothing.
    lease_ttl: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    # Replicas of a partition added without a count (docs/cluster.md), on
    # distinct nodes; AddPartition caps it at the live nodes.
    replicas: int = attrs.field(default=3, validator=_count)
    # In-sync replicas below which a leader refuses writes (UNAVAILABLE) rather
    # than acknowledge them on too few disks; None: 2 when replicas >= 3, else 1.
    min_isr: int | None = attrs.field(default=None, validator=attrs.validators.optional(_count))
    # Seconds a follower may stay behind before its leader removes it from the
    # in-sync set (in etcd first), and writes go on without it.
    replica_lag_timeout: float = attrs.field(default=10.0, validator=_seconds)
    # Seconds a node may be gone before its replicas are re-created elsewhere.
    node_dead_timeout: float = attrs.field(default=60.0, validator=_seconds)
    # "sync": a write is acknowledged once every ISR member has it durable;
    # "async": once this node's log has it (a failover can lose it).
    replicate: str = attrs.field(default="sync", validator=_replicate)

    @property
    def effective_min_isr(self) -> int:
        if self.min_isr is not None:
            return self.min_isr
        return 2 if self.replicas >= 3 else 1

    @property
    def clustered(self) -> bool:
        return bool(self.etcd)

    @property
    def snapshot_dir(self) -> Path:
        """The snapshot root in effect."""
        return self.snapshot_root if self.snapshot_root is not None else self.data_dir / "snapshots"

    # -- security and limits (docs/security.md) --------------------------
    # A file holding the control plane's token (else MKV_TOKEN; else none,
    # and the control plane must listen on loopback).
    token_file: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    # A file holding the data plane's token (else MKV_DATA_TOKEN; else none).
    data_token_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    # TLS on both ports: the node's certificate chain and key (PEM); with a
    # client CA, clients must present a certificate it signed (mTLS).
    tls_cert_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    tls_key_file: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    tls_client_ca_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    # Control-plane calls a second, and the burst let through at once.
    control_rate: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    control_burst: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    # The longest a unary call may run, whatever deadline its client set.
    data_deadline_cap: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    control_deadline_cap: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    # HTTP/2 streams at once on one connection, and connections per client
    # IP address on each port (0: no limit).
    max_concurrent_streams: int = attrs.field(
        default=MAX_CONCURRENT_STREAMS, validator=attrs.validators.ge(1)
    )
    max_connections_per_address: int = attrs.field(
        default=MAX_CONNECTIONS_PER_ADDRESS, validator=attrs.validators.ge(0)
    )
    # On shutdown, how long health reports NOT_SERVING while the node still
    # serves, so that load balancers stop sending before the ports close.
    shutdown_grace: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    # How long a partition moved to another node keeps answering BAD_NODE
    # naming its new node before its files are deleted (docs/replication.md).
    replica_grace: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    # What one HTTP/2 connection may cost (docs/security.md, "Connection
    # limits"): frames that do no work (PING, SETTINGS, empty DATA ...) and
    # stream resets a second and at once, before GOAWAY ENHANCE_YOUR_CALM;
    # frames handled per turn before other connections get theirs; unsent
    # output before the connection stops being read; request bytes buffered
    # ahead of their calls, per connection and across the node (over them,
    # calls are refused).
    idle_frame_rate: float = attrs.field(default=100.0, validator=attrs.validators.gt(0))
    idle_frame_burst: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    reset_rate: float = attrs.field(default=100.0, validator=attrs.validators.gt(0))
    reset_burst: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    frames_per_turn: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    connection_output_bytes: int = attrs.field(
        default=4 * 1024 * 1024,
        converter=_size,
        validator=[_byte_count, attrs.validators.ge(64 * 1024)],
    )
    connection_buffer_bytes: int = attrs.field(
        default=8 * 1024 * 1024,
        converter=_size,
        validator=[_byte_count, attrs.validators.ge(65535)],
    )
    request_buffer_bytes: int = attrs.field(
        default=256 * 1024 * 1024, converter=_size, validator=_byte_count
    )

    @property
    def connection_limits(self) -> ConnectionLimits:
        """The limits every connection on both ports lives under."""
        return ConnectionLimits(
            frames_per_turn=self.frames_per_turn,
            idle_frame_rate=self.idle_frame_rate,
            idle_frame_burst=self.idle_frame_burst,
            reset_rate=self.reset_rate,
            reset_burst=self.reset_burst,
            connection_output_bytes=self.connection_output_bytes,
            output_stall_timeout=self.stream_stall_timeout,
            connection_buffer_bytes=self.connection_buffer_bytes,
            request_buffer_bytes=self.request_buffer_bytes,
        )

    def _check_tls(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Config:
        """Defaults, updated by the TOML file at ``path``, then by non-None overrides.

        Raises:
            ConfigError: the file cannot be read, or holds an unknown or bad setting.
        """
        settings: dict[str, Any] = {}
        if path is not None:
            try:
                settings.update(tomllib.loads(path.read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            table = settings.pop("cluster", None)
            if table is not None:
                if not isinstance(table, dict):
                    raise ConfigError("cluster must be a table: [cluster] with etcd, name, ...")
                if unknown := sorted(set(table) - set(_CLUSTER_KEYS)):
                    raise ConfigError(f"unknown [cluster] setting(s): {', '.join(unknown)}")
                settings.update({_CLUSTER_KEYS[k]: v for k, v in table.items()})
        settings.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in attrs.fields(cls)}
        if unknown := sorted(set(settings) - known):
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        try:
            return cls(**settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
