"""substratus_objects and substratus_time_to_ready_seconds: the helpers reconcilers call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from substratus.controllers import metrics as dm
from substratus.runtime.metrics import REGISTRY

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    dm.reset()
    yield
    dm.reset()


def obj(kind: str = "Model", ns: str = "team-a", name: str = "m", ready: bool | None = None,
        created: str = "2024-05-01T11:00:00Z", conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready is not None:
        status["ready"] = ready
    if conditions is not None:
        status["conditions"] = conditions
    return {"apiVersion": "substratus.ai/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "status": status}


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_metrics_are_registered_in_the_runtime_registry() -> None:
    dm.OBJECTS.labels("Model", "a", "true").set(1)
    dm.TIME_TO_READY.labels("Model").observe(3)
    text = generate_latest(REGISTRY).decode()
    assert 'substratus_objects{kind="Model",namespace="a",ready="true"} 1.0' in text
    assert 'substratus_time_to_ready_seconds_bucket{kind="Model",le="5.0"} 1.0' in text


def test_count_objects_reports_both_readiness_values_per_namespace() -> None:
    counts = dm.count_objects([obj(ready=True), obj(name="b", ready=False), obj(name="c"),
                               obj(ns="team-b", ready=True)])
    assert counts == {("team-a", "true"): 1, ("team-a", "false"): 2, ("team-b", "true"): 1, ("team-b", "false"): 0}
    assert dm.ready_label({"status": {"ready": "true"}}) == "false"  # only a real boolean counts


def test_set_object_counts_sets_and_removes_series() -> None:
    dm.set_object_counts("Model", [obj(ready=True), obj(ns="team-b", ready=False)])
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "true"}) == 1
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "false"}) == 0
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-b", "ready": "false"}) == 1
    dm.set_object_counts("Dataset", [obj(kind="Dataset", ns="team-b", ready=True)])

    # team-b's Model is gone: its series disappear; other kinds are untouched.
    dm.set_object_counts("Model", [obj(ready=True), obj(name="n", ready=True)])
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "true"}) == 2
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-b", "ready": "false"}) is None
    assert sample("substratus_objects", {"kind": "Dataset", "namespace": "team-b", "ready": "true"}) == 1
    dm.set_object_counts("Model", [])
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "true"}) is None


def test_set_object_counts_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        dm.set_object_counts("Job", [])


def test_seconds_to_ready_counts_from_the_ready_condition_turning_false() -> None:
    before = obj(ready=False, conditions=[
        {"type": "Built", "status": "True", "lastTransitionTime": "2024-05-01T11:01:00Z"},
        {"type": "Complete", "status": "False", "reason": "JobRunning", "lastTransitionTime": "2024-05-01T11:30:00Z"},
    ])
    assert dm.seconds_to_ready(before, {"ready": True}, NOW) == 1800.0


def test_seconds_to_ready_falls_back_to_creation() -> None:
    # Ready on its first pass (found in storage): no earlier condition to measure from.
    assert dm.seconds_to_ready(obj(), {"ready": True}, NOW) == 3600.0
    # Serving is the ready condition of Servers; a Complete condition is not theirs.
    server = obj(kind="Server", ready=False, conditions=[
        {"type": "Complete", "status": "False", "lastTransitionTime": "2024-05-01T11:59:00Z"}])
    assert dm.seconds_to_ready(server, {"ready": True}, NOW) == 3600.0


def test_seconds_to_ready_is_none_unless_this_write_makes_it_ready() -> None:
    assert dm.seconds_to_ready(obj(ready=True), {"ready": True}, NOW) is None  # already ready
    assert dm.seconds_to_ready(obj(ready=False), {"ready": False}, NOW) is None
    assert dm.seconds_to_ready(obj(ready=False), {}, NOW) is None
    assert dm.seconds_to_ready(obj(created=""), {"ready": True}, NOW) is None
    assert dm.seconds_to_ready(obj(created="yesterday"), {"ready": True}, NOW) is None
    # A clock behind the object's timestamps never yields a negative duration.
    assert dm.seconds_to_ready(obj(created="2024-05-01T13:00:00Z"), {"ready": True}, NOW) == 0.0


def test_observe_ready_observes_once_per_transition() -> None:
    before = obj(kind="Notebook", ready=False)
    assert dm.observe_ready(before, {"ready": True}, NOW) == 3600.0
    assert dm.observe_ready({**before, "status": {"ready": True}}, {"ready": True}, NOW) is None
    assert sample("substratus_time_to_ready_seconds_count", {"kind": "Notebook"}) == 1
    assert sample("substratus_time_to_ready_seconds_sum", {"kind": "Notebook"}) == 3600.0
    assert sample("substratus_time_to_ready_seconds_bucket", {"kind": "Notebook", "le": "3600.0"}) == 1
    assert sample("substratus_time_to_ready_seconds_bucket", {"kind": "Notebook", "le": "1800.0"}) == 0


def test_observe_ready_ignores_objects_of_other_kinds() -> None:
    assert dm.observe_ready(obj(kind="Pod"), {"ready": True}, NOW) is None
    assert dm.observe_ready(obj(), {"ready": True}) is not None  # default clock: now


def test_object_counts_follow_informer_events_without_listing() -> None:
    # The operator counts from its informers' events and publishes periodically: publishing costs
    # O(namespaces). Before, every refresh listed (and recounted) every cached object of every
    # kind, a cost per object that grew with the number of objects.
    counts = dm.ObjectCounts("Model")
    a, b, c = obj(name="a"), obj(name="b", ready=True), obj(name="c", ns="team-b")
    for o in (a, b, c):
        counts.on_add(o)
    a_ready = obj(name="a", ready=True)
    counts.on_update(a, a_ready)
    counts.on_update(b, b)  # a resync: nothing moves
    assert counts.publish() == dm.count_objects([a_ready, b, c])
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "true"}) == 2
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-a", "ready": "false"}) == 0
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-b", "ready": "false"}) == 1

    counts.on_delete(c)  # team-b's last object: its series go, as with a full listing
    assert counts.publish() == dm.count_objects([a_ready, b])
    assert sample("substratus_objects", {"kind": "Model", "namespace": "team-b", "ready": "false"}) is None
    with pytest.raises(ValueError):
        dm.ObjectCounts("Job")
