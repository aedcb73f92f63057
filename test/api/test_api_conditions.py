from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from substratus.api import (
    Condition,
    Reason,
    get_condition,
    is_true,
    make_condition,
    remove_condition,
    set_condition,
)
from substratus.api.conditions import BUILT, COMPLETE, REASONS, SERVING
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
        "PodFailing",
        "InvalidSpec",
    )
    assert REASONS[SERVING] == ("WaitingForDependency", "Deploying", "Available", "Suspended", "PodFailing",
                                "InvalidSpec")
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
