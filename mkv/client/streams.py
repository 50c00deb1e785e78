"""The client's server streams: the pages of a scan, and a resuming watch.

Both are iterator classes, not async generators: Trio reports an async
generator dropped before it is exhausted (a ``break``) as a ResourceWarning,
and a watch owns a call that must be closed, so it lives in ``async with
client.watch(...)``.

Each page of a scan, and each (re)opening of a watch, goes to the node
leading the partition of its first key (``mkv.client.nodes``); both are
reads, so a refusal, an UNAVAILABLE or a lost connection re-routes them.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from contextlib import AsyncExitStack

import anyio
import attrs

from mkv.client.channel import ResponseStream
from mkv.client.nodes import NO_OWNER, Nodes, Rerouting
from mkv.errors import BadNodeError, ResourceExhaustedError, UnavailableError
from mkv.records import Item
from mkv.v1 import data_pb2 as pb
from mkv.wire import DATA_SERVICE as SERVICE
from mkv.wire import Address

__all__ = ["Change", "Scan", "Watch"]

# The logger keeps the module's name from before the move into packages:
# operators filter and route logs by it (issue 13).
log = logging.getLogger("mkv.client_streams")

# A watch reconnects after a lost connection with exponential backoff.
WATCH_MIN_BACKOFF = 0.05
WATCH_MAX_BACKOFF = 5.0


@attrs.frozen
class Change:
    """One mutation seen by ``Client.watch``: a key's new value, or its removal."""

    key: bytes
    # None: the key was removed.
    value: bytes | None
    seq: int
    timestamp: int = 0


class Scan:
    """The iterator ``Client.scan`` returns: one Scan call per page, each read
    whole before its items are handed out, so no call is left open."""

    def __init__(
        self,
        nodes: Nodes,
        start: bytes,
        end: bytes | None,
        keys_only: bool,
        page_size: int,
    ) -> None:
        self._nodes = nodes
        self._position = start
        self._end = end
        self._keys_only = keys_only
        self._page_size = page_size
        self._page: deque[tuple[bytes, Item]] = deque()
        self._done = False

    def __aiter__(self) -> Scan:
        return self

    async def __anext__(self) -> tuple[bytes, Item]:
        while not self._page:
            if self._done:
                raise StopAsyncIteration
            await self._fetch()
        return self._page.popleft()

    async def _fetch(self) -> None:
        # Paging stops exactly at the end; a range reversed from the start goes
        # to the server, which refuses it (INVALID_ARGUMENT) as Watch does.
        if self._end is not None and self._position == self._end:
            self._done = True
            return
        request = pb.ScanRequest(
            start=self._position,
            end=self._end or b"",
            limit=self._page_size,
            keys_only=self._keys_only,
        )
        rerouting = Rerouting(self._nodes, read=True)
        while True:
            channel = await rerouting.channel(self._position)
            # The page is kept only once whole: a page cut off is asked again.
            page: list[tuple[bytes, Item]] = []
            last: pb.ScanResponse | None = None
            try:
                async with channel.open_stream(
                    SERVICE, "Scan", request, pb.ScanResponse
                ) as responses:
                    async for response in responses:
                        if response.status != pb.OK:
                            last = response
                            break
                        page.extend(
                            (kv.key, Item(kv.value, kv.seq, kv.timestamp)) for kv in response.items
                        )
                        last = response
            except UnavailableError as exc:
                await rerouting.unavailable(channel.address, exc)
                continue
            if last is not None and last.status == pb.BAD_NODE:
                await rerouting.bad_node(channel.address, last.hint)
                if (await self._nodes.current()).lookup(self._position) is None:
                    raise BadNodeError(last.hint.message or NO_OWNER)
                continue
            if last is not None and last.status != pb.OK:
                raise BadNodeError(last.hint.message or NO_OWNER)
            break
        self._page.extend(page)
        if last is None or not last.more:
            self._done = True
        else:
            self._position = last.next_start


class Watch:
    """The changes ``Client.watch`` delivers, as an async iterator.

    Attributes:
        position: every change up to this sequence number has been handed
            out; a later watch ``from_seq=position`` carries on exactly.
    """

    def __init__(self, nodes: Nodes, request: pb.WatchRequest) -> None:
        self._nodes = nodes
        self._request = request
        self._pending: deque[Change] = deque()
        self._stream: AsyncExitStack | None = None
        self._responses: ResponseStream[pb.WatchResponse] | None = None
        self._backoff = WATCH_MIN_BACKOFF
        # Re-routing after BAD_NODE: reset by every answer that is not one.
        self._rerouting: Rerouting | None = None
        # The node the call is (or was last) open on.
        self._address: Address | None = None
        # Where the changes in _pending end (the last response's progress).
        self._received = request.from_seq
        self.position = request.from_seq

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        while not self._pending:
            self.position = self._received
            await self._receive()
        change = self._pending.popleft()
        if not self._pending:
            self.position = self._received
        elif self._pending[0].seq > change.seq:
            self.position = change.seq
        else:
            self.position = change.seq - 1  # the rest of this write is still to come
        return change

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._responses = self._stream, None, None
            await stream.aclose()

    async def _receive(self) -> None:
        """Read the next response, (re)opening the call as needed, on the
        node leading the watched range's partition."""
        while True:
            try:
                if self._responses is None:
                    self._request.from_seq = self._received
                    rerouting = self._rerouting or Rerouting(self._nodes, read=True)
                    channel = await rerouting.channel(self._request.start)
                    self._address = channel.address
                    self._stream = AsyncExitStack()
                    self._responses = await self._stream.enter_async_context(
                        channel.open_stream(SERVICE, "Watch", self._request, pb.WatchResponse)
                    )
                response = await self._responses.__anext__()
            except (UnavailableError, ResourceExhaustedError, StopAsyncIteration) as exc:
                # A lost connection, a server going down, or a watcher that
                # fell behind: all resume from the last position. Not once
                # the client is closed: nothing would ever answer, and a
                # watch read from another thread (mkv.BlockingClient) would
                # retry forever instead of ending.
                await self.aclose()
                if self._nodes.pool.closed:
                    raise UnavailableError("The connection to mkv is closed.") from None
                if self._address is not None and isinstance(exc, UnavailableError):
                    # Its node may be gone for good: ask the others where the
                    # partition went before dialling again.
                    self._nodes.mark_stale(self._address)
                log.info("watch interrupted (%r); resuming after seq %d", exc, self._received)
                await anyio.sleep(self._backoff * random.uniform(0.5, 1.0))
                self._backoff = min(self._backoff * 2, WATCH_MAX_BACKOFF)
                continue
            if response.status == pb.BAD_NODE and response.progress_seq:
                # The range moved to another partition (a split or merge)
                # after every change up to progress_seq was sent; the new
                # owner numbers its changes above it: resume there.
                await self.aclose()
                log.info("watch handed over (%s)", response.hint.message)
                self._received = max(self._received, response.progress_seq)
                self._nodes.follow(response.hint, self._address)
                continue
            if response.status == pb.BAD_NODE and self._address is not None:
                # This node does not lead the range (it moved to another
                # node, or the map was old): route again and resume from
                # the last position there, as any read is re-routed.
                await self.aclose()
                self._rerouting = self._rerouting or Rerouting(self._nodes, read=True)
                await self._rerouting.bad_node(self._address, response.hint)
                if (await self._nodes.current()).lookup(self._request.start) is None:
                    raise BadNodeError(response.hint.message or NO_OWNER)
                continue
            if response.status != pb.OK:
                raise BadNodeError(response.hint.message or NO_OWNER)
            self._backoff = WATCH_MIN_BACKOFF
            self._rerouting = None
            self._pending.extend(
                Change(c.key, None if c.removed else c.value, c.seq, c.timestamp)
                for c in response.changes
            )
            self._received = response.progress_seq
            return
