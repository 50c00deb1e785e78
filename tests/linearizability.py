"""A linearizability checker for recorded histories of key-value operations.

A test records what its clients did (``History``: an invocation, then an
outcome, for every call) and asks whether some order of the calls that took
effect explains every result while respecting real time (``check``). Sans-I/O:
nothing here knows about Trio, gRPC or mkv.

Outcomes:
    OK:            the call returned; its result is known.
    FAILED:        the call definitely did not take effect (bad input, say).
                   A CAS whose condition failed is OK with result False.
    INDETERMINATE: timeout, lost connection, killed server: the call may have
                   taken effect at any moment after its invocation, or never.

The search is Wing & Gong's, with Lowe's just-in-time linearization and the
memo of (linearized set, model state) that Knossos and Porcupine use: walk the
calls in real-time order, linearize any call invoked before the earliest
pending completion, backtrack when stuck. Each key is checked on its own
(linearizability is local, so a history is linearizable exactly when each
key's is); this needs every operation to touch one key.

Indeterminate calls complete at infinity: they never force anything, may be
linearized at any later point, or left out. They are what makes a history with
a ``kill -9`` in it expensive, so the search prunes, each time keeping only
what cannot change the verdict (tests/test_linearizability_checker.py checks
it against a brute-force search):

- a known call that never changes the state (a read, a failed CAS: the
  model's ``read_only``) goes as soon as it is legal, and is tried nowhere else;
- an indeterminate call that would leave the state as it is is never
  linearized: leaving it out is as good. Indeterminate calls are tried after
  the known ones;
- of pending indeterminate calls with the same kind and arguments
  (``incr(1)`` five times) only the earliest is tried: they are interchangeable;
- a configuration is skipped when one with the same known calls and state and
  a subset of its indeterminate calls was already reached: it can do no more;
- ``RegisterModel.prepare`` makes every value that no call compares with one
  value, so the many lost writes nobody saw count as one.

A step budget bounds the search: past it the verdict is INCONCLUSIVE, never a
hang. For scale (``python -m tests.histories``, CPython 3.11 on a shared
2-vCPU machine): 2,000 calls on 4 keys from 16 clients, 5-8% of them
indeterminate (5% lost calls, three kills), check in 6-13 thousand model steps,
20-35 ms. Refuting the same history with its very last read made impossible,
the worst case since every order of the whole history must fail, takes 19-580
thousand steps, 0.04-1.6 s; a stale read mid-history, ~0.15 s.

Recording a conditional write on a sequence number (``if_seq``) as a CAS:
when every write writes a new value, a sequence number names one value, so
``if_seq=N`` is ``cas(v, new)`` with ``v`` the value read at N (None for 0).
"""

from __future__ import annotations

import enum
import itertools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

__all__ = [
    "DEFAULT_BUDGET",
    "CounterModel",
    "History",
    "KeyResult",
    "Model",
    "Op",
    "Outcome",
    "RegisterModel",
    "Status",
    "Verdict",
    "assert_linearizable",
    "check",
]

# Model steps per key before a search gives up as inconclusive: a few seconds
# of CPython, and more than refuting a 2,000-call history has needed.
DEFAULT_BUDGET = 1_000_000

# How many linearized operations an explanation shows before the stuck point.
CONTEXT = 8


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    INDETERMINATE = "indeterminate"


@attrs.frozen
class Op:
    """One call: who made it, on which key, what it asked, when, and how it ended.

    ``invoked`` and ``completed`` are comparable times: monotonic seconds or
    event numbers. ``completed`` is None for a call that never returned.
    """

    index: int
    process: Hashable
    key: Hashable
    kind: str
    args: tuple[Any, ...]
    invoked: float
    completed: float | None
    outcome: Outcome
    result: Any = None

    @property
    def known(self) -> bool:
        """Whether the call returned: it took effect, with this result."""
        return self.outcome is Outcome.OK

    def returned(self, value: Any) -> bool:
        """Whether the call could have returned ``value``: always, if its result is unknown."""
        return self.outcome is not Outcome.OK or bool(self.result == value)

    def __str__(self) -> str:
        call = f"{self.kind}({', '.join(map(repr, self.args))})"
        ended = f"-> {self.result!r}" if self.known else f"-> ? ({self.outcome.value})"
        completed = _time(self.completed) if self.known else "..."
        return (
            f"#{self.index} process {self.process}: {call} {ended}"
            f"  [{_time(self.invoked)}, {completed}]"
        )


def _time(t: float | None) -> str:
    return f"{t:.6f}" if isinstance(t, float) else str(t)


class History:
    """A recorder for a test's calls, in the order the test sees them happen.

    Call ``invoke`` just before sending a request and ``complete`` just after
    its answer (or its failure) arrives. Not thread-safe: Trio needs no more::

        token = history.invoke(client_id, key, "cas", (expected, new))
        try:
            swapped = await ...  # the conditional write
        except InvalidArgumentError:  # refused: it did nothing
            history.complete(token, Outcome.FAILED)
        except (UnavailableError, trio.TooSlowError, ...):  # it may have happened
            history.complete(token, Outcome.INDETERMINATE)
        else:
            history.complete(token, Outcome.OK, swapped)

    A client may go on to its next call after an indeterminate one: nothing
    here assumes one call at a time per process.

    Args:
        clock: where times come from. The default numbers events 0, 1, 2...,
            which is exact within one event loop; pass ``time.monotonic`` to
            merge histories from several processes.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock: Callable[[], float] = clock or itertools.count().__next__
        self._ops: list[Op] = []

    def invoke(self, process: Hashable, key: Hashable, kind: str, args: Sequence[Any] = ()) -> int:
        """Record a call about to be made; returns the token for ``complete``."""
        token = len(self._ops)
        self._ops.append(
            Op(token, process, key, kind, tuple(args), self._clock(), None, Outcome.INDETERMINATE)
        )
        return token

    def complete(self, token: int, outcome: Outcome, result: Any = None) -> None:
        """Record how the call ``token`` ended; ``result`` counts only when OK."""
        op = self._ops[token]
        if op.completed is not None:
            raise ValueError(f"operation #{token} was already completed: {op}")
        self._ops[token] = attrs.evolve(
            op,
            completed=self._clock(),
            outcome=outcome,
            result=result if outcome is Outcome.OK else None,
        )

    @property
    def operations(self) -> list[Op]:
        """Every call so far; one not yet completed counts as indeterminate."""
        return list(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)


class Model(Protocol):
    """A sequential specification of one key.

    States must be hashable and compare equal exactly when they behave alike.
    ``step`` must depend only on the state and the op's kind, args and result
    (not on who called or when), and must be deterministic in its next state.
    For an op whose result is unknown (``not op.known``) it must accept any
    result the op could have returned; ``op.returned(x)`` says so.

    Two more methods are optional, and make the search faster:

    ``read_only(op) -> bool``: True if ``op`` never changes the state where it
    is legal (a read, a CAS that failed). Such a call, if it returned, is
    linearized as soon as it is legal, with no alternative tried; if it is
    indeterminate, it is left out.

    ``prepare(ops) -> ops``: the key's calls, one for one and in the same
    order, rewritten into an equivalent but cheaper form (see
    ``RegisterModel.prepare``).
    """

    def initial(self) -> Hashable: ...

    def step(self, state: Any, op: Op) -> tuple[bool, Hashable]:
        """Whether ``op`` may follow in ``state``, and the state after it."""
        ...


class _Unobserved:
    """A value written that no call ever compares with: all such values act alike."""

    def __repr__(self) -> str:
        return "<a value no call observes>"


UNOBSERVED = _Unobserved()


class RegisterModel:
    """A key's value, or None while it does not exist.

    Operations: ``read()`` -> value or None; ``write(value)``; ``delete()``;
    ``cas(expected, new)`` -> True if the value equalled ``expected`` (None:
    the key must not exist) and is now ``new`` (None: deleted), else False.
    """

    def initial(self) -> Hashable:
        return None

    def prepare(self, ops: list[Op]) -> list[Op]:
        """Write one UNOBSERVED value for every value that no read returns and no CAS expects.

        Calls only ever compare the value with a read's result or a CAS's
        expected value, so values that neither mentions are interchangeable;
        making them equal lets states that only differ in them meet in the memo,
        and lets the search try one of many lost writes instead of each.
        """
        observed = {op.result for op in ops if op.kind == "read" and op.known}
        observed.update(op.args[0] for op in ops if op.kind == "cas")
        prepared = []
        for op in ops:
            written = op.args[-1] if op.kind in ("write", "cas") else None
            if written is not None and written not in observed:
                op = attrs.evolve(op, args=(*op.args[:-1], UNOBSERVED))
            prepared.append(op)
        return prepared

    def read_only(self, op: Op) -> bool:
        return op.kind == "read" or (op.kind == "cas" and op.known and op.result is False)

    def step(self, state: Any, op: Op) -> tuple[bool, Hashable]:
        kind = op.kind
        if kind == "read":
            return op.returned(state), state
        if kind == "write":
            return True, op.args[0]
        if kind == "delete":
            return True, None
        if kind == "cas":
            expected, new = op.args
            if state == expected:
                return op.returned(True), new
            return op.returned(False), state
        raise ValueError(f"{type(self).__name__} has no operation {kind!r}: {op}")


class CounterModel(RegisterModel):
    """A register that also counts: ``incr(delta)`` -> the new value.

    A missing key counts as 0 (``incr`` creates it); ``read`` of a missing
    key returns None. An ``incr`` of a value that is not an int cannot succeed.
    """

    def prepare(self, ops: list[Op]) -> list[Op]:
        return ops  # ``incr`` computes with the value: none is interchangeable

    def step(self, state: Any, op: Op) -> tuple[bool, Hashable]:
        if op.kind == "incr":
            if state is not None and not isinstance(state, int):
                return False, state
            new = (state or 0) + op.args[0]
            return op.returned(new), new
        return super().step(state, op)


class Status(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    INCONCLUSIVE = "inconclusive"


@attrs.frozen
class KeyResult:
    """The verdict on one key; ``explanation`` is empty when it is linearizable."""

    key: Hashable
    status: Status
    operations: int
    steps: int
    explanation: str = ""


@attrs.frozen
class Verdict:
    """The verdict on a whole history: not linearizable if any key is not."""

    status: Status
    keys: tuple[KeyResult, ...]

    @property
    def linearizable(self) -> bool:
        return self.status is Status.LINEARIZABLE

    def __str__(self) -> str:
        total = sum(k.operations for k in self.keys)
        lines = [f"history of {total} operations on {len(self.keys)} keys: {self.status.value}"]
        lines += [k.explanation for k in self.keys if k.status is not Status.LINEARIZABLE]
        return "\n".join(lines)


def check(
    history: Iterable[Op],
    model: Model | Mapping[Hashable, Model] | None = None,
    *,
    budget: int = DEFAULT_BUDGET,
) -> Verdict:
    """Check a history key by key.

    Args:
        history: the calls, in any order (a ``History`` will do).
        model: the sequential specification of every key, or one per key;
            ``RegisterModel()`` when None.
        budget: model steps allowed per key before that key is inconclusive.

    Returns:
        NOT_LINEARIZABLE if some key is, else INCONCLUSIVE if some key ran out
        of budget, else LINEARIZABLE; with an explanation per bad key.
    """
    by_key: dict[Hashable, list[Op]] = defaultdict(list)
    for op in history:
        if op.outcome is Outcome.OK and (op.completed is None or op.completed < op.invoked):
            raise ValueError(f"an OK operation needs a completion after its invocation: {op}")
        if op.outcome is not Outcome.FAILED:  # it did nothing, so it constrains nothing
            by_key[op.key].append(op)
    results = []
    for key, ops in by_key.items():
        if model is None:
            key_model: Model = RegisterModel()
        elif isinstance(model, Mapping):
            key_model = model[key]
        else:
            key_model = model
        results.append(_Search(key, ops, key_model, budget).run())
    statuses = {r.status for r in results}
    worst = (s for s in (Status.NOT_LINEARIZABLE, Status.INCONCLUSIVE) if s in statuses)
    return Verdict(next(worst, Status.LINEARIZABLE), tuple(results))


def assert_linearizable(
    history: Iterable[Op],
    model: Model | Mapping[Hashable, Model] | None = None,
    *,
    budget: int = DEFAULT_BUDGET,
) -> Verdict:
    """``check``, raising AssertionError with the explanation unless linearizable."""
    verdict = check(history, model, budget=budget)
    if not verdict.linearizable:
        raise AssertionError(str(verdict))
    return verdict


class _Search:
    """The search over one key's calls (OK and indeterminate ones only).

    The calls' invocations and completions form a doubly linked list in time
    order (at equal times invocations first, so calls that touch count as
    concurrent). Linearizing a call lifts its entries out of the list, and
    backtracking puts them back, in reverse order. The calls that may go next
    are those invoked before the first completion left in the list.
    Indeterminate calls have no completion entry: theirs is at infinity.
    """

    def __init__(self, key: Hashable, ops: list[Op], model: Model, budget: int) -> None:
        self.key = key
        self.model = model
        self.budget = budget
        self.steps = 0
        self.count = len(ops)
        read_only: Callable[[Op], bool] = getattr(model, "read_only", lambda op: False)
        prepare = getattr(model, "prepare", None)
        prepared = ops if prepare is None else prepare(ops)
        # An indeterminate call that changes nothing can always be left out.
        pairs = [
            (op, rec)
            for op, rec in zip(prepared, ops, strict=True)
            if op.known or not read_only(op)
        ]
        pairs.sort(key=lambda pair: (pair[0].invoked, pair[0].index))
        self.ops = [op for op, _ in pairs]
        self.recorded = [op for _, op in pairs]  # explanations show the calls as recorded
        self.known = [op.known for op in self.ops]
        self.read_only = [read_only(op) for op in self.ops]
        # Indeterminate calls with the same kind and arguments are interchangeable.
        alike: dict[tuple[str, tuple[Any, ...]], int] = {}
        self.alike = [alike.setdefault((op.kind, op.args), len(alike)) for op in self.ops]
        events: list[tuple[float, int, int]] = []
        for i, op in enumerate(self.ops):
            events.append((op.invoked, 0, i))
            if op.known:
                assert op.completed is not None
                events.append((op.completed, 1, i))
        events.sort()
        # Entry 0 is the head; entries 1..m the events; 0 also ends the list.
        m = len(events)
        self.next = [*range(1, m + 1), 0]
        self.prev = [0, *range(m)]
        self.op_at = [0, *(i for _, _, i in events)]
        self.is_completion = [False, *(end == 1 for _, end, _ in events)]
        self.entries: list[list[int]] = [[] for _ in self.ops]
        for entry, (_, _, i) in enumerate(events, start=1):
            self.entries[i].append(entry)
        # For the explanation: the deepest point reached (most known calls linearized).
        self.best_remaining = sum(self.known) + 1
        self.best_order: list[int] = []
        self.best_window: tuple[list[int], list[int], int | None] = ([], [], None)

    def step(self, state: Any, i: int) -> tuple[bool, Hashable]:
        self.steps += 1
        return self.model.step(state, self.ops[i])

    def lift(self, i: int) -> None:
        nxt, prv = self.next, self.prev
        for entry in self.entries[i]:
            nxt[prv[entry]] = nxt[entry]
            prv[nxt[entry]] = prv[entry]

    def unlift(self, i: int) -> None:
        nxt, prv = self.next, self.prev
        for entry in reversed(self.entries[i]):
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry

    def window(self) -> tuple[list[int], list[int], int | None]:
        """The known and the indeterminate calls that may go next, and the call that must."""
        known: list[int] = []
        unknown: list[int] = []
        entry = self.next[0]
        while entry and not self.is_completion[entry]:
            i = self.op_at[entry]
            (known if self.known[i] else unknown).append(i)
            entry = self.next[entry]
        return known, unknown, (self.op_at[entry] if entry else None)

    def moves(self, state: Any) -> Iterator[tuple[int, Hashable]]:
        """The calls that may be linearized next in ``state``, and the state after each."""
        known, unknown, _ = self.window()
        legal_moves = []
        for i in known:
            legal, after = self.step(state, i)
            if legal and self.read_only[i]:
                # A call that never changes the state can go now and need not be
                # tried anywhere else: any order that has it later works with it here.
                yield i, after
                return
            if legal:
                legal_moves.append((i, after))
        yield from legal_moves
        # Indeterminate calls last: they are never needed to go now, only allowed to.
        alike: dict[int, int] = {}
        for i in unknown:
            alike.setdefault(self.alike[i], i)  # the earliest of each kind
        for i in alike.values():
            legal, after = self.step(state, i)
            if legal and after != state:
                yield i, after

    def run(self) -> KeyResult:
        state = self.model.initial()
        linearized_known = 0  # bit sets of op indices
        linearized_unknown = 0
        remaining = sum(self.known)
        seen: dict[tuple[int, Hashable], list[int]] = {}
        path: list[tuple[int, Hashable, int, int]] = []  # (op, state before, sets before)
        order: list[int] = []  # the ops of path
        self.remember(order, remaining)
        frames = [self.moves(state)]
        while remaining:
            if self.steps > self.budget:
                return self.result(Status.INCONCLUSIVE)
            move = next(frames[-1], None)
            if move is None:
                frames.pop()
                if not path:
                    return self.result(Status.NOT_LINEARIZABLE)
                i, state, linearized_known, linearized_unknown = path.pop()
                order.pop()
                self.unlift(i)
                remaining += self.known[i]
                continue
            i, after = move
            done_known, done_unknown = linearized_known, linearized_unknown
            if self.known[i]:
                done_known |= 1 << i
            else:
                done_unknown |= 1 << i
            # Skip a configuration that one with fewer indeterminate calls already covers.
            reached = seen.setdefault((done_known, after), [])
            if any(earlier & done_unknown == earlier for earlier in reached):
                continue
            reached.append(done_unknown)
            path.append((i, state, linearized_known, linearized_unknown))
            order.append(i)
            self.lift(i)
            remaining -= self.known[i]
            state, linearized_known, linearized_unknown = after, done_known, done_unknown
            if remaining < self.best_remaining:
                self.remember(order, remaining)
            frames.append(self.moves(state))
        return self.result(Status.LINEARIZABLE)

    def remember(self, order: list[int], remaining: int) -> None:
        """Keep the deepest point yet, for the explanation: how it was reached, what may follow."""
        self.best_remaining = remaining
        self.best_order = order[:]
        self.best_window = self.window()

    def result(self, status: Status) -> KeyResult:
        explanation = "" if status is Status.LINEARIZABLE else self.explain(status)
        return KeyResult(self.key, status, self.count, self.steps, explanation)

    def explain(self, status: Status) -> str:
        total = sum(self.known)
        indeterminate = self.count - total
        if status is Status.INCONCLUSIVE:
            head = (
                f"key {self.key!r}: inconclusive after {self.steps} model steps (budget "
                f"{self.budget}). Raise the budget, or record fewer indeterminate calls."
            )
        else:
            head = f"key {self.key!r}: not linearizable."
        # Replay the deepest order with the calls as recorded, for the states a reader knows.
        state = self.model.initial()
        states = []
        for i in self.best_order:
            state = self.model.step(state, self.recorded[i])[1]
            states.append(state)
        tail = list(zip(self.best_order, states, strict=True))[-CONTEXT:]
        lines = [
            head,
            f"  At most {total - self.best_remaining} of its {total} completed calls linearize"
            f" ({indeterminate} indeterminate calls besides)."
            + (" The last ones, each with the state after it:" if tail else ""),
        ]
        lines += [f"    {self.recorded[i]}  => {after!r}" for i, after in tail]
        lines.append(f"  State then: {state!r}. Of the calls that may go next:")
        known, unknown, must = self.best_window
        for i in known + unknown:
            legal, after = self.model.step(state, self.recorded[i])
            if not legal:
                why = "cannot follow"
            elif self.known[i]:
                why = f"could follow (=> {after!r}), but then no order completes"
            else:
                why = "indeterminate: could go now, later or never"
            mark = "  <- must go before any other call completes" if i == must else ""
            lines.append(f"    {self.recorded[i]}  {why}{mark}")
        return "\n".join(lines)
