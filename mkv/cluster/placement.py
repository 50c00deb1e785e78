"""Where a new partition goes, and whether its range is free. Sans-I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mkv.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from mkv.router import KeyRange

__all__ = ["check_free", "choose_node", "choose_replicas"]


def choose_node(
    alive: Iterable[str], assigned: Mapping[str, int], wanted: str | None = None
) -> str:
    """The node a new partition is placed on: ``wanted`` if given (and alive),
    else the live node with the fewest partitions assigned (ties: the lowest id,
    so that every node answering decides alike).

    Raises:
        NotFoundError: ``wanted`` is not a live node.
        FailedPreconditionError: no node is alive.
    """
    nodes = sorted(set(alive))
    if wanted:
        if wanted not in nodes:
            raise NotFoundError(f"No live node with id {wanted!r}.")
        return wanted
    if not nodes:
        raise FailedPreconditionError("No node of the cluster is alive.")
    return min(nodes, key=lambda node: (assigned.get(node, 0), node))


def choose_replicas(
    alive: Iterable[str],
    leading: Mapping[str, int],
    holding: Mapping[str, int],
    count: int,
    wanted: str | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The nodes of a new partition's ``count`` replicas, distinct and live,
    the preferred leader first; and warnings for the caller.

    The preferred leader is ``wanted`` if given, else the live node that
    leads (is the preferred leader of) the fewest partitions, then holds the
    fewest replicas; the others are the live nodes holding the fewest
    replicas. Ties go to the lowest id, so that every node answering
    decides alike. More replicas than live nodes are capped at the live
    nodes, with a warning (rather than a refusal: the partition is usable,
    and a later repair can grow it).

    Args:
        leading: per node, the partitions it is the preferred leader of.
        holding: per node, the replicas it holds (any position).

    Raises:
        InvalidArgumentError: ``count`` is below 1.
        NotFoundError: ``wanted`` is not a live node.
        FailedPreconditionError: no node is alive.
    """
    if count < 1:
        raise InvalidArgumentError(f"A partition needs at least one replica, not {count}.")
    nodes = sorted(set(alive))
    if wanted:
        first = choose_node(nodes, {}, wanted)
    elif not nodes:
        raise FailedPreconditionError("No node of the cluster is alive.")
    else:
        first = min(nodes, key=lambda n: (leading.get(n, 0), holding.get(n, 0), n))
    others = sorted(
        (n for n in nodes if n != first), key=lambda n: (holding.get(n, 0), leading.get(n, 0), n)
    )
    chosen = (first, *others[: count - 1])
    warnings: tuple[str, ...] = ()
    if len(chosen) < count:
        warnings = (
            f"asked for {count} replicas but only {len(nodes)} node(s) are live (and not "
            f"drained): placed "
            f"{len(chosen)} ({', '.join(chosen)}); the partition stays under-replicated "
            "until it is given more",
        )
    return chosen, warnings


def check_free(key_range: KeyRange, taken: Iterable[tuple[KeyRange, str]]) -> None:
    """Raises:
    AlreadyExistsError: ``key_range`` overlaps a partition's range.
    """
    for other, pid in sorted(taken, key=lambda item: item[0].start):
        if other.overlaps(key_range):
            raise AlreadyExistsError(
                f"Range {key_range} overlaps range {other} of partition {pid}."
            )
