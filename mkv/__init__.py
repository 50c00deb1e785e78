"""mkv: a minimal, partitioned, linearizable key-value server on Trio and gRPC."""

from __future__ import annotations

from mkv.admin import AdminClient, OperationInfo, PartitionInfo, SnapshotInfo
from mkv.client import Change, Client, Item, PartitionRange, WriteAck
from mkv.config import Config
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
from mkv.router import KeyRange
from mkv.server import Node

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
]

__version__ = "0.1.0"
