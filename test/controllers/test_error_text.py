"""What a ``ReconcileError`` condition says: the child being applied, the API server's answer."""

from __future__ import annotations

from substratus.controllers.base import MAX_ERROR_TEXT, error_text
from substratus.runtime.client import ServerError


def test_error_text_names_the_child_and_the_servers_answer_within_bounds() -> None:
    exc = ServerError(500, "InternalError", "duplicate entries for key [name=\"X\"]")
    exc.add_note("applying Deployment team-a/chat-server")
    assert error_text(exc) == ('applying Deployment team-a/chat-server: 500 InternalError: '
                               'duplicate entries for key [name="X"]')
    assert error_text(ValueError("bad value")) == "ValueError: bad value"
    assert error_text(TimeoutError()) == "TimeoutError"
    huge = ServerError(500, "InternalError", "x" * 5000)
    assert len(error_text(huge)) == MAX_ERROR_TEXT and error_text(huge).endswith("…")
