"""mkv: a minimal, partitioned, linearizable key-value server on Trio and gRPC."""

from __future__ import annotations

from mkv.client.admin import AdminClient, OperationInfo, PartitionInfo, SnapshotInfo
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
from mkv.version import __version__

__all__ = [
    "AbortedError",
    "AdminClient",
    "AlreadyExistsError",
    "BadNodeError",
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
    "__version__",
]
