"""Status bookkeeping shared by every reconciler: set every condition, derive ``ready``,
write ``/status`` only when something changed, and turn each transition into an Event."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import attrs

from substratus.api import AnyKind, Condition, Reason, make_condition, set_condition, to_dict
from substratus.api.conditions import TRUE
from substratus.controllers.diff import merge_patch
from substratus.runtime.cache import Cache
from substratus.runtime.client import Client
from substratus.runtime.events import NORMAL, WARNING, EventRecorder
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)

WARNING_REASONS = frozenset({Reason.INVALID_SPEC, Reason.JOB_FAILED, Reason.BUILD_FAILED, Reason.POD_FAILING})


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.define
class StatusUpdate:
    """The conditions computed in one pass; applied to a copy of the object's status."""

    obj: AnyKind
    conditions: list[Condition] = attrs.field(factory=list)
    transitions: list[Condition] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.conditions = list(self.obj.status.conditions)

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> Condition:
        result = set_condition(self.conditions, make_condition(
            type_, status, reason, message, observed_generation=self.obj.metadata.generation), now())
        self.conditions = result.conditions
        prev = result.previous
        if prev is None or prev.status != result.current.status or prev.reason != result.current.reason:
            self.transitions.append(result.current)
        return result.current

    def is_true(self, type_: str) -> bool:
        return any(c.type == type_ and c.status == TRUE for c in self.conditions)


async def write_status(client: Client, res: Resource, raw: dict[str, Any], new_status: dict[str, Any],
                       cache: Cache | None = None) -> bool:
    """Merge-patch ``/status`` with exactly what changed; False (and no request) if nothing did.

    With ``cache``, the written object is read back from it until the watch delivers it, so the
    next reconcile does not compute (and write) the same change from a stale copy."""
    patch = merge_patch(raw.get("status") or {}, new_status)
    if patch is None:
        return False
    meta = raw["metadata"]
    written = await client.patch_status(res, meta["name"], {"status": patch}, meta.get("namespace"))
    if cache is not None and isinstance(written, dict):
        cache.mutated(res, written)
    return True


def record_transitions(recorder: EventRecorder, raw: dict[str, Any], transitions: list[Condition]) -> None:
    for c in transitions:
        type_ = WARNING if c.reason in WARNING_REASONS else NORMAL
        message = f"{c.type}={c.status}" + (f": {c.message}" if c.message else "")
        recorder.event(raw, type_, c.reason, message)
        log.info("condition changed type=%s status=%s reason=%s message=%r", c.type, c.status, c.reason, c.message)


def status_dict(obj: AnyKind) -> dict[str, Any]:
    return to_dict(obj.status)
