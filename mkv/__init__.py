"""mkv: a minimal, partitioned, linearizable key-value server on Trio and gRPC.

Clients: ``mkv.Client`` and ``mkv.AdminClient`` (async: Trio or asyncio), and
``mkv.connect`` / ``mkv.BlockingAdminClient`` (blocking, for scripts and threads).

The public names below are imported on first use (PEP 562), not here: any
``import mkv.x`` runs this file first, and ``mkvctl get`` should not pay for
loading the server (the node, its stores, the log) to read one key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mkv.version import __version__

if TYPE_CHECKING:
    from mkv.client.admin import (
        AdminClient,
        NodeInfo,
        NodeStatus,
        OperationInfo,
        PartitionInfo,
        PartitionStatus,
        SnapshotInfo,
    )
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
    "NodeInfo",
    "NodeStatus",
    "NotFoundError",
    "OperationInfo",
    "PartitionInfo",
    "PartitionRange",
    "PartitionStatus",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SnapshotInfo",
    "StorageError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "WriteAck",
    "__version__",
    "connect",
]

# Where each public name lives, for __getattr__.
_HOMES = {
    "AdminClient": "mkv.client.admin",
    "NodeInfo": "mkv.client.admin",
    "NodeStatus": "mkv.client.admin",
    "PartitionStatus": "mkv.client.admin",
    "OperationInfo": "mkv.client.admin",
    "PartitionInfo": "mkv.client.admin",
    "SnapshotInfo": "mkv.client.admin",
    "BlockingAdminClient": "mkv.client.blocking",
    "BlockingClient": "mkv.client.blocking",
    "BlockingWatch": "mkv.client.blocking",
    "connect": "mkv.client.blocking",
    "Change": "mkv.client.data",
    "Client": "mkv.client.data",
    "Item": "mkv.client.data",
    "PartitionRange": "mkv.client.data",
    "WriteAck": "mkv.client.data",
    "Config": "mkv.node.config",
    "Node": "mkv.node.server",
    "KeyRange": "mkv.router",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name.endswith("Error") and name in __all__:
        home = "mkv.errors"
    elif name in _HOMES:
        home = _HOMES[name]
    else:
        raise AttributeError(f"module 'mkv' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once found, found: no __getattr__ next time
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
