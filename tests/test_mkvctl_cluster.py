"""mkvctl's cluster commands (``nodes``, ``partitions move``, ``add --node``,
``cluster status``) and the AdminClient calls under them, against a single
node: each says, in one line, that the node is not in cluster mode. The
tables and health of a cluster are checked on real nodes in
tests/test_demo.py; here, their rendering from typed results."""

from __future__ import annotations

import json

import pytest
import trio

import mkv
from mkv.cli.ctl import (
    _cluster_json,
    _ClusterView,
    _Probe,
    _render_cluster,
    _render_partitions,
    parse,
)
from mkv.client.admin import NodeInfo, NodeStatus, PartitionInfo
from mkv.router import KeyRange
from tests.test_mkvctl import Ctl, assert_one_error_line, ctl  # noqa: F401 (a fixture)

SINGLE = "needs cluster mode: mkv at {address} is a single node"


@pytest.mark.parametrize(
    "argv",
    [
        ("nodes", "list"),
        ("nodes", "drain", "node2"),
        ("nodes", "drain", "node2", "--wait"),
        ("partitions", "move", "default", "node2"),
        ("partitions", "move", "default", "node2", "--wait", "--json"),
        ("partitions", "add", "--id", "x", "--start", "x", "--node", "node2"),
    ],
)
async def test_cluster_commands_on_a_single_node_say_so(
    ctl: Ctl,  # noqa: F811
    mkv_node: mkv.Node,
    argv: tuple[str, ...],
) -> None:
    with trio.fail_after(20):
        result = await ctl(*argv)
    command = " ".join(argv[:2])
    assert_one_error_line(
        result,
        f"mkvctl: {command} {SINGLE.format(address=mkv_node.control_address)}",
        "mkv serve --etcd URL --cluster NAME, or try mkv demo",
    )
    # Nothing was added by the refused `add --node`.
    async with mkv.AdminClient.connect(mkv_node.control_address) as admin:
        assert [p.id for p in await admin.list_partitions()] == ["default"]


async def test_cluster_status_of_a_single_node_is_one_line(
    ctl: Ctl,  # noqa: F811
    mkv_node: mkv.Node,
) -> None:
    with trio.fail_after(20):
        text = await ctl("cluster", "status")
        document = await ctl("cluster", "status", "--json")
    assert (text.code, text.err) == (0, "")
    assert text.text == (
        f"mkv at {mkv_node.control_address} is a single node, not in cluster mode "
        "(mkv serve --etcd URL --cluster NAME starts a cluster's node)\n"
    )
    assert document.json() == {"cluster": None, "address": str(mkv_node.control_address)}


async def test_a_single_nodes_tables_and_json_have_no_cluster_columns(
    ctl: Ctl,  # noqa: F811
) -> None:
    with trio.fail_after(20):
        table = await ctl("partitions", "list")
        listed = await ctl("--json", "partitions", "list")
        status = await ctl("--json", "status")
    assert table.text.splitlines()[0].split() == [
        "ID", "RANGE", "STORE", "STATE", "KEYS", "SIZE", "LAST", "SEQ"
    ]  # fmt: skip
    [default] = listed.json()["partitions"]
    assert (default["node"], default["epoch"]) == (None, None)
    document = status.json()
    assert (document["node_id"], document["cluster"], document["lease"]) == (None, None, None)


async def test_admin_client_cluster_calls_on_a_single_node(mkv_node: mkv.Node) -> None:
    async with mkv.AdminClient.connect(mkv_node.control_address) as admin:
        status = await admin.node_status()
        assert (status.clustered, status.node_id, status.cluster) == (False, None, None)
        for call in (
            admin.list_nodes(),
            admin.move_partition("default", "node2"),
            admin.drain_node("node2"),
            admin.add_partition(partition_id="x", start=b"x", node="node2"),
        ):
            with pytest.raises(mkv.FailedPreconditionError, match="needs cluster mode"):
                await call

    def blocking_calls() -> None:
        # On a thread of its own: the blocking client refuses the event loop's.
        with mkv.BlockingAdminClient.connect(mkv_node.control_address) as blocking:
            with pytest.raises(mkv.FailedPreconditionError, match="needs cluster mode"):
                blocking.list_nodes()
            with pytest.raises(mkv.FailedPreconditionError, match="needs cluster mode"):
                blocking.move_partition("default", "node2")
            with pytest.raises(mkv.FailedPreconditionError, match="needs cluster mode"):
                blocking.drain_node("node2")
            with pytest.raises(mkv.FailedPreconditionError, match="needs cluster mode"):
                blocking.add_partition(partition_id="x", start=b"x", node="node2")

    await trio.to_thread.run_sync(blocking_calls)


def test_usage_of_the_cluster_commands() -> None:
    request = parse(["partitions", "move", "users", "node3", "--wait"], {})
    assert (request.command, request.partition_id, request.node, request.wait) == (
        "partitions move",
        "users",
        "node3",
        True,
    )
    assert str(request.address) == "127.0.0.1:7071"  # the control plane
    drain = parse(["nodes", "drain", "node3"], {"MKV_CONTROL_ADDR": "10.0.0.1:9"})
    assert (drain.command, drain.node, drain.wait, str(drain.address)) == (
        "nodes drain",
        "node3",
        False,
        "10.0.0.1:9",
    )
    add = parse(["partitions", "add", "--start", "a", "--node", "node2"], {})
    assert add.node == "node2"
    assert parse(["cluster", "status", "--json"], {}).command == "cluster status"


# -- rendering a cluster, from typed results ---------------------------------


def _partition(pid: str, start: bytes, end: bytes | None, node: str | None) -> PartitionInfo:
    return PartitionInfo(
        id=pid,
        range=KeyRange(start, end),
        store="sqlite",
        pipeline=("timestamp", "wal"),
        state="active",
        key_count=3,
        size_bytes=4096,
        last_seq=7,
        node=node,
        epoch=None if node is None else 41,
    )


def _node(nid: str, port: int, alive: bool, partitions: tuple[str, ...]) -> NodeInfo:
    return NodeInfo(
        id=nid,
        data_address=f"127.0.0.1:{port}",
        control_address=f"127.0.0.1:{port + 1}",
        replication_address=f"127.0.0.1:{port + 1}",
        version="0.1.0",
        alive=alive,
        partitions=partitions,
        started="2026-05-01T12:00:00.000Z",
    )


def _status(nid: str, lease_valid: bool) -> NodeStatus:
    return NodeStatus(
        version="0.1.0",
        python_version="3.11.9",
        started="2026-05-01T12:00:00.000Z",
        uptime_seconds=60.0,
        data_dir="/d",
        snapshot_root="/d/snapshots",
        data_address="127.0.0.1:7070",
        control_address="127.0.0.1:7071",
        partitions=(),
        node_id=nid,
        cluster="demo",
        lease_valid=lease_valid,
        lease_remaining_seconds=4.25 if lease_valid else 0.0,
        cluster_revision=57,
    )


def test_the_partition_table_gains_a_node_column_in_a_cluster() -> None:
    table = _render_partitions(
        [_partition("default", b"", b"m", "node1"), _partition("high", b"m", None, None)]
    )
    header, first, second = table.splitlines()
    assert header.split() == [
        "ID", "RANGE", "NODE", "STORE", "STATE", "KEYS", "SIZE", "LAST", "SEQ"
    ]  # fmt: skip
    assert first.split()[:5] == ["default", "['',", "m)", "node1", "sqlite"]
    assert second.split()[:4] == ["high", "[m,", "∞)", "-"]


def test_cluster_status_names_every_problem() -> None:
    view = _ClusterView(
        entry=_status("node1", True),
        nodes=(
            _node("node1", 7070, True, ("default",)),
            _node("node2", 7072, True, ("users",)),
            _node("node3", 7074, True, ()),
            _node("node4", 7076, False, ()),
        ),
        partitions=(
            _partition("default", b"", b"m", "node1"),
            _partition("users", b"m", b"u", "node2"),
            _partition("orphan", b"u", b"v", None),
            _partition("stale", b"v", None, "node4"),
        ),
        probes={
            "node1": _Probe(_status("node1", True), None),
            "node2": _Probe(_status("node2", False), None),
            "node3": _Probe(None, "no answer within 5 seconds"),
            "node4": _Probe(None, "not alive"),
        },
    )
    assert view.problems() == [
        "node node2 has no valid lease: it serves nothing",
        "node node3 does not answer at 127.0.0.1:7075: no answer within 5 seconds",
        "node node4 is not alive (no live lease in etcd)",
        "partition orphan has no leader",
        "partition stale is led by node4, which is not alive",
    ]
    request = parse(["cluster", "status"], {})
    text = _render_cluster(view, request)
    assert "health   degraded: 5 problem(s)" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line}
    assert rows["node1"][:5] == ["node1", "yes", "yes", "valid", "4.2s"]
    assert rows["node2"][:4] == ["node2", "yes", "yes", "expired"]
    assert rows["node3"][:4] == ["node3", "yes", "no", "-"]

    healthy = _ClusterView(
        entry=view.entry,
        nodes=view.nodes[:1],
        partitions=view.partitions[:1],
        probes={"node1": view.probes["node1"]},
    )
    assert healthy.problems() == []
    document = json.loads(json.dumps(_cluster_json(healthy, request)))
    assert document["healthy"] is True
    assert document["nodes"][0]["lease"] == {"valid": True, "remaining_seconds": 4.25}
    assert document["partitions"][0]["node"] == "node1"
