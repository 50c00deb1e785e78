"""purerpc's client connection, made safe to hold: the one piece under mkv's
three callers of other servers (``mkv.client.channel`` for programs,
``mkv.etcd.connection`` for etcd, ``mkv.rpc.dial`` from node to node).

purerpc's reader just returns when the server goes away, leaving every call
on the connection waiting forever; ``ClientSocket`` wakes them instead, tells
its owner, and tolerates frames that arrive for a stream already closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import h2.exceptions
from purerpc.grpc_proto import GRPCProtoSocket
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.exceptions import GRPCError

from mkv.rpc.purerpc_compat import tolerate_late_frames

__all__ = ["CONNECTION_ERRORS", "MAX_RESPONSE_BYTES", "ClientSocket", "hold_connection"]

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


async def hold_connection(
    sock: anyio.abc.ByteStream,
    *,
    closing: anyio.Event,
    opened: Callable[[ClientSocket], None],
    log: logging.Logger,
    name: str,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """Own a connection in a task of its own until it ends or ``closing`` is
    set: purerpc runs its reader and writer in a task group around whoever
    enters the socket, so held here a connection that breaks fails the calls
    on it instead of cancelling its callers' code. ``opened`` is handed the
    socket before the task reports itself started."""
    grpc_socket = ClientSocket(sock)
    try:
        async with sock, grpc_socket:
            opened(grpc_socket)
            task_status.started()
            async with anyio.create_task_group() as waiting:
                for event in (closing, grpc_socket.ended):
                    waiting.start_soon(_cancel_when_set, event, waiting.cancel_scope)
    except* CONNECTION_ERRORS as group:
        log.debug("connection to %s lost: %r", name, group.exceptions)
    finally:
        grpc_socket.fail_pending()


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
