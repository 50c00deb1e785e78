"""The blocking clients (mkv.connect, BlockingClient, BlockingAdminClient):
the async clients' methods from plain threads, many at once, and closing."""

from __future__ import annotations

import inspect
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mkv
from mkv.testing import node_in_thread

THREADS = 8
ROUNDS = 40


@pytest.fixture
def node(tmp_path: Path) -> Iterator[mkv.Node]:
    with node_in_thread(tmp_path / "data") as node:
        yield node


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_the_blocking_clients_have_the_async_clients_methods() -> None:
    assert public_methods(mkv.BlockingClient) - {"close"} == public_methods(mkv.Client)
    assert public_methods(mkv.BlockingAdminClient) - {"close"} == public_methods(mkv.AdminClient)
    for name in public_methods(mkv.Client) | public_methods(mkv.AdminClient):
        cls = mkv.Client if hasattr(mkv.Client, name) else mkv.AdminClient
        blocking = mkv.BlockingClient if cls is mkv.Client else mkv.BlockingAdminClient
        if name == "connect":
            continue  # **options, passed on unchanged
        assert list(inspect.signature(getattr(blocking, name)).parameters) == list(
            inspect.signature(getattr(cls, name)).parameters
        ), name


def test_round_trips_scan_watch_and_typed_errors(node: mkv.Node) -> None:
    with mkv.connect(node.data_address) as db:
        [first] = db.upsert({b"first": b""})
        [ack] = db.upsert({b"user:1": b"ada", "user:2": "grace"})
        assert db.get(b"user:1") == b"ada"
        assert db.get(b"nobody") is None
        item = db.get_item(b"user:2")
        assert item is not None
        assert item.seq == ack.seq
        assert [i and i.value for i in db.batch_get([b"user:2", b"x"])] == [b"grace", None]
        assert db.increment(b"n", 3) == 3
        assert db.increment_many({b"n": 1}) == [4]
        assert [k for k, _ in db.scan(b"user:", b"user;", page_size=1)] == [b"user:1", b"user:2"]
        with pytest.raises(mkv.ConditionFailedError):
            db.upsert({b"user:1": b"x"}, if_seq={b"user:1": 0})
        with pytest.raises(mkv.InvalidArgumentError, match="must not be empty"):
            db.upsert({b"": b"v"})
        [removed] = db.remove(b"user:2")
        assert removed.count == 1
        with db.watch(b"user:", b"user;", from_seq=first.seq) as changes:
            seen = [(c.key, c.value) for c in itertools.islice(changes, 3)]
            assert seen == [(b"user:1", b"ada"), (b"user:2", b"grace"), (b"user:2", None)]
            assert changes.position == removed.seq
        assert [p.id for p in db.partition_map()] == ["default"]
    with mkv.BlockingAdminClient.connect(node.control_address) as admin:
        [partition] = admin.list_partitions()
        assert partition.key_count == 3
        assert admin.node_status().version == mkv.__version__
        with pytest.raises(mkv.NotFoundError):
            admin.remove_partition("nope")
        done = admin.wait_operation(admin.snapshot("default", "blocking"), poll_interval=0.05)
        assert done.snapshot is not None
        assert admin.get_operation(done.id).state == "done"
        admin.wait_operation(admin.split_partition("default", b"user:2", new_id="upper"))
        assert [p.id for p in admin.list_partitions()] == ["default", "upper"]
        admin.wait_operation(admin.merge_partitions("default", "upper"))
        assert [p.id for p in admin.list_partitions()] == ["default"]


def test_threads_share_one_client(node: mkv.Node) -> None:
    """Plain threads doing round trips, scans and a watch through one client at once."""
    errors: list[BaseException] = []
    watched: list[mkv.Change] = []
    with mkv.connect(node.data_address) as db:
        [start] = db.upsert({b"start": b""})

        def writer(n: int) -> None:
            try:
                for i in range(ROUNDS):
                    key = b"t:%02d:%03d" % (n, i)
                    db.upsert({key: b"%d" % i})
                    assert db.get(key) == b"%d" % i
                    db.increment(b"counter")
                    if i % 10 == 0:
                        mine = [k for k, _ in db.scan(b"t:%02d:" % n, b"t:%02d;" % n)]
                        assert mine == [b"t:%02d:%03d" % (n, j) for j in range(i + 1)]
            except BaseException as exc:
                errors.append(exc)

        def watcher() -> None:
            try:
                with db.watch(b"t:", b"t;", from_seq=start.seq) as changes:
                    for change in changes:
                        watched.append(change)
                        if len(watched) == THREADS * ROUNDS:
                            return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        threads.append(threading.Thread(target=watcher))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert db.get(b"counter") == b"%d" % (THREADS * ROUNDS)
        assert sorted(c.key for c in watched) == sorted(
            b"t:%02d:%03d" % (n, i) for n in range(THREADS) for i in range(ROUNDS)
        )
        assert [c.seq for c in watched] == sorted(c.seq for c in watched)


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mkv-client")]


def test_closing_ends_calls_and_a_watch_in_another_thread(node: mkv.Node) -> None:
    db = mkv.connect(node.data_address)
    ended: list[BaseException] = []

    def watch_forever() -> None:
        try:
            with db.watch() as changes:
                for _ in changes:
                    pass
        except BaseException as exc:
            ended.append(exc)

    watching = threading.Thread(target=watch_forever)
    watching.start()
    db.upsert({b"k": b"v"})
    time.sleep(0.2)  # the watch is waiting for news
    db.close()
    watching.join(timeout=10)
    assert not watching.is_alive()
    assert len(ended) == 1
    assert isinstance(ended[0], mkv.UnavailableError)
    with pytest.raises(mkv.UnavailableError, match="closed"):
        db.get(b"k")
    db.close()  # again: nothing happens
    assert client_threads() == []  # the client's thread is gone


def test_connecting_to_nothing_is_unavailable_and_leaves_no_thread() -> None:
    with node_in_thread() as node:
        address = node.data_address
    with pytest.raises(mkv.UnavailableError, match="Cannot connect"):
        mkv.connect(address)
    assert client_threads() == []


def test_a_client_left_open_is_closed_at_interpreter_exit(node: mkv.Node) -> None:
    # Exit-time finalizers run newest first: this report, made before the
    # clients, runs after theirs and tells whether their threads were stopped.
    script = (
        "import sys, threading, weakref, mkv\n"
        "def report():\n"
        "    alive = [t.name for t in threading.enumerate() if t.name.startswith('mkv-')]\n"
        "    print('still running:', alive)\n"
        "anchor = type('Anchor', (), {})()\n"
        "weakref.finalize(anchor, report)\n"
        "db = mkv.connect(sys.argv[1])\n"
        "admin = mkv.BlockingAdminClient.connect(sys.argv[2])\n"
        "db.upsert({b'left': b'open'})\n"
        "print(len(admin.list_partitions()))\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            script,
            str(node.data_address),
            str(node.control_address),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\nstill running: []\n"
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    with mkv.connect(node.data_address) as db:
        assert db.get(b"left") == b"open"


def test_a_callback_on_the_clients_loop_may_not_call_it(node: mkv.Node) -> None:
    with mkv.BlockingAdminClient.connect(node.control_address) as admin:
        operation_id = admin.snapshot("default", "callback")
        with pytest.raises(RuntimeError, match="its own event loop"):
            admin.wait_operation(operation_id, on_progress=lambda _: admin.list_partitions())
        # Refused rather than deadlocked: the client still answers.
        assert admin.wait_operation(operation_id).state == "done"
