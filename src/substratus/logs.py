"""Structured logging: one JSON object a line, or key=value text, with the fields as fields.

Code logs through the standard library with its fields in ``extra`` and a constant message::

    log.info("created job", extra={"job": job_name})

and :func:`setup` renders every record — ours and the libraries' — through one structlog
pipeline (structlog's ``ProcessorFormatter``; a well-kept library instead of our own
formatting). The keys (SPEC §7), in this order:

``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``; then, inside a reconcile,
``controller``, ``kind``, ``namespace``, ``name``, ``reconcileID`` (set by the controller through a
context variable, so a reconciler's lines are attributed without passing anything around and
concurrent reconciles on one loop never mix); then the record's ``extra`` fields; then ``error``
(the exception's message, when one is logged) and ``exception`` (its traceback).

``extra`` cannot use the names of LogRecord attributes (``name``, ``msg``, ``module``…): the
standard library refuses them. Name the object a line is about by its kind (``job``, ``pod``,
``lease``) outside a reconcile.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import traceback
import types
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "substratus_log_context", default=types.MappingProxyType({}))

FIRST_KEYS = ("ts", "level", "logger", "msg", "controller", "kind", "namespace", "name", "reconcileID")
LAST_KEYS = ("error", "exception")


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to every line logged from this task (and tasks it starts) from now on."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def reset(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``with bound(kind="Model"): ...``: the fields on every line logged inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


def context() -> Mapping[str, Any]:
    """The fields :func:`bind` set for the current task."""
    return _context.get()


def _add_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _context.get().items():
        event.setdefault(key, value)
    return event


def _error_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``exc_info`` → ``error`` (the message) and ``exception`` (the traceback)."""
    exc_info = event.pop("exc_info", None)
    record = event.get("_record")
    if exc_info is None and isinstance(record, logging.LogRecord):
        exc_info = record.exc_info
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        etype, value, tb = exc_info
        if etype is not None:
            event.setdefault("error", f"{etype.__name__}: {value}" if str(value) else etype.__name__)
            event["exception"] = "".join(traceback.format_exception(etype, value, tb)).rstrip()
    return event


def _order(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    event["msg"] = event.pop("event", "")
    out = {k: event.pop(k) for k in FIRST_KEYS if k in event}
    tail = {k: event.pop(k) for k in LAST_KEYS if k in event}
    out.update((k, v) for k, v in event.items() if not k.startswith("_"))
    out.update(tail)
    return out


class _TextRenderer:
    """key=value (logfmt) for humans; a traceback follows its line as plain text."""

    def __init__(self) -> None:
        self._logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        exception = event.pop("exception", None)
        line: str = self._logfmt(logger, method, {k: _text(v) for k, v in event.items()})
        return f"{line}\n{exception}" if exception else line


def _text(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def formatter(fmt: str = "text") -> logging.Formatter:
    """A stdlib formatter rendering records as JSON lines (``json``) or key=value text (``text``)."""
    renderer: Any = structlog.processors.JSONRenderer(default=str) if fmt == "json" else _TextRenderer()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_context,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[_error_fields, _order, renderer],
        keep_exc_info=False,
        keep_stack_info=False,
    )


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for the operator process (tests keep pytest's handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log at info would drown the reconcilers' lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
