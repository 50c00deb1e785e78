"""Partition pipelines: the stages a write passes through on its way to the store.

Built-in stages, by the name a pipeline spec uses:

- ``timestamp``: stamp each write with the partition's hybrid logical clock.
- ``reject-prefix:<p>,...``, ``max-value-size:<n>``: refuse writes.
- ``sanitize-json:<field>,...`` (and ``sanitize-json-strict``): drop fields
  from JSON values.
- ``wal[:always|interval=<ms>|off][,group=off]``: the write-ahead log.
- ``replicate[:sync|async]``: after ``wal``, a write completes once every
  in-sync replica has it durable (``async``: at once); see
  ``mkv.pipeline.replicate``.

Applications add their own with ``register_stage``.
"""

from __future__ import annotations

from mkv.pipeline.base import (
    UNOBSERVED,
    AsyncStage,
    Gating,
    Notifying,
    Recovered,
    StageContext,
    StageObserver,
    SyncStage,
)
from mkv.pipeline.clock import TimestampStage
from mkv.pipeline.filters import FACTORIES as _FILTERS
from mkv.pipeline.reorder import OrderedWindow, Released
from mkv.pipeline.replicate import ReplicateStage
from mkv.pipeline.spec import (
    Pipeline,
    build_pipeline,
    check_pipeline,
    register_stage,
    restore,
    stage_names,
)
from mkv.pipeline.wal_stage import WalStage
from mkv.records import Write

__all__ = [
    "DEFAULT_PIPELINES",
    "UNOBSERVED",
    "AsyncStage",
    "Gating",
    "Notifying",
    "OrderedWindow",
    "Pipeline",
    "Recovered",
    "Released",
    "ReplicateStage",
    "StageContext",
    "StageObserver",
    "SyncStage",
    "WalStage",
    "Write",
    "build_pipeline",
    "check_pipeline",
    "default_pipeline",
    "register_stage",
    "restore",
    "stage_names",
]

# What a partition gets when AddPartition names no stages. SQLite partitions
# are durable through the log (SQLite then commits without its own fsync);
# memory partitions are a cache unless given a "wal" stage.
DEFAULT_PIPELINES: dict[str, tuple[str, ...]] = {
    "sqlite": ("timestamp", "wal"),
    "memory": ("timestamp",),
}


def default_pipeline(store_kind: str) -> tuple[str, ...]:
    return DEFAULT_PIPELINES.get(store_kind, ("timestamp", "wal"))


register_stage("timestamp", TimestampStage.from_spec)
for _name, _factory in _FILTERS.items():
    register_stage(_name, _factory)
register_stage("wal", WalStage.from_spec)
register_stage("replicate", ReplicateStage.from_spec)
