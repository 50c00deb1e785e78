"""The Watch stream: a partition's mutations in a key range, in order, then live.

A watcher is a position in its partition's ``ChangeFeed`` (mkv.partition.feed) and
nothing else: it reads the feed from its position, sends what falls in its
range, and waits for more. So watchers cost the server no memory per watcher
beyond one task, however slowly they read; one that falls too far behind is
told so (RESOURCE_EXHAUSTED) and resumes from its last position on a new
call, or, once the feed no longer holds that position, must resync
(OUT_OF_RANGE: scan, then watch from the scan's sequence number).

A watch of a range that a split gave to another partition ends with
``BAD_NODE`` once every change up to the cut-over is sent: its
``progress_seq`` is the cut-over's seq, and the new owner's feed starts
there, so the watcher resumes on it from that same position.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

import trio

from mkv.errors import CompactedError, InvalidArgumentError, ResourceExhaustedError
from mkv.partition.feed import Change
from mkv.partition.task import Move, Partition
from mkv.router import format_key
from mkv.v1 import data_pb2 as pb

__all__ = ["watch_partition"]

# Bytes of feed entries (by their cost estimate) read into one message.
MESSAGE_BYTES = 64 * 1024
# With nothing to send, a progress notice this often: it tells the client how
# far it has seen, and sending it is how the server notices a vanished client
# (purerpc does not report a client's reset of one call).
HEARTBEAT_SECONDS = 10.0
# With only writes outside the range going by, progress at most this often.
PROGRESS_SECONDS = 1.0


def _change(change: Change) -> pb.Change:
    if change.value is None:
        return pb.Change(key=change.key, removed=True, seq=change.seq, timestamp=change.timestamp)
    return pb.Change(key=change.key, value=change.value, seq=change.seq, timestamp=change.timestamp)


async def watch_partition(
    partition: Partition, start: bytes, end: bytes | None, from_seq: int
) -> AsyncGenerator[pb.WatchResponse, None]:
    """The responses of one Watch call on ``partition``, counted among its
    feed's watchers while it runs (see ``_watch`` for what it raises)."""
    feed = partition.feed
    feed.watchers += 1
    try:
        async with aclosing(_watch(partition, start, end, from_seq)) as responses:
            async for response in responses:
                yield response
    finally:
        feed.watchers -= 1


async def _watch(
    partition: Partition, start: bytes, end: bytes | None, from_seq: int
) -> AsyncGenerator[pb.WatchResponse, None]:
    """The responses of one Watch call on ``partition``.

    Raises:
        InvalidArgumentError: the range is empty or leaves the partition.
        CompactedError: ``from_seq`` is older than the partition retains, or
            newer than it has reached.
        ResourceExhaustedError: the watcher fell more than half the feed behind.
        UnavailableError: the partition stopped.
    """
    if end is not None and end <= start:
        raise InvalidArgumentError("The watched range is empty: its end is not after its start.")
    owned = partition.range
    if owned.end is not None and (end is None or end > owned.end):
        raise InvalidArgumentError(
            f"The watched range leaves partition {partition.id} (which ends at "
            f"{format_key(owned.end)}); sequence numbers are per partition, so watch each "
            "partition's part separately."
        )
    # Writes are answered on commit and applied (and fed) after: a watch
    # started after one was acknowledged starts at or after it.
    await partition.wait_applied()
    feed = partition.feed
    cursor = from_seq or feed.last_seq
    if cursor > feed.last_seq:
        raise CompactedError(
            f"Partition {partition.id} has applied writes only up to seq {feed.last_seq}, "
            f"not {cursor} (was it restored from an older state?); resync with a scan."
        )
    feed.check_retained(cursor)
    if cursor < partition.history_floor:
        # A merge's survivor: its feed still holds its own changes before the
        # merge (its own watchers go on), but not the absorbed range's.
        raise CompactedError(
            f"Partition {partition.id} took over a merged range at seq "
            f"{partition.history_floor}; changes before it are not all retained here. "
            "Read the range with a scan and watch from the scan's seq."
        )
    # The first message confirms the watch: everything after it is delivered.
    yield pb.WatchResponse(status=pb.OK, partition_id=partition.id, progress_seq=cursor)
    last_sent = time.monotonic()
    max_lag = feed.max_bytes // 2
    while True:
        move = partition.moved_from(start, end)
        if move is not None and cursor >= move.seq:
            # Every change of the range up to the cut-over has been sent; the
            # rest are the new owner's, whose numbers continue above it.
            yield pb.WatchResponse(
                status=pb.BAD_NODE,
                partition_id=partition.id,
                progress_seq=move.seq,
                hint=_moved_hint(move),
            )
            return
        if (lag := feed.lag_bytes(cursor)) > max_lag:
            raise ResourceExhaustedError(
                f"This watcher fell {lag} bytes of changes behind partition {partition.id} "
                f"(the limit is {max_lag}); resume from seq {cursor} on a new call."
            )
        entries = feed.read(cursor, MESSAGE_BYTES)
        if move is not None:
            entries = [entry for entry in entries if entry.seq <= move.seq]
        if not entries:
            # Sequence numbers used by writes that failed hold no changes.
            cursor = max(cursor, feed.last_seq)
            with trio.move_on_after(HEARTBEAT_SECONDS) as idle:
                await partition.wait_for_changes(cursor)
            if idle.cancelled_caught:
                yield pb.WatchResponse(status=pb.OK, partition_id=partition.id, progress_seq=cursor)
                last_sent = time.monotonic()
            continue
        changes = [_change(c) for entry in entries for c in entry.changes(start, end)]
        cursor = entries[-1].seq
        now = time.monotonic()
        if changes or now - last_sent >= PROGRESS_SECONDS:
            yield pb.WatchResponse(
                status=pb.OK, changes=changes, partition_id=partition.id, progress_seq=cursor
            )
            last_sent = now
        else:
            # Let the partition and other watchers run between reads of the feed.
            await trio.lowlevel.checkpoint()


def _moved_hint(move: Move) -> pb.RoutingHint:
    hint = pb.RoutingHint(
        message=(
            f"Keys from {format_key(move.range.start)} moved to partition "
            f"{move.owner} at seq {move.seq}; watch them there from seq {move.seq}."
        )
    )
    if move.address:
        # Moved to another node: name it, so the watcher resumes there.
        hint.owner.CopyFrom(
            pb.PartitionRange(
                id=move.owner,
                start=move.range.start,
                end=move.range.end or b"",
                address=move.address,
            )
        )
    return hint
