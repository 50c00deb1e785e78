"""The node-wide worker pool (mkv/worker.py): each lane's jobs run one at a
time and in the order submitted, whichever thread takes them; a lane whose
job blocks holds one thread and the other lanes go on; stopping a lane or the
pool loses no queued job and leaves no thread behind."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkv import worker
from mkv.worker import Lane, WorkerPool, WorkerThread


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


class _Recorder:
    """Records, per lane, the order its jobs ran in, and catches two jobs of
    one lane running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: set[int] = set()
        self.ran: dict[int, list[int]] = {}
        self.overlaps: list[int] = []
        self.threads: set[str] = set()
        self.busy = 0
        self.most_busy = 0

    def job(self, lane: int, index: int, pause: float) -> Callable[[], int]:
        def run() -> int:
            with self._lock:
                if lane in self.running:
                    self.overlaps.append(lane)
                self.running.add(lane)
                self.threads.add(threading.current_thread().name)
                self.busy += 1
                self.most_busy = max(self.most_busy, self.busy)
            # Long enough, now and then, for other threads to take the lane
            # if the pool ever handed it to two of them.
            time.sleep(pause)
            with self._lock:
                self.ran.setdefault(lane, []).append(index)
                self.running.discard(lane)
                self.busy -= 1
            return index

        return run


async def _drive(size: int, lanes: int, jobs: int, seed: int) -> None:
    """``jobs`` jobs on each of ``lanes`` lanes of a pool of ``size`` threads,
    submitted from many tasks in a shuffled order; checks each lane's order."""
    rng = random.Random(seed)
    recorder = _Recorder()
    pool = WorkerPool(size, name=f"mkv-test-pool-{seed}")
    try:
        lane_objects = [pool.lane(f"lane-{i}") for i in range(lanes)]
        submitted: dict[int, int] = dict.fromkeys(range(lanes), 0)
        answers: dict[int, list[int]] = {i: [] for i in range(lanes)}
        order = [lane for lane in range(lanes) for _ in range(jobs)]
        rng.shuffle(order)

        async def submit(lane: int, pause: float) -> None:
            # Numbered with no checkpoint before run_sync submits it: the
            # number is the submission order.
            index = submitted[lane]
            submitted[lane] += 1
            answers[lane].append(
                await lane_objects[lane].run_sync(recorder.job(lane, index, pause))
            )

        async with trio.open_nursery() as nursery:
            for lane in order:
                pause = 0.002 if rng.random() < 0.1 else 0.0
                nursery.start_soon(submit, lane, pause)
                if rng.random() < 0.3:
                    await trio.lowlevel.checkpoint()
        assert recorder.overlaps == []
        for lane in range(lanes):
            assert recorder.ran[lane] == list(range(jobs)), lane
            assert sorted(answers[lane]) == list(range(jobs))
        assert recorder.most_busy <= size
        for lane_object in lane_objects:
            await lane_object.stop()
    finally:
        await pool.aclose()
    assert _pool_threads(f"mkv-test-pool-{seed}") == []


async def test_jobs_of_a_lane_run_one_at_a_time_in_order_across_many_threads() -> None:
    await _drive(size=8, lanes=64, jobs=40, seed=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 6),
    lanes=st.integers(1, 12),
    jobs=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_lane_order_holds_for_any_pool_shape(size: int, lanes: int, jobs: int, seed: int) -> None:
    trio.run(_drive, size, lanes, jobs, seed)


async def test_the_pool_runs_lanes_in_parallel() -> None:
    """Not one thread in disguise: four lanes, each blocked until all four
    have started, finish only if four threads run them at once."""
    pool = WorkerPool(4, name="mkv-test-parallel")
    barrier = threading.Barrier(4, timeout=10)
    try:
        lanes = [pool.lane(f"lane-{i}") for i in range(4)]
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for lane in lanes:
                    nursery.start_soon(lane.run_sync, barrier.wait)
    finally:
        await pool.aclose()


async def test_a_blocked_lane_holds_one_thread_and_the_others_go_on() -> None:
    pool = WorkerPool(3, name="mkv-test-blocked")
    release = threading.Event()
    try:
        slow, *others = [pool.lane(f"lane-{i}") for i in range(20)]
        done: list[int] = []
        async with trio.open_nursery() as nursery:
            # The slow lane's first job blocks; its second waits behind it.
            nursery.start_soon(slow.run_sync, lambda: release.wait(30))
            # Submitted (Trio may start tasks in either order) before the next.
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(slow.run_sync, lambda: done.append(-1))
            await trio.sleep(0.05)
            with trio.fail_after(10):
                for _ in range(5):
                    async with trio.open_nursery() as round_:
                        for i, lane in enumerate(others):
                            round_.start_soon(lane.run_sync, lambda i=i: done.append(i))
            assert -1 not in done  # still behind the blocked job, in order
            assert len(done) == 5 * len(others)
            release.set()
        assert done[-1] == -1
    finally:
        release.set()
        await pool.aclose()


async def test_as_many_blocked_lanes_as_threads_make_the_rest_wait() -> None:
    """The documented bound: the pool's size is how many slow lanes it takes
    to stall everyone (docs/performance.md, "The node-wide pool")."""
    pool = WorkerPool(2, name="mkv-test-full")
    release = threading.Event()
    try:
        first, second, third = (pool.lane(f"lane-{i}") for i in range(3))
        done = trio.Event()

        async def third_job() -> None:
            await third.run_sync(lambda: None)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.run_sync, lambda: release.wait(30))
            nursery.start_soon(second.run_sync, lambda: release.wait(30))
            # Both queued before the third: the ready queue hands them the threads.
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(third_job)
            await trio.sleep(0.3)
            assert not done.is_set()
            release.set()
            with trio.fail_after(10):
                await done.wait()
    finally:
        release.set()
        await pool.aclose()


async def test_an_error_is_its_jobs_answer_and_the_lane_goes_on() -> None:
    pool = WorkerPool(2, name="mkv-test-error")
    try:
        lane = pool.lane("lane")

        def fail() -> None:
            raise OSError("disk on fire")

        with pytest.raises(OSError, match="disk on fire"):
            await lane.run_sync(fail)
        assert await lane.run_sync(lambda: 7) == 7
    finally:
        await pool.aclose()


def _hold_the_loop_until_done(pool: WorkerPool, lanes: list[Lane]) -> None:
    """Block the event loop (on purpose: called from a task) while every
    job queued on ``lanes`` runs on the pool's threads and posts its result."""
    deadline = time.monotonic() + 10
    while sum(len(lane._jobs) for lane in lanes) or pool._ready:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)  # the jobs taken last have posted their results


async def test_jobs_that_finish_together_wake_the_loop_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Results that arrive while the event loop is busy are handed back in
    one wake-up (a ``run_sync_soon`` each cost 64 partitions a third of
    their throughput), and each task still gets its own job's answer."""
    drains = 0
    real_drain = worker._Mailbox._drain

    def counting_drain(self: worker._Mailbox) -> None:
        nonlocal drains
        drains += 1
        real_drain(self)

    monkeypatch.setattr(worker._Mailbox, "_drain", counting_drain)
    pool = WorkerPool(4, name="mkv-test-mailbox")
    try:
        lanes = [pool.lane(f"lane-{i}") for i in range(64)]
        answers: dict[int, object] = {}
        submitted = trio.Event()
        started = 0

        def job(i: int) -> int:
            if i % 7 == 0:
                raise ValueError(i)
            return i * i

        async def ask(i: int) -> None:
            nonlocal started
            started += 1
            if started == len(lanes):
                submitted.set()
            try:
                answers[i] = await lanes[i].run_sync(functools.partial(job, i))
            except ValueError as exc:
                answers[i] = exc.args

        async with trio.open_nursery() as nursery:
            for i in range(len(lanes)):
                nursery.start_soon(ask, i)
            await submitted.wait()
            await trio.testing.wait_all_tasks_blocked()
            _hold_the_loop_until_done(pool, lanes)
        assert answers == {i: (i,) if i % 7 == 0 else i * i for i in range(64)}
        assert drains == 1
    finally:
        await pool.aclose()


def _append_slowly(ran: list[int], i: int) -> None:
    ran.append(i)
    time.sleep(0.0005)


async def test_stop_finishes_queued_jobs_then_refuses_more() -> None:
    pool = WorkerPool(2, name="mkv-test-stop")
    try:
        lane = pool.lane("lane")
        ran: list[int] = []
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(lane.run_sync, functools.partial(_append_slowly, ran, i))
            await trio.testing.wait_all_tasks_blocked()  # every job submitted
            await lane.stop()
            # Every job submitted before stop() ran before it returned.
            assert len(ran) == 50
        with pytest.raises(RuntimeError, match="stopped"):
            await lane.run_sync(lambda: None)
        # The pool's threads stay for the other lanes.
        assert len(_pool_threads("mkv-test-stop")) == 2
        assert await pool.lane("another").run_sync(lambda: 1) == 1
    finally:
        await pool.aclose()
    assert _pool_threads("mkv-test-stop") == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.lane("late")


async def test_a_worker_thread_is_one_thread_that_ends_on_stop() -> None:
    worker = WorkerThread("mkv-test-own")
    names = {await worker.run_sync(lambda: threading.current_thread().name) for _ in range(5)}
    assert names == {"mkv-test-own-0"}
    await worker.stop()
    assert _pool_threads("mkv-test-own") == []


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        WorkerPool(0)
