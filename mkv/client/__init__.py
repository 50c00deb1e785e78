"""The client side: what a program imports to talk to a node over gRPC.

Data (Client), admin (AdminClient), the channel, the client's streams,
credentials and batch encoding. Nothing here imports the node, a partition, a
store, a snapshot, the pipeline or the log (tests/test_layout.py checks).
"""

from __future__ import annotations

# Importing Client from here worked when the client was one module; it
# still does. Applications should use ``mkv.Client`` and ``mkv.AdminClient``.
from mkv.client.data import Change, Client, Item, PartitionRange, WriteAck

__all__ = ["Change", "Client", "Item", "PartitionRange", "WriteAck"]
