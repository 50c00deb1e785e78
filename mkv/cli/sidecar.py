"""``mkv-sidecar``: ship complete snapshots to S3-compatible storage or a directory.

mkv-sidecar --root /var/lib/mkv/snapshots --destination s3://backups/mkv      # runs until SIGTERM
mkv-sidecar --root snaps --destination /mnt/backup --once --prune            # one pass, then exit
mkv-sidecar download s3://backups/mkv/p1/p1-7.sqlite3.manifest.json ./restore

Credentials and region for s3:// come from boto3's usual sources (the
``AWS_*`` environment variables, ``~/.aws``, an instance role);
``--endpoint-url`` points at another S3-compatible service.

Exit status: 0 on success (a long-running sidecar stopped by SIGINT/SIGTERM
included); 1 when an upload, download or the state file fails, with one line
``mkv-sidecar: <message>`` on stderr; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from mkv.errors import MkvError, shown
from mkv.sidecar.backoff import RetryPolicy
from mkv.sidecar.destination import Destination, TransferOptions
from mkv.sidecar.directory import DirectoryDestination
from mkv.sidecar.download import download_snapshot
from mkv.sidecar.errors import SidecarConfigError, SidecarStopped
from mkv.sidecar.locations import open_destination
from mkv.sidecar.shipper import Shipper
from mkv.sidecar.state import StateLock
from mkv.units import parse_size

__all__ = ["main"]

PROG = "mkv-sidecar"
STATE_FILE_NAME = ".mkv-sidecar-state.json"
# S3 refuses multipart parts below 5 MiB (all but the last).
MIN_CHUNK = 5 << 20

log = logging.getLogger("mkv.sidecar")


class _UsageError(SidecarConfigError):
    """A bad argument that argparse cannot see (values that depend on each other): exit 2."""


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected bytes like 8388608 or 8MiB, got '{shown(text)}'"
        ) from None


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{shown(text)}'") from None
        if value < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return value

    return parse


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transfers")
    group.add_argument(
        "--endpoint-url", help="an S3-compatible service other than AWS (http://host:port)"
    )
    group.add_argument(
        "--retries",
        type=_positive(int),
        default=5,
        help="attempts per transfer before giving up for this pass (default 5)",
    )
    group.add_argument(
        "--retry-delay",
        type=_positive(float),
        default=0.5,
        help="first backoff in seconds, doubling each retry, jittered (default 0.5)",
    )
    group.add_argument(
        "--retry-max-delay",
        type=_positive(float),
        default=30.0,
        help="longest backoff in seconds (default 30)",
    )
    group.add_argument(
        "--chunk-size",
        type=_size,
        default=8 << 20,
        help="S3 multipart part size, at least 5MiB (default 8MiB)",
    )
    group.add_argument(
        "--max-bandwidth",
        type=_size,
        default=None,
        help="bytes per second for transfers, e.g. 20MiB (default: no limit)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Upload every complete mkv snapshot under a directory to remote storage.",
        epilog=f"To fetch a snapshot back: {PROG} download LOCATION LOCAL_DIR",
    )
    parser.add_argument(
        "--root", required=True, type=Path, help="the snapshot root the server writes under"
    )
    parser.add_argument(
        "--destination",
        required=True,
        help="s3://BUCKET/PREFIX, file:///PATH or a directory path",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        help=f"what has been shipped (default: ROOT/{STATE_FILE_NAME})",
    )
    parser.add_argument(
        "--interval",
        type=_positive(float),
        default=10.0,
        help="seconds between passes over the root (default 10)",
    )
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete local snapshots once their upload is confirmed",
    )
    _add_transfer_options(parser)
    return parser


def build_download_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} download",
        description="Download one snapshot (data, then manifest) and verify it, ready for restore.",
    )
    parser.add_argument(
        "location", help="the remote manifest: s3://BUCKET/KEY.manifest.json, file:// or a path"
    )
    parser.add_argument("local_dir", type=Path, help="where to put the snapshot's two files")
    _add_transfer_options(parser)
    return parser


def _options(args: argparse.Namespace) -> tuple[TransferOptions, RetryPolicy]:
    if args.chunk_size < MIN_CHUNK:
        raise _UsageError("--chunk-size must be at least 5MiB (S3's smallest part).")
    if args.retries < 1:
        raise _UsageError("--retries must be at least 1.")
    if getattr(args, "interval", 1.0) <= 0:
        raise _UsageError("--interval must be more than 0 seconds.")
    if args.max_bandwidth == 0:
        raise _UsageError("--max-bandwidth must be more than 0.")
    options = TransferOptions(
        chunk_size=args.chunk_size,
        max_bandwidth=args.max_bandwidth,
        endpoint_url=args.endpoint_url,
    )
    retry = RetryPolicy(
        attempts=args.retries, base_delay=args.retry_delay, max_delay=args.retry_max_delay
    )
    return options, retry


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``stop`` for the duration; restore the old handlers after.

    Restoring matters when ``main`` runs in-process (tests, embedding).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    downloading = bool(argv) and argv[0] == "download"
    parser = build_download_parser() if downloading else build_parser()
    try:
        args = parser.parse_args(argv[1:] if downloading else argv)
    except SystemExit as exc:  # help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # boto3's own INFO lines ("Found credentials in environment variables") are noise here.
    logging.getLogger("botocore").setLevel(max(logging.WARNING, logging.getLogger().level))
    stop = threading.Event()
    with _stop_on_signals(stop):
        return _main(args, downloading, stop)


def _main(args: argparse.Namespace, downloading: bool, stop: threading.Event) -> int:
    try:
        options, retry = _options(args)
        if downloading:
            path = download_snapshot(args.location, args.local_dir, options, retry=retry, stop=stop)
            print(path, flush=True)
            return 0
        return _run(args, options, retry, stop)
    except SidecarConfigError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, _UsageError) else 1
    except SidecarStopped:
        print(f"{PROG}: stopped before finishing", file=sys.stderr)
        return 1
    except MkvError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {shown(str(exc.filename), 80)}" if exc.filename else ""
        print(f"{PROG}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def _check_places(root: Path, destination: Destination) -> None:
    if not root.is_dir():
        raise _UsageError(f"The snapshot root {shown(str(root), 80)} is not a directory.")
    if isinstance(destination, DirectoryDestination):
        base = destination.base.resolve()
        resolved = root.resolve()
        if base == resolved or resolved in base.parents:
            # Its uploads would be found by its own next scan, and uploaded again, forever.
            raise _UsageError("The destination directory must not be inside the snapshot root.")


def _run(
    args: argparse.Namespace, options: TransferOptions, retry: RetryPolicy, stop: threading.Event
) -> int:
    root: Path = args.root
    try:
        destination = open_destination(args.destination, options)
    except SidecarConfigError as exc:
        raise _UsageError(exc.message) from None
    try:
        _check_places(root, destination)
        state_path: Path = args.state_file or root / STATE_FILE_NAME
        lock = StateLock(state_path)
        lock.acquire()
        try:
            shipper = Shipper(
                root, destination, state_path, retry=retry, prune=args.prune, stop=stop
            )
            if not args.once:
                log.info(
                    "shipping snapshots from %s to %s every %.0f s",
                    root,
                    destination.url,
                    args.interval,
                )
                shipper.run_forever(args.interval)
                log.info("stopped")
                return 0
            report = shipper.run_pass()
            print(f"{PROG}: {report.summary()}", flush=True)
            if report.failed:
                print(f"{PROG}: {report.failed}", file=sys.stderr)
                return 1
            if stop.is_set():
                raise SidecarStopped
            return 0
        finally:
            lock.release()
    finally:
        destination.close()


if __name__ == "__main__":
    sys.exit(main())
