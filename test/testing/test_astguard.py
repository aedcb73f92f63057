"""The AST guard: a failing run reports every test even when a finalizer logs a traceback while
pytest parses a test file (CPython 3.11/3.12's AST constructor counter; see the plugin's docstring)."""

from __future__ import annotations

import ast
import gc
import subprocess
import sys
from pathlib import Path

from substratus.testing.astguard import AFFECTED, gc_paused

# Garbage whose finalizer logs an exception with its traceback, as asyncio does for a Future or
# Task whose exception nobody retrieved; formatting it parses source (Python 3.11's ^^^ markers).
# Collected while pytest parses this file to format the failures above it.
SUBJECT = '''
import logging

log = logging.getLogger("finalizer")


class Unretrieved:
    def __init__(self):
        self.me = self  # a cycle: only the garbage collector frees it
        try:
            raise ValueError("never retrieved")
        except ValueError as e:
            self.exc = e

    def __del__(self):
        log.error("exception was never retrieved", exc_info=self.exc)


def leave_garbage():
    for _ in range(1500):
        Unretrieved()
'''
SUBJECT += "".join(f'''

def test_long_failure_{i}():
    leave_garbage()
    expected = {{f"key{{k}}": list(range(k % 7)) for k in range(60)}}
    assert dict(expected, key3=[9, 9, 9]) == expected
''' for i in range(4)) + '''

def test_passes():
    pass
'''


def run_pytest(tmp_path: Path, *plugins: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_subject.py").write_text(SUBJECT)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugins, "-q", "test_subject.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_failing_run_reports_every_test(tmp_path: Path) -> None:
    res = run_pytest(tmp_path, "-p", "substratus.testing.astguard")
    assert "INTERNALERROR" not in res.stdout + res.stderr, res.stdout[-3000:]
    assert "4 failed, 1 passed" in res.stdout.splitlines()[-1]
    if AFFECTED:
        # Without the guard this very run is the crash the guard exists for.
        bare = run_pytest(tmp_path, "-p", "no:substratus.testing.astguard")
        assert "SystemError: AST constructor recursion depth mismatch" in bare.stdout + bare.stderr
        assert "failed" not in bare.stdout.splitlines()[-1]


def test_parse_runs_with_the_collector_paused_and_resumes_it() -> None:
    seen = []
    guarded = gc_paused(lambda src: seen.append(gc.isenabled()) or ast.parse(src))
    assert isinstance(guarded("x = 1"), ast.Module)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        guarded("x = 1")
        assert seen[-1] is False and not gc.isenabled(), "a paused collector stays paused"
    finally:
        gc.enable()
    if AFFECTED:
        assert getattr(ast.parse, "_substratus_gc_paused", False), "pyproject's addopts loads the guard"
