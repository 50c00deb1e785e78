"""mkv's version, in one place: the package metadata (pyproject.toml reads it
from here), ``mkv --version``, ``mkvctl --version``, the ``NodeStatus`` call
and the ``mkv_build_info`` metric all take it from this module, which imports
nothing so that ``--version`` costs no start-up time."""

from __future__ import annotations

import platform

__all__ = ["__version__", "build_info", "version_line"]

__version__ = "0.1.0"


def build_info() -> dict[str, str]:
    """What build this process runs: mkv's version and the Python it runs on."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def version_line(program: str) -> str:
    """What ``--version`` prints: ``mkvctl 0.1.0 (Python 3.11.7)``."""
    return f"{program} {__version__} (Python {platform.python_version()})"
