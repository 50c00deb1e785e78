"""Prometheus metrics: what a node counts, and how it is exposed.

Three kinds, each collected the cheapest safe way:

- **Requests** (``RequestMetrics``, an ``mkv.rpc.server`` observer): counted on the
  event loop in plain dicts and lists, no locks. prometheus_client's own
  ``Counter`` and ``Histogram`` take a lock on every update; at 100k requests
  a second that is measurable, and every request is counted on one thread
  anyway. A scrape copies the numbers on the event loop (a few hundred ints)
  and renders them as metric families.
- **Partitions** (``NodeCollector``): gauges from the ``PartitionNumbers``
  the node hands over at scrape time (``PartitionSource``, implemented by
  ``mkv.node.statistics``), so nothing is spent between scrapes, and removed
  partitions simply stop being reported. Store sizes (counting may read a
  whole table) come from a cache a background task refreshes every
  ``STORE_STATS_INTERVAL`` seconds, one partition at a time on a thread: the
  cost is bounded and never on the event loop. This module reaches into no
  partition or registry: it is handed numbers (docs/architecture.md).
- **Process-wide histograms** observed from other threads or other modules:
  ``WAL_FSYNC_SECONDS``, ``WAL_GROUP_WRITES`` and ``SNAPSHOT_SECONDS``,
  ordinary prometheus_client histograms (thread-safe; updated per fsync or per
  snapshot, not per request). The write-ahead log stage reports its fsyncs
  through the observer in its stage context (``HISTOGRAMS`` here); snapshot
  code times itself with ``SNAPSHOT_SECONDS.observe(s)``.

Rendering the text runs on a thread (it can take milliseconds with many
partitions) from numbers copied on the event loop, so it never races with
the counting. docs/observability.md lists every metric.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs
import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from purerpc.grpclib.status import Status, StatusCode

from mkv.version import build_info

if TYPE_CHECKING:
    from mkv.observe.logs import RequestLog

__all__ = [
    "HISTOGRAMS",
    "LATENCY_BUCKETS",
    "SNAPSHOT_SECONDS",
    "WAL_FSYNC_SECONDS",
    "WAL_GROUP_WRITES",
    "NodeCollector",
    "NodeMetrics",
    "PartitionNumbers",
    "PartitionSource",
    "RequestMetrics",
    "StoreSize",
]

# Request latency: from 50 µs (a cached read) to 10 s (a deadline's worth).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
# The bucket labels, +Inf last.
_BOUNDS = (*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf")
# How often cached store sizes are refreshed (each refresh may count a table).
STORE_STATS_INTERVAL = 30.0

# A method name the server does not serve is counted under this one, so a
# client sending made-up names cannot grow the metrics without bound.
UNKNOWN_METHOD = "unknown"

WAL_FSYNC_SECONDS = Histogram(
    "mkv_wal_fsync_seconds",
    "Time one fsync of the write-ahead log took (the fsyncs that make acknowledged "
    "writes durable, on every partition of this process).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=None,
)
WAL_GROUP_WRITES = Histogram(
    "mkv_wal_group_commit_writes",
    "Writes made durable by one fsync of the write-ahead log (group commit batch size).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
    registry=None,
)
SNAPSHOT_SECONDS = Histogram(
    "mkv_snapshot_seconds",
    "Time taken to write one partition snapshot.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
    registry=None,
)


class _HistogramObserver:
    """A pipeline ``StageObserver`` that records into the histograms above."""

    def wal_synced(self, seconds: float, writes: int) -> None:
        WAL_FSYNC_SECONDS.observe(seconds)
        WAL_GROUP_WRITES.observe(writes)


# What a node hands its partitions' stages (mkv.pipeline.StageObserver).
HISTOGRAMS = _HistogramObserver()


@attrs.frozen
class PartitionNumbers:
    """One partition's numbers at the moment of a scrape, as the node hands them over."""

    id: str
    # "starting", "active", "draining", "stopped" or "failed".
    state: str
    inbox_depth: int
    in_flight: int
    last_seq: int
    # None without a write-ahead log (and then segments and bytes are not reported).
    wal_synced_seq: int | None
    wal_segments: int
    wal_bytes: int
    feed_bytes: int
    watchers: int
    # A replicated partition led here (issue 16): each follower's
    # (node, lag in records, lag in seconds, in sync), the Truncate answers
    # sent to replicas, and the ISR changes this leader made.
    replicas: tuple[tuple[str, int, float, bool], ...] = ()
    truncations: int = 0
    isr_shrinks: int = 0
    isr_expands: int = 0


@attrs.frozen
class ClusterNumbers:
    """Cluster mode: what this node's membership reports at a scrape."""

    # Per partition this node leads: its replicas and in-sync set sizes, as
    # etcd records them (each partition is reported by its leader alone).
    led: Mapping[str, tuple[int, int]]
    # Elections this node has won since it started.
    elections: int


@attrs.frozen
class StoreSize:
    key_count: int
    size_bytes: int


class PartitionSource(Protocol):
    """Where a node's metrics get their partition numbers (``mkv.node.statistics``)."""

    def numbers(self) -> list[PartitionNumbers]:
        """Every partition's numbers now; cheap, on the event loop."""
        ...

    async def store_sizes(self) -> dict[str, StoreSize]:
        """Every partition's store size by partition id; may count tables, on threads."""
        ...


_bisect = bisect.bisect_left


def _code_name(number: int) -> str:
    """``NOT_FOUND`` for 5; the number itself for one gRPC does not define."""
    try:
        name: str = StatusCode(number).name
        return name
    except ValueError:
        return str(number)


class _MethodStats:
    """One method's counts; lists, not objects, so an update is two index operations."""

    __slots__ = ("buckets", "codes", "in_flight", "streaming", "sum")

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.in_flight = 0
        # By the status's number: hashing an Enum member runs Python code.
        self.codes: dict[int, int] = {}
        # Non-cumulative: buckets[i] counts calls in (LATENCY_BUCKETS[i-1], LATENCY_BUCKETS[i]].
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0


class RequestMetrics:
    """Counts gRPC calls by service, method and status; an ``mkv.rpc.server`` observer.

    Methods are declared up front (``declare``) so that every one is
    reported, at zero, before its first call; response streams are counted
    but kept out of the latency histogram (a Watch lasts as long as its
    client wants).

    Args:
        request_log: also told of every finished call (errors, slow calls).
    """

    def __init__(self, request_log: RequestLog | None = None) -> None:
        self._stats: dict[tuple[str, str], _MethodStats] = {}
        self._request_log = request_log

    def declare(self, service: str, method: str, *, streaming: bool) -> None:
        self._stats[(service, method)] = _MethodStats(streaming)

    def _method(self, service: str, method: str) -> _MethodStats:
        stats = self._stats.get((service, method))
        if stats is None:
            # Not declared up front: bounded anyway, since mkv.rpc.server names only
            # the methods it serves (or UNKNOWN_METHOD).
            stats = self._stats[(service, method)] = _MethodStats(streaming=False)
        return stats

    # Called for every request: kept to a dict lookup and a few integer
    # updates (tools/bench_metrics.py measures it).
    def call_started(self, service: str, method: str) -> None:
        stats = self._stats.get((service, method)) or self._method(service, method)
        stats.in_flight += 1

    def call_finished(self, service: str, method: str, status: Status, seconds: float) -> None:
        stats = self._stats.get((service, method)) or self._method(service, method)
        stats.in_flight -= 1
        code = status.int_value
        codes = stats.codes
        codes[code] = codes.get(code, 0) + 1
        if not stats.streaming:
            stats.buckets[_bisect(LATENCY_BUCKETS, seconds)] += 1
            stats.sum += seconds
        if self._request_log is not None:
            self._request_log.call_finished(service, method, status, seconds)

    def snapshot(self) -> list[tuple[str, str, _MethodStats]]:
        """A copy of every count, taken on the event loop, to render elsewhere."""
        copies = []
        for (service, method), stats in self._stats.items():
            copy = _MethodStats(stats.streaming)
            copy.in_flight = stats.in_flight
            copy.codes = dict(stats.codes)
            copy.buckets = list(stats.buckets)
            copy.sum = stats.sum
            copies.append((service, method, copy))
        return copies


def _build_family() -> Metric:
    """``mkv_build_info{version=...,python=...} 1``: the usual Prometheus way to
    report a version, so dashboards can join on it or alert on a mixed fleet."""
    build = build_info()
    family = GaugeMetricFamily(
        "mkv_build_info",
        "Always 1; the labels say which mkv and which Python this node runs.",
        labels=list(build),
    )
    family.add_metric(list(build.values()), 1)
    return family


class NodeCollector:
    """Renders a scrape's copied numbers as metric families (runs on a thread)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, _MethodStats]] = []
        self.partitions: list[tuple[PartitionNumbers, StoreSize | None]] = []
        self.cluster: ClusterNumbers | None = None

    def collect(self) -> Iterator[Metric]:
        yield _build_family()
        yield from self._request_families()
        yield from self._partition_families()
        if self.cluster is not None:
            yield from self._cluster_families(self.cluster)

    def _cluster_families(self, numbers: ClusterNumbers) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "mkv_partition_replicas",
            "Replicas of each partition this node leads, as etcd records them.",
            labels=["partition"],
        )
        isr = GaugeMetricFamily(
            "mkv_partition_isr_size",
            "In-sync replicas of each partition this node leads, as etcd records them "
            "(below its replicas: under-replicated).",
            labels=["partition"],
        )
        for pid, (count, in_sync) in sorted(numbers.led.items()):
            replicas.add_metric([pid], count)
            isr.add_metric([pid], in_sync)
        elections = CounterMetricFamily(
            "mkv_cluster_elections", "Partition leaderships this node has won since it started."
        )
        elections.add_metric([], numbers.elections)
        yield from (replicas, isr, elections)

    def _request_families(self) -> Iterator[Metric]:
        labels = ["service", "method", "code"]
        requests = CounterMetricFamily(
            "mkv_rpc_requests", "gRPC calls answered, by final status.", labels=labels
        )
        errors = CounterMetricFamily(
            "mkv_rpc_errors", "gRPC calls answered with a status other than OK.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "mkv_rpc_requests_in_flight",
            "gRPC calls received and not yet answered (open streams included).",
            labels=["service", "method"],
        )
        latency = HistogramMetricFamily(
            "mkv_rpc_request_duration_seconds",
            "Time from a unary call's headers to its status, by method.",
            labels=["service", "method"],
        )
        for service, method, stats in self.requests:
            in_flight.add_metric([service, method], stats.in_flight)
            for number, count in sorted(stats.codes.items()):
                name = _code_name(number)
                requests.add_metric([service, method, name], count)
                if number != StatusCode.OK.value:
                    errors.add_metric([service, method, name], count)
            if not stats.streaming:
                cumulative, buckets = 0, []
                for bound, count in zip(_BOUNDS, stats.buckets, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                latency.add_metric([service, method], buckets, stats.sum)
        yield from (requests, errors, in_flight, latency)

    def _partition_families(self) -> Iterator[Metric]:
        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, labels=["partition"])

        inbox = gauge("mkv_partition_inbox_depth", "Requests waiting in the partition's inbox.")
        in_flight = gauge(
            "mkv_partition_in_flight", "Requests admitted into the pipeline, not yet answered."
        )
        applied = gauge(
            "mkv_partition_applied_seq", "Sequence number of the last write applied to the store."
        )
        synced = gauge(
            "mkv_partition_wal_synced_seq",
            "Sequence number of the last write the log has fsynced (partitions with a log).",
        )
        segments = gauge("mkv_partition_wal_segments", "Write-ahead log segment files.")
        wal_bytes = gauge("mkv_partition_wal_bytes", "Bytes in write-ahead log segment files.")
        feed = gauge(
            "mkv_partition_watch_feed_bytes",
            "Estimated bytes of recent mutations the watch feed retains.",
        )
        watchers = gauge("mkv_partition_watchers", "Watch streams open on the partition.")
        keys = gauge(
            "mkv_partition_store_keys",
            f"Keys in the partition's store (refreshed every {STORE_STATS_INTERVAL:g} s).",
        )
        size = gauge(
            "mkv_partition_store_bytes",
            f"Bytes of the store's files on disk (refreshed every {STORE_STATS_INTERVAL:g} s).",
        )
        lag_records = GaugeMetricFamily(
            "mkv_replica_lag_records",
            "Records a follower of a partition led here is behind the leader's log.",
            labels=["partition", "replica"],
        )
        lag_seconds = GaugeMetricFamily(
            "mkv_replica_lag_seconds",
            "Seconds since a follower of a partition led here last had everything logged "
            "(0 while it has).",
            labels=["partition", "replica"],
        )
        in_sync = GaugeMetricFamily(
            "mkv_replica_in_sync",
            "1 while a follower of a partition led here is in its in-sync set, else 0.",
            labels=["partition", "replica"],
        )
        truncations = CounterMetricFamily(
            "mkv_partition_truncations",
            "Truncate answers the leader sent replicas of older epochs (since it led).",
            labels=["partition"],
        )
        isr_changes = CounterMetricFamily(
            "mkv_partition_isr_changes",
            "In-sync set changes this leader made in etcd: shrink (a laggard out), expand.",
            labels=["partition", "direction"],
        )
        state = GaugeMetricFamily(
            "mkv_partition_state",
            "1 for the partition's current state (starting, active, draining, stopped).",
            labels=["partition", "state"],
        )
        for stats, store in self.partitions:
            labels = [stats.id]
            inbox.add_metric(labels, stats.inbox_depth)
            in_flight.add_metric(labels, stats.in_flight)
            applied.add_metric(labels, stats.last_seq)
            if stats.wal_synced_seq is not None:
                synced.add_metric(labels, stats.wal_synced_seq)
                segments.add_metric(labels, stats.wal_segments)
                wal_bytes.add_metric(labels, stats.wal_bytes)
            feed.add_metric(labels, stats.feed_bytes)
            watchers.add_metric(labels, stats.watchers)
            if store is not None:
                keys.add_metric(labels, store.key_count)
                size.add_metric(labels, store.size_bytes)
            state.add_metric([stats.id, stats.state], 1)
            for node, records, seconds, member in stats.replicas:
                lag_records.add_metric([stats.id, node], records)
                lag_seconds.add_metric([stats.id, node], seconds)
                in_sync.add_metric([stats.id, node], 1 if member else 0)
            if stats.replicas:
                truncations.add_metric(labels, stats.truncations)
                isr_changes.add_metric([stats.id, "shrink"], stats.isr_shrinks)
                isr_changes.add_metric([stats.id, "expand"], stats.isr_expands)
        yield from (inbox, in_flight, applied, synced, segments, wal_bytes, feed, watchers)
        yield from (lag_records, lag_seconds, in_sync, truncations, isr_changes)
        yield from (keys, size, state)


class NodeMetrics:
    """A node's metrics registry: requests, partitions, process-wide histograms,
    and the standard process metrics (CPU, memory, file descriptors, GC).

    Args:
        partitions: hands over the numbers of the partitions to report.
        requests: the request counter the node's gRPC servers report to.
    """

    def __init__(self, partitions: PartitionSource, requests: RequestMetrics) -> None:
        self.partitions = partitions
        self.requests = requests
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = NodeCollector()
        self.registry.register(self._collector)
        for histogram in (WAL_FSYNC_SECONDS, WAL_GROUP_WRITES, SNAPSHOT_SECONDS):
            self.registry.register(histogram)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self._store_sizes: dict[str, StoreSize] = {}
        # Cluster mode: the membership's numbers, asked for at each scrape.
        self.cluster: Callable[[], ClusterNumbers] | None = None
        # One scrape renders at a time: the collector holds one scrape's copy.
        self._rendering = trio.Lock()

    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        async with self._rendering:
            self._collector.requests = self.requests.snapshot()
            self._collector.partitions = [
                (numbers, self._store_sizes.get(numbers.id))
                for numbers in self.partitions.numbers()
            ]
            self._collector.cluster = None if self.cluster is None else self.cluster()
            return await trio.to_thread.run_sync(generate_latest, self.registry)

    async def refresh_store_stats(self, interval: float = STORE_STATS_INTERVAL) -> None:
        """Keep the cached store sizes fresh; runs until cancelled."""
        while True:
            started = time.monotonic()
            await self.refresh_store_stats_once()
            await trio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def refresh_store_stats_once(self) -> None:
        """Read every partition's store size (the source does it off the event loop)."""
        self._store_sizes = await self.partitions.store_sizes()
