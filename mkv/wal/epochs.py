"""A replica's epoch file: which leader epoch wrote which part of its log (issue 16).

Kafka's leader-epoch checkpoint: a list of (epoch, first seq of that epoch)
plus the last commit seq this replica knew. The WAL record format carries no
epoch, so this file maps seqs to epochs; a new leader answers a follower's
``last_epoch`` with :meth:`EpochHistory.end_of` (KIP-101), and a restarted
follower replays its WAL only up to ``commit_seq``. Parsing and formatting are
sans-I/O; :func:`read_epoch_file` / :func:`write_epoch_file` do the disk part.
The file is read back from disk, so it is bad input: every line is checked.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from mkv.errors import StorageError
from mkv.store.files import write_atomically

__all__ = ["EpochFileError", "EpochHistory", "read_epoch_file", "write_epoch_file"]

_MAGIC = "mkv-epochs 1"


class EpochFileError(StorageError):
    """An epoch file that is not one this code wrote."""


@attrs.frozen
class EpochHistory:
    """(epoch, first seq) pairs, both strictly increasing, and the known commit seq."""

    entries: tuple[tuple[int, int], ...] = ()
    commit_seq: int = 0

    def __attrs_post_init__(self) -> None:
        if self.commit_seq < 0:
            raise ValueError("commit_seq must not be negative")
        previous: tuple[int, int] | None = None
        for epoch, first_seq in self.entries:
            if epoch <= 0 or first_seq <= 0:
                raise ValueError(f"epoch {epoch} at seq {first_seq}: both must be above 0")
            if previous is not None and (epoch <= previous[0] or first_seq <= previous[1]):
                raise ValueError(
                    f"epoch {epoch} at seq {first_seq} does not follow epoch "
                    f"{previous[0]} at seq {previous[1]}: both must increase"
                )
            previous = (epoch, first_seq)

    @property
    def last_epoch(self) -> int:
        """The newest epoch in the log (0: none recorded)."""
        return self.entries[-1][0] if self.entries else 0

    def started(self, epoch: int, first_seq: int) -> EpochHistory:
        """With a record of ``epoch`` appended at ``first_seq`` (unchanged if not new)."""
        if epoch == self.last_epoch:
            return self
        return attrs.evolve(self, entries=(*self.entries, (epoch, first_seq)))

    def committed(self, commit_seq: int) -> EpochHistory:
        """With the commit seq raised to ``commit_seq`` (never lowered)."""
        if commit_seq <= self.commit_seq:
            return self
        return attrs.evolve(self, commit_seq=commit_seq)

    def truncated_after(self, seq: int) -> EpochHistory:
        """The history of a log cut back to end at ``seq``."""
        entries = tuple(entry for entry in self.entries if entry[1] <= seq)
        return EpochHistory(entries, min(self.commit_seq, seq))

    def end_of(self, epoch: int, log_end: int) -> int:
        """The last seq of ``epoch`` in this log (the leader's Truncate answer).

        The seq before the first record of the next newer epoch, or ``log_end``
        when no newer epoch follows it here.
        """
        for newer_epoch, first_seq in self.entries:
            if newer_epoch > epoch:
                return first_seq - 1
        return log_end

    def format(self) -> bytes:
        lines = [_MAGIC, f"commit {self.commit_seq}"]
        lines += [f"{epoch} {first_seq}" for epoch, first_seq in self.entries]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, *, source: str = "epoch file") -> EpochHistory:
        """Raises EpochFileError for anything :meth:`format` would not write."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise EpochFileError(f"The {source} is not text: it is damaged.") from None
        lines = text.split("\n")
        if len(lines) < 3 or lines[0] != _MAGIC or lines[-1] != "":
            raise EpochFileError(f"The {source} does not start with {_MAGIC!r} or is cut short.")
        commit = lines[1].split(" ")
        if len(commit) != 2 or commit[0] != "commit":
            raise EpochFileError(f"The {source} has no commit line: {lines[1]!r}.")
        try:
            commit_seq = _number(commit[1])
            entries = []
            for line in lines[2:-1]:
                parts = line.split(" ")
                if len(parts) != 2:
                    raise ValueError(f"{line!r} is not 'epoch first_seq'")
                entries.append((_number(parts[0]), _number(parts[1])))
            return cls(tuple(entries), commit_seq)
        except ValueError as exc:
            raise EpochFileError(f"The {source} is damaged: {exc}.") from None


def _number(text: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise ValueError(f"{text!r} is not a sequence number or epoch")
    return int(text)


def read_epoch_file(path: Path) -> EpochHistory:
    """The history in ``path`` (an empty one if the file does not exist yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return EpochHistory()
    except OSError as exc:
        raise StorageError(f"Could not read the epoch file {path}.") from exc
    return EpochHistory.parse(data, source=f"epoch file {path}")


def write_epoch_file(path: Path, history: EpochHistory) -> None:
    """Replace ``path`` atomically (tmp, fsync, rename, fsync dir): a crash leaves old or new."""
    try:
        write_atomically(path, history.format())
    except OSError as exc:
        raise StorageError(f"Could not write the epoch file {path}.") from exc
