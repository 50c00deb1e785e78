"""MovePartition and DrainNode in cluster mode: a partition handed from its
leader (the source) to another node (the target), across nodes.

The target runs the move (``move_here``): it follows the source (snapshot,
then log), asks the source to fence (``Replication.Handover``, checked
against the source's epoch), applies through the final seq into a held copy,
switches ownership in one etcd Txn (``Membership.commit_move``), campaigns (a
new epoch), serves, and tells the source it moved away. A node asked to
move a partition to another node forwards the call to the target's control
port, under its own control token, and mirrors the target's operation
(``forward``), so that GetOperation on the node asked follows the move.
docs/cluster.md says what a client sees, and what each crash leaves.
"""

from __future__ import annotations

import logging
import time
from typing import TypeVar

import trio
from google.protobuf.message import Message

from mkv.cluster.membership import Membership
from mkv.cluster.placement import choose_node
from mkv.cluster.repair import replacement_for
from mkv.errors import (
    AbortedError,
    FailedPreconditionError,
    MkvError,
    NotFoundError,
    UnavailableError,
    error_for_status,
)
from mkv.node.cluster_local import RegistryPartitions
from mkv.node.follower import REPLICATION_SERVICE
from mkv.node.registry import PartitionRegistry
from mkv.observe.logs import fields
from mkv.operations import Operation
from mkv.partition.task import Partition
from mkv.rpc.auth import authorization_metadata
from mkv.rpc.dial import call_unary
from mkv.v1 import control_pb2 as cpb
from mkv.v1 import replication_pb2 as rpb
from mkv.wire import CONTROL_SERVICE, FORWARDED, Address, parse_address

__all__ = ["Mover"]

M = TypeVar("M", bound=Message)

log = logging.getLogger("mkv.move")

# The copy must be this close (records) to the source's last seq before the
# source is fenced: what is left is applied during the pause writers see.
MAX_LAG = 64
# The most the target waits, once the source is fenced, for its last records.
CUT_OVER_WITHIN = 10.0
# How long the new owner may take to win its leader key.
LEAD_WITHIN = 10.0
# How often a forwarded move's operation is read from its target.
POLL_SECONDS = 0.2
# Failed reads of a forwarded operation tolerated in a row.
POLL_FAILURES = 25
NODE_CALL_SECONDS = 10.0
# A forwarded TransferLeader answers only when done: the leader may wait
# LEAD_WITHIN to serve, CUT_OVER_WITHIN for the successor's log, and
# LEAD_WITHIN twice more for the handover to show. Its caller must wait
# longer than all of that, or a slow but sound transfer is reported failed
# (while it goes on).
TRANSFER_SECONDS = 3 * LEAD_WITHIN + CUT_OVER_WITHIN + NODE_CALL_SECONDS
# How long a replicated move waits for its new replica to join the ISR.
REPLICA_CATCH_UP = 300.0


class Mover:
    """Runs moves whose target is this node, and forwards the others."""

    def __init__(
        self,
        registry: PartitionRegistry,
        cluster: Membership,
        local: RegistryPartitions,
        token: str | None,
    ) -> None:
        self._registry = registry
        self._cluster = cluster
        self._local = local
        self._token_value = token
        self._metadata = authorization_metadata(token)

    def check(self, partition_id: str, node: str) -> bool:
        """Refuse at once what cannot begin. True: the node leads it already.

        Raises:
            NotFoundError: no such partition or live node.
            FailedPreconditionError: nobody leads the partition now.
        """
        view = self._cluster.view
        if partition_id not in view.partitions:
            raise NotFoundError(f"No partition with id {partition_id!r} in the cluster.")
        if node not in view.nodes:
            raise NotFoundError(f"No live node with id {node!r}.")
        leader = view.leaders.get(partition_id)
        if leader is None:
            raise FailedPreconditionError(
                f"Nobody leads partition {partition_id} now; retry once a node does."
            )
        return leader.node == node

    async def move(self, operation: Operation, partition_id: str, node: str) -> cpb.PartitionInfo:
        """Move ``partition_id`` to ``node``: here, or forwarded to it."""
        if self.check(partition_id, node):
            return await self._info_of(partition_id, node)
        record = self._cluster.view.partitions[partition_id].record
        if self._local.replicated() and len(record.replicas) > 1:
            return await self.move_replicated(operation, partition_id, node)
        if node == self._cluster.node_id:
            partition = await self.move_here(operation, partition_id)
            info = await self._registry.info(partition)
            return cpb.PartitionInfo(
                id=info.id,
                start=info.range.start,
                end=info.range.end or b"",
                store=info.store,
                state=cpb.ACTIVE,
                last_seq=info.last_seq,
                pipeline=info.pipeline,
                node=node,
                epoch=self._registry.epoch(partition_id),
            )
        return await self.forward(operation, partition_id, node)

    async def _info_of(self, partition_id: str, node: str) -> cpb.PartitionInfo:
        entry = self._cluster.view.partitions[partition_id]
        rng = entry.record.range
        return cpb.PartitionInfo(
            id=partition_id,
            start=rng.start,
            end=rng.end or b"",
            store=entry.record.store,
            node=node,
        )

    # -- the target ------------------------------------------------------------------

    async def move_here(self, operation: Operation, partition_id: str) -> Partition:
        """Run the move of ``partition_id`` from its leader to this node.

        Raises:
            MkvError: the step that failed; before the etcd Txn the copy is
                dropped and the source serves on, nothing lost. A Txn whose
                outcome etcd did not tell leaves the copy held: reconcile
                serves it if etcd names this node, else deletes it.
        """
        cluster, registry = self._cluster, self._registry
        began = time.monotonic()
        ticket = await cluster.move_ticket(partition_id)
        source = cluster.view.nodes.get(ticket.source)
        me = cluster.view.nodes.get(cluster.node_id)
        if source is None or me is None:
            raise UnavailableError(f"Node {ticket.source} is not live in the cluster now; retry.")
        source_address = parse_address(source.record.replication)
        record = ticket.record
        operation.report("copy", 0, 0, "keys")
        self._local.moves_in.add(partition_id)
        fenced = False
        committing = False
        try:
            follower = await registry.follow(
                partition_id,
                record.range,
                record.store,
                record.pipeline,
                source_address,
                ticket.epoch,
                self._token(),
                operation,
                name=cluster.node_id,
            )
            try:
                await follower.caught_up(MAX_LAG)
                operation.report("cut-over", 0, 0, "")
                fenced_at = time.monotonic()
                answer = await self._handover(
                    source_address,
                    partition_id,
                    ticket.epoch,
                    rpb.HandoverRequest.FENCE,
                    me.record.data,
                )
                fenced = True
                await follower.cut_over(answer.final_seq, within=CUT_OVER_WITHIN)
                committing = True
                await cluster.commit_move(ticket)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    uncertain = committing and not isinstance(exc, FailedPreconditionError)
                    if not uncertain:
                        await follower.abandon()
                        if registry.partition(partition_id) is not None:
                            await registry.remove(partition_id)
                        if fenced:
                            await self._tell_quietly(
                                source_address,
                                partition_id,
                                ticket.epoch,
                                rpb.HandoverRequest.ABANDON,
                            )
                raise
            epoch = await cluster.lead_now(partition_id, LEAD_WITHIN)
            registry.set_epoch(partition_id, epoch)
            partition = await registry.serve(partition_id)
        finally:
            # From here on (or after a failure) reconcile looks after the copy.
            self._local.moves_in.discard(partition_id)
        done = time.monotonic()
        await self._tell_quietly(
            source_address, partition_id, ticket.epoch, rpb.HandoverRequest.COMMITTED
        )
        log.info(
            "partition %s moved here from %s at seq %d in %.1f s (cut-over %.0f ms)",
            partition_id,
            ticket.source,
            answer.final_seq,
            done - began,
            (done - fenced_at) * 1000,
            extra=fields(event="partition_moved_in", partition=partition_id, seq=answer.final_seq),
        )
        return partition

    def _token(self) -> str | None:
        return self._token_value

    async def _handover(
        self, address: Address, partition_id: str, epoch: int, step: int, successor: str = ""
    ) -> rpb.HandoverResponse:
        return await call_unary(
            address,
            REPLICATION_SERVICE,
            "Handover",
            rpb.HandoverRequest(
                partition_id=partition_id,
                epoch=epoch,
                step=step,  # type: ignore[arg-type]
                successor=successor,
            ),
            rpb.HandoverResponse,
            metadata=self._metadata,
            silence=NODE_CALL_SECONDS,
        )

    async def _tell_quietly(
        self, address: Address, partition_id: str, epoch: int, step: int
    ) -> None:
        """Tell the source the outcome; if it does not hear, its fence
        watchdog asks etcd (the outcome is there either way)."""
        try:
            await self._handover(address, partition_id, epoch, step)
        except MkvError as exc:
            log.warning(
                "partition %s: the source did not take the move's outcome (%s); it settles "
                "through etcd",
                partition_id,
                exc,
                extra=fields(event="handover_unheard", partition=partition_id),
            )

    # -- a node that is not the target --------------------------------------------

    async def forward(
        self, operation: Operation, partition_id: str, node: str
    ) -> cpb.PartitionInfo:
        """Start the move on its target and follow the target's operation.

        Raises:
            MkvError: as the target's operation failed, or the target is unreachable.
        """
        address, started = await self.start_remote(
            node,
            "MovePartition",
            cpb.MovePartitionRequest(id=partition_id, node=node),
            cpb.MovePartitionResponse,
        )
        remote = await self.follow(operation, address, started.operation_id)
        if remote is None:
            # The target restarted and forgot the operation: etcd says
            # how the move ended (its Txn is the commit point).
            return await self._outcome(partition_id, node)
        return remote.moved

    async def start_remote(
        self,
        node: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        silence: float = NODE_CALL_SECONDS,
    ) -> tuple[Address, M]:
        """Send a control call to ``node``'s control port, marked as
        forwarded (so that node never forwards it on); its answer.

        Raises:
            NotFoundError: ``node`` is not live.
            MkvError: as that node refused the call, or it is unreachable.
        """
        entry = self._cluster.view.nodes.get(node)
        if entry is None:
            raise NotFoundError(f"No live node with id {node!r}.")
        address = parse_address(entry.record.control)
        answer = await call_unary(
            address,
            CONTROL_SERVICE,
            method,
            request,
            response_type,
            metadata=self.forwarded_metadata(),
            silence=silence,
        )
        return address, answer

    def forwarded_metadata(self) -> tuple[tuple[str, str], ...]:
        return (*self._metadata, (FORWARDED, self._cluster.node_id))

    async def follow(
        self, operation: Operation, address: Address, operation_id: str
    ) -> cpb.Operation | None:
        """Mirror another node's operation into ``operation`` until it ends;
        that operation once DONE, or None if that node no longer knows it
        (it restarted).

        Raises:
            MkvError: as that operation failed, or the node stayed unreachable.
        """
        failures = 0
        while True:
            await trio.sleep(POLL_SECONDS)
            try:
                answer = await call_unary(
                    address,
                    CONTROL_SERVICE,
                    "GetOperation",
                    cpb.GetOperationRequest(id=operation_id),
                    cpb.GetOperationResponse,
                    metadata=self._metadata,
                    silence=NODE_CALL_SECONDS,
                )
            except UnavailableError:
                failures += 1
                if failures > POLL_FAILURES:
                    raise
                continue
            except NotFoundError:
                return None
            failures = 0
            remote = answer.operation
            operation.report(
                remote.phase, remote.progress_done, remote.progress_total, remote.progress_unit
            )
            if remote.state == cpb.DONE:
                return remote
            if remote.state == cpb.FAILED:
                raise error_for_status(remote.error_code, remote.error_message)

    async def _outcome(self, partition_id: str, node: str) -> cpb.PartitionInfo:
        """The move's outcome by etcd, once its target lost the operation.

        Raises:
            AbortedError: the record does not name the target: the move did not commit.
        """
        view = await self._cluster.fresh_view()
        entry = view.partitions.get(partition_id)
        if entry is None or entry.record.replicas != (node,):
            raise AbortedError(
                f"Node {node} restarted during the move of {partition_id}, before it "
                "committed; the partition stays on its source. Move it again."
            )
        rng = entry.record.range
        return cpb.PartitionInfo(
            id=partition_id,
            start=rng.start,
            end=rng.end or b"",
            store=entry.record.store,
            node=node,
        )

    # -- draining -------------------------------------------------------------------

    def check_drain(self, node: str) -> None:
        """Raises:
        FailedPreconditionError: no other live node to move to.
        """
        if not self._cluster.view.placeable - {node}:
            raise FailedPreconditionError(
                f"No live node other than {node!r} (and not drained) to move its partitions to."
            )

    async def drain(self, operation: Operation, node: str) -> list[cpb.PartitionInfo]:
        """Move every partition ``node`` leads, one at a time, each to the
        least loaded other live node; then re-create each replica it still
        follows on a live node holding none of that partition, so every
        partition keeps its replica count without it (issue 16's repair on
        drain). A replica with no such node to go to stays, and is logged.
        The node is marked drained in etcd first: no new replica goes to it
        until it restarts."""
        # First, so that no partition placed meanwhile (or repaired) lands on it.
        await self._cluster.mark_drained(node)
        led = sorted(
            pid for pid, leader in self._cluster.view.leaders.items() if leader.node == node
        )
        moved: list[cpb.PartitionInfo] = []
        for k, pid in enumerate(led):
            operation.report(f"moving {pid} ({k + 1} of {len(led)})", k, len(led), "partitions")
            view = self._cluster.view
            self.check_drain(node)
            leader = view.leaders.get(pid)
            if leader is None or leader.node != node:
                continue  # moved or removed meanwhile
            load: dict[str, int] = {}
            for other in view.leaders.values():
                load[other.node] = load.get(other.node, 0) + 1
            target = choose_node(view.placeable - {node}, load)
            step = Operation(id=operation.id, kind="move", partition_id=pid)
            moved.append(await self.move(step, pid, target))
        followed = sorted(
            pid
            for pid, entry in self._cluster.view.partitions.items()
            if node in entry.record.replicas and len(entry.record.replicas) > 1
        )
        total = len(led) + len(followed)
        for k, pid in enumerate(followed, start=len(led)):
            operation.report(
                f"re-creating {pid}'s replica ({k + 1} of {total})", k, total, "partitions"
            )
            if (info := await self._move_follower(pid, node)) is not None:
                moved.append(info)
        operation.report("done", total, total, "partitions")
        return moved

    async def _move_follower(self, partition_id: str, node: str) -> cpb.PartitionInfo | None:
        """Re-create ``node``'s follower replica of ``partition_id`` on the
        live node with the fewest replicas among those holding none of it:
        added, caught up into the ISR, then ``node``'s removed (the count
        stays R, and at least as many in sync as before). None: nothing to
        do, or no node to go to (logged; ``node`` keeps its replica).

        Raises:
            MkvError: the step that failed; an added replica stays (harmless).
        """
        cluster = self._cluster
        view = cluster.view
        entry, leader = view.partitions.get(partition_id), view.leaders.get(partition_id)
        if entry is None or node not in entry.record.replicas:
            return None  # removed, or moved off meanwhile
        if leader is not None and leader.node == node:
            raise FailedPreconditionError(
                f"Node {node} leads partition {partition_id} again; drain it again."
            )
        target = replacement_for(view, entry.record, view.placeable)
        if target is None:
            log.warning(
                "drain of %s: partition %s has a replica on every other live node; %s keeps "
                "its replica",
                node,
                partition_id,
                node,
                extra=fields(event="drain_kept_replica", partition=partition_id),
            )
            return None
        await cluster.change_replicas(partition_id, add=target)
        await self._until_in_sync(partition_id, target)
        await cluster.change_replicas(partition_id, remove=node)
        log.info(
            "drain of %s: partition %s's replica re-created on %s",
            node,
            partition_id,
            target,
            extra=fields(event="drain_moved_replica", partition=partition_id),
        )
        now = cluster.view.leaders.get(partition_id)
        return await self._info_of(partition_id, now.node if now is not None else "")

    async def _until_in_sync(self, partition_id: str, node: str) -> None:
        """Wait until ``node``'s new replica of ``partition_id`` is in its ISR
        (its leader added it back once caught up).

        Raises:
            NotFoundError: the partition was removed meanwhile.
            UnavailableError: not within ``REPLICA_CATCH_UP``.
        """
        cluster = self._cluster
        with trio.move_on_after(REPLICA_CATCH_UP):
            while True:
                entry = cluster.view.partitions.get(partition_id)
                if entry is None:
                    raise NotFoundError(f"Partition {partition_id} was removed during the move.")
                if node in entry.record.isr:
                    return
                await trio.sleep(0.1)
        raise UnavailableError(
            f"The replica of {partition_id} on {node} did not catch up within "
            f"{REPLICA_CATCH_UP:.0f} s; it stays a follower (move again to retry)."
        )

    # -- leadership transfer (replicas) ------------------------------------------------

    async def move_replicated(
        self, operation: Operation, partition_id: str, node: str
    ) -> cpb.PartitionInfo:
        """A move of a replicated partition: add a replica on ``node`` (if it
        has none), wait until its leader takes it into the ISR (it caught
        up), transfer the leadership to it, and remove the old leader's
        replica (only if one was added: the replica count stays).

        Raises:
            MkvError: the step that failed; what was done before stays done
                (an extra replica, harmless: remove it, or move again).
        """
        cluster = self._cluster
        source = cluster.view.leaders[partition_id].node
        record = cluster.view.partitions[partition_id].record
        added = node not in record.replicas
        if added:
            operation.report("add-replica", 0, 3, "steps")
            await cluster.change_replicas(partition_id, add=node)
        operation.report("catch-up", 1, 3, "steps")
        await self._until_in_sync(partition_id, node)
        operation.report("transfer", 2, 3, "steps")
        info = await self.transfer_leader(partition_id, node, forwarded=False)
        if added and source != node:
            operation.report("remove-replica", 3, 3, "steps")
            await cluster.change_replicas(partition_id, remove=source)
        return info

    async def transfer_leader(
        self, partition_id: str, node: str, *, forwarded: bool
    ) -> cpb.PartitionInfo:
        """Make ``node``, an in-sync replica, the leader of ``partition_id``:
        on the leader, here; else forwarded to it (once: a forwarded call to
        a node that does not lead is refused, naming the leader it sees).

        On the leader: fence (stop admitting; the writes in flight are
        released, so acknowledged by the ISR), wait until ``node`` has every
        logged record durable, then give up the leader key in one Txn guarded
        by this epoch that puts ``node`` first (``hand_leadership``); the
        others give it a head start, so it wins the election; this node
        steps down and follows it. Returns once ``node`` leads.

        Raises:
            NotFoundError: no such partition or live node.
            FailedPreconditionError: ``node`` holds no replica or is not in
                sync; nobody leads; no replica data path; ``node`` did not
                catch up in time (nothing changed then).
        """
        cluster = self._cluster
        view = cluster.view
        entry = view.partitions.get(partition_id)
        if entry is None:
            raise NotFoundError(f"No partition with id {partition_id!r} in the cluster.")
        if node not in view.nodes:
            raise NotFoundError(f"No live node with id {node!r}.")
        record = entry.record
        if node not in record.replicas:
            raise FailedPreconditionError(
                f"Node {node} holds no replica of {partition_id} "
                f"(its replicas: {', '.join(record.replicas)})."
            )
        if node not in record.isr:
            raise FailedPreconditionError(
                f"Node {node} is not in the in-sync set of {partition_id} "
                f"({', '.join(record.isr)}): it may lack acknowledged writes."
            )
        leader = view.leaders.get(partition_id)
        if leader is None:
            raise FailedPreconditionError(
                f"Nobody leads partition {partition_id} now; retry once a node does."
            )
        if leader.node == node:
            return await self._info_of(partition_id, node)
        if leader.node != cluster.node_id:
            if forwarded:
                raise FailedPreconditionError(
                    f"This node does not lead partition {partition_id}; {leader.node} does."
                )
            _, answer = await self.start_remote(
                leader.node,
                "TransferLeader",
                cpb.TransferLeaderRequest(id=partition_id, node=node),
                cpb.TransferLeaderResponse,
                silence=TRANSFER_SECONDS,
            )
            partition: cpb.PartitionInfo = answer.partition
            return partition
        with trio.move_on_after(LEAD_WITHIN):
            # Just elected, it serves once the ISR has its epoch-start record.
            while True:
                if self._local.role(partition_id) == "leader":
                    break
                await trio.sleep(0.05)
        if self._local.role(partition_id) != "leader":
            raise FailedPreconditionError(
                f"This node does not serve partition {partition_id} as its leader (yet)."
            )
        successor = parse_address(view.nodes[node].record.data)
        seq = await self._registry.fence(partition_id, successor)
        try:
            await self._durable_on(partition_id, node, seq)
            await cluster.hand_leadership(partition_id, leader.epoch, node)
        finally:
            # Released either way: reconcile leaves a fenced partition alone
            # (a move's), so it steps down only once unfenced. Until then a
            # request admitted here can only wait (its ISR includes ``node``,
            # which follows this epoch no more) and fails at the step-down;
            # the answer-time gate sends nothing under the lost leadership.
            with trio.CancelScope(shield=True):
                await self._registry.unfence(partition_id)
        with trio.move_on_after(LEAD_WITHIN):
            while True:
                if self._local.role(partition_id) != "leader":
                    break
                await trio.sleep(0.02)
        with trio.move_on_after(LEAD_WITHIN):
            while True:
                now = cluster.view.leaders.get(partition_id)
                if now is not None and now.node == node:
                    break
                await trio.sleep(0.05)
        log.info(
            "partition %s: leadership handed to %s at seq %d",
            partition_id,
            node,
            seq,
            extra=fields(event="leader_transferred", partition=partition_id, seq=seq),
        )
        now = cluster.view.leaders.get(partition_id)
        info = await self._info_of(partition_id, now.node if now is not None else "")
        info.epoch = now.epoch if now is not None else 0
        return info

    async def _durable_on(self, partition_id: str, node: str, seq: int) -> None:
        """Wait until ``node`` reports ``seq`` durable (to this leader).

        Raises:
            FailedPreconditionError: no progress reported for it, or not
                within ``CUT_OVER_WITHIN``.
        """
        durable = -1
        with trio.move_on_after(CUT_OVER_WITHIN):
            while True:
                states = self._local.replica_states(partition_id)
                if states is None:
                    raise FailedPreconditionError(
                        f"Partition {partition_id} has no replica progress here to hand over by."
                    )
                durable = next((r.durable_seq for r in states.replicas if r.node == node), -1)
                if durable >= seq:
                    return
                await trio.sleep(0.02)
        raise FailedPreconditionError(
            f"Node {node} did not have partition {partition_id} durable up to seq {seq} within "
            f"{CUT_OVER_WITHIN:.0f} s (it has {durable}); the leadership stays here."
        )
