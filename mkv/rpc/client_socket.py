"""purerpc's client connection, made safe to hold: the one piece under mkv's
three callers of other servers (``mkv.client.channel`` for programs,
``mkv.etcd.connection`` for etcd, ``mkv.rpc.dial`` from node to node).

purerpc's reader just returns when the server goes away, leaving every call
on the connection waiting forever; ``ClientSocket`` wakes them instead, tells
its owner, and tolerates frames that arrive for a stream already closed.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import h2.exceptions
from purerpc.grpc_proto import GRPCProtoSocket
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.exceptions import GRPCError

from mkv.rpc.purerpc_compat import tolerate_late_frames

__all__ = ["CONNECTION_ERRORS", "MAX_RESPONSE_BYTES", "ClientSocket", "cancel_when_set"]

# What a broken or closed connection raises, from the socket up through h2.
CONNECTION_ERRORS = (
    OSError,
    GRPCError,
    h2.exceptions.ProtocolError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

# The largest answer a client takes: mkv's own answers are bounded well
# below it (a BatchGet answer by 16 MiB), and etcd's Range over a prefix may
# be larger than its 1.5 MiB request limit.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ClientSocket(GRPCProtoSocket):  # type: ignore[misc]  # purerpc is untyped
    """purerpc's client connection, which wakes its calls and tells its owner
    when it ends (``lost``, ``ended``), and knows when bytes last arrived
    (``heard``): a call that times out may then drop the connection only if
    the whole connection went quiet."""

    def __init__(self, sock: anyio.abc.ByteStream) -> None:
        super().__init__(
            GRPCConfiguration(client_side=True, max_message_length=MAX_RESPONSE_BYTES), sock
        )
        tolerate_late_frames(self)
        self.lost = False
        self.ended = anyio.Event()
        self.heard = anyio.current_time()
        connection = self._grpc_connection
        receive_data = connection.receive_data

        def heard(data: bytes) -> Any:
            self.heard = anyio.current_time()
            return receive_data(data)

        connection.receive_data = heard

    async def _reader_thread(self) -> None:
        try:
            await super()._reader_thread()
        finally:
            self.fail_pending()

    def fail_pending(self) -> None:
        """End the connection for its users: every call waiting reads EndOfStream."""
        self.lost = True
        self.ended.set()
        for stream in list(self._streams.values()):
            stream._incoming_events[0].close()


async def cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` is set (a connection held in a task
    group of its own ends when it is closed or lost)."""
    await event.wait()
    scope.cancel()
