"""Count clicks per session, exactly once, from a live feed of mkv changes.

Producers write one key per click, ``clicks/<session>/<n>``. This program
watches the ``clicks/`` range and keeps ``sessions/<session>`` holding
``"<count> <seq>"``: how many clicks the session has had, and the sequence
number of the last click counted. It shows the three things issue 4 added:

- **watch** delivers every click once and in order, and resumes after a
  reconnect or a server restart;
- **compare-and-set** (``if_seq``) makes each count update a
  read-then-write that cannot lose an update, even with several copies of
  this program running side by side;
- and because the update also records the click's ``seq``, replaying clicks
  (after this program restarts from an older position) counts nothing twice.

Sequence numbers are per partition, so the position it resumes from is a
seq of the partition that owns ``clicks/``; the position is stored as
``"<partition> <seq>"`` under a key that may well live in another partition
(whose own numbers mean nothing here). A split or merge that moves
``clicks/`` keeps positions valid: the new owner numbers its changes above
the old one's, and the watch follows the move by itself.

Run it next to ``mkv serve``::

    python examples/session_counter.py --data-addr 127.0.0.1:7070

and, in another shell, ``mkvctl put clicks/alice/1 ''``, then
``mkvctl get sessions/alice``.
"""

from __future__ import annotations

import argparse

import trio

import mkv

CLICKS = (b"clicks/", b"clicks0")  # every key starting with b"clicks/"
SESSIONS = b"sessions/"
# Where a restarted counter resumes: "<partition> <seq>"; any older position
# is safe too.
POSITION = b"session-counter/position"


def parse_count(item: mkv.Item | None) -> tuple[int, int]:
    """(count, seq of the last click counted) from a sessions/ value."""
    if item is None:
        return 0, 0
    count, seq = item.value.split()
    return int(count), int(seq)


async def count_click(client: mkv.Client, session: bytes, click_seq: int) -> bool:
    """Add one click to ``session`` unless it was counted already; True if added."""
    key = SESSIONS + session
    while True:
        item = await client.get_item(key)
        count, last_seq = parse_count(item)
        if click_seq <= last_seq:
            return False  # a replayed click
        try:
            await client.upsert(
                {key: b"%d %d" % (count + 1, click_seq)},
                if_seq={key: 0 if item is None else item.seq},
            )
            return True
        except mkv.ConditionFailedError:
            continue  # another counter updated it first: read again


async def clicks_partition(client: mkv.Client) -> str:
    """The id of the partition that owns the clicks."""
    for partition in await client.partition_map():
        if CLICKS[0] in partition.range:
            return partition.id
    raise mkv.BadNodeError("No partition on this node owns clicks/.")


async def stored_position(client: mkv.Client) -> int:
    """The seq to resume watching from (0: from now, on a first run)."""
    stored = await client.get(POSITION)
    if not stored:
        return 0
    # "<partition> <seq>", or just "<seq>" as this example once stored it.
    seq = stored.split()[-1]
    # Taken in the partition that owned the clicks then. If a split or merge
    # has moved them since, the new owner's numbers go on above that seq, so
    # it still marks the same place (or, if the owner no longer retains the
    # changes after it, the watch says so: CompactedError).
    return int(seq)


async def run_counter(client: mkv.Client, *, checkpoint_every: int = 100) -> None:
    """Count clicks until cancelled, resuming from the stored position."""
    position = await stored_position(client)
    async with client.watch(*CLICKS, from_seq=position) as changes:
        counted = 0
        async for change in changes:
            if change.value is not None:  # a removed click is not un-counted
                session = change.key.split(b"/")[1]
                await count_click(client, session, change.seq)
            counted += 1
            if counted % checkpoint_every == 0:
                # Plain upsert: an older position only means more replays.
                owner = await clicks_partition(client)
                await client.upsert({POSITION: b"%s %d" % (owner.encode(), changes.position)})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-addr", default="127.0.0.1:7070")
    args = parser.parse_args()
    async with mkv.Client.connect(args.data_addr) as client:
        # A first run (no position stored) starts from now.
        await run_counter(client)


if __name__ == "__main__":
    trio.run(main)
