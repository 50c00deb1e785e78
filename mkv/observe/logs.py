"""The server's log: human-readable lines or JSON lines, and the request log.

Log calls add structured fields with ``extra=fields(event=..., partition=...)``;
the human format shows the message (which already reads well), the JSON
format adds every field as a key of its own, so a log pipeline can filter on
``event`` or ``partition`` without parsing sentences.

What a log line may hold: identifiers (partition ids, methods, status codes),
counts and sequence numbers, paths, and caller input only in the bounded,
escaped form of ``mkv.errors.shown``. Never a value's contents, never a
token, never a key's raw bytes. Messages of ``MkvError`` follow the same
rule (they travel to clients too), which is why the request log may show them.

Every request is far too many lines at 100k requests a second, so the request
log (``RequestLog``) writes only failed calls and slow ones, and at most
``ERROR_LINES_PER_WINDOW`` lines per method and status in each window,
counting the rest into the next line it writes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Literal

from purerpc.grpclib.status import Status, StatusCode

__all__ = [
    "LOG_FORMATS",
    "HumanFormatter",
    "JsonFormatter",
    "RequestLog",
    "configure_logging",
    "fields",
    "note_partition",
]

LogFormat = Literal["human", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("human", "json")

# Lines the request log writes per (service, method, status) in one window;
# the rest are counted and reported in the first line of a later window.
ERROR_LINES_PER_WINDOW = 10
ERROR_WINDOW_SECONDS = 10.0

# Statuses that say the server (not the caller) has a problem.
_SERVER_FAULTS = frozenset({StatusCode.INTERNAL, StatusCode.UNKNOWN, StatusCode.DATA_LOSS})
# Statuses that say the server is overloaded or going away: worth a warning.
_PRESSURE = frozenset({StatusCode.UNAVAILABLE, StatusCode.RESOURCE_EXHAUSTED})

# The partition the current request was routed to, for the request log. Each
# gRPC call runs in a Trio task of its own, with a context of its own, so a
# value set while handling one call is never seen by another.
_partition: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mkv_request_partition", default=None
)

# Libraries whose debug lines show request headers (an authorization token
# among them) or frames: never below WARNING, whatever the server's level.
_UNSAFE_DEBUG_LOGGERS = ("hpack", "h2", "purerpc")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

log = logging.getLogger("mkv.requests")


def fields(**values: Any) -> dict[str, Any]:
    """Structured fields for a log call's ``extra``: ``extra=fields(event="drain")``."""
    return values


def note_partition(partition_id: str) -> None:
    """Record the partition the current request went to (for its error line)."""
    _partition.set(partition_id)


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class HumanFormatter(logging.Formatter):
    """``2026-11-26 13:45:01,123 INFO mkv.partition: partition p1 stopped``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC), ``level``, ``logger``,
    ``message``, the record's structured fields, and ``exception`` (the
    formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        millis = int(record.msecs)
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: a field that is not JSON (a Path, an enum) is still shown.
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "INFO", log_format: LogFormat = "human", stream: IO[str] | None = None
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Raises:
        ValueError: an unknown level or format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be DEBUG, INFO, WARNING or ERROR, not {level}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _UNSAFE_DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class RequestLog:
    """Logs failed and slow gRPC calls; an ``mkv.rpc.server`` observer.

    Args:
        slow_seconds: unary calls that take at least this long are logged
            (streams last as long as their client wants, so never); 0 or
            less: none are.
        clock: seconds, for the rate limit's windows.
    """

    def __init__(
        self,
        slow_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slow_seconds = slow_seconds if slow_seconds > 0 else float("inf")
        # (service, method) of response streams (see ``declare``).
        self._streaming: set[tuple[str, str]] = set()
        self._clock = clock
        # (service, method, code) -> [window start, lines written, lines suppressed]
        self._windows: dict[tuple[str, str, StatusCode], list[float]] = {}

    def declare(self, service: str, method: str, *, streaming: bool) -> None:
        """Say whether a served method is a response stream (never logged as slow)."""
        if streaming:
            self._streaming.add((service, method))

    def call_started(self, service: str, method: str) -> None:
        pass

    def call_finished(self, service: str, method: str, status: Status, seconds: float) -> None:
        if status.int_value == 0:  # OK; an Enum comparison costs ten times as much
            if seconds >= self.slow_seconds and (service, method) not in self._streaming:
                self._write(logging.WARNING, "slow", service, method, status, seconds)
            return
        code = status.status_code
        if code in _SERVER_FAULTS:
            level = logging.ERROR
        elif code in _PRESSURE:
            level = logging.WARNING
        else:
            level = logging.INFO  # the caller's mistake, or a condition it asked about
        self._write(level, "error", service, method, status, seconds)

    def _write(
        self,
        level: int,
        event: str,
        service: str,
        method: str,
        status: Status,
        seconds: float,
    ) -> None:
        if not log.isEnabledFor(level):
            return
        code = status.status_code
        now = self._clock()
        window = self._windows.get((service, method, code))
        if window is None or now - window[0] >= ERROR_WINDOW_SECONDS:
            suppressed = 0 if window is None else int(window[2])
            window = self._windows[(service, method, code)] = [now, 0, 0]
        else:
            suppressed = 0
        if window[1] >= ERROR_LINES_PER_WINDOW:
            window[2] += 1
            return
        window[1] += 1
        partition = _partition.get()
        where = "" if partition is None else f" on partition {partition}"
        what = f"took {seconds:.3f} s" if event == "slow" else f"failed with {code.name}"
        more = f" ({suppressed} more like it not logged)" if suppressed else ""
        message = status.status_message
        log.log(
            level,
            "%s/%s%s %s%s%s",
            service,
            method,
            where,
            what,
            f": {message}" if message and event != "slow" else "",
            more,
            extra=fields(
                event=f"request_{event}",
                service=service,
                method=method,
                partition=partition,
                code=code.name,
                seconds=round(seconds, 6),
                suppressed=suppressed,
            ),
        )
