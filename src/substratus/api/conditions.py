"""Status conditions (metav1.Condition shape) and the pure function that updates them.

A reconciler recomputes every condition on every pass and calls :func:`set_condition` for each;
the result tells it whether anything changed, so an unchanged status is never written (no
resourceVersion churn, no event storms) and transitions can be turned into Events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import attrs

from substratus.api.fields import api_field
from substratus.api.meta import format_time

# Condition status values.
TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
CONDITION_STATUSES: tuple[str, ...] = (TRUE, FALSE, UNKNOWN)

# Condition types (SPEC §1).
READY = "Ready"  # every kind: the summary of the others, the same truth as status.ready
BUILT = "Built"
COMPLETE = "Complete"  # Model, Dataset
SERVING = "Serving"  # Server, Notebook


class Reason:
    """Condition reasons, exactly as in SPEC §1."""

    # Built
    IMAGE_PROVIDED = "ImageProvided"
    AWAITING_UPLOAD = "AwaitingUpload"
    UPLOAD_VERIFIED = "UploadVerified"
    BUILDING = "Building"
    BUILD_SUCCEEDED = "BuildSucceeded"
    BUILD_FAILED = "BuildFailed"
    # Complete
    WAITING_FOR_DEPENDENCY = "WaitingForDependency"
    JOB_RUNNING = "JobRunning"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    FOUND_IN_STORAGE = "FoundInStorage"
    # Serving (WaitingForDependency too)
    DEPLOYING = "Deploying"
    AVAILABLE = "Available"
    SUSPENDED = "Suspended"
    IDLE = "Idle"  # Notebook: Pod stopped after spec.idleTimeout (status.idle); not spec.suspend
    # any kind
    INVALID_SPEC = "InvalidSpec"
    # Built, Complete, Serving: the workload's (or build's) Pod cannot start or keeps failing;
    # the message carries the Pod's own reason and message (SPEC §1).
    POD_FAILING = "PodFailing"
    RECONCILE_ERROR = "ReconcileError"  # the pass itself keeps failing (the error is the message)
    REFERENCE_NOT_PERMITTED = "ReferenceNotPermitted"  # another namespace's object has not opted in
    # Ready, only before the first reconcile has set any other condition
    RECONCILING = "Reconciling"


BUILT_REASONS: tuple[str, ...] = (
    Reason.IMAGE_PROVIDED,
    Reason.AWAITING_UPLOAD,
    Reason.UPLOAD_VERIFIED,
    Reason.BUILDING,
    Reason.BUILD_SUCCEEDED,
    Reason.BUILD_FAILED,
    Reason.POD_FAILING,
    Reason.INVALID_SPEC,
)
COMPLETE_REASONS: tuple[str, ...] = (
    Reason.WAITING_FOR_DEPENDENCY,
    Reason.JOB_RUNNING,
    Reason.JOB_SUCCEEDED,
    Reason.JOB_FAILED,
    Reason.FOUND_IN_STORAGE,
    Reason.REFERENCE_NOT_PERMITTED,
    Reason.POD_FAILING,
    Reason.INVALID_SPEC,
    Reason.RECONCILE_ERROR,
)
SERVING_REASONS: tuple[str, ...] = (
    Reason.WAITING_FOR_DEPENDENCY,
    Reason.DEPLOYING,
    Reason.AVAILABLE,
    Reason.SUSPENDED,
    Reason.IDLE,
    Reason.REFERENCE_NOT_PERMITTED,
    Reason.POD_FAILING,
    Reason.INVALID_SPEC,
    Reason.RECONCILE_ERROR,
)
REASONS: dict[str, tuple[str, ...]] = {
    BUILT: BUILT_REASONS,
    COMPLETE: COMPLETE_REASONS,
    SERVING: SERVING_REASONS,
}


@attrs.frozen(kw_only=True)
class Condition:
    """One aspect of an object's state, in metav1.Condition shape. Immutable: update through
    :func:`set_condition`, which owns the lastTransitionTime rule."""

    type: str = api_field(
        "Condition type: Ready (every kind), Built, Complete (Model, Dataset) or Serving (Server, Notebook)."
    )
    status: str = api_field("True, False or Unknown.", openapi={"enum": list(CONDITION_STATUSES)})
    observed_generation: int = api_field(
        "metadata.generation the condition was computed from.", default=0, openapi={"minimum": 0}
    )
    last_transition_time: str = api_field(
        "RFC3339 time the status last changed (not the reason or message).", default=""
    )
    reason: str = api_field("CamelCase machine-readable reason.", default="")
    message: str = api_field("Human-readable details.", default="")


def make_condition(
    type: str, status: bool | str, reason: str, message: str = "", observed_generation: int = 0
) -> Condition:
    """A Condition whose ``status`` may be given as a bool; lastTransitionTime is filled by
    :func:`set_condition`."""
    if isinstance(status, bool):
        status = TRUE if status else FALSE
    return Condition(
        type=type, status=status, reason=reason, message=message, observed_generation=observed_generation
    )


class SetConditionResult(NamedTuple):
    conditions: list[Condition]
    """The new list (the input is never mutated)."""
    changed: bool
    """False when the list equals the input: skip the status write."""
    previous: Condition | None
    """The condition of that type before the update (None if it was absent)."""
    current: Condition
    """The condition of that type as stored now (with its lastTransitionTime)."""

    @property
    def transitioned(self) -> bool:
        """The status flipped or the condition appeared (lastTransitionTime became ``now``)."""
        return self.previous is None or self.previous.status != self.current.status


def set_condition(conditions: Sequence[Condition], new: Condition, now: datetime) -> SetConditionResult:
    """Replace (or append) the condition of ``new.type``.

    lastTransitionTime is kept when the status is unchanged and set to ``now`` when it changes
    or the condition is new, whatever ``new.last_transition_time`` says. Duplicate entries of the
    same type are collapsed into one.
    """
    previous = get_condition(conditions, new.type)
    if previous is not None and previous.status == new.status and previous.last_transition_time:
        ltt = previous.last_transition_time
    else:
        ltt = format_time(now)
    updated = attrs.evolve(new, last_transition_time=ltt)

    out: list[Condition] = []
    placed = False
    for c in conditions:
        if c.type != new.type:
            out.append(c)
        elif not placed:
            out.append(updated)
            placed = True
    if not placed:
        out.append(updated)
    return SetConditionResult(
        conditions=out, changed=out != list(conditions), previous=previous, current=updated
    )


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The first condition of ``type``, or None."""
    for c in conditions:
        if c.type == type:
            return c
    return None


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    c = get_condition(conditions, type)
    return c is not None and c.status == TRUE


def remove_condition(conditions: Sequence[Condition], type: str) -> list[Condition]:
    return [c for c in conditions if c.type != type]


# Reasons that stop a pass before it computes the other conditions: Ready shows them first.
ROOT_CAUSES = frozenset({Reason.INVALID_SPEC, Reason.RECONCILE_ERROR})


def ready_summary(
    conditions: Sequence[Condition], ready_type: str, observed_generation: int = 0
) -> Condition:
    """The ``Ready`` condition that summarises ``conditions`` (SPEC §1), without lastTransitionTime.

    ``ready_type`` is the kind's own readiness condition (``Complete`` or ``Serving``); the object
    is ready exactly when it is True, which is also ``status.ready``. When ready, ``Ready`` is True
    with that condition's reason and message (e.g. ``JobSucceeded``, ``Available``). When not,
    ``Ready`` is False with the reason and message of the first condition holding it back: an
    ``InvalidSpec`` or ``ReconcileError`` one first (the spec, or the failing pass, is the root
    cause; other conditions were not recomputed),
    then ``Built`` before ``ready_type`` (a failed build is why nothing runs), then any other in
    list order. With none of them set yet: False, ``Reconciling``.
    """
    others = [c for c in conditions if c.type != READY]
    ready = is_true(others, ready_type)
    if ready:
        source = get_condition(others, ready_type)
        assert source is not None
        return make_condition(READY, True, source.reason, source.message, observed_generation)
    rank = {BUILT: 0, ready_type: 1}
    holders = sorted(
        (c for c in others if c.status != TRUE),
        key=lambda c: (c.reason not in ROOT_CAUSES, rank.get(c.type, 2)),
    )
    if not holders:
        return make_condition(READY, False, Reason.RECONCILING, f"no {ready_type} condition yet",
                              observed_generation)
    first = holders[0]
    return make_condition(READY, False, first.reason, first.message, observed_generation)


def with_ready(
    conditions: Sequence[Condition], ready_type: str, now: datetime, observed_generation: int = 0
) -> SetConditionResult:
    """``conditions`` with ``Ready`` set from :func:`ready_summary` (the input is not mutated)."""
    return set_condition(conditions, ready_summary(conditions, ready_type, observed_generation), now)
