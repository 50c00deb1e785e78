"""The two etcd Txns of replicated partitions (docs/cluster.md, rule 1):
the election, which only an in-sync replica can win, and the leader's change
of the in-sync set, which only the current leader can make.

Both compare revisions rather than trust what a node believes: an election
requires the partition's record to be exactly the one the candidate read
with itself in ``isr`` (``mod_revision``), so a node removed from the ISR
meanwhile cannot win on an old read; an ISR change requires the leader key to
be the one of the writer's epoch (``create_revision``), so a deposed leader
can never shrink the ISR under its successor.
"""

from __future__ import annotations

import logging

from mkv.cluster.keyspace import BadValue, Keys, LeaderRecord, PartitionRecord
from mkv.cluster.view import PartitionEntry
from mkv.errors import AbortedError, UnavailableError
from mkv.etcd import Compare, Etcd, EtcdError, Op

__all__ = ["ISR_ATTEMPTS", "campaign", "change_isr"]

log = logging.getLogger("mkv.cluster")

# ISR changes retried while another writer changed the record in between
# (a placement Txn, an ISR change racing this one) and this node still leads.
ISR_ATTEMPTS = 10


async def campaign(
    etcd: Etcd, keys: Keys, node_id: str, lease: int, entry: PartitionEntry
) -> int | None:
    """Take the leadership of ``entry``'s partition, as read: the Txn
    ``create_revision(leaders/<id>) == 0 AND mod_revision(partitions/<id>) ==
    entry.mod_revision`` puts the leader key under ``lease`` (and marks a
    "new" record "active": it has been led, and may hold data). Returns the
    epoch won (the leader key's create revision), or None: this node is not in
    the record's ISR (it may lack acknowledged writes: it must never lead), a
    leader exists, or the record changed since it was read.

    Raises:
        EtcdError: etcd did not answer.
    """
    record = entry.record
    pid = record.id
    if node_id not in record.isr:
        return None
    ops = [Op.put(keys.leader(pid), LeaderRecord(node_id).encode(), lease=lease)]
    if record.state == "new":
        active = PartitionRecord(
            pid, record.range, record.store, record.pipeline, record.replicas, "active", record.isr
        )
        ops.append(Op.put(keys.partition(pid), active.encode()))
    result = await etcd.txn(
        [
            Compare.create_revision(keys.leader(pid), "=", 0),
            Compare.mod_revision(keys.partition(pid), "=", entry.mod_revision),
        ],
        ops,
    )
    return result.revision if result.succeeded else None


async def change_isr(
    etcd: Etcd, keys: Keys, partition_id: str, epoch: int, isr: frozenset[str]
) -> bool:
    """Set ``partitions/<id>.isr`` to ``isr``, as the leader of ``epoch``: one
    Txn guarded by ``create_revision(leaders/<id>) == epoch`` and the record's
    ``mod_revision`` as read. A record changed in between by someone else is
    read again and the Txn retried, as long as the leadership is still
    ``epoch``. True once committed (or when the record already says so under
    this leadership); False when deposed: the leader key is gone or of another
    epoch, or the partition was removed.

    Raises:
        ValueError: ``isr`` names a node that holds no replica, or leaves out
            the leader (a caller's bug).
        UnavailableError: etcd did not answer; nothing is known to be written,
            and the caller must not act as if it were.
        AbortedError: the record kept changing for ``ISR_ATTEMPTS`` reads.
    """
    key, leader_key = keys.partition(partition_id), keys.leader(partition_id)
    for _ in range(ISR_ATTEMPTS):
        try:
            leader, _ = await etcd.get(leader_key)
            if leader is None or leader.create_revision != epoch:
                return False
            try:
                holder = LeaderRecord.decode(partition_id, leader.value).node
            except BadValue:
                holder = ""
            if holder not in isr:
                # The leader has every write it acknowledged: an ISR without
                # it could elect a node that lacks them after it fails.
                raise ValueError(
                    f"the ISR {sorted(isr)} of {partition_id} leaves out its leader {holder!r}"
                )
            kv, _ = await etcd.get(key)
            if kv is None:
                return False
            try:
                record = PartitionRecord.decode(partition_id, kv.value)
            except BadValue as exc:
                # Nobody may act on a record nobody can read (docs/cluster.md).
                raise UnavailableError(f"cannot change the ISR of {partition_id}: {exc}") from None
            wanted = record.with_isr(isr)
            if wanted == record:
                return True
            result = await etcd.txn(
                [
                    Compare.create_revision(leader_key, "=", epoch),
                    Compare.mod_revision(key, "=", kv.mod_revision),
                ],
                [Op.put(key, wanted.encode())],
            )
        except EtcdError as exc:
            raise UnavailableError(f"etcd cannot be reached: {exc}") from None
        if result.succeeded:
            log.info(
                "partition %s: in-sync set %s at epoch %d (revision %d)",
                partition_id,
                ",".join(wanted.isr),
                epoch,
                result.revision,
                extra={"event": "cluster_isr", "partition": partition_id, "epoch": epoch},
            )
            return True
        # Else read again: the leader key or the record changed.
    raise AbortedError(f"the record of {partition_id} kept changing; its ISR change was not made")
