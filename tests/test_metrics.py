"""The Prometheus endpoint of a real node: it parses, and its numbers follow traffic."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import mkv
from mkv.node.config import Config, ConfigError
from mkv.observe.metrics_http import CONTENT_TYPE
from mkv.testing import running_node
from mkv.wire import Address
from tests.grpcio_stubs import call_error, grpcio_channel, raw_method

DATA = "mkv.v1.DataPlane"
TIMEOUT = 20


@pytest.fixture
async def node() -> AsyncIterator[mkv.Node]:
    async with running_node(metrics_addr="127.0.0.1:0") as node:
        yield node


@pytest.fixture
async def client(node: mkv.Node) -> AsyncIterator[mkv.Client]:
    async with mkv.Client.connect(node.data_address) as client:
        yield client


async def http(address: Address, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw request bytes; the status line, headers and body of the answer."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(node: mkv.Node) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser."""
    assert node.metrics_address is not None
    status, headers, body = await http(
        node.metrics_address, b"GET /metrics HTTP/1.1\r\nHost: mkv\r\n\r\n"
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_errors_and_latency_follow_traffic(
    node: mkv.Node, client: mkv.Client
) -> None:
    with trio.fail_after(TIMEOUT):
        before = await scrape(node)
        for i in range(5):
            await client.upsert({f"k{i}": b"v"})
        for i in range(3):
            await client.get(f"k{i}")
        with pytest.raises(mkv.InvalidArgumentError):
            await client.get(b"")
        after = await scrape(node)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mkv_rpc_requests_total", service=DATA, method="Upsert", code="OK") == 5
    assert grew("mkv_rpc_requests_total", service=DATA, method="Get", code="OK") == 3
    bad = {"service": DATA, "method": "Get", "code": "INVALID_ARGUMENT"}
    assert grew("mkv_rpc_requests_total", **bad) == 1
    assert grew("mkv_rpc_errors_total", **bad) == 1
    assert grew("mkv_rpc_errors_total", service=DATA, method="Upsert", code="OK") == 0
    get = {"service": DATA, "method": "Get"}
    assert grew("mkv_rpc_request_duration_seconds_count", **get) == 4
    assert grew("mkv_rpc_request_duration_seconds_bucket", **get, le="+Inf") == 4
    assert grew("mkv_rpc_request_duration_seconds_sum", **get) > 0
    # Buckets are cumulative: each holds at least what the one below it holds.
    bounds = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in after.items()
        if name == "mkv_rpc_request_duration_seconds_bucket" and dict(labels)["method"] == "Get"
    )
    counts = [v for _, v in bounds]
    assert counts == sorted(counts)


async def test_partition_gauges_and_fsyncs_follow_durable_writes(
    node: mkv.Node, client: mkv.Client
) -> None:
    with trio.fail_after(TIMEOUT):
        before = await scrape(node)
        acks = []
        for i in range(4):
            acks += await client.upsert({f"key{i}": b"value"})
        seq = acks[-1].seq
        # Writes are answered on commit and applied right after: the applied
        # seq reaches the last acknowledged one within moments, not at once.
        after = await scrape(node)
        while value(after, "mkv_partition_applied_seq", partition="default") < seq:
            await trio.sleep(0.01)
            after = await scrape(node)
    assert value(after, "mkv_partition_applied_seq", partition="default") == seq
    # The default pipeline logs with fsync before acknowledging.
    assert value(after, "mkv_partition_wal_synced_seq", partition="default") >= seq
    assert value(after, "mkv_partition_wal_segments", partition="default") >= 1
    assert value(after, "mkv_partition_wal_bytes", partition="default") > 0
    assert value(after, "mkv_partition_watch_feed_bytes", partition="default") > 0
    assert value(after, "mkv_partition_inbox_depth", partition="default") == 0
    assert value(after, "mkv_partition_state", partition="default", state="active") == 1
    fsyncs = value(after, "mkv_wal_fsync_seconds_count") - value(
        before, "mkv_wal_fsync_seconds_count"
    )
    assert fsyncs >= 1
    # Every acknowledged write was covered by some fsync: four sequential
    # writes, so four groups of one.
    grouped = value(after, "mkv_wal_group_commit_writes_sum") - value(
        before, "mkv_wal_group_commit_writes_sum"
    )
    assert grouped >= 4


async def test_store_size_comes_from_the_refreshed_cache(
    node: mkv.Node, client: mkv.Client
) -> None:
    assert node.metrics is not None
    with trio.fail_after(TIMEOUT):
        await client.upsert({f"key{i}": b"value" for i in range(7)})
        await node.metrics.refresh_store_stats_once()
        samples = await scrape(node)
    assert value(samples, "mkv_partition_store_keys", partition="default") == 7
    assert value(samples, "mkv_partition_store_bytes", partition="default") > 0


async def test_snapshot_durations_are_observed(node: mkv.Node, client: mkv.Client) -> None:
    with trio.fail_after(TIMEOUT):
        await client.upsert({f"key{i}": b"value" for i in range(10)})
        before = await scrape(node)
        async with mkv.AdminClient.connect(node.control_address) as admin:
            done = await admin.wait_operation(await admin.snapshot("default"))
        after = await scrape(node)
    assert done.state == "done"
    taken = value(after, "mkv_snapshot_seconds_count") - value(before, "mkv_snapshot_seconds_count")
    assert taken == 1
    assert value(after, "mkv_snapshot_seconds_sum") > value(before, "mkv_snapshot_seconds_sum")


async def test_partitions_appear_and_disappear(node: mkv.Node) -> None:
    with trio.fail_after(TIMEOUT):
        async with mkv.AdminClient.connect(node.control_address) as admin:
            await admin.remove_partition("default")
            await admin.add_partition(partition_id="low", end=b"m", store="memory")
            samples = await scrape(node)
    partitions = {
        dict(labels)["partition"]
        for (name, labels) in samples
        if name == "mkv_partition_applied_seq"
    }
    assert partitions == {"low"}
    # A memory partition has no log: no WAL gauges for it.
    assert ("mkv_partition_wal_synced_seq", frozenset({("partition", "low")})) not in samples


async def test_open_watches_are_counted(node: mkv.Node, client: mkv.Client) -> None:
    with trio.fail_after(TIMEOUT):
        [first] = await client.upsert({b"a0": b"x"})
        await client.upsert({b"a1": b"x"})
        # From a known position (0 would mean "from whenever the call starts").
        async with client.watch(b"a", b"b", from_seq=first.seq) as changes:
            await changes.__anext__()
            during = await scrape(node)
        # The server notices the closed stream at its next send.
        await client.upsert({b"a2": b"x"})
        # Polled: the endpoint is what is under test, and it offers no event.
        while value(after := await scrape(node), "mkv_partition_watchers", partition="default"):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert value(during, "mkv_partition_watchers", partition="default") == 1
    assert value(during, "mkv_rpc_requests_in_flight", service=DATA, method="Watch") == 1
    assert value(after, "mkv_rpc_requests_in_flight", service=DATA, method="Watch") == 0
    # A stream is counted when it ends, but has no latency.
    assert (
        "mkv_rpc_request_duration_seconds_count",
        frozenset({("service", DATA), ("method", "Watch")}),
    ) not in after


async def test_unserved_method_names_are_counted_as_unknown(node: mkv.Node) -> None:
    """A client inventing method names must not create new label values."""
    with trio.fail_after(TIMEOUT), grpcio_channel(node.data_address) as channel:
        for name in ("Bogus1", "Bogus2"):
            error = await call_error(raw_method(channel, f"/{DATA}/{name}"), b"")
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        samples = await scrape(node)
    assert (
        value(
            samples, "mkv_rpc_requests_total", service=DATA, method="unknown", code="UNIMPLEMENTED"
        )
        == 2
    )
    methods = {dict(labels).get("method") for (name, labels) in samples}
    assert not methods & {"Bogus1", "Bogus2"}


async def test_other_paths_and_methods_are_refused(node: mkv.Node) -> None:
    assert node.metrics_address is not None
    address = node.metrics_address
    with trio.fail_after(TIMEOUT):
        missing = await http(address, b"GET / HTTP/1.1\r\n\r\n")
        post = await http(address, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        garbage = await http(address, b"\x16\x03\x01 hello\r\n\r\n")
        head = await http(address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert missing[0] == "HTTP/1.1 404 Not Found"
    assert post[0] == "HTTP/1.1 405 Method Not Allowed"
    assert garbage[0] == "HTTP/1.1 400 Bad Request"
    assert head[0] == "HTTP/1.1 200 OK"
    assert head[2] == b""
    assert int(head[1]["content-length"]) > 0


async def test_metrics_are_off_by_default() -> None:
    assert Config().metrics_addr is None
    with trio.fail_after(TIMEOUT):
        async with running_node() as node:
            assert node.metrics_address is None
            assert node.metrics is None


def test_a_remote_metrics_address_must_be_asked_for() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Config.load(metrics_addr="0.0.0.0:9464")
    with pytest.raises(ConfigError, match="loopback"):
        Config.load(metrics_addr="metrics.example.com:9464")
    assert Config.load(metrics_addr="localhost:9464").metrics_addr == Address("localhost", 9464)
    assert Config.load(metrics_addr="[::1]:9464").metrics_addr == Address("::1", 9464)
    allowed = Config.load(metrics_addr="0.0.0.0:9464", metrics_allow_remote=True)
    assert allowed.metrics_addr == Address("0.0.0.0", 9464)


async def test_metrics_never_show_keys_or_values(node: mkv.Node, client: mkv.Client) -> None:
    assert node.metrics_address is not None
    key, secret = b"key-e4da3b7fbbce2345d7772b0674a318d5", b"VALUE-1679091c5a880faf6fb5e6087eb1b2dc"
    with trio.fail_after(TIMEOUT):
        await client.upsert({key: secret})
        await client.get(key)
        with pytest.raises(mkv.FailedPreconditionError):
            await client.increment(key)  # an error whose message names the key
        _, _, body = await http(node.metrics_address, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert b"e4da3b7fbbce2345d7772b0674a318d5" not in body
    assert b"1679091c5a880faf6fb5e6087eb1b2dc" not in body


def test_observability_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "mkv.toml"
    path.write_text(
        'metrics_addr = "127.0.0.1:9464"\nlog_format = "json"\nlog_level = "DEBUG"\n'
        "slow_request_seconds = 0.25\n"
    )
    config = Config.load(path)
    assert config.metrics_addr == Address("127.0.0.1", 9464)
    assert (config.log_format, config.log_level, config.slow_request_seconds) == (
        "json",
        "DEBUG",
        0.25,
    )
    path.write_text('log_format = "xml"\n')
    with pytest.raises(ConfigError, match="log_format"):
        Config.load(path)


async def test_build_info_names_the_version(node: mkv.Node) -> None:
    with trio.fail_after(TIMEOUT):
        samples = await scrape(node)
    [(labels, sample)] = [
        (dict(labels), v) for (name, labels), v in samples.items() if name == "mkv_build_info"
    ]
    assert sample == 1
    assert labels["version"] == mkv.__version__
    assert labels["python"] == platform.python_version()
