"""A pytest plugin that turns a hung test into a failure that shows where it hung.

A test that never finishes would otherwise eat CI's whole time budget and print nothing useful:
a thread dump of an asyncio program shows only the idle event loop. So:

* a coroutine test still running after ``--test-timeout`` seconds gets every pending task's
  await chain printed (the test's own and whatever it waits on), is cancelled, and fails;
* any test (sync or async, setup and teardown included) that has not ended
  ``--test-timeout-grace`` seconds after that — a swallowed cancel, a blocking call — gets a
  thread dump and the process exits, so CI reports the hang instead of timing out silently.

Enabled with ``-p substratus.testing.hangguard`` (pyproject's addopts); ``--test-timeout=0``
disables it.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import inspect
import os
from collections.abc import Generator
from typing import Any

import pytest

DEFAULT_TIMEOUT = 300.0
DEFAULT_GRACE = 60.0
"""How long a timed-out test gets to unwind before the process is ended."""

# The real stderr, duplicated before pytest's capture redirects fd 2 (plugins given with -p are
# imported first): what is written here reaches the CI log even when the process is ended.
_REAL_STDERR = os.dup(2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-timeout", type=float, default=None,
                     help=f"seconds a test may run before it is failed with its tasks' stacks "
                          f"(default ${{SUBSTRATUS_TEST_TIMEOUT}} or {DEFAULT_TIMEOUT:.0f}; 0 disables)")
    parser.addoption("--test-timeout-grace", type=float, default=DEFAULT_GRACE,
                     help="seconds a timed-out test may take to unwind before the run is ended with a "
                          f"thread dump (default {DEFAULT_GRACE:.0f})")


def _limit(config: pytest.Config) -> float:
    opt = config.getoption("--test-timeout")
    if opt is not None:
        return float(opt)
    return float(os.environ.get("SUBSTRATUS_TEST_TIMEOUT") or DEFAULT_TIMEOUT)


def _write_real_stderr(text: str) -> None:
    os.write(_REAL_STDERR, text.encode("utf-8", "replace"))


def await_chain(coro: Any) -> list[str]:
    """The frames a suspended coroutine waits in, outermost first, down to the innermost await.

    ``Task.print_stack`` shows one frame per suspended coroutine — the test function's own
    ``await`` line — which says nothing about what it waits for; this follows ``cr_await``.
    """
    lines = []
    obj = coro
    while obj is not None:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            lines.append(f"    awaiting {obj!r}")
            break
        lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
    return lines


def task_stacks(header: str) -> str:
    """Every pending task of the running loop with the await chain it is suspended in."""
    out = [f"\n{'=' * 30} {header} {'=' * 30}"]
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        out.append(f"--- task {task.get_name()}")
        out += await_chain(task.get_coro())
    return "\n".join(out) + "\n"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    limit = _limit(item.config)
    if limit > 0:
        grace = float(item.config.getoption("--test-timeout-grace"))
        faulthandler.dump_traceback_later(limit + grace, exit=True, file=_REAL_STDERR)
    try:
        return (yield)
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    fn = getattr(item, "obj", None)
    limit = _limit(item.config)
    if limit <= 0 or not inspect.iscoroutinefunction(fn):
        return (yield)

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # a failing test's report shows the test, not this wrapper
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            stacks = task_stacks(f"{item.nodeid} still running after {limit:.0f}s")
            _write_real_stderr(stacks)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(limit, expire)
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if not fired:
                raise
            task.uncancel()
        finally:
            handle.cancel()
        pytest.fail(f"still running after {limit:.0f}s, so cancelled; the pending tasks' await chains "
                    f"are printed above", pytrace=False)

    item.obj = guarded  # type: ignore[attr-defined]
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        item.obj = fn  # type: ignore[attr-defined]
