"""A pytest plugin that keeps CPython 3.11/3.12's AST constructor from crashing pytest's reports.

The fault (python/cpython#106905 and its reports): ``ast.parse`` converts the parser's tree to
Python objects in C (``PyAST_mod2obj``) and tracks its recursion depth in one counter per
interpreter, which every call resets. The conversion allocates thousands of objects, so the
cyclic garbage collector can run inside it, and a collected object's finalizer can run Python
code — typically an asyncio Future or Task whose exception was never retrieved logging it with
its traceback, and formatting a traceback on 3.11 calls ``ast.parse`` (for the ``^^^`` markers).
That nested parse resets the shared counter, so the outer one ends with
``SystemError: AST constructor recursion depth mismatch (before=…, after=…)``. When the outer one
is pytest formatting a failure (``getstatementrange_ast``) or rewriting asserts, the error is an
INTERNALERROR that ends the whole session without a summary. 3.11.8 fixed only the counter's
failure paths (cpython PR 112849), not this re-entry; 3.13 tracks the depth per call.

The guard: on 3.11 and 3.12, ``ast.parse`` runs with the garbage collector paused (it resumes
right after, and collects then), so no finalizer can run inside the conversion. Reference
counting is untouched; only cycles wait the few milliseconds a parse takes. Loaded from
pyproject's addopts (``-p substratus.testing.astguard``), so it is in place before any test
module is imported and rewritten.
"""

from __future__ import annotations

import ast
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any

AFFECTED = (3, 11) <= sys.version_info[:2] < (3, 13)
"""Interpreters whose AST constructor keeps its recursion depth in a shared, resettable counter."""

_MARK = "_substratus_gc_paused"


def gc_paused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with the cyclic garbage collector paused (if it was enabled), then resumed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    setattr(wrapper, _MARK, True)
    return wrapper


def install() -> bool:
    """Wrap ``ast.parse`` on affected interpreters; True if this call installed the guard."""
    if not AFFECTED or getattr(ast.parse, _MARK, False):
        return False
    ast.parse = gc_paused(ast.parse)  # type: ignore[assignment]
    return True


install()
