"""Status bookkeeping shared by every reconciler: set every condition, derive ``ready`` and the
``Ready`` condition from them (SPEC §1), write ``/status`` only when something changed, and turn
each transition into an Event."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import attrs

from substratus.api import AnyKind, Condition, Reason, make_condition, set_condition, to_dict, with_ready
from substratus.api.conditions import READY, TRUE
from substratus.controllers.diff import merge_patch
from substratus.controllers.pods import problem_reason_in
from substratus.runtime.cache import Cache
from substratus.runtime.client import Client
from substratus.runtime.events import NORMAL, WARNING, EventRecorder
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)

WARNING_REASONS = frozenset({Reason.INVALID_SPEC, Reason.JOB_FAILED, Reason.BUILD_FAILED, Reason.RECONCILE_ERROR,
                             Reason.REFERENCE_NOT_PERMITTED, Reason.POD_FAILING})

QUIET_FIRST_REASONS = frozenset({Reason.IMAGE_PROVIDED, Reason.FOUND_IN_STORAGE})
"""Reasons whose *first* appearance gets no Event (SPEC §7): a state that asks nothing of anyone
— the image was given, the data is already stored — so an Event costs a write and tells nobody
anything. Reaching one of them later (a change of reason or status) is a transition like any other."""


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
        if prev is None:
            if result.current.reason not in QUIET_FIRST_REASONS:
                self.transitions.append(result.current)
        elif prev.status != result.current.status or prev.reason != result.current.reason \
                or _pod_reason_changed(prev, result.current):
            self.transitions.append(result.current)
        return result.current

    def is_true(self, type_: str) -> bool:
        return any(c.type == type_ and c.status == TRUE for c in self.conditions)

    def finish(self, ready_type: str) -> bool:
        """Set ``Ready`` from the conditions set so far (:func:`~substratus.api.ready_summary`)
        and return the object's readiness, the value of ``status.ready``.

        ``Ready`` transitions are not added to :attr:`transitions`: each is the transition of
        the condition it summarises, which already gets its Event (one write, not two)."""
        result = with_ready(self.conditions, ready_type, now(), self.obj.metadata.generation)
        self.conditions = result.conditions
        return result.current.status == TRUE


def _pod_reason_changed(prev: Condition, cur: Condition) -> bool:
    """A ``PodFailing`` condition whose Pod now fails for another reason (``ErrImagePull`` →
    ``ImagePullBackOff`` → ``CrashLoopBackOff``): news for whoever reads Events, like a change of
    the condition's own reason. The same Pod reason again (a new Pod name, a restart count, the
    kubelet's changing back-off text) is not, so a crash loop does not spam one Event per pass."""
    if cur.reason != Reason.POD_FAILING or prev.reason != Reason.POD_FAILING:
        return False
    return problem_reason_in(prev.message) != problem_reason_in(cur.message)


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
        if c.type == READY:
            continue  # a summary: the condition it reflects has its own Event
        type_ = WARNING if c.reason in WARNING_REASONS else NORMAL
        message = f"{c.type}={c.status}" + (f": {c.message}" if c.message else "")
        recorder.event(raw, type_, c.reason, message)
        log.info("condition changed", extra={"type": c.type, "status": c.status, "reason": c.reason,
                                                "conditionMessage": c.message})


def status_dict(obj: AnyKind) -> dict[str, Any]:
    return to_dict(obj.status)
