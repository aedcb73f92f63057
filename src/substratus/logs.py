"""Structured logging: key=value or JSON lines, each carrying the object being reconciled.

The object comes from a context variable the controller sets around every reconcile, so a
reconciler's ``log.info("created job")`` is attributed to ``namespace/name`` without passing
it around — and concurrent reconciles on one loop never mix their attributions up.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

current_object: contextvars.ContextVar[str | None] = contextvars.ContextVar("substratus_object", default=None)
current_controller: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "substratus_controller", default=None)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "object"):
            record.object = current_object.get()
        if not hasattr(record, "controller"):
            record.controller = current_controller.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key in ("controller", "object"):
        value = getattr(record, key, None)
        if value is not None:
            out[key] = value
    for key, value in record.__dict__.items():
        if key not in _RESERVED and key not in out and key not in ("controller", "object"):
            out[key] = value
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = str(value)
            if key == "error":
                continue
            if not text or any(c in text for c in ' "=\n'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + logging.Formatter().formatException(record.exc_info)
        return line


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for the operator process (tests keep pytest's handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log at info would drown the reconcilers' lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def install_context_filter(handler: logging.Handler) -> None:
    handler.addFilter(_ContextFilter())
