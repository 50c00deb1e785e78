"""mkv's pytest plugin (mkv.testing) under each way of running async tests,
and running_node without pytest.

Each case is a fresh pytest run in a subprocess (pytester), with its own
ini file, so that this suite's own trio_mode does not decide for it.

The pytest-asyncio cases skip unless it is installed. It is not in the dev
extra on purpose: installed, it makes every pytest run here fail unless
``asyncio_default_fixture_loop_scope`` is set, and setting that option where
it is not installed fails every run too ("Unknown config option" under
``filterwarnings = error``). To run them: ``pip install pytest-asyncio`` and
``pytest -o asyncio_default_fixture_loop_scope=function tests/test_testing_plugin.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Three tests using the three fixtures, written once; each case adds its
# markers (or none) in front.
TESTS = """
import mkv


{mark}
async def test_client(mkv_client):
    await mkv_client.upsert({{b"k": b"v"}})
    assert await mkv_client.get(b"k") == b"v"


{mark}
async def test_admin(mkv_admin):
    [partition] = await mkv_admin.list_partitions()
    assert partition.id == "default"


{mark}
async def test_node(mkv_node):
    async with mkv.Client.connect(mkv_node.data_address) as db:
        assert await db.get(b"nothing") is None
"""

# pytest-asyncio warns without it.
LOOP_SCOPE = "asyncio_default_fixture_loop_scope = function\n"


def run_case(pytester: pytest.Pytester, ini: str, mark: str, header: str = "") -> pytest.RunResult:
    pytester.makeini("[pytest]\n" + textwrap.dedent(ini))
    pytester.makepyfile(test_case=header + TESTS.format(mark=mark))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)


def test_pytest_trio_in_trio_mode(pytester: pytest.Pytester) -> None:
    run_case(pytester, "trio_mode = true\n", "").assert_outcomes(passed=3)


def test_pytest_trio_with_the_trio_marker(pytester: pytest.Pytester) -> None:
    result = run_case(pytester, "", "@pytest.mark.trio", "import pytest\n")
    result.assert_outcomes(passed=3)


def test_anyio_plugin_under_trio_and_asyncio(pytester: pytest.Pytester) -> None:
    header = (
        "import pytest\n\n"
        "@pytest.fixture(params=['trio', 'asyncio'])\n"
        "def anyio_backend(request):\n"
        "    return request.param\n"
    )
    result = run_case(pytester, "", "@pytest.mark.anyio", header)
    result.assert_outcomes(passed=6)


def test_pytest_asyncio_in_auto_mode(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    run_case(pytester, "asyncio_mode = auto\n" + LOOP_SCOPE, "").assert_outcomes(passed=3)


def test_pytest_asyncio_in_strict_mode_says_what_to_set(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    result = run_case(
        pytester, "asyncio_mode = strict\n" + LOOP_SCOPE, "@pytest.mark.asyncio", "import pytest\n"
    )
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*set asyncio_mode = auto*"])


def test_no_async_plugin_in_charge_says_what_to_set(pytester: pytest.Pytester) -> None:
    result = run_case(pytester, "", "")
    result.assert_outcomes(errors=3)
    # One line, naming what to set, instead of a bare AssertionError.
    result.stdout.fnmatch_lines(
        ["*mkv_client is an async fixture, but no plugin runs this test: set trio_mode = true*"]
    )
    result.stdout.no_fnmatch_line("*AssertionError*")


def test_running_node_works_without_pytest() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # import pytest now fails
        import trio
        import mkv
        from mkv.testing import node_in_thread, running_node

        async def main():
            async with running_node() as node:
                async with mkv.Client.connect(node.data_address) as db:
                    await db.upsert({b"k": b"trio"})
                    return await db.get(b"k")

        print(trio.run(main))
        with node_in_thread() as node, mkv.connect(node.data_address) as db:
            db.upsert({b"k": b"thread"})
            print(db.get(b"k"))
        try:
            import pytest
        except ImportError:
            print("no pytest")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["b'trio'", "b'thread'", "no pytest"]
