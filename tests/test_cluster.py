"""Cluster mode end to end: a real etcd and real ``mkv serve`` subprocesses,
talked to with grpcio (docs/cluster.md)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import grpc
import pytest
import trio
from google.protobuf.message import Message

from mkv.cluster.keyspace import PartitionRecord
from mkv.errors import FailedPreconditionError
from mkv.etcd import open_etcd
from mkv.rpc.dial import call_unary
from mkv.v1 import control_pb2, data_pb2
from mkv.wire import CONTROL_SERVICE, FORWARDED, parse_address
from tests import netns
from tests.cluster import Stubs, cluster_node, eventually, leader_of, running
from tests.etcd import EtcdProcess
from tests.grpcio_stubs import GrpcioStubs, call
from tests.processes import ServerProcess


async def _carve(stubs: Stubs, via: list[ServerProcess]) -> dict[str, str]:
    """Remove ``default`` and add a, b, c through different nodes; their leaders."""
    await leader_of(stubs, via[0], "default")
    with stubs.control(via[1]) as control:
        await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
    ranges = {"a": (b"", b"h"), "b": (b"h", b"p"), "c": (b"p", b"")}
    leaders = {}
    for index, (pid, (start, end)) in enumerate(ranges.items()):
        with stubs.control(via[index % len(via)]) as control:
            added = await call(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id=pid, start=start, end=end),
            )
        assert added.partition.epoch > 0, added
        leaders[pid] = added.partition.node
    return leaders


async def test_three_nodes_place_route_and_agree(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(3)]
    rpc = Stubs(stubs)
    async with running(*nodes):
        ids = [(await rpc.status(node)).node_id for node in nodes]
        assert len(set(ids)) == 3
        assert all(ids)
        by_id = dict(zip(ids, nodes, strict=True))
        # The first node created the cluster and leads default, the whole keyspace.
        assert await leader_of(rpc, nodes[2], "default") == ids[0]
        leaders = await _carve(rpc, nodes)
        # Least loaded: each new partition on a node leading none.
        assert sorted(leaders.values()) == sorted(ids), leaders

        async def same_map() -> data_pb2.PartitionMapResponse | None:
            maps = [await rpc.map(node) for node in nodes]
            if all(m == maps[0] for m in maps) and all(p.address for p in maps[0].partitions):
                return maps[0]
            return None

        cluster_map = await eventually(same_map, what="one map from every node")
        assert [p.id for p in cluster_map.partitions] == ["a", "b", "c"]
        for part in cluster_map.partitions:
            assert part.address == by_id[leaders[part.id]].data_addr
        # Writes and reads through each owner; BAD_NODE naming the owner elsewhere.
        for key, pid in ((b"apple", "a"), (b"kiwi", "b"), (b"zebra", "c")):
            owner = by_id[leaders[pid]]
            put = await rpc.put(owner, key, b"v-" + key)
            assert put.status == data_pb2.OK
            assert put.partition_id == pid
            got = await rpc.get(owner, key)
            assert (got.status, got.value) == (data_pb2.OK, b"v-" + key)
            for other in nodes:
                if other is owner:
                    continue
                wrong = await rpc.get(other, key)
                assert wrong.status == data_pb2.BAD_NODE
                assert wrong.hint.owner.id == pid
                assert wrong.hint.owner.address == owner.data_addr
                assert wrong.hint.map_version == cluster_map.version
                refused = await rpc.put(other, key, b"nope")
                assert refused.status == data_pb2.BAD_NODE
        # Every node lists the same nodes and partitions.
        listed = [await rpc.nodes(node) for node in nodes]
        for answer in listed:
            assert [n.id for n in answer.nodes] == sorted(ids)
            assert all(n.alive for n in answer.nodes)
            for info in answer.nodes:
                assert info.data_address == by_id[info.id].data_addr
                assert list(info.partitions) == [p for p, n in leaders.items() if n == info.id]
        tables = [await rpc.partitions(node) for node in nodes]
        for table in tables:
            assert [(p.id, p.node, p.epoch) for p in table] == [
                (p.id, p.node, p.epoch) for p in tables[0]
            ]
        # Naming the node places it there; an overlap is refused.
        with rpc.control(nodes[0]) as control:
            clash = await _error(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="d", start=b"x", end=b"y"),
            )
            assert clash.code() == grpc.StatusCode.ALREADY_EXISTS
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="c"))
        # Its owner stops serving it and sets its files aside (not deleted yet).
        c_owner = by_id[leaders["c"]]

        async def set_aside() -> bool:
            return not (c_owner.data_dir / "partitions" / "c").exists() and any(
                (c_owner.data_dir / ".removed").glob("c.*")
            )

        await eventually(set_aside, what="c's files set aside")
        with rpc.control(nodes[0]) as control:
            added = await call(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="d", start=b"p", node=ids[0]),
            )
            assert added.partition.node == ids[0]
        await eventually(
            lambda: _get_status(rpc, nodes[0], b"zebra", data_pb2.OK), what="d served on n0"
        )
        status = await rpc.status(nodes[1])
        assert status.cluster == "test"
        assert status.lease_valid
        assert 0 < status.lease_remaining_seconds <= 2


async def _get_status(rpc: Stubs, node: ServerProcess, key: bytes, status: int) -> bool:
    return (await rpc.get(node, key)).status == status


async def _error(method: object, request: object) -> grpc.RpcError:
    try:
        await call(method, request)  # type: ignore[arg-type]
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("expected an error")


async def _forwarded_error(
    node: ServerProcess, method: str, request: Message, response_type: type[Message]
) -> str:
    """Send ``request`` to ``node`` marked as forwarded by another node; the
    FAILED_PRECONDITION it must answer, as its message."""
    with pytest.raises(FailedPreconditionError) as refused:
        await call_unary(
            parse_address(node.control_addr),
            CONTROL_SERVICE,
            method,
            request,
            response_type,
            metadata=((FORWARDED, "another-node"),),
        )
    return str(refused.value)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_restarted_node_keeps_its_id_and_partitions(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs, how: str
) -> None:
    # A lease far longer than the test waits: after kill -9 the old lease
    # lives on in etcd, and only its revocation by the new run frees default.
    nodes = [cluster_node(tmp_path, f"n{i}", etcd, lease_ttl=60) for i in range(2)]
    rpc = Stubs(stubs)
    async with running(*nodes):
        first = (await rpc.status(nodes[0])).node_id
        await leader_of(rpc, nodes[1], "default")
        for i in range(50):
            assert (await rpc.put(nodes[0], b"k%03d" % i, b"v%d" % i)).status == data_pb2.OK
        epoch = next(p.epoch for p in await rpc.partitions(nodes[1]) if p.id == "default")
        if how == "kill":
            await nodes[0].kill()
        else:
            await nodes[0].stop()
        started = time.monotonic()
        await nodes[0].start()
        assert (await rpc.status(nodes[0])).node_id == first
        await eventually(
            lambda: _get_status(rpc, nodes[0], b"k000", data_pb2.OK), what="default served again"
        )
        # Well inside the old lease's TTL after kill -9: the new run revoked it.
        back = time.monotonic() - started
        for i in range(50):
            got = await rpc.get(nodes[0], b"k%03d" % i)
            assert (got.status, got.value) == (data_pb2.OK, b"v%d" % i)
        again = next(p for p in await rpc.partitions(nodes[1]) if p.id == "default")
        assert again.node == first
        assert again.epoch > epoch
        print(f"{how}: serving again {back:.2f} s after the restart began")


async def test_a_node_id_can_be_set_on_first_start_only(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    node = cluster_node(tmp_path, "n0", etcd, "--node-id", "alpha")
    async with running(node):
        assert (await Stubs(stubs).status(node)).node_id == "alpha"
    other = cluster_node(tmp_path, "n0", etcd, "--node-id", "beta")
    with pytest.raises(RuntimeError, match="differs from the id"):
        await other.start()
    # One line saying so, not a traceback.
    assert "Traceback" not in other.stderr()


async def test_a_node_that_lost_its_data_directory_does_not_serve_empty(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    node = cluster_node(tmp_path, "n0", etcd, "--node-id", "alpha")
    rpc = Stubs(stubs)
    async with running(node):
        await eventually(lambda: _get_status(rpc, node, b"k", data_pb2.OK), what="serving")
        assert (await rpc.put(node, b"k", b"v")).status == data_pb2.OK
        await node.stop()
        shutil.rmtree(node.data_dir)  # a lost disk, or a new one with the old id
        await node.start()
        await eventually(lambda: _logged(node, "not on this disk"), what="the refusal logged")
        got = await rpc.get(node, b"k")
        assert got.status == data_pb2.BAD_NODE, got  # not an empty "not found"
        assert not (node.data_dir / "partitions" / "default").exists()


async def test_etcd_down_unavailable_after_the_lease_deadline_then_back(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    await _etcd_outage(tmp_path, etcd, stubs, seconds=6.0)


@pytest.mark.slow
async def test_etcd_down_for_ten_seconds(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    await _etcd_outage(tmp_path, etcd, stubs, seconds=10.0)


async def _etcd_outage(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs, *, seconds: float
) -> None:
    """etcd frozen (SIGSTOP) for ``seconds``: the node serves until its lease
    deadline, then answers UNAVAILABLE, and serves again once etcd is back."""
    node = cluster_node(tmp_path, "n0", etcd)
    rpc = Stubs(stubs)
    async with running(node):
        await eventually(lambda: _get_status(rpc, node, b"k", data_pb2.OK), what="serving")
        assert (await rpc.put(node, b"k", b"before")).status == data_pb2.OK
        watch_ended: list[float] = []
        ended = trio.Event()
        lost = time.monotonic()
        with rpc.data(node) as data:
            # A watch admitted before: it ends (UNAVAILABLE) once the node no
            # longer may serve, at its next message (a heartbeat when idle).
            responses = data.Watch(data_pb2.WatchRequest(start=b"k", end=b"l"), timeout=60)

            def read_until_error() -> None:
                try:
                    for _ in responses:
                        pass
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        watch_ended.append(time.monotonic() - lost)
                        trio.from_thread.run_sync(ended.set)

            async with trio.open_nursery() as watching:
                watching.start_soon(trio.to_thread.run_sync, read_until_error)
                etcd.pause()
                lost = time.monotonic()
                unavailable_after = await _poll_outage(rpc, node, etcd, lost, seconds)
                if seconds >= 10:
                    with trio.move_on_after(15):
                        await ended.wait()
                    assert watch_ended, "the watch did not end with UNAVAILABLE"
                responses.cancel()
        etcd.resume()
        back_at = time.monotonic()
        await eventually(lambda: _get_status(rpc, node, b"k", data_pb2.OK), what="serving again")
        recovered = time.monotonic() - back_at
        got = await rpc.get(node, b"k")
        assert got.value == b"before"
        assert (await rpc.put(node, b"k", b"after")).status == data_pb2.OK
        print(
            f"etcd frozen {seconds:.0f} s: UNAVAILABLE after {unavailable_after:.2f} s; "
            f"serving {recovered:.2f} s after etcd came back; "
            f"a watch ended {watch_ended[0] if watch_ended else float('nan'):.2f} s in"
        )


async def _poll_outage(
    rpc: Stubs, node: ServerProcess, etcd: EtcdProcess, lost: float, seconds: float
) -> float:
    """Gets through an outage: OK until the lease deadline, UNAVAILABLE after;
    the seconds it still served."""
    served_until = lost
    try:
        while time.monotonic() - lost < seconds:
            code = await rpc.get_code(node, b"k")
            if code == "OK":
                served_until = time.monotonic()
            else:
                assert code == "UNAVAILABLE", code
            await trio.sleep(0.05)
        unavailable_after = served_until - lost
        # The deadline: at most the TTL (2 s) after the last keepalive.
        assert unavailable_after < 2.0 + 0.5, unavailable_after
        assert await rpc.get_code(node, b"k") == "UNAVAILABLE"
    except BaseException:
        etcd.resume()
        raise
    return unavailable_after


async def test_a_bad_value_in_etcd_is_logged_and_not_acted_on(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    node = cluster_node(tmp_path, "n0", etcd)
    rpc = Stubs(stubs)
    async with running(node):
        await eventually(lambda: _get_status(rpc, node, b"k", data_pb2.OK), what="serving")
        assert (await rpc.put(node, b"k", b"kept")).status == data_pb2.OK
        async with open_etcd([etcd.endpoint]) as client:
            await client.put(b"/mkv/test/partitions/default", b"{not json")
            await client.put(b"/mkv/test/partitions/x", b'{"schema": 99}')
        await eventually(
            lambda: _logged(node, "ignoring a value in etcd"), what="the bad value logged"
        )
        # Not removed: the local copy stays on disk (not deleted as "removed").
        await trio.sleep(1.5)
        assert (tmp_path / "n0" / "partitions" / "default").is_dir()
        assert "deleting partition default" not in node.stderr()


async def _logged(node: ServerProcess, text: str) -> bool:
    return text in node.stderr()


async def test_a_node_cut_off_from_etcd_stops_serving_and_never_serves_what_another_leads(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    """The node leading ``default`` runs in a network namespace; nftables cut
    it off from etcd while it, etcd, the other node and the test go on. It
    stops serving within its lease deadline; once etcd has let its lease go,
    ``default`` is handed to the other node (as a move would), and the cut-off
    node answers nothing but UNAVAILABLE, and then BAD_NODE naming the new
    owner once it can reach etcd again."""
    if (why := netns.available()) is not None:
        pytest.skip(why)
    await etcd.stop()
    etcd.listen_host = "0.0.0.0"
    await etcd.start()
    rpc = Stubs(stubs)
    with netns.namespace() as ns:
        endpoint = f"http://{ns.host_ip}:{etcd.client_port}"
        cut = ServerProcess(
            tmp_path / "cut",
            *("--etcd", endpoint, "--cluster", "test", "--lease-ttl", "2"),
            data_host=ns.inside_ip,
            prefix=ns.prefix,
        )
        other = cluster_node(tmp_path, "other", etcd)
        async with running(cut, other):
            other_id = (await rpc.status(other)).node_id
            await eventually(lambda: _get_status(rpc, cut, b"k", data_pb2.OK), what="serving")
            assert (await rpc.put(cut, b"k", b"v")).status == data_pb2.OK
            answers: list[tuple[float, str]] = []
            ns.cut(etcd.client_port)
            lost = time.monotonic()

            async def record_answers(task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                while True:
                    answers.append((time.monotonic() - lost, await rpc.get_code(cut, b"k")))
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                await nursery.start(record_answers)
                await eventually(
                    lambda: _leaderless(rpc, other, "default"), what="the cut node's lease gone"
                )
                gone = time.monotonic() - lost
                async with open_etcd([etcd.endpoint]) as client:
                    key = b"/mkv/test/partitions/default"
                    kv, _ = await client.get(key)
                    assert kv is not None
                    record = PartitionRecord.decode("default", kv.value)
                    # Handed over empty ("new"): copying the data is a
                    # move's part, not this test's.
                    moved = attrs.evolve(record, replicas=(other_id,), isr=(other_id,), state="new")
                    await client.put(key, moved.encode())
                assert await leader_of(rpc, other, "default") == other_id
                await trio.sleep(1.0)
                ns.heal()
                healed = time.monotonic() - lost

                async def names_the_owner() -> bool:
                    wrong = await rpc.get(cut, b"k")
                    return wrong.hint.owner.address == other.data_addr

                await eventually(names_the_owner, what="BAD_NODE naming the new owner")
                nursery.cancel_scope.cancel()
            served = [t for t, code in answers if code == "OK"]
            last_ok = max(served, default=0.0)
            assert last_ok < 2.0 + 0.3, last_ok
            # It stopped before etcd could have handed its partition to anyone.
            assert last_ok < gone, (last_ok, gone)
            after = [code for t, code in answers if t > last_ok]
            assert set(after) <= {"UNAVAILABLE", "BAD_NODE"}, set(after)
            assert "OK" not in {code for t, code in answers if t > healed}
            print(
                f"cut off: served {last_ok:.2f} s more, then UNAVAILABLE; etcd let its "
                f"lease go after {gone:.2f} s; the partition moved, healed at {healed:.2f} s"
            )


async def _leaderless(rpc: Stubs, node: ServerProcess, partition_id: str) -> bool:
    return any(p.id == partition_id and not p.node for p in await rpc.partitions(node))


async def test_a_node_waiting_for_etcd_stops_on_sigterm(tmp_path: Path) -> None:
    """Unreachable etcd: the node waits to join (saying so), and a signal ends
    the wait rather than being held until etcd answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        node = cluster_node(tmp_path, "n0", _FakeEtcd(dead))  # type: ignore[arg-type]
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "mkv.cli.server",
                "serve",
                "--data-addr",
                "127.0.0.1:0",
                "--control-addr",
                "127.0.0.1:0",
                "--data-dir",
                str(node.data_dir),
                *node.extra_args,
            ],
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            output = b""
            with trio.fail_after(20):
                while b"cannot join cluster" not in output:
                    output += await process.stderr.receive_some()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
        finally:
            process.kill()
            await process.wait()
            await process.stderr.aclose()


@attrs.frozen
class _FakeEtcd:
    endpoint: str


async def test_a_split_in_cluster_mode_commits_both_ranges_in_etcd(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(2)]
    rpc = Stubs(stubs)
    async with running(*nodes):
        owner = (await rpc.status(nodes[0])).node_id
        await leader_of(rpc, nodes[1], "default")
        keys = [b"a%02d" % i for i in range(20)] + [b"x%02d" % i for i in range(20)]
        for key in keys:
            assert (await rpc.put(nodes[0], key, b"v" + key)).status == data_pb2.OK
        # A call forwarded already (marked) that reaches a node not leading
        # the partition is refused, naming the owner: never forwarded again.
        elsewhere = await _forwarded_error(
            nodes[1],
            "SplitPartition",
            control_pb2.SplitPartitionRequest(id="default", at=b"m"),
            control_pb2.SplitPartitionResponse,
        )
        assert nodes[0].control_addr in elsewhere
        with rpc.control(nodes[0]) as control:
            started = await call(
                control.SplitPartition,
                control_pb2.SplitPartitionRequest(id="default", at=b"m", new_id="upper"),
            )

            async def done() -> control_pb2.Operation | None:
                answer = await call(
                    control.GetOperation, control_pb2.GetOperationRequest(id=started.operation_id)
                )
                return answer.operation if answer.operation.state != control_pb2.RUNNING else None

            operation = await eventually(done, what="the split done")
        assert operation.state == control_pb2.DONE, operation.error_message

        async def split_map() -> data_pb2.PartitionMapResponse | None:
            answer = await rpc.map(nodes[1])
            ids = [p.id for p in answer.partitions]
            return answer if ids == ["default", "upper"] else None

        cluster_map = await eventually(split_map, what="both ranges in the other node's map")
        assert [(p.start, p.end) for p in cluster_map.partitions] == [(b"", b"m"), (b"m", b"")]
        assert {p.address for p in cluster_map.partitions} == {nodes[0].data_addr}
        table = {p.id: p for p in await rpc.partitions(nodes[1])}
        assert table["upper"].node == owner
        assert table["upper"].epoch > table["default"].epoch
        for key in keys:
            got = await rpc.get(nodes[0], key)
            assert (got.status, got.value) == (data_pb2.OK, b"v" + key)
            assert got.partition_id == ("default" if key < b"m" else "upper")
            wrong = await rpc.get(nodes[1], key)
            assert wrong.hint.owner.id == got.partition_id
        # A restart brings both back from the catalog and etcd alike.
        await nodes[0].stop()
        await nodes[0].start()
        for key in (keys[0], keys[-1]):
            await eventually(
                lambda key=key: _get_status(rpc, nodes[0], key, data_pb2.OK),  # type: ignore[misc]
                what="served after the restart",
            )
        # And merged back: one Txn gives default the whole range again.
        elsewhere = await _forwarded_error(
            nodes[1],
            "MergePartitions",
            control_pb2.MergePartitionsRequest(left="default", right="upper"),
            control_pb2.MergePartitionsResponse,
        )
        assert nodes[0].control_addr in elsewhere
        # A forwarded ListPartitions answers with what the node leads only
        # (nothing here), so it never fans out again.
        listed = await call_unary(
            parse_address(nodes[1].control_addr),
            CONTROL_SERVICE,
            "ListPartitions",
            control_pb2.ListPartitionsRequest(),
            control_pb2.ListPartitionsResponse,
            metadata=((FORWARDED, "test"),),
        )
        assert list(listed.partitions) == []
        with rpc.control(nodes[0]) as control:
            started = await call(
                control.MergePartitions,
                control_pb2.MergePartitionsRequest(left="default", right="upper"),
            )

            async def merged() -> control_pb2.Operation | None:
                answer = await call(
                    control.GetOperation, control_pb2.GetOperationRequest(id=started.operation_id)
                )
                return answer.operation if answer.operation.state != control_pb2.RUNNING else None

            operation = await eventually(merged, what="the merge done")
        assert operation.state == control_pb2.DONE, operation.error_message

        async def whole_map() -> bool:
            answer = await rpc.map(nodes[1])
            return [(p.id, p.start, p.end) for p in answer.partitions] == [("default", b"", b"")]

        await eventually(whole_map, what="one range in the other node's map")
        for key in keys:
            got = await rpc.get(nodes[0], key)
            assert (got.status, got.value, got.partition_id) == (data_pb2.OK, b"v" + key, "default")


async def test_a_restore_in_cluster_mode_lands_on_the_node_answering(
    tmp_path: Path, etcd: EtcdProcess, stubs: GrpcioStubs
) -> None:
    nodes = [cluster_node(tmp_path, f"n{i}", etcd) for i in range(2)]
    rpc = Stubs(stubs)
    async with running(*nodes):
        first, second = [(await rpc.status(node)).node_id for node in nodes]
        await leader_of(rpc, nodes[1], "default")
        for i in range(30):
            assert (await rpc.put(nodes[0], b"k%02d" % i, b"v%d" % i)).status == data_pb2.OK
        with rpc.control(nodes[0]) as control:
            started = await call(
                control.Snapshot, control_pb2.SnapshotRequest(partition_id="default")
            )

            async def taken() -> control_pb2.Operation | None:
                answer = await call(
                    control.GetOperation, control_pb2.GetOperationRequest(id=started.operation_id)
                )
                return answer.operation if answer.operation.state != control_pb2.RUNNING else None

            operation = await eventually(taken, what="the snapshot")
            assert operation.state == control_pb2.DONE, operation.error_message
            manifest = operation.snapshot.manifest_path
            # Elsewhere than the node answering: refused, naming why.
            elsewhere = await _error(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="r", snapshot=manifest, node=second),
            )
            assert elsewhere.code() == grpc.StatusCode.FAILED_PRECONDITION
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="default"))
            await call(
                control.AddPartition,
                control_pb2.AddPartitionRequest(id="x", start=b"x", end=b"y", node=second),
            )
            # Overlapping a partition on the other node: the cluster refuses,
            # and the copy restored here is removed again.
            clash = await _error(
                control.AddPartition, control_pb2.AddPartitionRequest(id="r", snapshot=manifest)
            )
            assert clash.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "partition x" in (clash.details() or "")
            assert not (nodes[0].data_dir / "partitions" / "r").exists()
            await call(control.RemovePartition, control_pb2.RemovePartitionRequest(id="x"))
            added = await call(
                control.AddPartition, control_pb2.AddPartitionRequest(id="r", snapshot=manifest)
            )
        assert (added.partition.node, added.partition.state) == (first, control_pb2.ACTIVE)
        assert added.partition.epoch > 0
        for i in range(30):
            got = await rpc.get(nodes[0], b"k%02d" % i)
            assert (got.status, got.value, got.partition_id) == (data_pb2.OK, b"v%d" % i, "r")
        wrong = await rpc.get(nodes[1], b"k00")
        assert wrong.hint.owner.address == nodes[0].data_addr
