"""What the client and the server share about the wire: addresses, service
names, limits."""

from __future__ import annotations

import ipaddress

import attrs

from mkv.v1 import control_pb2, data_pb2

__all__ = [
    "CONTROL_SERVICE",
    "DATA_SERVICE",
    "DEFAULT_CONTROL_ADDR",
    "DEFAULT_DATA_ADDR",
    "FORWARDED",
    "MAX_KEY_BYTES",
    "MAX_REQUEST_BYTES",
    "Address",
    "is_loopback",
    "parse_address",
]

# Where a node listens, and a client connects, unless told otherwise.
DEFAULT_DATA_ADDR = "127.0.0.1:7070"
DEFAULT_CONTROL_ADDR = "127.0.0.1:7071"

DATA_SERVICE: str = data_pb2.DESCRIPTOR.services_by_name["DataPlane"].full_name
CONTROL_SERVICE: str = control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name
# Metadata on a control call one node forwards to another (its value: the
# forwarding node's id). A node that gets such a call answers it itself or
# refuses it, and never forwards it again, so a stale view cannot make a loop.
FORWARDED = "mkv-forwarded"

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere
