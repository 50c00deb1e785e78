"""The async client for the control plane: add, remove and list partitions.

async with mkv.AdminClient.connect("127.0.0.1:7071") as admin:
    await admin.add_partition(start=b"m", end=None, partition_id="upper")
    for p in await admin.list_partitions():
        print(p.id, p.range, p.key_count)
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from mkv.auth import CONTROL_TOKEN_ENV
from mkv.channel import Channel, open_channel
from mkv.config import DEFAULT_CONTROL_ADDR
from mkv.credentials import client_credentials
from mkv.router import KeyRange
from mkv.v1 import control_pb2 as pb
from mkv.wire import CONTROL_SERVICE as SERVICE
from mkv.wire import Address

__all__ = ["AdminClient", "PartitionInfo"]


@attrs.frozen
class PartitionInfo:
    """What the control plane reports about one partition."""

    id: str
    range: KeyRange
    store: str
    pipeline: tuple[str, ...]
    # "starting", "active", "draining" or "stopped"
    state: str
    key_count: int
    size_bytes: int
    last_seq: int

    @classmethod
    def from_proto(cls, info: pb.PartitionInfo) -> PartitionInfo:
        return cls(
            id=info.id,
            range=KeyRange(info.start, info.end or None),
            store=info.store,
            pipeline=tuple(info.pipeline),
            state=pb.PartitionState.Name(info.state).lower(),
            key_count=info.key_count,
            size_bytes=info.size_bytes,
            last_seq=info.last_seq,
        )


class AdminClient:
    """A connection to one node's control plane. Use ``AdminClient.connect``."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: str | Address = DEFAULT_CONTROL_ADDR,
        *,
        token: str | None = None,
        token_file: Path | str | None = None,
        tls: bool = False,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[AdminClient]:
        """Connect to the control plane at ``address`` (``HOST:PORT``).

        Args:
            token, token_file: the control plane's token (default:
                ``$MKV_TOKEN`` when set; a node without one serves only loopback).
            tls, ca, cert, key, ssl_context: TLS, as ``mkv.credentials.client_credentials``.

        Raises:
            UnavailableError: nothing answers there, or the TLS handshake failed.
            ConfigError: a token or certificate file cannot be read.
        """
        credentials = await client_credentials(
            env_var=CONTROL_TOKEN_ENV,
            token=token,
            token_file=token_file,
            tls=tls,
            ca=ca,
            cert=cert,
            key=key,
            ssl_context=ssl_context,
        )
        async with open_channel(
            address, metadata=credentials.metadata, ssl_context=credentials.ssl_context
        ) as channel:
            yield cls(channel)

    async def add_partition(
        self,
        *,
        start: bytes = b"",
        end: bytes | None = None,
        partition_id: str | None = None,
        store: str | None = None,
        pipeline: Sequence[str] | None = None,
    ) -> PartitionInfo:
        """Create a partition owning ``[start, end)`` (``end=None``: unbounded).

        ``pipeline`` lists stage specs in order (see ``mkv.pipeline``); None
        gives the store kind's default.

        Raises:
            AlreadyExistsError: the id is taken or the range overlaps another.
            InvalidArgumentError: a malformed id, range or store kind.
        """
        request = pb.AddPartitionRequest(
            id=partition_id or "",
            start=start,
            end=end or b"",
            store=store or "",
            pipeline=pipeline or (),
        )
        response = await self._channel.unary(
            SERVICE, "AddPartition", request, pb.AddPartitionResponse
        )
        return PartitionInfo.from_proto(response.partition)

    async def remove_partition(self, partition_id: str) -> PartitionInfo:
        """Drain and delete a partition, its data included.

        Raises:
            NotFoundError: no such partition.
        """
        request = pb.RemovePartitionRequest(id=partition_id)
        response = await self._channel.unary(
            SERVICE, "RemovePartition", request, pb.RemovePartitionResponse
        )
        return PartitionInfo.from_proto(response.partition)

    async def list_partitions(self) -> list[PartitionInfo]:
        response = await self._channel.unary(
            SERVICE, "ListPartitions", pb.ListPartitionsRequest(), pb.ListPartitionsResponse
        )
        return [PartitionInfo.from_proto(p) for p in response.partitions]
