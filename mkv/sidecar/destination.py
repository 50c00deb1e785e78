"""Where snapshots go: the interface every destination offers, and URL parsing.

A destination stores objects under keys that mirror the snapshot root:
``p1/p1-7.sqlite3`` and ``p1/p1-7.sqlite3.manifest.json``. Every method is
blocking and raises ``DestinationError`` for a failed transfer, so the
shipper decides about retries in one place.
"""

from __future__ import annotations

import abc
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import attrs

from mkv.errors import shown
from mkv.sidecar.errors import SidecarConfigError

__all__ = ["Destination", "TransferOptions", "open_destination", "split_location"]


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


def split_location(location: str) -> tuple[str, str]:
    """``s3://bucket/a/b.json`` → (``s3://bucket``, ``a/b.json``); a path → (its directory, name).

    For ``download``, which takes one object's full location.

    Raises:
        SidecarConfigError: not an s3:// or file:// URL or a path to a file.
    """
    parts = urlsplit(location)
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or not key or key.endswith("/"):
            raise SidecarConfigError(
                f"'{shown(location, 80)}' does not name an object; expected s3://BUCKET/KEY."
            )
        return f"s3://{parts.netloc}", key
    path = _local_path(location)
    if path.name in ("", ".", ".."):
        raise SidecarConfigError(f"'{shown(location, 80)}' does not name a file.")
    return path.parent.as_uri(), path.name


def _local_path(location: str) -> Path:
    parts = urlsplit(location)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SidecarConfigError(
                f"'{shown(location, 80)}' names another host; file:// URLs must be local."
            )
        return Path(unquote(parts.path)).absolute()
    if parts.scheme and len(parts.scheme) > 1:  # "C:" would be a drive, not a scheme
        raise SidecarConfigError(
            f"Unknown destination scheme '{shown(parts.scheme)}'; "
            "use s3://BUCKET/PREFIX, file:///PATH or a path."
        )
    return Path(location).absolute()


def open_destination(location: str, options: TransferOptions) -> Destination:
    """The destination a URL or path names.

    ``s3://bucket/prefix`` needs boto3 (``pip install 'mkv[sidecar]'``);
    credentials come from boto3's usual sources (environment, shared files,
    instance roles).

    Raises:
        SidecarConfigError: an unknown scheme, a malformed URL, or boto3 missing.
    """
    parts = urlsplit(location)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise SidecarConfigError(
                f"'{shown(location, 80)}' names no bucket; expected s3://BUCKET/PREFIX."
            )
        try:
            from mkv.sidecar.s3 import S3Destination  # boto3 is optional: import it only here
        except ImportError:
            raise SidecarConfigError(
                "s3:// destinations need boto3: pip install 'mkv[sidecar]'."
            ) from None

        return S3Destination(parts.netloc, parts.path.strip("/"), options)
    from mkv.sidecar.directory import DirectoryDestination

    return DirectoryDestination(_local_path(location), options)
