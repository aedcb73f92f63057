"""Which event loop the operator runs on: uvloop when it is installed, else asyncio's own.

uvloop (libuv) runs an event-loop iteration, a socket read and a callback in a fraction of
the CPU time of asyncio's pure-Python selector loop; an operator is one loop moving watch
events, queue wakeups and HTTP requests, so that is most of what it does besides JSON
(docs/benchmarks.md, work queue section, measures both loops). kopf does the same.
``SUBSTRATUS_EVENT_LOOP=asyncio`` opts out (e.g. to debug with asyncio's debug mode).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV = "SUBSTRATUS_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` unless opted out or not installed; None means asyncio's default.

    Raises ValueError for an ``SUBSTRATUS_EVENT_LOOP`` other than ``uvloop`` or ``asyncio``.
    """
    choice = os.environ.get(ENV, "uvloop").strip().lower() or "uvloop"
    if choice not in ("uvloop", "asyncio"):
        raise ValueError(f"{ENV} must be 'uvloop' or 'asyncio', not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
