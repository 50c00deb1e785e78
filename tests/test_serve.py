"""`mkv serve` as an operator runs it: addresses, config file, refusals, signals."""

from __future__ import annotations

import platform
import signal
import sys
from pathlib import Path

import pytest
import trio

import mkv
from mkv.node.config import Config, ConfigError
from mkv.wire import parse_address
from tests.processes import ServerProcess


async def serve(*args: str) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "mkv.cli.server", "serve", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_it_binds_exactly_the_configured_address(server_process: ServerProcess) -> None:
    address = parse_address(server_process.data_addr)
    assert address.host == "127.0.0.1"
    # Another loopback address, same port: nothing listens there (purerpc's
    # own listener would have bound every interface).
    with pytest.raises(mkv.UnavailableError):
        async with mkv.Client.connect(f"127.0.0.2:{address.port}"):
            pass


async def test_a_taken_port_is_refused(tmp_path: Path, server_process: ServerProcess) -> None:
    result = await serve(
        "--data-addr", server_process.data_addr,
        "--control-addr", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "second"),
    )  # fmt: skip
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"cannot listen on {server_process.data_addr}" in stderr
    assert "Address already in use" in stderr
    assert "Traceback" not in stderr
    # The first server still has its port to itself.
    async with mkv.Client.connect(server_process.data_addr) as client:
        await client.upsert({b"k": b"v"})


async def test_settings_come_from_a_toml_file_and_flags_win(tmp_path: Path) -> None:
    config_file = tmp_path / "mkv.toml"
    config_file.write_text(
        f'data_dir = "{tmp_path / "from-file"}"\n'
        'data_addr = "127.0.0.1:0"\n'
        'control_addr = "127.0.0.1:0"\n'
        'default_store = "memory"\n'
    )
    server = ServerProcess(tmp_path / "from-flag", "--config", str(config_file))
    await server.start()
    try:
        async with mkv.AdminClient.connect(server.control_addr) as admin:
            [partition] = await admin.list_partitions()
        assert partition.store == "memory"  # from the file
        assert (tmp_path / "from-flag" / "catalog.json").exists()  # the flag won
        assert not (tmp_path / "from-file").exists()
    finally:
        assert await server.stop() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('data_adr = "127.0.0.1:1"\n', "unknown setting(s): data_adr"),
        ('data_addr = "nonsense"\n', "expected HOST:PORT"),
        ("data_addr = [\n", "cannot read config file"),
        (
            "cache_bytes = -1\n",
            "cache_bytes must be a number of bytes, 0 or more, or a size such as 64MiB (got -1)",
        ),
        ('cache_bytes = "64MB"\n', "cache_bytes must be a number of bytes, 0 or more, or a size"),
        ("cache_bytes = 1.5\n", "cache_bytes must be a number of bytes"),
    ],
)
async def test_a_bad_config_file_is_refused_in_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    config_file = tmp_path / "mkv.toml"
    config_file.write_text(content)
    result = await serve("--config", str(config_file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1
    with pytest.raises(ConfigError):
        Config.load(config_file)


async def test_sigint_stops_it_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    await server.start()
    assert await server.stop(signal.SIGINT) == 0
    assert "KeyboardInterrupt" not in server.stderr()
    assert "received SIGINT: shutting down" in server.stderr()


def test_default_addresses_are_loopback() -> None:
    config = Config()
    assert (str(config.data_addr), str(config.control_addr)) == ("127.0.0.1:7070", "127.0.0.1:7071")
    assert config.data_dir == Path("mkv-data")


def test_sizes_take_units_like_stage_arguments(tmp_path: Path) -> None:
    config_file = tmp_path / "mkv.toml"
    config_file.write_text('cache_bytes = "64MiB"\nwatch_retention_bytes = "8MiB"\n')
    config = Config.load(config_file, request_buffer_bytes="1GiB")
    assert config.cache_bytes == 64 << 20
    assert config.watch_retention_bytes == 8 << 20
    assert config.request_buffer_bytes == 1 << 30
    assert Config.load(None, cache_bytes="4096").cache_bytes == 4096


async def test_cache_bytes_flag_takes_a_unit(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data", "--cache-bytes", "64MiB", "--default-store", "caching"
    )
    await server.start()
    assert await server.stop() == 0
    refused = await serve("--cache-bytes", "64MB", "--data-dir", str(tmp_path / "other"))
    assert refused.returncode == 2
    assert refused.stderr.decode().splitlines() == [
        "mkv: configuration error: cache_bytes must be a number of bytes, 0 or more, "
        "or a size such as 64MiB (got '64MB')"
    ]


async def test_version() -> None:
    for argv in (["-m", "mkv.cli.server", "--version"], ["-m", "mkv.cli.ctl", "--version"]):
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, *argv], capture_stdout=True, capture_stderr=True, check=False
            )
        assert result.returncode == 0, result.stderr
        name = "mkv" if "server" in argv[1] else "mkvctl"
        assert result.stdout.decode() == (
            f"{name} {mkv.__version__} (Python {platform.python_version()})\n"
        )
