"""Keep Trio's exception groups inside mkv.

A nursery wraps every exception that leaves it, the body's included, in an
``ExceptionGroup``. Where mkv runs a helper task beside the caller's code (a
client connection, a test node), that would turn ``except mkv.NotFoundError``
in user code into a miss; so at those boundaries a group holding a single
exception is replaced by that exception, traceback intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unwrap_single_exception"]


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            inner = group.exceptions[0]
            if isinstance(inner, BaseExceptionGroup):
                raise
            raise inner from inner.__cause__
        raise
