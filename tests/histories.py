"""Random concurrent histories that are linearizable by construction.

``simulate`` plays clients against a plain dict, the sequential reference:
each call is invoked, takes effect at one later moment (or never), and
returns at a later one, or is lost (indeterminate), or fails. Every decision
comes from ``choose``, so a ``random.Random`` or Hypothesis can drive it.

    python -m tests.histories    # time the checker on a 2,000-call history
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from tests.linearizability import (
    CounterModel,
    History,
    Model,
    Op,
    Outcome,
    RegisterModel,
    check,
)

# An int in range(n): ``random.Random(seed).randrange``, or a Hypothesis draw.
Choose = Callable[[int], int]

REGISTER_KINDS = ("read", "write", "cas", "delete")
COUNTER_KINDS = ("read", "incr")


@attrs.frozen
class Plan:
    """What to simulate.

    Args:
        kills: moments, evenly spread, at which the "server" is killed: every
            call in flight then takes effect or not, and is indeterminate.
        final_reads: after everything, one more process reads every key.
        values: what writes and CASes write; when empty, a new value each time.
    """

    processes: int
    keys: Sequence[Hashable]
    calls: int
    kinds: Sequence[str] = REGISTER_KINDS
    indeterminate_percent: int = 5
    failed_percent: int = 0
    kills: int = 0
    final_reads: bool = True
    values: Sequence[Any] = ()


@attrs.define
class _Call:
    token: int
    key: Hashable
    kind: str
    args: tuple[Any, ...]
    applied: bool = False
    result: Any = None


def apply(store: dict[Hashable, Any], key: Hashable, kind: str, args: tuple[Any, ...]) -> Any:
    """The sequential reference: one call on a dict, returning its result."""
    if kind == "read":
        return store.get(key)
    if kind == "write":
        store[key] = args[0]
        return None
    if kind == "delete":
        store.pop(key, None)
        return None
    if kind == "cas":
        expected, new = args
        if store.get(key) != expected:
            return False
        if new is None:
            store.pop(key, None)
        else:
            store[key] = new
        return True
    if kind == "incr":
        store[key] = store.get(key, 0) + args[0]
        return store[key]
    raise ValueError(f"no such call: {kind}")


def simulate(plan: Plan, choose: Choose) -> History:
    history = History()
    store: dict[Hashable, Any] = {}
    in_flight: list[_Call | None] = [None] * plan.processes
    seen: dict[tuple[int, Hashable], Any] = {}  # what each process last saw of each key
    kill_at = {plan.calls * (k + 1) // (plan.kills + 1) for k in range(plan.kills)}
    issued = 0

    def invoke(p: int) -> _Call:
        key = plan.keys[choose(len(plan.keys))]
        kind = plan.kinds[choose(len(plan.kinds))]
        value = plan.values[choose(len(plan.values))] if plan.values else f"v{issued}"
        args: tuple[Any, ...] = {
            "write": (value,),
            "cas": (seen.get((p, key)), value),
            "incr": (1 + choose(3),),
        }.get(kind, ())
        return _Call(history.invoke(p, key, kind, args), key, kind, args)

    while issued < plan.calls or any(in_flight):
        if issued in kill_at:
            kill_at.discard(issued)
            for p, call in enumerate(in_flight):
                if call is not None:
                    if not call.applied and choose(2):
                        apply(store, call.key, call.kind, call.args)
                    history.complete(call.token, Outcome.INDETERMINATE)
                    in_flight[p] = None
        ready = [p for p, call in enumerate(in_flight) if call or issued < plan.calls]
        p = ready[choose(len(ready))]
        call = in_flight[p]
        if call is None:
            in_flight[p] = invoke(p)
            issued += 1
        elif not call.applied:
            roll = choose(100)
            if roll < plan.failed_percent:
                history.complete(call.token, Outcome.FAILED)
                in_flight[p] = None
            elif roll < plan.failed_percent + plan.indeterminate_percent / 2:
                history.complete(call.token, Outcome.INDETERMINATE)  # lost on the way there
                in_flight[p] = None
            else:
                call.result = apply(store, call.key, call.kind, call.args)
                call.applied = True
        else:
            if choose(100) < plan.indeterminate_percent / 2:
                history.complete(call.token, Outcome.INDETERMINATE)  # lost on the way back
            else:
                history.complete(call.token, Outcome.OK, call.result)
                if call.kind == "read":
                    seen[p, call.key] = call.result
                elif call.kind == "write" or (call.kind == "cas" and call.result):
                    seen[p, call.key] = call.args[-1]
                elif call.kind == "delete":
                    seen[p, call.key] = None
            in_flight[p] = None
    if plan.final_reads:
        for key in plan.keys:
            token = history.invoke(plan.processes, key, "read")
            history.complete(token, Outcome.OK, store.get(key))
    return history


def benchmark_plan(**changes: Any) -> Plan:
    """The size issue 4's tests work at: 2,000 calls on 4 keys from 16 clients."""
    return attrs.evolve(Plan(16, [f"k{i}" for i in range(4)], 2000), **changes)


def report(label: str, ops: list[Op], model: Model) -> None:
    """Check ``ops`` and print one line: the verdict, model steps and wall time."""
    started = time.perf_counter()
    verdict = check(ops, model)
    elapsed = time.perf_counter() - started
    steps = sum(k.steps for k in verdict.keys)
    indeterminate = sum(op.outcome is Outcome.INDETERMINATE for op in ops)
    print(
        f"{label:<46} {len(ops):>5} calls {indeterminate:>4} indet. "
        f"{verdict.status.value:<17} {steps:>8} steps {elapsed * 1000:>8.1f} ms"
    )


def main(seeds: Sequence[int]) -> None:
    runs: list[tuple[str, Plan, Model]] = [
        ("registers, 5% lost", benchmark_plan(), RegisterModel()),
        ("registers, 5% lost, 3 kills", benchmark_plan(kills=3), RegisterModel()),
        (
            "counters, 5% lost, 3 kills",
            benchmark_plan(kinds=COUNTER_KINDS, kills=3),
            CounterModel(),
        ),
    ]
    for seed in seeds:
        for label, plan, model in runs:
            ops = simulate(plan, random.Random(seed).randrange).operations
            report(f"seed {seed}: {label}", ops, model)
            # The worst case: only a contradiction at the very end, so every order must fail.
            ops[-1] = attrs.evolve(ops[-1], result="never written")
            report("  ... its last read made impossible", ops, model)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 2, 3])
