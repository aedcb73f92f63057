"""Logs (SPEC §7): one JSON object a line whose keys are the fields, key=value text for humans,
and no log call in the code that formats its fields into the message."""

from __future__ import annotations

import ast
import io
import json
import logging
from pathlib import Path

import pytest

from substratus import logs

SRC = Path(__file__).resolve().parents[2] / "src" / "substratus"
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@pytest.fixture
def capture() -> io.StringIO:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_fields_and_the_reconcile_context(capture: io.StringIO) -> None:
    logs.setup("info", "json", capture)
    log = logging.getLogger("substratus.controllers.build")
    with logs.bound(controller="model", kind="Model", namespace="team-a", name="falcon", reconcileID="r-1"):
        log.info("build succeeded", extra={"job": "falcon-model-bld", "image": "r/x@sha256:ab"})
        try:
            raise OSError("connection reset")
        except OSError:
            log.exception("reconcile panicked")
    log.warning("error acquiring lease", extra={"lease": "substratus/leader", "error": "Conflict"})
    lines = capture.getvalue().splitlines()
    assert len(lines) == 3  # the traceback stays inside its line
    first, second, third = (json.loads(line) for line in lines)
    assert list(first)[:9] == ["ts", "level", "logger", "msg", "controller", "kind", "namespace", "name",
                               "reconcileID"]
    assert first["msg"] == "build succeeded" and first["job"] == "falcon-model-bld" and first["level"] == "info"
    assert (first["namespace"], first["name"], first["reconcileID"]) == ("team-a", "falcon", "r-1")
    assert second["error"] == "OSError: connection reset" and "Traceback" in second["exception"]
    assert third == {**third, "msg": "error acquiring lease", "lease": "substratus/leader", "error": "Conflict"}
    assert "name" not in third  # outside a reconcile: no object


def test_text_is_key_value(capture: io.StringIO) -> None:
    logs.setup("info", "text", capture)
    logging.getLogger("x").info("created child", extra={"childKind": "Job", "childName": "a b", "crds": ["m", "d"]})
    line = capture.getvalue().strip()
    assert line.endswith('level=info logger=x msg="created child" childKind=Job childName="a b" crds=m,d'), line
    assert line.startswith("ts=")


def _log_calls() -> list[tuple[Path, ast.Call]]:
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("debug", "info", "warning", "error", "exception", "critical") and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger"):
                calls.append((path, node))
    return calls


def test_no_log_call_formats_its_fields_into_the_message() -> None:
    calls = _log_calls()
    assert len(calls) > 60
    for path, call in calls:
        where = f"{path.relative_to(SRC)}:{call.lineno}"
        assert len(call.args) == 1, f"{where}: fields belong in extra=, not %-arguments"
        assert not isinstance(call.args[0], ast.JoinedStr), f"{where}: an f-string message"
        for kw in call.keywords:
            if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                keys = {k.value for k in kw.value.keys if isinstance(k, ast.Constant)}
                assert not keys & RESERVED, f"{where}: {keys & RESERVED} are LogRecord attributes"
