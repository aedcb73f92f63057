"""The hang guard: a hung test fails with its await chains, a stuck one ends the run with a dump."""

from __future__ import annotations

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


def run_pytest(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_subject.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "substratus.testing.hangguard", "-p", "no:cacheprovider",
         "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function", "-q", *args,
         "test_subject.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)


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


def test_zero_disables_the_guard(tmp_path: Path) -> None:
    res = run_pytest(tmp_path, HANGING.replace("await asyncio.create_task", "await asyncio.wait_for(asyncio.create_task")
                     .replace('name="the-waiter")', 'name="the-waiter"), 2)'), "--test-timeout=0")
    # Without the guard the test runs to its own end: here wait_for's TimeoutError after 2 s.
    assert "TimeoutError" in res.stdout and "still running" not in res.stdout + res.stderr
