"""What the client and the server share about the wire: addresses, service
names, limits, and one purerpc work-around."""

from __future__ import annotations

import contextlib

import attrs
import h2.errors
import h2.exceptions
from purerpc.grpc_proto import GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState

from mkv.v1 import control_pb2, data_pb2

__all__ = [
    "CONTROL_SERVICE",
    "DATA_SERVICE",
    "MAX_KEY_BYTES",
    "MAX_REQUEST_BYTES",
    "Address",
    "close_call",
    "parse_address",
]

DATA_SERVICE: str = data_pb2.DESCRIPTOR.services_by_name["DataPlane"].full_name
CONTROL_SERVICE: str = control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name

# The largest request message, serialized, per the API contract.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_KEY_BYTES = 4096


@attrs.frozen
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6).

    Raises:
        ValueError: not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return Address(host.removeprefix("[").removesuffix("]"), int(port))


def close_call(stream: GRPCProtoStream) -> None:
    """Release what purerpc keeps per call, which it never releases itself.

    purerpc leaves each call's event queue open (the garbage collector closes
    it, with a ResourceWarning), and keeps a call that ended early (cancelled,
    or answered before its request was read) in its stream table, where any
    late frame for it would be pushed into the closed queue and kill the whole
    connection. So a call that did not finish both ways is reset, as gRPC does
    on cancellation: h2 then drops the frames still in flight for it.
    """
    if stream.state is not GRPCStreamState.CLOSED:
        connection = stream._grpc_connection.h2_connection
        with contextlib.suppress(h2.exceptions.ProtocolError):
            connection.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
        stream._grpc_socket._streams.pop(stream.stream_id, None)
        # Wakes the writer task to send the reset; no checkpoint, so this is
        # safe in a cancelled scope.
        stream._socket._flush_event.set()
    send, receive = stream._incoming_events
    send.close()
    receive.close()
