"""Which destination a location names: ``s3://BUCKET/PREFIX``, ``file:///PATH`` or a path.

Apart from ``mkv.sidecar.destination`` so that the interface imports none of
its implementations (which import it): no import circle (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from mkv.errors import shown
from mkv.sidecar.destination import Destination, TransferOptions
from mkv.sidecar.errors import SidecarConfigError

__all__ = ["open_destination", "split_location"]


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
