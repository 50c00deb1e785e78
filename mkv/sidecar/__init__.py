"""``mkv-sidecar``: ships complete snapshots from the snapshot root to remote storage.

A separate, synchronous process (see docs/sidecar.md): it never runs inside
the server's event loop, and talks to the server only through the files the
Snapshot RPC writes.
"""

from mkv.sidecar.backoff import RetryPolicy
from mkv.sidecar.destination import Destination, TransferOptions
from mkv.sidecar.download import download_snapshot
from mkv.sidecar.errors import DestinationError, SidecarConfigError, SidecarStopped
from mkv.sidecar.locations import open_destination
from mkv.sidecar.shipper import PassReport, Shipper, UploadFailedError

__all__ = [
    "Destination",
    "DestinationError",
    "PassReport",
    "RetryPolicy",
    "Shipper",
    "SidecarConfigError",
    "SidecarStopped",
    "TransferOptions",
    "UploadFailedError",
    "download_snapshot",
    "open_destination",
]
