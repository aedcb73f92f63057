from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from substratus.api import (
    Condition,
    Reason,
    get_condition,
    is_true,
    make_condition,
    ready_summary,
    remove_condition,
    set_condition,
    with_ready,
)
from substratus.api.conditions import BUILT, COMPLETE, READY, REASONS, SERVING
from substratus.api.meta import format_time, parse_time

T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_reasons_match_spec() -> None:
    assert REASONS[BUILT] == (
        "ImageProvided", "AwaitingUpload", "UploadVerified", "Building", "BuildSucceeded", "BuildFailed", "PodFailing",
        "InvalidSpec",
    )  # fmt: skip
    assert REASONS[COMPLETE] == (
        "WaitingForDependency",
        "JobRunning",
        "JobSucceeded",
        "JobFailed",
        "FoundInStorage",
        "ReferenceNotPermitted",
        "PodFailing",
        "InvalidSpec",
        "ReconcileError",
    )
    # Idle: a Notebook stopped after spec.idleTimeout (issue 16; recorded in status.idle, never spec.suspend).
    assert REASONS[SERVING] == ("WaitingForDependency", "Deploying", "Available", "Suspended", "Idle",
                                "ReferenceNotPermitted", "PodFailing", "InvalidSpec", "ReconcileError")
    assert (BUILT, COMPLETE, SERVING) == ("Built", "Complete", "Serving")


def test_new_condition_gets_now() -> None:
    r = set_condition([], make_condition(BUILT, False, Reason.BUILDING, "building", 1), T0)
    assert r.changed and r.transitioned and r.previous is None
    assert r.conditions == [
        Condition(type="Built", status="False", reason="Building", message="building", observed_generation=1,
                  last_transition_time="2024-01-01T12:00:00Z")
    ]  # fmt: skip
    assert r.current is r.conditions[0]


def test_identical_condition_is_no_change() -> None:
    conds, *_ = set_condition([], make_condition(BUILT, True, Reason.IMAGE_PROVIDED, "", 1), T0)
    r = set_condition(conds, make_condition(BUILT, True, Reason.IMAGE_PROVIDED, "", 1), T1)
    assert not r.changed
    assert r.conditions == conds
    assert r.conditions is not conds  # a new list, input untouched


def test_same_status_keeps_transition_time() -> None:
    conds, *_ = set_condition(
        [], make_condition(COMPLETE, False, Reason.WAITING_FOR_DEPENDENCY, "waiting", 1), T0
    )
    r = set_condition(conds, make_condition(COMPLETE, False, Reason.JOB_RUNNING, "running", 1), T1)
    assert r.changed and not r.transitioned
    assert r.current.reason == "JobRunning" and r.current.message == "running"
    assert r.current.last_transition_time == "2024-01-01T12:00:00Z"


def test_observed_generation_update_is_a_change_without_transition() -> None:
    conds, *_ = set_condition([], make_condition(COMPLETE, True, Reason.JOB_SUCCEEDED, "done", 1), T0)
    r = set_condition(conds, make_condition(COMPLETE, True, Reason.JOB_SUCCEEDED, "done", 2), T1)
    assert r.changed and not r.transitioned
    assert r.current.observed_generation == 2
    assert r.current.last_transition_time == "2024-01-01T12:00:00Z"


def test_status_change_sets_transition_time() -> None:
    conds, *_ = set_condition([], make_condition(COMPLETE, False, Reason.JOB_RUNNING, "", 1), T0)
    r = set_condition(conds, make_condition(COMPLETE, True, Reason.JOB_SUCCEEDED, "", 1), T1)
    assert r.changed and r.transitioned
    assert r.previous is not None and r.previous.status == "False"
    assert r.current.last_transition_time == "2024-01-01T12:05:00Z"


def test_caller_supplied_transition_time_is_ignored() -> None:
    new = Condition(
        type=BUILT, status="True", reason="ImageProvided", last_transition_time="1999-01-01T00:00:00Z"
    )
    r = set_condition([], new, T0)
    assert r.current.last_transition_time == "2024-01-01T12:00:00Z"


def test_input_is_not_mutated_and_order_is_kept() -> None:
    conds, *_ = set_condition([], make_condition(BUILT, True, Reason.IMAGE_PROVIDED), T0)
    conds, *_ = set_condition(conds, make_condition(SERVING, False, Reason.DEPLOYING), T0)
    before = list(conds)
    r = set_condition(conds, make_condition(BUILT, False, Reason.BUILDING), T1)
    assert conds == before
    assert [c.type for c in r.conditions] == ["Built", "Serving"]
    assert r.conditions[0].status == "False"


def test_duplicates_are_collapsed() -> None:
    a = Condition(type=BUILT, status="True", reason="X", last_transition_time="2024-01-01T00:00:00Z")
    b = Condition(type=BUILT, status="False", reason="Y", last_transition_time="2024-01-01T00:00:00Z")
    r = set_condition([a, b], a, T1)
    assert r.changed and r.conditions == [a]


def test_missing_transition_time_is_filled() -> None:
    old = Condition(type=BUILT, status="True", reason="X")
    r = set_condition([old], Condition(type=BUILT, status="True", reason="X"), T0)
    assert r.changed and r.current.last_transition_time == "2024-01-01T12:00:00Z"


def test_helpers() -> None:
    conds, *_ = set_condition([], make_condition(BUILT, True, Reason.IMAGE_PROVIDED), T0)
    conds, *_ = set_condition(conds, make_condition(SERVING, "Unknown", Reason.DEPLOYING), T0)
    assert is_true(conds, BUILT) and not is_true(conds, SERVING) and not is_true(conds, COMPLETE)
    assert get_condition(conds, SERVING) is conds[1] and get_condition(conds, COMPLETE) is None
    assert [c.type for c in remove_condition(conds, BUILT)] == ["Serving"]


def test_time_format() -> None:
    assert format_time(datetime(2024, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC)) == "2024-01-01T12:00:00Z"
    assert (
        format_time(datetime(2024, 1, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))))
        == "2024-01-01T12:00:00Z"
    )
    assert format_time(datetime(2024, 1, 1, 12, 0, 0)) == "2024-01-01T12:00:00Z"  # naive = UTC
    assert parse_time("2024-01-01T12:00:00Z") == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert parse_time("2024-01-01T13:00:00.5+01:00") == datetime(2024, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)


# --- Ready: the summary `kubectl wait --for=condition=Ready` reads (SPEC §1) -------------------


def _c(type_: str, status: bool, reason: str, message: str = "") -> Condition:
    return make_condition(type_, status, reason, message)


def test_ready_is_true_with_the_readiness_conditions_reason() -> None:
    conds = [_c(BUILT, True, Reason.BUILD_SUCCEEDED, "built"), _c(COMPLETE, True, Reason.JOB_SUCCEEDED, "at gs://b")]
    ready = ready_summary(conds, COMPLETE, observed_generation=3)
    assert (ready.type, ready.status, ready.reason, ready.message, ready.observed_generation) == (
        READY, "True", Reason.JOB_SUCCEEDED, "at gs://b", 3)


def test_ready_is_true_when_found_in_storage_even_if_the_build_failed() -> None:
    # Same truth as status.ready: the artifacts are there, whatever the image's state.
    conds = [_c(BUILT, False, Reason.BUILD_FAILED, "exit 1"), _c(COMPLETE, True, Reason.FOUND_IN_STORAGE)]
    assert ready_summary(conds, COMPLETE).status == "True"


def test_ready_names_the_first_condition_holding_it_back() -> None:
    # The build failing is why the Job waits: Built comes before Complete/Serving, whatever the list order.
    conds = [_c(SERVING, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for the image to be built"),
             _c(BUILT, False, Reason.BUILD_FAILED, "kaniko exited 1")]
    ready = ready_summary(conds, SERVING)
    assert (ready.status, ready.reason, ready.message) == ("False", Reason.BUILD_FAILED, "kaniko exited 1")
    conds = [_c(BUILT, True, Reason.IMAGE_PROVIDED), _c(SERVING, False, Reason.DEPLOYING, "0/1 available")]
    ready = ready_summary(conds, SERVING)
    assert (ready.status, ready.reason, ready.message) == ("False", Reason.DEPLOYING, "0/1 available")


def test_ready_prefers_invalid_spec_over_a_stale_built() -> None:
    conds = [_c(BUILT, False, Reason.BUILDING, "old build"),
             _c(COMPLETE, False, Reason.INVALID_SPEC, "metadata.name: longer than 50")]
    ready = ready_summary(conds, COMPLETE)
    assert (ready.reason, ready.message) == (Reason.INVALID_SPEC, "metadata.name: longer than 50")


def test_ready_before_any_condition() -> None:
    ready = ready_summary([], COMPLETE)
    assert (ready.status, ready.reason) == ("False", Reason.RECONCILING)


def test_with_ready_ignores_its_own_previous_value_and_keeps_transition_time() -> None:
    conds = [_c(BUILT, True, Reason.IMAGE_PROVIDED), _c(COMPLETE, False, Reason.JOB_RUNNING, "running")]
    first = with_ready(conds, COMPLETE, T0)
    assert first.changed and get_condition(first.conditions, READY) == Condition(
        type=READY, status="False", reason=Reason.JOB_RUNNING, message="running", last_transition_time=format_time(T0))
    # Same truth, new reason: no transition, the time stays.
    conds2 = [c if c.type != COMPLETE else _c(COMPLETE, False, Reason.JOB_FAILED, "x") for c in first.conditions]
    second = with_ready(conds2, COMPLETE, T1)
    assert second.current.reason == Reason.JOB_FAILED
    assert second.current.last_transition_time == format_time(T0)
    assert with_ready(second.conditions, COMPLETE, T1).changed is False
