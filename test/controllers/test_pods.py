"""Reading Pods (pure): which problem a workload's Pods show, what the cache keeps of them, and
which parent a Pod wakes."""

from __future__ import annotations

from typing import Any

from substratus.controllers.pods import (
    PodProblem,
    pod_parent_index,
    pod_problem,
    pod_problem_changed,
    pod_status_changed,
    pod_transform,
    pods_to_parent,
)
from substratus.runtime.reconcile import Request

LABELS = {"app.kubernetes.io/managed-by": "substratus", "substratus.ai/model": "m", "substratus.ai/role": "workload"}


def pod(name: str, phase: str = "Running", *, created: str = "2026-01-01T00:00:00Z", deleting: bool = False,
        conditions: list[dict[str, Any]] | None = None, containers: list[dict[str, Any]] | None = None,
        **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": dict(LABELS), "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions or [],
                                         "containerStatuses": containers or [], **status}}


def waiting(reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": "model", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason,
                                                                                      "message": message}}, **extra}


def test_waiting_reasons_other_than_normal_start_are_problems() -> None:
    assert pod_problem([pod("p", "Pending", containers=[waiting("ContainerCreating")])]) is None
    found = pod_problem([pod("p", "Pending", containers=[waiting("CreateContainerConfigError",
                                                                 'secret "hf" not found')])])
    assert found == PodProblem("p", "CreateContainerConfigError", 'container model: secret "hf" not found')
    assert str(found) == 'Pod p: CreateContainerConfigError: container model: secret "hf" not found'


def test_unschedulable_and_crash_loop_with_its_last_end() -> None:
    unsched = pod("p", "Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    assert pod_problem([unsched]) == PodProblem("p", "Unschedulable",
                                                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    loop = pod("p", containers=[waiting("CrashLoopBackOff", "back-off 40s", restartCount=4,
                                        lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})])
    assert str(pod_problem([loop])) == ("Pod p: CrashLoopBackOff: container model: back-off 40s; "
                                        "last run ended OOMKilled (exit code 137), restarts 4")


def test_a_running_pod_hides_older_failures_and_deleted_pods_never_speak() -> None:
    failed = pod("old", "Failed", created="2026-01-01T00:00:00Z",
                 containers=[{"name": "model", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}])
    healthy = pod("new", created="2026-01-01T00:01:00Z", containers=[{"name": "model", "state": {"running": {}}}])
    assert pod_problem([failed, healthy]) is None
    assert pod_problem([failed]) == PodProblem("old", "Error", "container model: exit code 1")
    stuck = pod("gone", "Pending", deleting=True, containers=[waiting("ImagePullBackOff")])
    assert pod_problem([stuck]) is None
    evicted = pod("ev", "Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert pod_problem([evicted]) == PodProblem("ev", "Evicted", "The node was low on resource: memory.")


def test_the_cache_keeps_only_what_is_read() -> None:
    full = pod("p", containers=[{**waiting("ImagePullBackOff", "Back-off"), "image": "x", "imageID": "",
                                 "containerID": "c"}])
    full["spec"] = {"containers": [{"name": "model", "env": [{"name": "A", "value": "x" * 1000}]}]}
    full["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    full["status"]["hostIP"] = "10.0.0.1"
    slim = pod_transform(full)
    assert "spec" not in slim and "managedFields" not in slim["metadata"] and "hostIP" not in slim["status"]
    assert slim["status"]["containerStatuses"] == [waiting("ImagePullBackOff", "Back-off")]
    assert pod_problem([slim]) == pod_problem([full])
    assert len(str(slim)) < len(str(full)) / 3


def test_a_pod_maps_to_its_parent_by_label_and_wakes_it_only_on_a_visible_change() -> None:
    p = pod("p")
    assert pod_parent_index(p) == ["model:ns/m/workload"]
    assert list(pods_to_parent("Model")(p)) == [Request("ns", "m")]
    assert list(pods_to_parent("Server")(p)) == []
    assert list(pods_to_parent("Model", problems_only=True)(p)) == []  # healthy: the Job's status speaks
    stuck_pod = pod("p", "Pending", containers=[waiting("ImagePullBackOff")])
    assert list(pods_to_parent("Model", problems_only=True)(stuck_pod)) == [Request("ns", "m")]
    foreign = {**p, "metadata": {**p["metadata"], "labels": {"substratus.ai/model": "m"}}}
    assert pod_parent_index(foreign) == [] and list(pods_to_parent("Model")(foreign)) == []
    assert not pod_status_changed(p, p)
    assert pod_status_changed(p, {**p, "status": {"phase": "Failed"}})
    assert not pod_status_changed(p, {**p, "metadata": {**p["metadata"], "resourceVersion": "9"}})
    # Job and Deployment Pods wake their parent only when what is wrong changes.
    running = {**p, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_status_changed(p, running) and not pod_problem_changed(p, running)
    stuck = pod("p", "Pending", containers=[waiting("ImagePullBackOff")])
    assert pod_problem_changed(p, stuck) and pod_problem_changed(stuck, running)
