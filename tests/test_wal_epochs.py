"""The epoch file: (epoch, first seq) history and the known commit seq (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkv.wal.epochs import EpochFileError, EpochHistory, read_epoch_file, write_epoch_file


def test_history_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "epochs"
    assert read_epoch_file(path) == EpochHistory()  # none yet: empty
    history = EpochHistory().started(5, 1).started(5, 3).started(9, 7).committed(6)
    assert history.entries == ((5, 1), (9, 7))
    write_epoch_file(path, history)
    assert read_epoch_file(path) == history
    assert [p.name for p in tmp_path.iterdir()] == ["epochs"]  # no temporary left


def test_end_of_answers_where_an_epoch_ends_in_the_leaders_log() -> None:
    leader = EpochHistory(((3, 1), (5, 10), (8, 20)))
    assert leader.end_of(3, 25) == 9  # the seq before epoch 5's first record
    assert leader.end_of(4, 25) == 9  # an epoch this log never had: where the next newer starts
    assert leader.end_of(5, 25) == 19
    assert leader.end_of(8, 25) == 25  # its own epoch: the log end
    assert leader.end_of(0, 25) == 0  # older than everything here


def test_truncation_cuts_the_history_and_the_commit() -> None:
    history = EpochHistory(((3, 1), (5, 10), (8, 20)), commit_seq=22)
    assert history.truncated_after(15) == EpochHistory(((3, 1), (5, 10)), 15)
    assert history.truncated_after(9) == EpochHistory(((3, 1),), 9)
    assert history.committed(4).commit_seq == 22  # never lowered


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"mkv-epochs 2\ncommit 0\n",
        b"mkv-epochs 1\ncommit 0",  # cut short: no final newline
        b"mkv-epochs 1\ncommit -1\n",
        b"mkv-epochs 1\ncommit 3\n5 1\n4 2\n",  # epochs going back
        b"mkv-epochs 1\ncommit 3\n4 2\n5 2\n",  # two epochs starting at one seq
        b"mkv-epochs 1\ncommit 3\n4 x\n",
        b"mkv-epochs 1\ncommit 3\n0 1\n",
        b"mkv-epochs 1\ncommit 3\n1 99999999999999999999\n",
    ],
)
def test_a_garbage_epoch_file_is_refused_with_a_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "epochs"
    path.write_bytes(data)
    with pytest.raises(EpochFileError, match=f"epoch file {path}"):
        read_epoch_file(path)
