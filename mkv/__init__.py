"""mkv: a minimal, partitioned, linearizable key-value server on Trio and gRPC."""

from __future__ import annotations

from mkv.admin import AdminClient, PartitionInfo
from mkv.client import Client, Item, PartitionRange, WriteAck
from mkv.config import Config
from mkv.errors import (
    AlreadyExistsError,
    BadNodeError,
    InternalError,
    InvalidArgumentError,
    MkvError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StorageError,
    UnavailableError,
)
from mkv.router import KeyRange
from mkv.server import Node

__all__ = [
    "AdminClient",
    "AlreadyExistsError",
    "BadNodeError",
    "Client",
    "Config",
    "InternalError",
    "InvalidArgumentError",
    "Item",
    "KeyRange",
    "MkvError",
    "Node",
    "NotFoundError",
    "PartitionInfo",
    "PartitionRange",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StorageError",
    "UnavailableError",
    "WriteAck",
]

__version__ = "0.1.0"
