"""Pipelines by name: ``["timestamp", "max-value-size:4096", "wal:fsync=always"]``.

A stage spec is a registered name, optionally followed by ``:`` and an
argument string the stage's factory parses. Specs are what AddPartition takes
and what the catalog stores; stages are built from them when a partition
starts. Building a stage does no I/O, so a pipeline is checked at
AddPartition by building it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from mkv.errors import InvalidArgumentError, shown
from mkv.pipeline.base import AsyncStage, Recovered, Restorable, StageContext, SyncStage
from mkv.pipeline.replicate import ReplicateStage
from mkv.pipeline.wal_stage import WalStage

__all__ = [
    "Pipeline",
    "StageFactory",
    "build_pipeline",
    "check_pipeline",
    "register_stage",
    "restore",
    "split_spec",
    "stage_names",
]

# Gets the spec's argument string ("" when none) and the partition's context.
StageFactory = Callable[[str, StageContext], SyncStage | AsyncStage]

_FACTORIES: dict[str, StageFactory] = {}


def register_stage(name: str, factory: StageFactory) -> None:
    """Make a stage available to pipelines by ``name``."""
    _FACTORIES[name] = factory


def stage_names() -> list[str]:
    return sorted(_FACTORIES)


def split_spec(spec: str) -> tuple[str, str]:
    name, _, argument = spec.partition(":")
    return name.strip(), argument.strip()


@attrs.frozen
class Pipeline:
    """A partition's stages, split by kind, each list in pipeline order."""

    specs: tuple[str, ...]
    sync: tuple[SyncStage, ...]
    async_: tuple[AsyncStage, ...]

    @property
    def wal(self) -> WalStage | None:
        """The pipeline's write-ahead log, which recovery replays, if it has one."""
        return next((s for s in self.async_ if isinstance(s, WalStage)), None)

    @property
    def replicate(self) -> ReplicateStage | None:
        """The pipeline's replicate stage (a leader's Fetch serves its tail), if any."""
        return next((s for s in self.async_ if isinstance(s, ReplicateStage)), None)


def restore(pipeline: Pipeline, recovered: Recovered) -> None:
    """Carry the stages' state on from before a restart."""
    for stage in (*pipeline.sync, *pipeline.async_):
        if isinstance(stage, Restorable):
            stage.restore(recovered)


def build_pipeline(specs: Sequence[str], context: StageContext) -> Pipeline:
    """Build every stage of ``specs`` for one partition.

    Raises:
        InvalidArgumentError: an unknown stage, a bad argument, or a
            synchronous stage after an asynchronous one.
    """
    sync: list[SyncStage] = []
    async_: list[AsyncStage] = []
    for spec in specs:
        name, argument = split_spec(spec)
        factory = _FACTORIES.get(name)
        if factory is None:
            raise InvalidArgumentError(
                f"Unknown pipeline stage '{shown(name)}'; known stages are "
                f"{', '.join(stage_names())}."
            )
        stage = factory(argument, context)
        if name == "replicate" and not any(isinstance(s, WalStage) for s in async_):
            # It ships the leader's log and waits for followers to have what
            # is durable here: without a log before it there is nothing to ship.
            raise InvalidArgumentError(
                "Stage 'replicate' must come after the 'wal' stage (it replicates the log)."
            )
        if isinstance(stage, AsyncStage):
            async_.append(stage)
        elif async_:
            # Synchronous stages run in the partition's task before the write
            # is numbered and handed on; one after a log would be too late.
            raise InvalidArgumentError(
                f"Stage '{name}' must come before asynchronous stages such as '{async_[-1].name}'."
            )
        else:
            sync.append(stage)
    return Pipeline(tuple(specs), tuple(sync), tuple(async_))


def check_pipeline(specs: Sequence[str]) -> None:
    """Raises ``InvalidArgumentError`` when ``specs`` would not build."""
    build_pipeline(specs, StageContext(partition_id="check", directory=Path()))
