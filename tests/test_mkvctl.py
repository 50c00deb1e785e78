"""mkvctl against a real node: in-process through ``run``, and as a subprocess."""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import re
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import mkv
from mkv.cli.ctl import run
from mkv.pipeline.clock import format_timestamp
from tests.processes import ServerProcess


@attrs.frozen
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


Ctl = Callable[..., Awaitable[Result]]


async def mkvctl(*argv: str, env: dict[str, str] | None = None) -> Result:
    out, err = io.BytesIO(), io.StringIO()
    # An empty environment by default, so MKV_* variables of whoever runs the
    # tests cannot point a test at their server.
    code = await run(list(argv), out, err, env={} if env is None else env)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def ctl(mkv_node: mkv.Node) -> Ctl:
    """mkvctl pointed at the in-process node."""
    addresses = (
        f"--data-addr={mkv_node.data_address}",
        f"--control-addr={mkv_node.control_address}",
    )

    async def call(*argv: str) -> Result:
        return await mkvctl(*addresses, *argv)

    return call


def unused_port() -> int:
    # Bound then closed: nothing listens there for the rest of the test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.code == 1
    assert result.out == b""
    assert result.err.startswith("mkvctl: ")
    assert result.err.count("\n") == 1
    assert result.err.endswith("\n")
    for fragment in fragments:
        assert fragment in result.err


# -- data commands -----------------------------------------------------------


async def test_put_get_del_round_trip(ctl: Ctl, mkv_client: mkv.Client) -> None:
    with trio.fail_after(10):
        put = await ctl("put", "greeting", "hello world")
        assert put.code == 0
        assert put.text.startswith("OK (partition default, seq ")
        assert await mkv_client.get(b"greeting") == b"hello world"

        get = await ctl("get", "greeting")
        # Exact bytes: no newline added when stdout is not a terminal.
        assert (get.code, get.out, get.err) == (0, b"hello world", "")

        deleted = await ctl("del", "greeting", "never-written")
        assert (deleted.code, deleted.text) == (0, "1\n")
        assert await mkv_client.get(b"greeting") is None

        missing = await ctl("get", "greeting")
        assert_one_error_line(missing)
        assert missing.err == "mkvctl: key not found: greeting\n"


async def test_json_round_trip(ctl: Ctl, mkv_client: mkv.Client) -> None:
    with trio.fail_after(10):
        # Options work after the command as well as before it.
        put = (await ctl("put", "k", "välue", "--json")).json()
        assert put["partition"] == "default"
        got = (await ctl("--json", "get", "k")).json()
        item = await mkv_client.get_item(b"k")
        assert item is not None
        assert got == {
            "key": "k",
            "key_base64": base64.b64encode(b"k").decode(),
            "value": "välue",
            "value_base64": base64.b64encode("välue".encode()).decode(),
            "seq": put["seq"],
            # The write's timestamp as stored, and as ISO 8601 UTC.
            "timestamp": item.timestamp,
            "time": format_timestamp(item.timestamp),
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z(/\d+)?", got["time"])
        deleted = (await ctl("--json", "del", "k", "other")).json()
        assert deleted["removed"] == 1
        assert [(a["partition"], a["removed"]) for a in deleted["acks"]] == [("default", 1)]
        missing = await ctl("--json", "get", "k")
        assert_one_error_line(missing, "key not found")


async def test_values_are_exact_bytes(ctl: Ctl, mkv_client: mkv.Client) -> None:
    with trio.fail_after(10):
        value = b"\xff\x00 line one\nline two\n  "
        await mkv_client.upsert({b"blob": value})
        assert (await ctl("get", "blob")).out == value
        got = (await ctl("get", "blob", "--json")).json()
        # Not UTF-8: no text form, and base64 gives back every byte.
        assert got["value"] is None
        assert base64.b64decode(got["value_base64"]) == value


async def test_undecodable_argv_bytes_are_kept(ctl: Ctl, mkv_client: mkv.Client) -> None:
    with trio.fail_after(10):
        # How Python hands over argv bytes that are not UTF-8 (surrogateescape).
        assert (await ctl("put", "caf\udce9", "latin-1 key")).code == 0
        assert await mkv_client.get(b"caf\xe9") == b"latin-1 key"


async def test_get_on_a_terminal_ends_the_line(mkv_node: mkv.Node, mkv_client: mkv.Client) -> None:
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    with trio.fail_after(10):
        await mkv_client.upsert({b"k": b"v"})
        out, err = Terminal(), io.StringIO()
        assert (
            await run(["get", "k", f"--data-addr={mkv_node.data_address}"], out, err, env={}) == 0
        )
        assert out.getvalue() == b"v\n"


async def test_hex_keys_and_values(ctl: Ctl, mkv_client: mkv.Client) -> None:
    with trio.fail_after(10):
        assert (await ctl("--hex", "put", "00ff", "cafe")).code == 0
        assert await mkv_client.get(b"\x00\xff") == b"\xca\xfe"
        assert (await ctl("--hex", "get", "00ff")).text == "cafe\n"
        assert (await ctl("--hex", "del", "00ff")).text == "1\n"
        assert (await ctl("--hex", "get", "00ff")).err == "mkvctl: key not found: 00ff\n"


async def test_server_refusal_is_one_line(ctl: Ctl) -> None:
    with trio.fail_after(10):
        assert_one_error_line(await ctl("put", "", "v"), "A key must not be empty.")
        assert_one_error_line(await ctl("get", "k" * 5000), "the limit is 4096 bytes")


# -- partitions --------------------------------------------------------------


async def test_partitions_list_table(ctl: Ctl) -> None:
    with trio.fail_after(10):
        for key in ("a", "b", "c"):
            await ctl("put", key, "v")
        listing = await ctl("partitions", "list")
        assert listing.code == 0
        header, row, *rest = listing.text.splitlines()
        assert rest == []
        # Columns are separated by two or more spaces; cells hold single spaces.
        # No PIPELINE column: it made rows too wide (--json has the pipeline).
        assert re.split(r"\s{2,}", header) == [
            "ID",
            "RANGE",
            "STORE",
            "STATE",
            "KEYS",
            "SIZE",
            "LAST SEQ",
        ]
        cells = re.split(r"\s{2,}", row)
        assert cells[:5] == ["default", "['', ∞)", "sqlite", "active", "3"]
        assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB)", cells[5])
        assert cells[6] == "3"  # last seq: three puts, one seq each
        # A long id, a long range and a long pipeline still fit a terminal.
        long_pipeline = ["timestamp", "max-value-size:64KiB", "sanitize-json:a.b.c", "wal:always"]
        assert (await ctl("partitions", "remove", "default")).code == 0
        added = await ctl(
            "partitions", "add", "--id", "customer-sessions", "--start", "session:2024-01:",
            "--end", "session:2024-12;", "--store", "caching",
            "--pipeline", " ".join(long_pipeline),
        )  # fmt: skip
        assert added.code == 0, added.err
        listing = await ctl("partitions", "list")
        assert max(len(line) for line in listing.text.splitlines()) <= 100
        [long] = (await ctl("--json", "partitions", "list")).json()["partitions"]
        assert (long["id"], long["pipeline"]) == ("customer-sessions", long_pipeline)


async def test_partitions_add_with_a_pipeline(ctl: Ctl) -> None:
    with trio.fail_after(20):
        await ctl("partitions", "remove", "default")
        added = await ctl(
            "--json", "partitions", "add", "--id", "p", "--start", "",
            "--stage", "timestamp", "--stage", "max-value-size:4", "--stage", "wal:off",
        )  # fmt: skip
        assert added.code == 0, added.err
        assert json.loads(added.text)["pipeline"] == ["timestamp", "max-value-size:4", "wal:off"]
        refused = await ctl("put", "k", "too long")
        assert refused.code == 1
        assert "limit is 4 bytes" in refused.err
        assert (await ctl("put", "k", "ok")).code == 0
        bad = await ctl("partitions", "add", "--start", "x", "--pipeline", "timestamp nope")
        assert bad.code == 1
        assert "Unknown pipeline stage 'nope'" in bad.err


async def test_partitions_add_list_remove(ctl: Ctl) -> None:
    with trio.fail_after(20):
        await ctl("put", "apple", "red")
        removed = await ctl("partitions", "remove", "default")
        assert removed.text == "removed partition default ['', ∞) and its 1 key\n"

        added = await ctl("partitions", "add", "--id", "low", "--start", "", "--end", "m")
        assert added.text == "added partition low ['', m) (sqlite)\n"
        high = (
            await ctl(
                "--json", "partitions", "add", "--start", "m", "--end", "", "--store", "memory"
            )
        ).json()
        assert (high["start"], high["end"], high["end_base64"]) == ("m", None, None)
        assert (high["store"], high["state"]) == ("memory", "active")

        # The data went with the removed partition.
        assert (await ctl("get", "apple")).err == "mkvctl: key not found: apple\n"
        assert (await ctl("put", "zebra", "stripes")).text.startswith(
            f"OK (partition {high['id']},"
        )

        listing = (await ctl("partitions", "list", "--json")).json()
        ranges = {p["id"]: (p["start"], p["end"], p["key_count"]) for p in listing["partitions"]}
        assert ranges == {"low": ("", "m", 0), high["id"]: ("m", None, 1)}
        table = (await ctl("partitions", "list")).text
        assert "[m, ∞)" in table
        assert "['', m)" in table

        assert (await ctl("partitions", "remove", "low")).code == 0
        listing = (await ctl("partitions", "list", "--json")).json()
        assert [p["id"] for p in listing["partitions"]] == [high["id"]]


async def test_partition_bounds_in_hex(ctl: Ctl) -> None:
    with trio.fail_after(10):
        await ctl("partitions", "remove", "default")
        added = await ctl(
            "--hex", "partitions", "add", "--id", "bin", "--start", "00", "--end", "ff"
        )
        assert added.text == "added partition bin [00, ff) (sqlite)\n"
        [info] = (await ctl("partitions", "list", "--json")).json()["partitions"]
        assert base64.b64decode(info["end_base64"]) == b"\xff"
        assert info["end"] is None  # b"\xff" is not UTF-8


async def test_partition_errors(ctl: Ctl) -> None:
    with trio.fail_after(10):
        overlap = await ctl("partitions", "add", "--start", "a", "--end", "m")
        assert_one_error_line(overlap, "overlaps", "default")
        duplicate = await ctl("partitions", "add", "--id", "default", "--start", "a", "--end", "m")
        assert_one_error_line(duplicate, "already exists")
        assert_one_error_line(
            await ctl("partitions", "add", "--start", "m", "--end", "a"),
            "must be greater than start",
        )
        assert_one_error_line(
            await ctl("partitions", "add", "--start", "a", "--store", "tape"), "Unknown store kind"
        )
        assert_one_error_line(await ctl("partitions", "remove", "nope"), "nope")
        # Nothing was changed by the refused calls.
        listing = (await ctl("partitions", "list", "--json")).json()
        assert [p["id"] for p in listing["partitions"]] == ["default"]


# -- addresses and usage -----------------------------------------------------


async def test_addresses_from_the_environment(
    mkv_node: mkv.Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(10):
        monkeypatch.setenv("MKV_DATA_ADDR", str(mkv_node.data_address))
        monkeypatch.setenv("MKV_CONTROL_ADDR", str(mkv_node.control_address))
        out, err = io.BytesIO(), io.StringIO()
        # env=None: run reads os.environ, as the installed command does.
        assert await run(["put", "k", "v"], out, err) == 0
        assert await run(["partitions", "list", "--json"], out, err) == 0, err.getvalue()

        # A flag beats the environment.
        dead = f"127.0.0.1:{unused_port()}"
        env = {"MKV_DATA_ADDR": dead}
        assert_one_error_line(await mkvctl("get", "k", env=env), f"Cannot connect to mkv at {dead}")
        flagged = await mkvctl("get", "k", f"--data-addr={mkv_node.data_address}", env=env)
        assert flagged.out == b"v"

        bad = await mkvctl("get", "k", env={"MKV_DATA_ADDR": "nowhere"})
        assert bad.code == 2
        assert "MKV_DATA_ADDR" in bad.err
        assert "HOST:PORT" in bad.err


async def test_the_data_plane_may_be_several_seeds(mkv_node: mkv.Node) -> None:
    """--data-addr (or MKV_DATA_ADDR) names a cluster's seeds, comma-separated:
    the first that answers serves; none answering names each."""
    with trio.fail_after(10):
        dead = f"127.0.0.1:{unused_port()}"
        seeds = f"{dead},{mkv_node.data_address}"
        assert (await mkvctl("put", "k", "v", f"--data-addr={seeds}")).code == 0
        assert (await mkvctl("get", "k", env={"MKV_DATA_ADDR": seeds})).out == b"v"
        other = f"127.0.0.1:{unused_port()}"
        result = await mkvctl("get", "k", f"--data-addr={dead},{other}")
        assert_one_error_line(result, "any seed", dead, other)


async def test_usage_errors_exit_2() -> None:
    with trio.fail_after(10):
        for argv in (
            [],
            ["partitions"],
            ["get"],
            ["partitions", "add", "--end", "m"],
            ["--hex", "get", "xyz"],
            ["--timeout", "0", "get", "k"],
            ["frobnicate"],
        ):
            result = await mkvctl(*argv)
            assert result.code == 2, argv
            assert result.out == b""
            assert "usage: mkvctl" in result.err
            assert "error:" in result.err
        helped = await mkvctl("--help")
        assert helped.code == 0
        for command in ("partitions", "put", "get", "del", "status", "--json", "--data-addr"):
            assert command in helped.text
        # --json says what scan and watch print: not one document but JSON Lines.
        assert "JSON Lines" in " ".join(helped.text.split())
        version = await mkvctl("--version")
        assert (version.code, version.text) == (
            0,
            f"mkvctl {mkv.__version__} (Python {platform.python_version()})\n",
        )


async def test_nothing_listening() -> None:
    with trio.fail_after(10):
        port = unused_port()
        result = await mkvctl("--data-addr", f"127.0.0.1:{port}", "get", "k")
        assert_one_error_line(result, f"Cannot connect to mkv at 127.0.0.1:{port}")
        result = await mkvctl("--control-addr", f"127.0.0.1:{port}", "partitions", "list")
        assert_one_error_line(result, f"Cannot connect to mkv at 127.0.0.1:{port}")


async def test_a_server_that_never_answers_times_out() -> None:
    with trio.fail_after(10):
        # Listening but never accepting: connect succeeds, no answer ever comes.
        with trio.socket.socket() as listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            host, port = listener.getsockname()
            result = await mkvctl("--timeout", "0.5", "--data-addr", f"{host}:{port}", "get", "k")
        assert_one_error_line(result, f"No answer from mkv at {host}:{port} within 0.5 seconds")


# -- as a real command -------------------------------------------------------


async def mkvctl_process(*argv: str, stdin: bytes = b"") -> trio.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKV_")}
    return await trio.run_process(
        [sys.executable, "-m", "mkv.cli.ctl", *argv],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


async def test_process_round_trip(server_process: ServerProcess) -> None:
    with trio.fail_after(60):
        data = f"--data-addr={server_process.data_addr}"
        put = await mkvctl_process(data, "put", "greeting", "hello")
        assert put.returncode == 0, put.stderr
        get = await mkvctl_process(data, "get", "greeting")
        assert (get.returncode, get.stdout, get.stderr) == (0, b"hello", b"")
        missing = await mkvctl_process(data, "get", "nope")
        assert (missing.returncode, missing.stderr) == (1, b"mkvctl: key not found: nope\n")

        listing = await mkvctl_process(
            "partitions", "list", "--json", f"--control-addr={server_process.control_addr}"
        )
        assert listing.returncode == 0, listing.stderr
        [default] = json.loads(listing.stdout)["partitions"]
        assert (default["id"], default["key_count"], default["last_seq"]) == ("default", 1, 1)


async def test_process_with_no_server() -> None:
    with trio.fail_after(60):
        port = unused_port()
        for argv in (
            [f"--data-addr=127.0.0.1:{port}", "put", "k", "v"],
            [f"--control-addr=127.0.0.1:{port}", "partitions", "list", "--json"],
        ):
            result = await mkvctl_process(*argv)
            assert result.returncode == 1
            assert result.stdout == b""
            assert b"Traceback" not in result.stderr
            [line] = result.stderr.decode().splitlines()
            assert line.startswith(f"mkvctl: Cannot connect to mkv at 127.0.0.1:{port}")


async def test_incr_scan_and_keys_only(ctl: Ctl, mkv_client: mkv.Client) -> None:
    assert (await ctl("incr", "visits")).text == "1\n"
    assert (await ctl("incr", "visits", "41")).text == "42\n"
    assert (await ctl("incr", "visits", "--", "-2")).text == "40\n"
    assert (await ctl("--json", "incr", "visits")).json()["value"] == 41
    await mkv_client.upsert({b"user:1": b"ada", b"user:2": b"grace", b"zebra": b"z"})
    assert (await ctl("scan", "user:", "user;")).text == "user:1\tada\nuser:2\tgrace\n"
    assert (await ctl("scan", "user:", "--keys-only")).text == "user:1\nuser:2\nvisits\nzebra\n"
    assert (await ctl("scan", "--limit", "1", "--keys-only")).text == "user:1\n"
    lines = (await ctl("--json", "scan", "user:", "user;")).text.splitlines()
    assert [json.loads(line)["value"] for line in lines] == ["ada", "grace"]
    failed = await ctl("incr", "zebra")
    assert_one_error_line(failed, "not a counter")


async def test_watch_prints_changes_as_they_happen(
    mkv_node: mkv.Node, mkv_client: mkv.Client
) -> None:
    [start] = await mkv_client.upsert({b"other": b""})
    out, err = io.BytesIO(), io.StringIO()
    argv = [f"--data-addr={mkv_node.data_address}", "watch", "user:", "user;"]
    argv += ["--from-seq", str(start.seq), "--count", "3"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def watch() -> None:
                codes.append(await run(argv, out, err, env={}))

            nursery.start_soon(watch)
            await mkv_client.upsert({b"user:1": b"ada"})
            await mkv_client.upsert({b"skipped": b"out of range"})
            [removed] = await mkv_client.remove(b"user:1")
            [last] = await mkv_client.upsert({b"user:2": b"grace"})
    assert codes == [0], err.getvalue()
    lines = out.getvalue().decode().splitlines()
    assert lines[1:] == [f"{removed.seq}\tdel\tuser:1", f"{last.seq}\tput\tuser:2\tgrace"]
    assert lines[0].endswith("\tput\tuser:1\tada")


async def test_partitions_reopen_refuses_a_partition_that_has_not_failed(ctl: Ctl) -> None:
    # Reopening a failed one is tests/test_isolation.py's, against a real disk failure.
    with trio.fail_after(30):
        active = await ctl("partitions", "reopen", "default")
        missing = await ctl("partitions", "reopen", "nope")
        [info] = (await ctl("--json", "partitions", "list")).json()["partitions"]
    assert_one_error_line(active, "default is active, not failed")
    assert_one_error_line(missing, "No partition with id")
    assert info["state"] == "active"


async def test_put_reads_the_value_from_stdin_or_a_file(
    ctl: Ctl, mkv_node: mkv.Node, mkv_client: mkv.Client, tmp_path: Path
) -> None:
    value = b"\xff\x00 line one\nline two\n"  # exact bytes: no decoding, no stripping
    (tmp_path / "value.bin").write_bytes(value * 2)
    addresses = [f"--data-addr={mkv_node.data_address}"]
    with trio.fail_after(20):
        out, err = io.BytesIO(), io.StringIO()
        code = await run(
            [*addresses, "put", "piped", "-"], out, err, env={}, stdin=io.BytesIO(value)
        )
        assert code == 0, err.getvalue()
        assert await mkv_client.get(b"piped") == value
        filed = await ctl("put", "filed", "--file", str(tmp_path / "value.bin"))
        assert filed.code == 0, filed.err
        assert await mkv_client.get(b"filed") == value * 2
        # As a process, with a real pipe on stdin.
        piped = await mkvctl_process(*addresses, "put", "process", "-", stdin=b"from a pipe")
        assert piped.returncode == 0, piped.stderr
        assert await mkv_client.get(b"process") == b"from a pipe"

        missing = await ctl("put", "k", "--file", str(tmp_path / "nope"))
        assert_one_error_line(missing, "cannot read the value from", "No such file or directory")
        for argv in (["put", "k"], ["put", "k", "v", "--file", str(tmp_path / "value.bin")]):
            usage = await ctl(*argv)
            assert usage.code == 2
            assert "give VALUE, '-' (stdin) or --file PATH: exactly one" in usage.err
    assert await mkv_client.get(b"k") is None


async def test_scan_refuses_a_reversed_range_as_watch_does(
    ctl: Ctl, mkv_client: mkv.Client
) -> None:
    with trio.fail_after(20):
        await mkv_client.upsert({b"user:1": b"ada"})
        # `mkvctl scan user: user; --keys-only` unquoted: the shell passes `user`.
        for command in ("scan", "watch"):
            for end in ("user", "user:"):
                refused = await ctl(command, "user:", end)
                assert refused.code == 2, (command, end)
                assert refused.out == b""
                assert f"the range [user:, {end}) is empty" in refused.err
                assert "quote arguments" in refused.err
        hexed = await ctl("--hex", "scan", "75", "70")
        assert hexed.code == 2
        assert "[75, 70) is empty" in hexed.err
        quoted = await ctl("scan", "user:", "user;", "--keys-only")
        assert (quoted.code, quoted.text) == (0, "user:1\n")
        # The server refuses a reversed Scan too, for every client.
        with pytest.raises(mkv.InvalidArgumentError, match="end is before its start"):
            async for _ in mkv_client.scan(b"user:", b"user"):
                pass
        # An empty range [k, k) is allowed to the server (a page may end exactly there).
        assert [key async for key, _ in mkv_client.scan(b"user:1", b"user:1")] == []


async def test_status_text_and_json(ctl: Ctl, mkv_node: mkv.Node, mkv_client: mkv.Client) -> None:
    with trio.fail_after(20):
        assert (await ctl("partitions", "remove", "default")).code == 0
        assert (
            await ctl("partitions", "add", "--id", "low", "--start", "", "--end", "z")
        ).code == 0
        added = await ctl("partitions", "add", "--id", "mem", "--start", "z", "--store", "memory")
        assert added.code == 0, added.err
        await mkv_client.upsert({b"a": b"1"})
        await mkv_client.upsert({b"b": b"2"})
        text = await ctl("status")
        assert text.code == 0, text.err
        document = (await ctl("--json", "status")).json()
    head, _, table = text.text.partition("\n\n")
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in head.splitlines())
    assert shown["version"] == f"mkv {mkv.__version__} (Python {platform.python_version()})"
    assert shown["data dir"] == str(mkv_node.config.data_dir.absolute())
    assert shown["data"] == str(mkv_node.data_address)
    assert shown["control"] == str(mkv_node.control_address)
    assert re.fullmatch(r"(\d+[dhm] )*\d+[dhms]", shown["uptime"]), shown["uptime"]
    header, *rows = table.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "ID", "RANGE", "STATE", "INBOX", "IN FLIGHT", "LAST SEQ", "WAL LAG", "WATCHERS",
    ]  # fmt: skip
    cells = [re.split(r"\s{2,}", row) for row in rows]
    assert cells == [
        ["low", "['', z)", "active", "0", "0", "2", "0", "0"],
        ["mem", "[z, ∞)", "active", "0", "0", "0", "-", "0"],
    ]

    assert document["version"] == mkv.__version__
    assert document["python_version"] == platform.python_version()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["started"])
    assert 0 <= document["uptime_seconds"] < 600
    assert document["data_dir"] == str(mkv_node.config.data_dir.absolute())
    assert document["snapshot_root"] == str(mkv_node.config.snapshot_dir.resolve())
    low, memory = document["partitions"]
    assert low == {
        "id": "low",
        "start": "",
        "start_base64": "",
        "end": "z",
        "end_base64": "eg==",
        "store": "sqlite",
        "state": "active",
        "inbox_depth": 0,
        "in_flight": 0,
        "last_seq": 2,
        "wal_synced_seq": 2,
        "wal_sync_lag": 0,
        "watchers": 0,
    }
    # No log: no sync to lag behind.
    assert (memory["id"], memory["wal_synced_seq"], memory["wal_sync_lag"]) == ("mem", None, None)


async def test_status_shows_writes_the_log_has_not_fsynced(
    ctl: Ctl, mkv_client: mkv.Client
) -> None:
    with trio.fail_after(20):
        assert (await ctl("partitions", "remove", "default")).code == 0
        added = await ctl(
            "partitions", "add", "--id", "lax", "--start", "", "--pipeline", "timestamp wal:off"
        )
        assert added.code == 0, added.err
        for n in range(3):
            await mkv_client.upsert({b"k%d" % n: b"v"})
        [lax] = (await ctl("--json", "status")).json()["partitions"]
    # wal:off never fsyncs: every acknowledged write is one a power cut could take.
    assert (lax["last_seq"], lax["wal_sync_lag"]) == (3, 3)


async def test_status_as_a_process(server_process: ServerProcess) -> None:
    with trio.fail_after(60):
        control = f"--control-addr={server_process.control_addr}"
        result = await mkvctl_process(control, "status", "--json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["version"] == mkv.__version__
        assert document["data_dir"] == str(server_process.data_dir.resolve())
        assert [p["id"] for p in document["partitions"]] == ["default"]


async def test_start_up_loads_no_server_code() -> None:
    # mkvctl's start-up time is mostly imports: it must not load the node,
    # its stores or its log to read one key (nor the admin client for it).
    probe = (
        "import sys, mkv.cli.ctl, mkv.client.data\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mkv.'))\n"
        "print(' '.join(loaded))\n"
        "import mkv\n"
        "assert mkv.Client is mkv.client.data.Client and mkv.Node.__name__ == 'Node'\n"
    )
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", probe], capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.decode().split())
    assert "mkv.client.data" in loaded
    server_side = ("mkv.node", "mkv.store", "mkv.partition", "mkv.wal", "mkv.pipeline")
    assert not {m for m in loaded if m.startswith(server_side)}, loaded
    assert "mkv.client.admin" not in loaded


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
async def test_bash_completion_comes_from_the_parser() -> None:
    script = await mkvctl("completion", "bash")
    assert script.code == 0
    probe = script.text + (
        'try() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _mkvctl; '
        'echo "${COMPREPLY[*]}"; }\n'
        "try mkvctl par\n"
        "try mkvctl --json partitions re\n"
        "try mkvctl put k --fi\n"
        "try mkvctl st\n"
        "try mkvctl --data-addr 127.0.0.1:1 operations ''\n"
    )
    with trio.fail_after(30):
        result = await trio.run_process(
            ["bash", "-c", probe], capture_stdout=True, capture_stderr=True, check=False
        )
    assert (result.returncode, result.stderr) == (0, b"")
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "partitions"
    assert lines[1] == "remove reopen restore"
    assert lines[2] == "--file"
    assert lines[3] == "status"
    assert "get" in lines[4].split()
