"""Checkpoints after a log roll: one when a segment can go, never one per write.

After the log rolls, the old segment stays as long as the watch retention
holds writes in it; a checkpoint then would fsync the store and drop nothing,
and it used to run after every write until the retention moved past it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio

import mkv
from mkv.testing import running_node

SEGMENT = 64 * 1024
VALUE = b"v" * 4096
# Writes of VALUE: about twenty segment rolls.
WRITES = 20 * SEGMENT // len(VALUE)
_CHECKPOINT = re.compile(r"checkpoint at seq \d+ dropped (\d+) log segments")


async def _write_and_count_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, retention: int
) -> tuple[list[int], int]:
    """Write WRITES values through a small-segment log; return the segments
    each checkpoint dropped, and the log's segments at the end."""
    with caplog.at_level(logging.INFO, logger="mkv.partition"), trio.fail_after(60):
        async with running_node(tmp_path, watch_retention_bytes=retention) as node:
            async with mkv.AdminClient.connect(node.control_address) as admin:
                await admin.remove_partition("default")
                await admin.add_partition(
                    partition_id="p", pipeline=("timestamp", f"wal:always,segment={SEGMENT}")
                )
            async with mkv.Client.connect(node.data_address) as client:
                for i in range(WRITES):
                    await client.upsert({f"k{i:05d}".encode(): VALUE})
            partition = node.registry.partition("p")
            assert partition is not None
            segments = partition.statistics().wal_segments
    dropped = [int(m[1]) for m in _CHECKPOINT.finditer(caplog.text)]
    return dropped, segments


async def test_a_retained_segment_costs_no_checkpoint_per_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The watch retention holds every write, so no segment can ever go.
    dropped, segments = await _write_and_count_checkpoints(tmp_path, caplog, 16 * 1024 * 1024)
    assert segments >= 15  # the log rolled again and again
    assert dropped == []


async def test_checkpoints_drop_segments_once_the_retention_lets_them_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dropped, segments = await _write_and_count_checkpoints(tmp_path, caplog, 4 * SEGMENT)
    # About one checkpoint a roll, each deleting something; the log stays bounded.
    assert 0 not in dropped
    assert 5 <= len(dropped) <= 25
    assert segments <= 8
