"""The linearizability checker (tests/linearizability.py), on histories whose answer we know.

Hand-written classics first. Then Hypothesis: histories played against a
sequential reference (linearizable by construction, lost calls and kills
included) must pass; the same with one result made impossible must fail; and
on small random histories the checker must agree with a brute-force search
over every order, which has none of the checker's shortcuts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.histories import COUNTER_KINDS, REGISTER_KINDS, Plan, apply, benchmark_plan, simulate
from tests.linearizability import (
    CounterModel,
    History,
    Model,
    Op,
    Outcome,
    RegisterModel,
    Status,
    assert_linearizable,
    check,
)

OK, FAILED, INDETERMINATE = Outcome.OK, Outcome.FAILED, Outcome.INDETERMINATE


def call(history: History, process: int, kind: str, *args: Any, key: str = "k") -> int:
    return history.invoke(process, key, kind, args)


def sequential(*calls: tuple[Any, ...], key: str = "k") -> History:
    """One call after another, each ``(kind, args, result)``, all OK."""
    history = History()
    for kind, args, result in calls:
        history.complete(history.invoke(0, key, kind, args), OK, result)
    return history


# -- registers -----------------------------------------------------------------


def test_a_stale_read_after_a_completed_write_is_rejected() -> None:
    history = sequential(("write", ("a",), None), ("write", ("b",), None), ("read", (), "a"))
    verdict = check(history)
    assert verdict.status is Status.NOT_LINEARIZABLE
    # The explanation names the key, shows the state, and the read that cannot follow.
    text = str(verdict)
    assert "key 'k': not linearizable" in text
    assert "State then: 'b'" in text
    assert "read() -> 'a'" in text
    assert "cannot follow  <- must go before any other call completes" in text


@pytest.mark.parametrize("seen", [None, "a"])
def test_a_read_concurrent_with_a_write_may_see_either_side(seen: str | None) -> None:
    history = History()
    read = call(history, 1, "read")
    write = call(history, 0, "write", "a")
    history.complete(read, OK, seen)
    history.complete(write, OK)
    assert check(history).linearizable


def test_a_read_concurrent_with_a_write_sees_nothing_else() -> None:
    history = History()
    history.complete(call(history, 0, "write", "a"), OK)
    read = call(history, 1, "read")
    write = call(history, 0, "write", "b")
    history.complete(read, OK, "c")
    history.complete(write, OK)
    assert check(history).status is Status.NOT_LINEARIZABLE


def test_reads_may_not_see_concurrent_writes_in_two_orders() -> None:
    """Two readers disagree on the order of two concurrent writes: no single order explains both."""
    history = History()
    w1 = call(history, 0, "write", "a")
    w2 = call(history, 1, "write", "b")
    history.complete(w1, OK)
    history.complete(w2, OK)
    reads = [call(history, p, "read") for p in (2, 3, 2, 3)]
    for token, seen in zip(reads, ["a", "b", "b", "a"], strict=True):
        history.complete(token, OK, seen)
    assert check(history).status is Status.NOT_LINEARIZABLE


@pytest.mark.parametrize(
    ("swapped", "seen", "linearizable"),
    [
        ((True, True), "c", False),  # the lost update: both swapped, one swap is lost
        ((False, True), "c", True),
        ((True, False), "b", True),
        ((False, True), "b", False),  # the read saw the swap that failed
    ],
)
def test_two_cas_from_the_same_value_one_wins(
    swapped: tuple[bool, bool], seen: str, linearizable: bool
) -> None:
    history = sequential(("write", ("a",), None))
    first = call(history, 1, "cas", "a", "b")
    second = call(history, 2, "cas", "a", "c")
    history.complete(first, OK, swapped[0])
    history.complete(second, OK, swapped[1])
    history.complete(call(history, 3, "read"), OK, seen)
    assert check(history).linearizable is linearizable


def test_cas_expecting_none_means_the_key_must_not_exist() -> None:
    created = sequential(("cas", (None, "a"), True), ("cas", (None, "b"), False), ("read", (), "a"))
    assert check(created).linearizable
    recreated = sequential(("write", ("a",), None), ("cas", (None, "b"), True))
    assert check(recreated).status is Status.NOT_LINEARIZABLE
    after_delete = sequential(
        ("write", ("a",), None), ("delete", (), None), ("cas", (None, "b"), True)
    )
    assert check(after_delete).linearizable


def test_an_indeterminate_write_that_is_later_observed_is_accepted() -> None:
    history = sequential(("write", ("a",), None))
    lost = call(history, 0, "write", "b")
    history.complete(lost, INDETERMINATE)  # say, the server was killed
    history.complete(call(history, 1, "read"), OK, "a")  # not yet...
    history.complete(call(history, 1, "read"), OK, "b")  # ...and now it took effect
    assert check(history).linearizable


def test_an_indeterminate_write_that_is_never_observed_is_accepted() -> None:
    history = sequential(("write", ("a",), None))
    call(history, 0, "write", "b")  # never completes
    history.complete(call(history, 1, "read"), OK, "a")
    history.complete(call(history, 2, "read"), OK, "a")
    assert check(history).linearizable


def test_an_indeterminate_write_takes_effect_at_most_once() -> None:
    history = sequential(("write", ("a",), None))
    history.complete(call(history, 0, "write", "b"), INDETERMINATE)
    for seen in ["b", "a", "b"]:
        history.complete(call(history, 1, "read"), OK, seen)
    assert check(history).status is Status.NOT_LINEARIZABLE


def test_an_indeterminate_write_cannot_take_effect_before_it_was_invoked() -> None:
    history = sequential(("write", ("a",), None), ("read", (), "b"))
    history.complete(call(history, 0, "write", "b"), INDETERMINATE)
    assert check(history).status is Status.NOT_LINEARIZABLE


def test_a_read_of_a_value_nobody_wrote_is_rejected() -> None:
    history = sequential(("write", ("a",), None))
    call(history, 0, "write", "b")  # indeterminate writes do not excuse it either
    history.complete(call(history, 1, "read"), OK, "z")
    assert check(history).status is Status.NOT_LINEARIZABLE


def test_a_failed_call_did_nothing() -> None:
    history = sequential(("write", ("a",), None))
    history.complete(call(history, 0, "write", "b"), FAILED, "ignored")
    history.complete(call(history, 1, "read"), OK, "b")
    assert check(history).status is Status.NOT_LINEARIZABLE


def test_calls_whose_times_touch_count_as_concurrent() -> None:
    """With a coarse clock a completion and an invocation can share a time: no order is implied."""

    def op(
        index: int, kind: str, args: tuple[Any, ...], at: tuple[float, float], result: Any
    ) -> Op:
        return Op(index, index, "k", kind, args, at[0], at[1], OK, result)

    history = [op(0, "write", ("a",), (1.0, 2.0), None), op(1, "read", (), (2.0, 3.0), None)]
    assert check(history).linearizable
    history[1] = attrs.evolve(history[1], invoked=2.5)
    assert not check(history).linearizable


# -- counters ------------------------------------------------------------------


def test_concurrent_increments_end_at_their_sum() -> None:
    history = History()
    tokens = [call(history, p, "incr", 1) for p in range(3)]
    for token, result in zip(tokens, [3, 1, 2], strict=True):
        history.complete(token, OK, result)
    history.complete(call(history, 0, "read"), OK, 3)
    assert check(history, CounterModel()).linearizable


def test_two_increments_cannot_return_the_same_value() -> None:
    history = History()
    tokens = [call(history, p, "incr", 1) for p in range(2)]
    for token in tokens:
        history.complete(token, OK, 1)
    assert check(history, CounterModel()).status is Status.NOT_LINEARIZABLE


def test_a_lost_increment_is_rejected() -> None:
    history = sequential(("incr", (1,), 1), ("incr", (1,), 2), ("read", (), 1))
    assert check(history, CounterModel()).status is Status.NOT_LINEARIZABLE


def test_an_indeterminate_increment_counts_once_or_not_at_all() -> None:
    for final, linearizable in [(2, True), (3, True), (4, False)]:
        history = sequential(("incr", (1,), 1))
        history.complete(call(history, 1, "incr", 1), INDETERMINATE)
        history.complete(call(history, 0, "incr", 1), OK, 2)  # without it, or...
        history.complete(call(history, 0, "incr", 0), OK, final)  # ...with it, later
        assert check(history, CounterModel()).linearizable is linearizable, final


def test_a_counter_starts_missing_and_incr_creates_it_at_zero() -> None:
    history = sequential(("read", (), None), ("incr", (5,), 5), ("read", (), 5))
    assert check(history, CounterModel()).linearizable
    assert not check(sequential(("read", (), 0)), CounterModel()).linearizable


# -- the verdict, keys, budget, recorder -------------------------------------


def test_keys_are_checked_independently_and_named_in_the_explanation() -> None:
    history = History()
    history.complete(call(history, 0, "write", "a", key="good"), OK)
    history.complete(call(history, 0, "incr", 2, key="count"), OK, 2)
    history.complete(call(history, 1, "read", key="good"), OK, "a")
    history.complete(call(history, 1, "incr", 2, key="count"), OK, 3)
    verdict = check(history, {"good": RegisterModel(), "count": CounterModel()})
    assert verdict.status is Status.NOT_LINEARIZABLE
    statuses = {k.key: k.status for k in verdict.keys}
    assert statuses == {"good": Status.LINEARIZABLE, "count": Status.NOT_LINEARIZABLE}
    assert "key 'count'" in str(verdict)
    assert "key 'good'" not in str(verdict)
    with pytest.raises(AssertionError, match="key 'count': not linearizable"):
        assert_linearizable(history, {"good": RegisterModel(), "count": CounterModel()})


def test_a_search_past_its_budget_is_inconclusive_not_a_hang() -> None:
    # Lost increments of different sizes, then a total they cannot make:
    # refuting it means trying every subset of them.
    history = History()
    for delta in range(1, 13):
        call(history, delta, "incr", 2**delta)
    history.complete(call(history, 0, "read"), OK, 1)
    verdict = check(history, CounterModel(), budget=500)
    assert verdict.status is Status.INCONCLUSIVE
    assert re.search(r"inconclusive after 50\d model steps \(budget 500\)", str(verdict))
    assert "Raise the budget" in str(verdict)
    with pytest.raises(AssertionError, match="inconclusive"):
        assert_linearizable(history, CounterModel(), budget=500)
    assert check(history, CounterModel()).status is Status.NOT_LINEARIZABLE


def test_the_recorder_counts_a_call_that_never_returned_as_indeterminate() -> None:
    history = History()
    token = call(history, 0, "write", "a")
    [op] = history.operations
    assert (op.outcome, op.completed) == (INDETERMINATE, None)
    history.complete(token, OK)
    assert history.operations[0].outcome is OK
    with pytest.raises(ValueError, match="already completed"):
        history.complete(token, OK)


def test_the_recorder_takes_any_clock() -> None:
    ticks = iter([10.5, 11.25])
    history = History(clock=lambda: next(ticks))
    history.complete(call(history, 0, "read"), OK, None)
    [op] = history
    assert (op.invoked, op.completed) == (10.5, 11.25)


def test_an_ok_call_needs_a_completion() -> None:
    op = Op(0, 0, "k", "read", (), 1.0, None, OK, None)
    with pytest.raises(ValueError, match="needs a completion"):
        check([op])


def test_a_model_refuses_calls_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="RegisterModel has no operation 'incr'"):
        check(sequential(("incr", (1,), 1)))


# -- generated histories ---------------------------------------------------------


def chooser(data: st.DataObject) -> Callable[[int], int]:
    return lambda n: data.draw(st.integers(0, n - 1))


# Clients that read and swap more than they write: lost CAS updates to catch.
CONTENDED_KINDS = ("read", "read", "cas", "cas", "cas", "write")

plans = st.builds(
    Plan,
    processes=st.integers(1, 5),
    keys=st.sampled_from([["k"], ["k", "l"]]),
    calls=st.integers(0, 30),
    kinds=st.sampled_from([REGISTER_KINDS, CONTENDED_KINDS, COUNTER_KINDS]),
    indeterminate_percent=st.sampled_from([0, 10, 40]),
    failed_percent=st.sampled_from([0, 10]),
    kills=st.integers(0, 2),
)


def model_for(plan: Plan) -> Model:
    return CounterModel() if plan.kinds == COUNTER_KINDS else RegisterModel()


@settings(deadline=None)
@given(plan=plans, data=st.data())
def test_histories_played_against_the_reference_are_linearizable(
    plan: Plan, data: st.DataObject
) -> None:
    history = simulate(plan, chooser(data))
    verdict = check(history, model_for(plan))
    assert verdict.linearizable, verdict


def impossible_results(ops: list[Op]) -> dict[str, list[tuple[int, Any]]]:
    """Changes of one result, as (position, new result), that no order can explain, by kind.

    They rely on how ``simulate`` plays ``plans``: every value it writes is new
    (written by one call only, never None), and increments are positive.
    """
    known = [(n, op) for n, op in enumerate(ops) if op.known]
    reads = [(n, op) for n, op in known if op.kind == "read"]
    writes = [op for _, op in known if op.kind in ("write", "delete")]
    swaps = [(n, op) for n, op in known if op.kind == "cas" and op.args[0] is not None]
    incrs = [(n, op) for n, op in known if op.kind == "incr"]
    changes = {
        "a read of a value nobody wrote": [(n, "never written") for n, _ in reads],
        "a read of a value overwritten before the read began": [
            (n, old.args[0])
            for n, read in reads
            for overwrite in writes
            if overwrite.key == read.key and overwrite.completed < read.invoked
            for old in writes
            if old.key == read.key and old.kind == "write" and old.completed < overwrite.invoked
        ],
        "two CASes succeeding from the same value": [
            (n, True)
            for n, cas in swaps
            for m, other in swaps
            if m != n
            and other.result is True
            and (other.key, other.args[0]) == (cas.key, cas.args[0])
        ],
        "two increments of one counter ending at the same value": [
            (n, other.result)
            for n, incr in incrs
            for m, other in incrs
            if m != n and other.key == incr.key
        ],
    }
    return {
        kind: [(n, result) for n, result in found if ops[n].result != result]
        for kind, found in changes.items()
    }


@settings(deadline=None)
@given(plan=plans, data=st.data())
def test_a_history_with_one_impossible_result_is_rejected(plan: Plan, data: st.DataObject) -> None:
    ops = simulate(plan, chooser(data)).operations
    changes = impossible_results(ops)
    kind = data.draw(st.sampled_from(sorted(kind for kind, found in changes.items() if found)))
    n, result = data.draw(st.sampled_from(changes[kind]))
    ops[n] = attrs.evolve(ops[n], result=result)
    verdict = check(ops, model_for(plan))
    assert verdict.status is Status.NOT_LINEARIZABLE, (ops[n], verdict)


# -- against brute force -------------------------------------------------------


def linearizable_by_brute_force(ops: list[Op]) -> bool:
    """Try every order of every subset of the indeterminate calls: no memo, no shortcut."""

    def extend(store: dict[Hashable, Any], remaining: list[Op]) -> bool:
        if not any(op.known for op in remaining):
            return True
        for op in remaining:
            if any(other.known and other.completed < op.invoked for other in remaining):
                continue  # something that must come first is still left
            after = dict(store)
            try:
                result = apply(after, op.key, op.kind, op.args)
            except TypeError:  # incr of a value that is not a number
                continue
            if op.known and result != op.result:
                continue
            if extend(after, [other for other in remaining if other is not op]):
                return True
        return False

    return extend({}, [op for op in ops if op.outcome is not FAILED])


@st.composite
def random_histories(draw: st.DrawFn, counter: bool) -> list[Op]:
    """A few calls with random times, outcomes and results: mostly not linearizable."""
    values = st.sampled_from([1, 2, 3] if counter else ["a", "b", "c"])
    kinds = ["read", "write", "delete", "incr" if counter else "cas"]
    ops = []
    for index in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(kinds))
        args: tuple[Any, ...] = {
            "read": (),
            "write": (draw(values),),
            "delete": (),
            "incr": (draw(values),),
            "cas": (draw(values | st.none()), draw(values | st.none())),
        }[kind]
        result = {
            "read": draw(values | st.none()),
            "cas": draw(st.booleans()),
            "incr": draw(st.integers(1, 7)),
        }.get(kind)
        invoked = draw(st.integers(0, 8))
        completed = invoked + draw(st.integers(0, 4))
        outcome = draw(st.sampled_from([OK, OK, OK, INDETERMINATE, FAILED]))
        key = draw(st.sampled_from(["k", "l"])) if index % 3 == 2 else "k"
        ops.append(Op(index, index, key, kind, args, invoked, completed, outcome, result))
    return ops


@st.composite
def near_misses(draw: st.DrawFn, counter: bool) -> list[Op]:
    """Small simulated histories, half of them with one result changed to something plausible."""
    plan = Plan(
        processes=draw(st.integers(1, 4)),
        keys=draw(st.sampled_from([["k"], ["k", "l"]])),
        calls=draw(st.integers(1, 6)),
        kinds=COUNTER_KINDS if counter else REGISTER_KINDS,
        indeterminate_percent=draw(st.sampled_from([0, 30, 60])),
        kills=draw(st.integers(0, 1)),
        final_reads=draw(st.booleans()),
        values=() if counter else draw(st.sampled_from([(), ("a", "b")])),
    )
    ops = simulate(plan, lambda n: draw(st.integers(0, n - 1))).operations
    changeable = [n for n, op in enumerate(ops) if op.known and op.kind in ("read", "cas", "incr")]
    if changeable and draw(st.booleans()):
        n = draw(st.sampled_from(changeable))
        written = [None, *(op.args[-1] for op in ops if op.kind in ("write", "cas"))]
        result = draw(
            {
                "read": st.integers(0, 6) | st.none() if counter else st.sampled_from(written),
                "cas": st.booleans(),
                "incr": st.integers(1, 6),
            }[ops[n].kind]
        )
        ops[n] = attrs.evolve(ops[n], result=result)
    return ops


@settings(max_examples=300, deadline=None)
@given(counter=st.booleans(), data=st.data())
def test_the_checker_agrees_with_brute_force(counter: bool, data: st.DataObject) -> None:
    ops = data.draw(random_histories(counter) | near_misses(counter))
    verdict = check(ops, CounterModel() if counter else RegisterModel())
    assert verdict.linearizable is linearizable_by_brute_force(ops), verdict


# -- at the size of the server's tests ---------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "model"), [(REGISTER_KINDS, RegisterModel()), (COUNTER_KINDS, CounterModel())]
)
def test_two_thousand_calls_from_sixteen_clients_with_kills_check_in_few_steps(
    kinds: tuple[str, ...], model: Model
) -> None:
    """The size issue 4's server tests record; steps, not seconds, so the bound is exact.

    ``python -m tests.histories`` prints the seconds: 20-35 ms for such
    histories, up to 1.6 s to refute one with its last read made impossible.
    """
    ops = simulate(benchmark_plan(kinds=kinds, kills=3), random.Random(4).randrange).operations
    verdict = check(ops, model)
    assert verdict.linearizable, verdict
    assert sum(k.steps for k in verdict.keys) < 50_000
    ops[-1] = attrs.evolve(ops[-1], result="never written")
    assert check(ops, model).status is Status.NOT_LINEARIZABLE
