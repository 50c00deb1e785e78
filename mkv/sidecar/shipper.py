"""One pass of the sidecar: find complete snapshots, upload the new ones, prune.

The order of operations is the whole guarantee (docs/sidecar.md):

- upload: remove a stale remote manifest at the same key, upload the data,
  confirm it, then upload the manifest, so "manifest present ⇒ complete"
  holds at the destination at every instant, kills included;
- record: only after the manifest is up is the snapshot written to the state
  file; a kill before that repeats the upload (or finds it already there);
- prune: mark the entry ``pruning`` in the state file, delete the local
  manifest, then the data file; a kill in between leaves a data file without a
  manifest, which is not a snapshot, and which the next pass deletes.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs

from mkv.errors import InvalidArgumentError
from mkv.sidecar.backoff import RetryPolicy, retrying
from mkv.sidecar.destination import Destination
from mkv.sidecar.errors import DestinationError, SidecarStopped
from mkv.sidecar.scan import MAX_MANIFEST_BYTES, Found, Unreadable, scan
from mkv.sidecar.state import Corrupt, Fingerprint, Shipped, ShippedState, fingerprint
from mkv.snapshots.manifest import SnapshotCorruptError, manifest_path_for, verify_snapshot
from mkv.store.files import fsync_directory

__all__ = ["PassReport", "Shipper", "UploadFailedError", "upload_snapshot"]

log = logging.getLogger("mkv.sidecar")


class UploadFailedError(DestinationError):
    """An upload failed after every retry; the pass stopped there."""


class _LocalChanged(Exception):
    """The local snapshot changed while it was being uploaded."""


@attrs.define
class PassReport:
    """What one pass did, for the log line and for ``--once``'s summary."""

    uploaded: list[str] = attrs.field(factory=list)
    already_shipped: int = 0
    corrupt: list[str] = attrs.field(factory=list)
    unreadable: list[str] = attrs.field(factory=list)
    pruned: list[str] = attrs.field(factory=list)
    failed: str | None = None

    def summary(self) -> str:
        text = (
            f"uploaded {len(self.uploaded)}, already shipped {self.already_shipped}, "
            f"pruned {len(self.pruned)}, corrupt {len(self.corrupt)}, "
            f"unreadable manifests {len(self.unreadable)}"
        )
        return text + (f"; stopped: {self.failed}" if self.failed else "")


def upload_snapshot(
    destination: Destination, item: Found, local: Fingerprint, stop: threading.Event
) -> bool:
    """Put one verified snapshot at the destination; True if anything was sent.

    Safe to repeat after a crash at any point: it finds a complete copy and
    sends nothing, or starts the data over.

    Raises:
        DestinationError: a transfer failed.
        SidecarStopped: ``stop`` was set during the data upload.
        _LocalChanged: the local files changed meanwhile; the manifest was not sent.
    """
    manifest_key = item.manifest_relpath
    size, sha256 = item.manifest.size, item.manifest.sha256
    remote = destination.get_small(manifest_key, MAX_MANIFEST_BYTES)
    if remote == item.manifest_bytes and destination.data_matches(item.relpath, size, sha256):
        return False  # shipped before a crash that kept it out of the state file
    if remote is not None:
        # Another snapshot was shipped to this path before. Its manifest must go
        # first: over our new data it would claim a checksum the data fails.
        destination.delete(manifest_key)
    destination.put_file(item.relpath, item.data_path, sha256=sha256, stop=stop)
    if not _unchanged(item, local):
        raise _LocalChanged
    if not destination.data_matches(item.relpath, size, sha256):
        raise DestinationError("The uploaded data does not match the snapshot's size and SHA-256.")
    destination.put_small(manifest_key, item.manifest_bytes)
    return True


def _unchanged(item: Found, local: Fingerprint) -> bool:
    try:
        return (
            fingerprint(item.data_path) == local
            and item.manifest_path.read_bytes() == item.manifest_bytes
        )
    except FileNotFoundError:
        return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Shipper:
    """Ships the snapshots under ``root`` to ``destination``, recording them in ``state_path``.

    Blocking, single-threaded: the sidecar is its own process, and boto3 is
    synchronous. ``stop`` (set by SIGINT/SIGTERM) is honoured between
    snapshots, while waiting to retry, and inside a running transfer.
    """

    def __init__(
        self,
        root: Path,
        destination: Destination,
        state_path: Path,
        *,
        retry: RetryPolicy | None = None,
        prune: bool = False,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.root = root
        self.destination = destination
        self.state_path = state_path
        self.retry = retry or RetryPolicy()
        self.prune = prune
        self.stop = stop or threading.Event()
        self.rng = rng
        self.state = ShippedState.load(state_path, destination.url)
        if not state_path.exists():
            # Written at once, so the file is tied to its destination from the start.
            self._save()
        # Unreadable manifests are cheap to re-detect; this only keeps the log
        # from repeating the same complaint every pass.
        self._reported: set[tuple[str, str]] = set()

    def _save(self) -> None:
        self.state.save(self.state_path)

    def run_pass(self) -> PassReport:
        """Look at every snapshot once.

        An upload that fails after its retries ends the pass (storage is
        likely down; the rest wait for the next pass): ``report.failed`` says so.

        Raises:
            SidecarStopped: ``stop`` was set mid-transfer.
            OSError: the state file or the snapshot root failed.
        """
        report = PassReport()
        self._finish_interrupted_prunes()
        seen: set[str] = set()
        errors: list[OSError] = []
        for item in scan(self.root, errors):
            if self.stop.is_set():
                return report
            if isinstance(item, Unreadable):
                self._unreadable(item, report)
                continue
            seen.add(item.identity)
            entry = self.state.shipped.get(item.identity)
            if entry is None:
                try:
                    self._ship(item, report)
                except UploadFailedError as exc:
                    log.error("%s", exc.message)
                    report.failed = exc.message
                    return report
                entry = self.state.shipped.get(item.identity)
            else:
                report.already_shipped += 1
            if entry is not None and self.prune:
                self._prune(item, entry, report)
        for error in errors:
            log.error("cannot list %s: %s", error.filename, error.strerror)
        if not errors:
            # Only a complete listing proves a snapshot is gone.
            self._forget_missing(seen)
        return report

    def _unreadable(self, item: Unreadable, report: PassReport) -> None:
        report.unreadable.append(item.relpath)
        if (item.relpath, item.digest) not in self._reported:
            self._reported.add((item.relpath, item.digest))
            log.error("skipping %s: not a valid snapshot manifest: %s", item.relpath, item.reason)

    def _ship(self, item: Found, report: PassReport) -> None:
        try:
            local = fingerprint(item.data_path)
        except FileNotFoundError:
            local = (0, 0, 0)
        known = self.state.corrupt.get(item.identity)
        if known is not None and known.local == local:
            report.corrupt.append(item.relpath)  # reported when found; not hashed again
            return
        try:
            manifest, _ = verify_snapshot(item.manifest_path)
        except SnapshotCorruptError as exc:
            log.error("snapshot %s is corrupt and will not be uploaded: %s", item.relpath, exc)
            self.state.corrupt[item.identity] = Corrupt(
                local=local, reason=exc.message, seen_at=_now()
            )
            self._save()
            report.corrupt.append(item.relpath)
            return
        except InvalidArgumentError:
            manifest = None  # the manifest went away since the scan
        if manifest != item.manifest or not _unchanged(item, local):
            log.info(
                "snapshot %s changed while being checked; looking again next pass", item.relpath
            )
            return
        self.state.corrupt.pop(item.identity, None)
        what = f"upload of {item.relpath}"
        log.info(
            "uploading %s (%d bytes) to %s", item.relpath, item.manifest.size, self.destination.url
        )
        started = time.monotonic()
        try:
            sent = retrying(
                self.retry,
                self.stop,
                what,
                lambda: upload_snapshot(self.destination, item, local, self.stop),
                self.rng,
            )
        except _LocalChanged:
            log.warning(
                "snapshot %s changed during its upload; uploading it again next pass", item.relpath
            )
            return
        except DestinationError as exc:
            raise UploadFailedError(f"The {what} failed: {exc.message}") from None
        self.state.shipped[item.identity] = Shipped(
            path=item.relpath,
            sha256=item.manifest.sha256,
            size=item.manifest.size,
            local=local,
            shipped_at=_now(),
        )
        self._save()
        if sent:
            elapsed = time.monotonic() - started
            log.info("uploaded %s in %.1f s", item.relpath, elapsed)
            report.uploaded.append(item.relpath)
        else:
            log.info("%s was already at %s; recorded it", item.relpath, self.destination.url)
            report.already_shipped += 1

    def _prune(self, item: Found, entry: Shipped, report: PassReport) -> None:
        try:
            local = fingerprint(item.data_path)
        except FileNotFoundError:
            local = None
        if local != entry.local:
            # Not the file that was uploaded (replaced in place, or gone): forget
            # the upload, so the next pass verifies what is there now.
            log.warning("snapshot %s changed since its upload; not pruning it", item.relpath)
            del self.state.shipped[item.identity]
            self._save()
            return
        try:
            remote = self.destination.get_small(item.manifest_relpath, MAX_MANIFEST_BYTES)
            confirmed = remote == item.manifest_bytes and self.destination.data_matches(
                item.relpath, entry.size, entry.sha256
            )
        except DestinationError as exc:
            log.warning(
                "cannot confirm the upload of %s, not pruning it now: %s", item.relpath, exc
            )
            return
        if not confirmed:
            log.warning(
                "the remote copy of %s is missing or different; not pruning, uploading it again",
                item.relpath,
            )
            del self.state.shipped[item.identity]
            self._save()
            return
        entry.pruning = True
        self._save()
        # Manifest first: from that instant the local files are not a snapshot,
        # so nothing (a restore, this sidecar) can take the half-deleted pair
        # for a complete one. Data first would leave a manifest naming a
        # missing file: a "snapshot" that fails verification.
        _unlink_durably(item.manifest_path)
        _unlink_durably(item.data_path)
        del self.state.shipped[item.identity]
        self._save()
        log.info("pruned %s (confirmed at %s)", item.relpath, self.destination.url)
        report.pruned.append(item.relpath)

    def _finish_interrupted_prunes(self) -> None:
        """Delete data files whose manifest a killed prune already deleted."""
        for key, entry in list(self.state.shipped.items()):
            if not entry.pruning:
                continue
            data_path = self.root.joinpath(*entry.path.split("/"))
            manifest_path = manifest_path_for(data_path)
            if manifest_path.exists():
                continue  # nothing deleted yet: the scan prunes it again (with --prune)
            try:
                if fingerprint(data_path) == entry.local:
                    _unlink_durably(data_path)
                    log.info("finished pruning %s", entry.path)
            except FileNotFoundError:
                pass
            del self.state.shipped[key]
            self._save()

    def _forget_missing(self, seen: set[str]) -> None:
        """Drop records of snapshots no longer under the root.

        Keeps the state file small. Should the same snapshot come back, the
        upload finds it complete at the destination and sends nothing.
        """
        stale = [k for k, e in self.state.shipped.items() if k not in seen and not e.pruning]
        stale += [k for k in self.state.corrupt if k not in seen]
        if stale:
            for key in stale:
                self.state.shipped.pop(key, None)
                self.state.corrupt.pop(key, None)
            self._save()

    def run_forever(self, interval: float) -> None:
        """Pass after pass, ``interval`` seconds apart, until ``stop`` is set.

        A failed pass (storage down, after its retries) is logged and the next
        pass tries again; only the state file failing ends the loop.

        Raises:
            OSError: the state file or the snapshot root cannot be used.
        """
        while not self.stop.is_set():
            try:
                report = self.run_pass()
            except SidecarStopped:
                return
            if report.uploaded or report.pruned or report.failed:
                log.info("pass done: %s", report.summary())
            self.stop.wait(interval)


def _unlink_durably(path: Path) -> None:
    """Delete ``path`` and fsync its directory, so deletions reach the disk in order."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_directory(path.parent)
