"""The node id: made on a node's first start in cluster mode and kept in its
data directory, so that a restarted node comes back as the same member."""

from __future__ import annotations

import secrets
from pathlib import Path

from mkv.cluster.keyspace import check_name
from mkv.errors import ConfigError
from mkv.store.files import make_directory, write_atomically

__all__ = ["NODE_ID_FILE", "load_node_id"]

NODE_ID_FILE = "node-id"


def load_node_id(data_dir: Path, requested: str | None) -> str:
    """The id kept in ``data_dir/node-id``; on first start ``requested`` or a
    new ``n-`` + 8 random hex digits, written (fsynced, with its directory)
    before it is used. Blocking: run it on a worker thread.

    Raises:
        ConfigError: ``requested`` differs from the id kept, or either is not
            a valid id.
    """
    if requested is not None:
        try:
            check_name(requested, "node id")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    path = data_dir / NODE_ID_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the node id in {path}: {exc}") from None
    if kept is not None:
        try:
            check_name(kept, f"the node id in {path}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if requested is not None and requested != kept:
            raise ConfigError(
                f"--node-id {requested} differs from the id this data directory belongs to "
                f"({kept}, in {path}); a node's id is set on its first start only"
            )
        return kept
    node_id = requested or f"n-{secrets.token_hex(4)}"
    make_directory(data_dir)
    # write_atomically fsyncs the file and its directory.
    write_atomically(path, node_id.encode() + b"\n")
    return node_id
