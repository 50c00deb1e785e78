"""Where snapshots go: the interface every destination offers.

Which destination a URL names is decided in ``mkv.sidecar.locations``, which
imports the destinations; they import this module, so it imports none of them.

A destination stores objects under keys that mirror the snapshot root:
``p1/p1-7.sqlite3`` and ``p1/p1-7.sqlite3.manifest.json``. Every method is
blocking and raises ``DestinationError`` for a failed transfer, so the
shipper decides about retries in one place.
"""

from __future__ import annotations

import abc
import threading
from pathlib import Path

import attrs

__all__ = ["Destination", "TransferOptions"]


@attrs.frozen(kw_only=True)
class TransferOptions:
    # S3: objects larger than this go up in parts of this size (S3's minimum part is 5 MiB).
    chunk_size: int = 8 << 20
    # Bytes per second, or None for no limit: a sidecar on the server's host
    # should not starve the server's own traffic.
    max_bandwidth: int | None = None
    # S3-compatible services other than AWS (MinIO, Ceph, moto, ...).
    endpoint_url: str | None = None


class Destination(abc.ABC):
    """Remote storage, seen as a flat map from keys to immutable objects."""

    #: Names the destination in logs and in the state file.
    url: str

    @abc.abstractmethod
    def get_small(self, key: str, limit: int) -> bytes | None:
        """The object's bytes (a manifest), or None if there is none.

        Raises:
            DestinationError: it is larger than ``limit``, or the read failed.
        """

    @abc.abstractmethod
    def data_matches(self, key: str, size: int, sha256: str) -> bool:
        """Whether the object exists with exactly this size and SHA-256.

        A directory reads the file back and hashes it; S3 compares the size and
        the ``sha256`` metadata written with the object (S3 itself checked the
        transfer's checksum when it accepted the upload).
        """

    @abc.abstractmethod
    def put_file(self, key: str, source: Path, *, sha256: str, stop: threading.Event) -> None:
        """Upload ``source`` as ``key``, visible only once whole.

        Leftovers of an earlier interrupted upload of the same key (a
        temporary file, an unfinished multipart upload) are discarded first.

        Raises:
            SidecarStopped: ``stop`` was set; the partial upload was discarded.
        """

    @abc.abstractmethod
    def put_small(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) in one atomic step."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if it exists."""

    @abc.abstractmethod
    def get_file(self, key: str, target: Path, *, stop: threading.Event) -> None:
        """Download the object to ``target`` (the caller's temporary name) and fsync it.

        Raises:
            DestinationError: no such object, or the transfer failed.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most destinations hold nothing
        """Release connections."""
