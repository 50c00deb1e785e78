"""mkv's etcd v3 client: the calls the cluster makes, on purerpc and Trio.

``open_etcd`` connects to one or more endpoints; each call has a deadline
(``timeout``) and so does every message a stream waits for. Reads move on to
the next endpoint after any failure; a write does only when it certainly was
not sent (the endpoint refused the connection), and otherwise raises
``EtcdUnavailable`` for the caller to decide (docs/etcd.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Literal, TypeVar

import anyio
import attrs
from google.protobuf.message import Message

from mkv.etcd.connection import BidiStream, Connection, NotSent, parse_endpoint
from mkv.etcd.errors import EtcdCompacted, EtcdError, EtcdUnavailable, LeaseNotFound
from mkv.etcd.pb import kv_pb2, rpc_pb2

__all__ = [
    "Compare",
    "Etcd",
    "Event",
    "KeyValue",
    "Lease",
    "LeaseKeeper",
    "Op",
    "TxnResult",
    "WatchBatch",
    "WatchStream",
    "open_etcd",
    "prefix_end",
]

M = TypeVar("M", bound=Message)

CompareOp = Literal["=", "!=", "<", ">"]

_RESULTS = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key with that
    prefix (etcd's convention: the prefix with its last byte below 0xff
    incremented; ``b"\\0"`` means "to the end" for an empty or all-0xff prefix)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


@attrs.frozen
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@attrs.frozen
class Event:
    kind: Literal["put", "delete"]
    # For a delete: the key, and mod_revision is the delete's revision.
    kv: KeyValue
    # The key-value before the event, when the watch asked for it.
    prev: KeyValue | None


@attrs.frozen
class WatchBatch:
    """Events of one watch response, in revision order.

    ``revision`` is the response header's revision. ``events`` may be empty:
    a progress notice, which says the stream is alive (see docs/etcd.md for
    what its revision promises on etcd 3.4 and 3.5).
    """

    revision: int
    events: tuple[Event, ...]


@attrs.frozen
class Lease:
    id: int
    ttl: int


@attrs.frozen
class Compare:
    """One condition of a Txn; build it with the static constructors."""

    _pb: rpc_pb2.Compare

    @staticmethod
    def _make(
        key: bytes, op: CompareOp, target: rpc_pb2.Compare.CompareTarget, field: str, value: object
    ) -> Compare:
        if op not in _RESULTS:
            raise ValueError(f"compare operator must be one of = != < >, not {op!r}")
        compare = rpc_pb2.Compare(key=key, result=_RESULTS[op], target=target)
        setattr(compare, field, value)
        return Compare(compare)

    @staticmethod
    def mod_revision(key: bytes, op: CompareOp, rev: int) -> Compare:
        """The key's last modification (0 when the key does not exist)."""
        return Compare._make(key, op, rpc_pb2.Compare.MOD, "mod_revision", rev)

    @staticmethod
    def create_revision(key: bytes, op: CompareOp, rev: int) -> Compare:
        """The key's creation (0 when the key does not exist: ``= 0`` is "absent")."""
        return Compare._make(key, op, rpc_pb2.Compare.CREATE, "create_revision", rev)

    @staticmethod
    def version(key: bytes, op: CompareOp, n: int) -> Compare:
        return Compare._make(key, op, rpc_pb2.Compare.VERSION, "version", n)

    @staticmethod
    def value(key: bytes, op: CompareOp, v: bytes) -> Compare:
        return Compare._make(key, op, rpc_pb2.Compare.VALUE, "value", v)


@attrs.frozen
class Op:
    """One operation of a Txn; build it with the static constructors."""

    _pb: rpc_pb2.RequestOp

    @staticmethod
    def put(key: bytes, value: bytes, *, lease: int = 0) -> Op:
        return Op(
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        )

    @staticmethod
    def delete(key: bytes, *, prefix: bool = False) -> Op:
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        return Op(rpc_pb2.RequestOp(request_delete_range=request))

    @staticmethod
    def get(key: bytes, *, prefix: bool = False) -> Op:
        request = rpc_pb2.RangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        return Op(rpc_pb2.RequestOp(request_range=request))


@attrs.frozen
class TxnResult:
    succeeded: bool
    # The revision after the Txn (its writes', when it wrote).
    revision: int
    # One per operation of the branch taken: a get's key-values, or for a put
    # or delete the revision it wrote at (every write of a Txn shares one).
    responses: tuple[tuple[KeyValue, ...] | int, ...]


@contextmanager
def _unwrap_single_exception() -> Iterator[None]:
    """A nursery wraps the body's exception in an ExceptionGroup; the caller
    of ``open_etcd`` should see ``EtcdUnavailable``, not a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            inner = group.exceptions[0]
            raise inner from inner.__cause__
        raise


class Etcd:
    """A client of one etcd cluster (several endpoints of it); see ``open_etcd``."""

    def __init__(self, connections: Sequence[Connection], timeout: float) -> None:
        self._connections = list(connections)
        self.timeout = timeout
        # The endpoint in use: calls start there and it moves on a failure.
        self._current = 0

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to first."""
        return str(self._connections[self._current].address)

    def _rotation(self) -> Iterator[tuple[int, Connection]]:
        count = len(self._connections)
        # From where calls start now; a failure moves _current during the loop.
        first = self._current
        for i in range(count):
            index = (first + i) % count
            yield index, self._connections[index]

    async def _call(
        self, service: str, method: str, request: Message, response_type: type[M], *, read: bool
    ) -> M:
        """One call on the endpoint in use, moving on as far as is safe.

        ``read``: the call changes nothing, so any failure may be retried
        elsewhere; a write moves on only when it was not sent.
        """
        failures: list[str] = []
        for index, connection in self._rotation():
            try:
                response = await connection.unary(service, method, request, response_type)
            except NotSent as exc:
                failures.append(exc.message)
            except EtcdUnavailable as exc:
                # Try another endpoint first next time either way.
                self._current = (index + 1) % len(self._connections)
                if not read:
                    raise
                failures.append(exc.message)
            else:
                self._current = index
                return response
        raise EtcdUnavailable("No etcd endpoint answered: " + " ".join(failures))

    @asynccontextmanager
    async def _stream(
        self, service: str, method: str, request_type: type[Message], response_type: type[M]
    ) -> AsyncIterator[BidiStream[M]]:
        """A stream on the first endpoint that accepts a connection."""
        failures: list[str] = []
        for index, connection in self._rotation():
            async with AsyncExitStack() as stack:
                try:
                    stream = await stack.enter_async_context(
                        connection.open_stream(service, method, request_type, response_type)
                    )
                except NotSent as exc:
                    failures.append(exc.message)
                    continue
                self._current = index
                try:
                    yield stream
                except EtcdUnavailable:
                    self._current = (index + 1) % len(self._connections)
                    raise
                return
        raise EtcdUnavailable("No etcd endpoint answered: " + " ".join(failures))

    # --- KV -----------------------------------------------------------------

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key's value (None when absent) and the header revision."""
        response = await self._call(
            "KV", "Range", rpc_pb2.RangeRequest(key=key), rpc_pb2.RangeResponse, read=True
        )
        kv = KeyValue.from_pb(response.kvs[0]) if response.kvs else None
        return kv, response.header.revision

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key with ``prefix``, in key order, and the header revision."""
        request = rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        response = await self._call("KV", "Range", request, rpc_pb2.RangeResponse, read=True)
        return [KeyValue.from_pb(kv) for kv in response.kvs], response.header.revision

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Write the key; returns the revision of the write.

        Raises:
            LeaseNotFound: ``lease`` is not a live lease.
        """
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        response = await self._call("KV", "Put", request, rpc_pb2.PutResponse, read=False)
        return response.header.revision

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete the key (every key with that prefix); returns the header revision."""
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        response = await self._call(
            "KV", "DeleteRange", request, rpc_pb2.DeleteRangeResponse, read=False
        )
        return response.header.revision

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every comparison holds, run ``success``, else ``failure``: atomically."""
        ops = [*success, *failure]
        request = rpc_pb2.TxnRequest(
            compare=[c._pb for c in compare],
            success=[op._pb for op in success],
            failure=[op._pb for op in failure],
        )
        read = all(op._pb.HasField("request_range") for op in ops)
        response = await self._call("KV", "Txn", request, rpc_pb2.TxnResponse, read=read)
        revision = response.header.revision
        results: list[tuple[KeyValue, ...] | int] = []
        for op in response.responses:
            if op.HasField("response_range"):
                results.append(tuple(KeyValue.from_pb(kv) for kv in op.response_range.kvs))
            else:
                results.append(revision)
        return TxnResult(response.succeeded, revision, tuple(results))

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (watches from before it fail).

        Raises:
            EtcdCompacted: already compacted past ``revision``.
        """
        request = rpc_pb2.CompactionRequest(revision=revision, physical=True)
        await self._call("KV", "Compact", request, rpc_pb2.CompactionResponse, read=False)

    # --- Lease --------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds (etcd may grant more, never less)."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        response = await self._call(
            "Lease", "LeaseGrant", request, rpc_pb2.LeaseGrantResponse, read=False
        )
        if response.error:
            raise EtcdError(f"etcd refused a lease of {ttl} s: {response.error}")
        return Lease(response.ID, response.TTL)

    async def revoke(self, lease_id: int) -> None:
        """End the lease now, deleting the keys attached to it.

        Raises:
            LeaseNotFound: the lease already expired or was revoked.
        """
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        await self._call("Lease", "LeaseRevoke", request, rpc_pb2.LeaseRevokeResponse, read=False)

    async def time_to_live(self, lease_id: int) -> int:
        """Seconds the lease has left; -1 when it expired or never existed."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id)
        response = await self._call(
            "Lease", "LeaseTimeToLive", request, rpc_pb2.LeaseTimeToLiveResponse, read=True
        )
        return response.TTL

    @asynccontextmanager
    async def keepalive(self, lease_id: int) -> AsyncIterator[LeaseKeeper]:
        """A long-lived keepalive stream for one lease; renew it with ``renew()``.

        Raises:
            EtcdUnavailable: no endpoint accepted the stream.
        """
        async with self._stream(
            "Lease", "LeaseKeepAlive", rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse
        ) as stream:
            yield LeaseKeeper(stream, lease_id)

    # --- Watch --------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, key: bytes, *, start_revision: int, prefix: bool = True, prev_kv: bool = False
    ) -> AsyncIterator[WatchStream]:
        """Every change to ``key`` (every key with that prefix) from
        ``start_revision`` on, including changes made before the watch opened.

        Raises:
            EtcdCompacted: ``start_revision`` was compacted (here or while iterating).
            EtcdUnavailable: no endpoint accepted the watch, or it went silent.
        """
        create = rpc_pb2.WatchCreateRequest(
            key=key,
            range_end=prefix_end(key) if prefix else b"",
            start_revision=start_revision,
            prev_kv=prev_kv,
        )
        async with self._stream(
            "Watch", "Watch", rpc_pb2.WatchRequest, rpc_pb2.WatchResponse
        ) as stream:
            await stream.send(rpc_pb2.WatchRequest(create_request=create))
            batches = WatchStream(stream, self.timeout)
            await batches._created()
            yield batches

    # --- Maintenance --------------------------------------------------------

    async def status(self) -> tuple[str, int, int]:
        """(etcd version, revision, leader member id) from the endpoint in use."""
        response = await self._call(
            "Maintenance", "Status", rpc_pb2.StatusRequest(), rpc_pb2.StatusResponse, read=True
        )
        return response.version, response.header.revision, response.leader


class LeaseKeeper:
    """One lease's keepalive stream: each ``renew`` is one keepalive."""

    def __init__(self, stream: BidiStream[rpc_pb2.LeaseKeepAliveResponse], lease_id: int):
        self._stream = stream
        self.lease_id = lease_id
        # One keepalive in flight at a time: answers carry no request id.
        self._lock = anyio.Lock()

    async def renew(self) -> int:
        """Send one keepalive; returns the TTL etcd granted from now.

        Raises:
            LeaseNotFound: the lease is gone (expired or revoked).
            EtcdUnavailable: no answer within the deadline.
        """
        async with self._lock:
            await self._stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
            response = await self._stream.receive()
        if response.TTL <= 0:
            raise LeaseNotFound(f"etcd lease {self.lease_id:x} expired or was revoked.")
        return response.TTL


class WatchStream:
    """A watch's batches, as an async iterator that never waits silently.

    It asks etcd for a progress notice every third of the deadline (etcd >=
    3.4 answers a ``progress_request`` at once), so a live stream always has
    something to say; nothing at all for ``timeout`` seconds raises
    ``EtcdUnavailable``.
    """

    def __init__(self, stream: BidiStream[rpc_pb2.WatchResponse], timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self._interval = timeout / 3
        now = anyio.current_time()
        self._heard = now
        self._next_progress = now + self._interval
        self.watch_id: int | None = None

    async def _created(self) -> None:
        response = await self._stream.receive()
        self._check(response)
        if not response.created:
            raise EtcdError("etcd answered a watch without creating it.")
        self.watch_id = response.watch_id
        self._heard = anyio.current_time()

    def _check(self, response: rpc_pb2.WatchResponse) -> None:
        if response.compact_revision:
            raise EtcdCompacted(
                "The watch's start revision was compacted; the oldest left is "
                f"{response.compact_revision}.",
                response.compact_revision,
            )
        if response.canceled:
            raise EtcdError(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchBatch:
        while True:
            now = anyio.current_time()
            deadline = self._heard + self._timeout
            if now >= self._next_progress:
                await self._stream.send(
                    rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
                )
                self._next_progress = now + self._interval
            response = await self._poll(min(deadline, self._next_progress) - now, deadline)
            if response is None:
                continue
            self._heard = anyio.current_time()
            self._check(response)
            if response.created:
                continue
            return WatchBatch(response.header.revision, tuple(_event(e) for e in response.events))

    async def _poll(self, wait: float, deadline: float) -> rpc_pb2.WatchResponse | None:
        """The next response within ``wait`` seconds; None when quiet that
        long but the deadline has not passed; EtcdUnavailable once it has."""
        with anyio.move_on_after(max(0.0, wait)):
            return await self._stream.receive(within=self._timeout)
        if anyio.current_time() >= deadline:
            raise self._stream.silent(self._timeout)
        return None


def _event(event: kv_pb2.Event) -> Event:
    kind: Literal["put", "delete"] = "put" if event.type == kv_pb2.Event.PUT else "delete"
    prev = KeyValue.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
    return Event(kind, KeyValue.from_pb(event.kv), prev)


@asynccontextmanager
# The timeout is every call's and stream message's deadline, not one for the block.
async def open_etcd(
    endpoints: Sequence[str],
    *,
    timeout: float = 2.0,  # noqa: ASYNC109
) -> AsyncIterator[Etcd]:
    """A client of the etcd cluster at ``endpoints`` (``http://HOST:PORT`` or
    ``HOST:PORT``); connections are made when first used.

    Args:
        timeout: seconds every call, and every message a stream waits for,
            may take; silence past it is a failure (``EtcdUnavailable``).

    Raises:
        EtcdError: no endpoints, or one is malformed.
    """
    if not endpoints:
        raise EtcdError("No etcd endpoints were given.")
    if timeout <= 0:
        raise EtcdError(f"The etcd timeout must be positive, not {timeout}.")
    addresses = [parse_endpoint(e) for e in endpoints]
    with _unwrap_single_exception():
        async with anyio.create_task_group() as task_group:
            connections = [Connection(a, task_group, timeout=timeout) for a in addresses]
            try:
                yield Etcd(connections, timeout)
            finally:
                for connection in connections:
                    connection.close()
