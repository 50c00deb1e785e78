"""One gRPC connection from a client to an mkv port, with errors made typed.

Shared by ``mkv.Client`` (data plane) and ``mkv.AdminClient`` (control plane):
every call goes through ``Channel.call``, which turns purerpc and socket
failures into ``mkv.errors`` exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import purerpc
from purerpc.grpclib.exceptions import GRPCError, RpcFailedError

from mkv.errors import UnavailableError, error_for_status
from mkv.rpc import Address, parse_address

__all__ = ["Channel", "open_channel"]

T = TypeVar("T")


class Channel:
    def __init__(self, raw: object, address: Address) -> None:
        self.raw = raw
        self.address = address

    async def call(self, method: Callable[..., Awaitable[T]], request: object) -> T:
        """Invoke a stub method; map every failure to an ``MkvError``.

        Raises:
            MkvError: the server answered a non-OK status (typed by code).
            UnavailableError: the connection failed or was lost.
        """
        try:
            return await method(request)
        except RpcFailedError as exc:
            status = exc.status
            raise error_for_status(status.status_code, status.status_message) from None
        except (OSError, GRPCError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                anyio.EndOfStream) as exc:
            raise UnavailableError(
                f"Lost the connection to mkv at {self.address}: {exc or type(exc).__name__}."
            ) from exc


@asynccontextmanager
async def open_channel(address: str | Address) -> AsyncIterator[Channel]:
    """Connect to ``address`` (``HOST:PORT``).

    Raises:
        UnavailableError: nothing answers there.
    """
    if not isinstance(address, Address):
        address = parse_address(address)
    raw = purerpc.insecure_channel(address.host, address.port)
    try:
        await raw.__aenter__()
    except OSError as exc:
        raise UnavailableError(
            f"Cannot connect to mkv at {address}: {exc.strerror or exc}."
        ) from None
    try:
        yield Channel(raw, address)
    finally:
        await raw.__aexit__(None, None, None)
