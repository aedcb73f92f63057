"""The hang guard: a hung test fails with its await chains, a stuck one ends the run with a dump."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HANGING = '''
import asyncio

async def test_waits_forever():
    never = asyncio.Event()

    async def waiter():
        await never.wait()

    await asyncio.create_task(waiter(), name="the-waiter")

async def test_quick():
    await asyncio.sleep(0)
'''

SWALLOWS_CANCEL = '''
import asyncio

async def test_ignores_cancel():
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()

def test_never_reached():
    pass
'''


def run_pytest(tmp_path: Path, source: str, *args: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_subject.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "substratus.testing.hangguard", "-p", "no:cacheprovider",
         "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function", "-q", *args,
         "test_subject.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if k != "SUBSTRATUS_TEST_TIMEOUT"}, **(env or {})})


def test_a_hung_async_test_fails_and_shows_what_it_waits_on(tmp_path: Path) -> None:
    res = run_pytest(tmp_path, HANGING, "--test-timeout=1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 failed, 1 passed" in res.stdout
    assert "still running after 1s" in res.stdout
    # The await chain reaches the line that hangs, in the test and in the task it waits for.
    assert "test_subject.py::test_waits_forever still running after 1s" in res.stderr
    assert "--- task the-waiter" in res.stderr
    assert "in waiter" in res.stderr and "locks.py" in res.stderr


def test_a_test_that_swallows_the_cancel_ends_the_run_with_a_thread_dump(tmp_path: Path) -> None:
    res = run_pytest(tmp_path, SWALLOWS_CANCEL, "--test-timeout=1", "--test-timeout-grace=1")
    assert res.returncode != 0
    assert "test_ignores_cancel still running after 1s" in res.stderr
    assert "Timeout (0:00:02)!" in res.stderr and "most recent call first" in res.stderr
    assert "passed" not in res.stdout, "the run ends at the stuck test"


def test_the_limit_comes_from_the_option_or_the_environment_and_zero_disables_it(tmp_path: Path) -> None:
    slow = "import asyncio\n\nasync def test_slow():\n    await asyncio.sleep(2)\n"
    assert "still running after 1s" in run_pytest(tmp_path, slow, "--test-timeout=1").stdout
    assert "still running after 1s" in run_pytest(tmp_path, slow, env={"SUBSTRATUS_TEST_TIMEOUT": "1"}).stdout
    res = run_pytest(tmp_path, slow, "--test-timeout=0", env={"SUBSTRATUS_TEST_TIMEOUT": "1"})
    assert "1 passed" in res.stdout and "still running" not in res.stdout + res.stderr
