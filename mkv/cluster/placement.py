"""Where a new partition goes, and whether its range is free. Sans-I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mkv.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from mkv.router import KeyRange

__all__ = ["check_free", "choose_node"]


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


def check_free(key_range: KeyRange, taken: Iterable[tuple[KeyRange, str]]) -> None:
    """Raises:
    AlreadyExistsError: ``key_range`` overlaps a partition's range.
    """
    for other, pid in sorted(taken, key=lambda item: item[0].start):
        if other.overlaps(key_range):
            raise AlreadyExistsError(
                f"Range {key_range} overlaps range {other} of partition {pid}."
            )
