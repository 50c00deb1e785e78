"""mkv: a minimal, partitioned, linearizable key-value server on Trio and gRPC.

Clients: ``mkv.Client`` and ``mkv.AdminClient`` (async: Trio or asyncio), and
``mkv.connect`` / ``mkv.BlockingAdminClient`` (blocking, for scripts and threads).
"""

from __future__ import annotations

from mkv.client.admin import AdminClient, OperationInfo, PartitionInfo, SnapshotInfo
from mkv.client.blocking import BlockingAdminClient, BlockingClient, BlockingWatch, connect
from mkv.client.data import Change, Client, Item, PartitionRange, WriteAck
from mkv.errors import (
    AbortedError,
    AlreadyExistsError,
    BadNodeError,
    CompactedError,
    ConditionFailedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    MkvError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StorageError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from mkv.node.config import Config
from mkv.node.server import Node
from mkv.router import KeyRange

__all__ = [
    "AbortedError",
    "AdminClient",
    "AlreadyExistsError",
    "BadNodeError",
    "BlockingAdminClient",
    "BlockingClient",
    "BlockingWatch",
    "Change",
    "Client",
    "CompactedError",
    "ConditionFailedError",
    "Config",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "Item",
    "KeyRange",
    "MkvError",
    "Node",
    "NotFoundError",
    "OperationInfo",
    "PartitionInfo",
    "PartitionRange",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SnapshotInfo",
    "StorageError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "WriteAck",
    "connect",
]

__version__ = "0.1.0"
