"""Issue 20 #7: a workload or build whose Pod cannot start, or keeps failing, is not "running".

For every kind, the Pod's own reason and message (the kubelet's or scheduler's, played by the
cluster simulator in kubelet-shaped statuses) reach the condition, an Event and ``substratus
explain`` — through the Pod informer, with no polling — and clear once the Pod runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import condition, get_obj

from substratus import explain as ex
from substratus.controllers.pods import pod_problem_of
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.runtime.client import Client
from substratus.runtime.resource import DEPLOYMENTS, EVENTS, PODS, Resource
from substratus.testing.simulator import ClusterSimulator
from substratus.testing.wait import eventually

FAULTS: dict[tuple[str, str], str] = {}
"""(kind label value "model/x", role) → the fault the simulator's kubelet plays for those Pods."""


def _fault(pod: dict[str, Any]) -> str | None:
    images = [c.get("image") for c in (pod.get("spec") or {}).get("containers") or []]
    for image in images:
        if ("image", image) in FAULTS:  # ("image", IMAGE): every Pod running that image
            return FAULTS[("image", image)]
    labels = pod["metadata"].get("labels") or {}
    role = labels.get("substratus.ai/role", "")
    for kind in ("dataset", "model", "server", "notebook"):
        if f"substratus.ai/{kind}" in labels:
            return FAULTS.get((f"{kind}/{labels[f'substratus.ai/{kind}']}", role))
    return None


@pytest.fixture
async def simulator(controlplane: Any, api_client: Any, namespace: str) -> AsyncIterator[ClusterSimulator]:
    """Overrides conftest's: Pods fail as FAULTS says (set before the object is created)."""
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    FAULTS.clear()
    sim = ClusterSimulator(api_client, namespace=namespace, job_delay=0.3, gc_interval=0.5, pod_fault=_fault)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
        FAULTS.clear()


def obj(kind: str, name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"name": f"substratusai/{kind.lower()}:v1"})
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


async def _reason(client: Client, res: Resource, name: str, ns: str, type_: str, reason: str) -> dict[str, Any] | None:
    c = condition(await get_obj(client, res, name, ns), type_)
    return c if c and c["reason"] == reason else None


async def _warning(client: Client, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    events = (await client.list(EVENTS, ns))["items"]
    return next((e for e in events if e["involvedObject"]["name"] == name and e["reason"] == reason
                 and e["type"] == "Warning"), None)


CASES = [
    # kind, role, fault, condition, what its message must carry
    ("Model", "workload", "ImagePullBackOff", "Complete",
     'ImagePullBackOff: container model: Back-off pulling image "substratusai/model:v1"'),
    ("Server", "workload", "Unschedulable", "Serving", "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."),
    ("Notebook", "workload", "CrashLoopBackOff", "Serving",
     "CrashLoopBackOff: container notebook: back-off 10s restarting failed container=notebook"),
    ("Notebook", "workload", "OOMKilled", "Serving",
     "last run ended OOMKilled (exit code 137), restarts 1"),
    ("Dataset", "build", "ErrImagePull", "Built", "ErrImagePull: container build: rpc error"),
]


@pytest.mark.parametrize(("kind", "role", "fault", "ctype", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
async def test_pod_that_cannot_run_is_reported_then_clears(operator: Any, namespace: str, kind: str, role: str,
                                                           fault: str, ctype: str, expected: str) -> None:
    client = operator.client
    res = {"Model": MODELS, "Dataset": DATASETS, "Server": SERVERS, "Notebook": NOTEBOOKS}[kind]
    name = "x"
    FAULTS[(f"{kind.lower()}/{name}", role)] = fault
    spec: dict[str, Any] = {}
    if kind == "Server":
        await client.create(MODELS, obj("Model", "base", namespace))
        spec["model"] = {"name": "base"}
    if role == "build":
        spec["image"] = {"git": {"url": "https://github.com/substratusai/images", "branch": "main"}}
    await client.create(res, obj(kind, name, namespace, **spec))

    # How long from the kubelet's status write to the parent's condition (polled every 50 ms).
    pod_seen: list[float] = []

    async def reported() -> dict[str, Any] | None:
        if not pod_seen:
            pods = (await client.list(PODS, namespace, label_selector=f"substratus.ai/{kind.lower()}={name},"
                                                                       f"substratus.ai/role={role}"))["items"]
            if any(pod_problem_of(p) for p in pods):
                pod_seen.append(time.monotonic())
        return await _reason(client, res, name, namespace, ctype, "PodFailing")

    c = await eventually(reported, timeout=45, interval=0.05)
    lag = time.monotonic() - pod_seen[0] if pod_seen else float("nan")
    print(f"RELIABILITY pod-problem kind={kind} role={role} fault={fault} pod_to_condition_s={lag:.2f}")
    assert c["status"] == "False" and expected in c["message"], c["message"]
    assert (await get_obj(client, res, name, namespace))["status"]["ready"] is False
    event = await eventually(lambda: _warning(client, namespace, name, "PodFailing"), timeout=15)
    assert (fault if fault != "OOMKilled" else "CrashLoopBackOff") in event["message"], event["message"]
    text = await ex.explain(client, f"{kind.lower()}/{name}", namespace)
    assert f"{ctype}=False PodFailing" in text and expected in text
    reason_in_pod_line = "Unschedulable" if fault == "Unschedulable" else \
        ("CrashLoopBackOff" if fault == "OOMKilled" else fault)
    assert any(line.strip().startswith("Pod ") and reason_in_pod_line in line for line in text.splitlines()), text

    FAULTS.clear()  # the cause goes away (image pushed, node added, bug fixed): the kubelet's retry works
    done = {"Complete": "JobSucceeded", "Serving": "Available", "Built": "BuildSucceeded"}[ctype]
    await eventually(lambda: _reason(client, res, name, namespace, ctype, done), timeout=45)


async def test_a_job_that_failed_says_how_its_pod_ended(operator: Any, namespace: str) -> None:
    """OOMKilled with restartPolicy Never: the Pod fails with exit code 137 and so does the Job;
    JobFailed's message carries the Pod's reason, not only the Job's BackoffLimitExceeded."""
    client = operator.client
    FAULTS[("dataset/big", "workload")] = "OOMKilled"
    await client.create(DATASETS, obj("Dataset", "big", namespace))
    c = await eventually(lambda: _reason(client, DATASETS, "big", namespace, "Complete", "JobFailed"), timeout=45)
    assert "BackoffLimitExceeded" in c["message"] and "OOMKilled: container dataset: exit code 137" in c["message"]
    text = await ex.explain(client, "dataset/big", namespace)
    assert "Failed (OOMKilled: container dataset: exit code 137)" in text


async def test_a_new_pod_reason_is_a_new_event_the_same_reason_is_not(operator: Any, namespace: str) -> None:
    """PodFailing stays PodFailing while the Pod's own reason moves on (ErrImagePull →
    ImagePullBackOff → CrashLoopBackOff): each new reason is a Warning Event naming it, as a change
    of the condition's reason is. The kubelet re-reporting the same reason (every retry, here
    every 0.5 s) adds none. Before, only the first reason ever reached an Event."""
    client = operator.client
    FAULTS[("notebook/nb", "workload")] = "ErrImagePull"
    await client.create(NOTEBOOKS, obj("Notebook", "nb", namespace))

    async def pod_failing_events() -> list[dict[str, Any]]:
        events = (await client.list(EVENTS, namespace))["items"]
        return sorted((e for e in events if e["involvedObject"]["name"] == "nb" and e["reason"] == "PodFailing"),
                      key=lambda e: e["metadata"]["name"])  # names end in a creation-time hex

    async def events_for(n: int) -> list[dict[str, Any]] | None:
        found = await pod_failing_events()
        return found if len(found) >= n else None

    seen: list[str] = []
    for step, fault in enumerate(("ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"), start=1):
        FAULTS[("notebook/nb", "workload")] = fault
        await eventually(lambda f=fault: _reason_in_message(client, namespace, f), timeout=30)
        events = await eventually(lambda n=step: events_for(n), timeout=15)
        seen.append(events[-1]["message"])
        assert events[-1]["type"] == "Warning" and f"{fault}: container notebook" in events[-1]["message"], seen
    await asyncio.sleep(3)  # the kubelet keeps re-reporting CrashLoopBackOff meanwhile
    events = await pod_failing_events()
    assert len(events) == 3 and all(e.get("count", 1) == 1 for e in events), [e["message"] for e in events]


async def _reason_in_message(client: Client, ns: str, fault: str) -> dict[str, Any] | None:
    c = await _reason(client, NOTEBOOKS, "nb", ns, "Serving", "PodFailing")
    return c if c and f": {fault}: " in c["message"] else None


async def test_a_stuck_rollout_behind_a_serving_pod_is_not_available(operator: Any, namespace: str) -> None:
    """A Server rolled out to a new image that cannot be pulled: the RollingUpdate keeps the old
    Pod serving (Deployment Available=True, 2 Pods, 1 updated), which read as a Server
    ``Available`` with the new spec never running. ``kubectl rollout status`` says it is not
    rolled out, and so does the Server now: Serving=False/PodFailing naming the new Pod's
    ImagePullBackOff and saying the previous version keeps serving; past the Deployment's
    progress deadline its ProgressDeadlineExceeded too. Fixing the cause finishes the rollout."""
    client = operator.client
    await client.create(MODELS, obj("Model", "base", namespace))
    await client.create(SERVERS, obj("Server", "s", namespace, model={"name": "base"}))
    await eventually(lambda: _reason(client, SERVERS, "s", namespace, "Serving", "Available"), timeout=45)
    [old_pod] = (await client.list(PODS, namespace, label_selector="substratus.ai/server=s"))["items"]

    FAULTS[("image", "substratusai/server:broken")] = "ImagePullBackOff"
    await client.patch(SERVERS, "s", {"spec": {"image": {"name": "substratusai/server:broken"}}}, namespace)

    async def stuck() -> dict[str, Any] | None:
        c = await _reason(client, SERVERS, "s", namespace, "Serving", "PodFailing")
        return c if c and "ImagePullBackOff" in c["message"] else None

    c = await eventually(stuck, timeout=45)
    assert "the previous version keeps serving (1 old replica)" in c["message"], c["message"]
    assert (await client.get(SERVERS, "s", namespace))["status"]["ready"] is False
    ready = condition(await client.get(SERVERS, "s", namespace), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodFailing"
    # What a real Deployment controller reports meanwhile, and the old Pod still serving.
    dep = await client.get(DEPLOYMENTS, "s-server", namespace)
    st = dep["status"]
    assert (st["replicas"], st["updatedReplicas"], st["availableReplicas"], st["unavailableReplicas"]) == (2, 1, 1, 1)
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["status"] == "True" and conds["Progressing"]["reason"] == "ReplicaSetUpdated"
    still = await client.get(PODS, old_pod["metadata"]["name"], namespace)
    assert not still["metadata"].get("deletionTimestamp") and pod_problem_of(still) is None

    # The rollout's deadline (a user's setting on the Deployment; the API server's default is 600 s).
    await client.patch(DEPLOYMENTS, "s-server", {"spec": {"progressDeadlineSeconds": 2}}, namespace)

    async def deadline() -> dict[str, Any] | None:
        c = await _reason(client, SERVERS, "s", namespace, "Serving", "PodFailing")
        return c if c and "ProgressDeadlineExceeded" in c["message"] else None

    c = await eventually(deadline, timeout=45)
    assert "ImagePullBackOff" in c["message"] and "has timed out progressing" in c["message"], c["message"]
    conds = {c["type"]: c for c in (await client.get(DEPLOYMENTS, "s-server", namespace))["status"]["conditions"]}
    assert conds["Progressing"]["status"] == "False" and conds["Available"]["status"] == "True"

    FAULTS.clear()  # the image is pushed after all: the kubelet's next pull works
    await eventually(lambda: _reason(client, SERVERS, "s", namespace, "Serving", "Available"), timeout=45)
    pods = (await client.list(PODS, namespace, label_selector="substratus.ai/server=s"))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["containers"][0]["image"] for p in live] == ["substratusai/server:broken"]
