"""Child processes started in stages and stopped in reverse: what ``mkv demo`` runs on.

A stage is a group of processes that later ones depend on (etcd is stage 0,
the nodes that need it stage 1). ``stop`` ends the highest stage first, all
of its processes at once: SIGTERM, then SIGKILL for any still running after
``stop_timeout`` seconds; only then the stage below. So a node shuts down
cleanly while the etcd it deregisters from is still there.

Each child gets its own process group: a Ctrl-C at the terminal reaches the
supervising process alone, which then stops the children in order, rather
than every process at once (etcd would go first, under the nodes' feet).

Output goes to one log file per child, not to the terminal, and the last
lines of it are in the errors: a child that exits before it answers, or
while running, is reported with what it said.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

__all__ = ["Child", "ChildFailed", "Stopped", "Supervisor"]

# How much of a child's log an error quotes.
LOG_TAIL = 2000


class ChildFailed(Exception):
    """A child exited when it should not have, or did not answer in time."""


@attrs.define(eq=False)
class Child:
    """One process under supervision."""

    name: str
    stage: int
    argv: tuple[str, ...]
    log_path: Path
    process: trio.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, limit: int = LOG_TAIL) -> str:
        """The end of what the process wrote (stdout and stderr), for errors."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def failure(self, what: str) -> ChildFailed:
        tail = self.log_tail().rstrip()
        said = f"; its last output ({self.log_path}):\n{tail}" if tail else ""
        return ChildFailed(f"{self.name} {what}{said}")


@attrs.frozen
class Stopped:
    """How a child ended when the supervisor stopped it."""

    child: Child
    returncode: int
    # It ended by SIGKILL: it outlived SIGTERM by the stop timeout, or
    # kill_all hurried it.
    killed: bool


class Supervisor:
    """Starts children, waits until each answers, and stops them in reverse stages."""

    def __init__(self, *, stop_timeout: float = 10.0) -> None:
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        # Set by kill_all: what stop has not reached yet is killed, not asked.
        self._hurry = False

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        stage: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Start ``argv``, its stdout and stderr appended to ``log_path``.

        Raises:
            ChildFailed: it cannot be started (no such program, not executable).
        """
        log = await trio.to_thread.run_sync(open, log_path, "ab")
        try:
            process = await trio.lowlevel.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                # Its own process group: see the module's docstring.
                process_group=0,
            )
        except OSError as exc:
            raise ChildFailed(f"{name} cannot start ({argv[0]}): {exc.strerror or exc}") from None
        finally:
            log.close()
        child = Child(name, stage, tuple(argv), log_path, process)
        self.children.append(child)
        return child

    async def wait_ready(
        self, child: Child, probe: Callable[[], Awaitable[bool]], seconds: float
    ) -> None:
        """Call ``probe`` until it returns True (the child answers).

        Raises:
            ChildFailed: the child exited first, or ``seconds`` passed.
        """
        with trio.move_on_after(seconds):
            while True:
                if child.process.poll() is not None:
                    raise child.failure(f"exited with status {child.process.returncode} at start")
                if await probe():
                    return
                await trio.sleep(0.1)
        raise child.failure(f"did not answer within {seconds:g} seconds")

    async def watch(self) -> Child:
        """Wait until any child exits, and return it (it should not have)."""
        exited: list[Child] = []
        async with trio.open_nursery() as nursery:

            async def wait(child: Child) -> None:
                await child.process.wait()
                exited.append(child)
                nursery.cancel_scope.cancel()

            for child in self.children:
                nursery.start_soon(wait, child)
        if not exited:
            # Nothing to watch: wait for a cancellation (the caller's signal).
            await trio.sleep_forever()
        return exited[0]

    async def stop(self) -> list[Stopped]:
        """Stop every child, the highest stage first (each stage's at once).
        Safe to call again and on a cancelled scope's way out: run it shielded.
        """
        results: list[Stopped] = []
        for stage in sorted({c.stage for c in self.children}, reverse=True):
            group = [c for c in self.children if c.stage == stage]
            async with trio.open_nursery() as nursery:
                for child in group:
                    nursery.start_soon(self._stop_one, child, results)
        self.children = []
        return results

    def kill_all(self) -> None:
        """SIGKILL every child still running, now (a second Ctrl-C): a
        ``stop`` under way then finishes at once, reporting them killed."""
        self._hurry = True
        for child in self.children:
            if child.process.returncode is None:
                child.process.kill()

    async def _stop_one(self, child: Child, results: list[Stopped]) -> None:
        process = child.process
        if self._hurry:
            process.kill()
        elif process.returncode is None:
            _signal(process, signal.SIGTERM)
            with trio.move_on_after(self.stop_timeout):
                await process.wait()
            if process.returncode is None:
                process.kill()
        returncode = await process.wait()
        results.append(Stopped(child, returncode, killed=returncode == -signal.SIGKILL))


def _signal(process: trio.Process, signum: signal.Signals) -> None:
    # It may have exited between the check and the signal: nothing to stop.
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)
