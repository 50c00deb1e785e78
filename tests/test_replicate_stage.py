"""The ``replicate`` stage on its own: its spec, its place, and a single node
(no followers) that commits at its own fsync as before (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import mkv
from mkv.errors import InvalidArgumentError, UnavailableError
from mkv.pipeline import ReplicateStage, check_pipeline
from mkv.pipeline.replicate import EPOCH_FILE, ReplicateMode
from mkv.testing import running_node
from mkv.wal.epochs import EpochHistory, write_epoch_file


def test_replicate_is_a_stage_after_the_log() -> None:
    check_pipeline(["timestamp", "wal", "replicate"])
    check_pipeline(["timestamp", "wal", "replicate:sync"])
    check_pipeline(["timestamp", "wal", "replicate:async"])
    # Mutation: dropping the check in build_pipeline lets these through.
    with pytest.raises(InvalidArgumentError, match="after the 'wal' stage"):
        check_pipeline(["timestamp", "replicate"])
    with pytest.raises(InvalidArgumentError, match="'sync' or 'async'"):
        check_pipeline(["timestamp", "wal", "replicate:always"])


async def test_a_single_node_with_the_stage_commits_at_its_own_fsync(tmp_path: Path) -> None:
    """No lead(): no followers, so writes complete as the log makes them
    durable; nothing waits, restarts replay as before, no epoch file."""
    pipeline = ("timestamp", "wal", "replicate:sync")
    with trio.fail_after(30):
        async with running_node(tmp_path, default_pipeline=pipeline) as node:
            async with mkv.Client.connect(node.data_address) as client:
                await client.upsert({b"k%d" % i: b"v" for i in range(50)})
                await client.remove(b"k3")
            partition = node.registry.partition("default")
            assert partition is not None
            stage = partition.replicate_stage()
            assert isinstance(stage, ReplicateStage)
            assert stage.commit_seq == partition.last_seq() == 2
            assert not stage.replicated
        async with (
            running_node(tmp_path, default_pipeline=pipeline) as node,
            mkv.Client.connect(node.data_address) as client,
        ):
            assert await client.get(b"k4") == b"v"
            assert await client.get(b"k3") is None
        assert not (tmp_path / "partitions" / "default" / "epochs").exists()


async def test_a_replica_log_that_leads_nothing_refuses_writes(tmp_path: Path) -> None:
    """A partition with an epoch history was replicated: until ``lead`` its
    writes could never commit, so they are refused before being logged.
    Mutation: dropping that check in ``admission`` admits them."""
    await trio.to_thread.run_sync(
        write_epoch_file, tmp_path / EPOCH_FILE, EpochHistory(((5, 1),), commit_seq=1)
    )
    stage = ReplicateStage(ReplicateMode.SYNC, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(stage.run)
        assert stage.replicated
        assert stage.epoch == 5
        refusal = stage.admission()
        assert isinstance(refusal, UnavailableError)
        assert "does not lead" in str(refusal)
        stage.close()
    # Without an epoch file (a single node) writes are admitted.
    single = ReplicateStage(ReplicateMode.SYNC, tmp_path / "other")
    async with trio.open_nursery() as nursery:
        await nursery.start(single.run)
        assert single.admission() is None
        single.close()
