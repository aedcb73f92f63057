"""The cluster simulator moves Job/Deployment/Pod statuses and garbage-collects orphans."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from substratus.testing.controlplane import ControlPlane, KubeVersion
from substratus.testing.simulator import (
    JOB_INTERIM_CONDITIONS_SINCE,
    OUTCOME_ANNOTATION,
    ClusterSimulator,
    job_finish_patches,
    job_running_status,
)

Eventually = Callable[..., Awaitable[Any]]
MERGE = "application/merge-patch+json"
POD_SPEC = {"containers": [{"name": "main", "image": "busybox"}], "restartPolicy": "Never"}


def _job(name: str, outcome: str | None = None, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if outcome:
        meta["annotations"] = {OUTCOME_ANNOTATION: outcome}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta, "spec": {"backoffLimit": 2, "template": {"spec": POD_SPEC}}}


def _conditions(obj: Any) -> dict[str, Any]:
    return {c.type: c for c in (obj.status.conditions or [])}


def _owner_ref(obj: Any, api_version: str, kind: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": obj.metadata.name, "uid": obj.metadata.uid,
            "controller": True, "blockOwnerDeletion": True}


async def test_job_succeeds_by_default(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                       eventually: Eventually) -> None:
    batch = client.BatchV1Api(api_client)
    await batch.create_namespaced_job(namespace, _job("ok"))

    async def done() -> Any:
        job = await batch.read_namespaced_job_status("ok", namespace)
        return job if "Complete" in _conditions(job) else None

    job = await eventually(done)
    cond = _conditions(job)["Complete"]
    assert cond.status == "True"
    assert job.status.succeeded == 1
    assert job.status.start_time and job.status.completion_time >= job.status.start_time
    assert not job.status.active
    assert "Failed" not in _conditions(job)
    # What this server's Job controller writes (and its validation demands) before Complete.
    interim = simulator.server_version >= JOB_INTERIM_CONDITIONS_SINCE
    assert ("SuccessCriteriaMet" in _conditions(job)) is interim


async def test_job_fails_per_annotation(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                        eventually: Eventually) -> None:
    batch = client.BatchV1Api(api_client)
    await batch.create_namespaced_job(namespace, _job("bad", outcome="fail"))

    async def failed() -> Any:
        job = await batch.read_namespaced_job_status("bad", namespace)
        return job if "Failed" in _conditions(job) else None

    job = await eventually(failed)
    cond = _conditions(job)["Failed"]
    assert (cond.status, cond.reason) == ("True", "BackoffLimitExceeded")
    assert cond.message
    assert job.status.failed == 3  # backoffLimit + 1
    assert "Complete" not in _conditions(job) and not job.status.completion_time
    interim = simulator.server_version >= JOB_INTERIM_CONDITIONS_SINCE
    assert ("FailureTarget" in _conditions(job)) is interim


async def test_job_hold_then_release(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                     eventually: Eventually) -> None:
    batch = client.BatchV1Api(api_client)
    await batch.create_namespaced_job(namespace, _job("held", outcome="hold"))

    async def started() -> Any:
        job = await batch.read_namespaced_job_status("held", namespace)
        return job if job.status.start_time else None

    job = await eventually(started)
    assert job.status.active == 1
    await asyncio.sleep(simulator.job_delay * 3)
    job = await batch.read_namespaced_job_status("held", namespace)
    assert not _conditions(job), "a held Job must stay running"

    await batch.patch_namespaced_job("held", namespace, {"metadata": {"annotations": {OUTCOME_ANNOTATION: "succeed"}}},
                                     _content_type=MERGE)

    async def complete() -> bool:
        return "Complete" in _conditions(await batch.read_namespaced_job_status("held", namespace))

    await eventually(complete)


async def test_job_outcome_policy(local_controlplane: ControlPlane, api_client: ApiClient, namespace: str,
                                  eventually: Eventually) -> None:
    seen: list[str] = []

    def policy(job: dict[str, Any]) -> Any:
        seen.append(job["metadata"]["name"])
        return "fail" if job["metadata"]["name"].endswith("-bad") else "succeed"

    batch = client.BatchV1Api(api_client)
    async with ClusterSimulator(api_client, namespace=namespace, job_delay=0.1, job_outcome=policy, gc_interval=0):
        await batch.create_namespaced_job(namespace, _job("x-bad"))
        await batch.create_namespaced_job(namespace, _job("x-good"))

        async def finished() -> bool:
            bad = _conditions(await batch.read_namespaced_job_status("x-bad", namespace))
            good = _conditions(await batch.read_namespaced_job_status("x-good", namespace))
            return "Failed" in bad and "Complete" in good

        await eventually(finished)
    assert {"x-bad", "x-good"} <= set(seen)


async def test_deployment_becomes_available(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                            eventually: Eventually) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "web"}
    await apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    })

    async def available(generation: int, replicas: int) -> Any:
        d = await apps.read_namespaced_deployment_status("web", namespace)
        s = d.status
        ok = (s.observed_generation == generation and s.ready_replicas == replicas
              and s.available_replicas == replicas and s.updated_replicas == replicas and s.replicas == replicas
              and _conditions(d).get("Available") is not None and _conditions(d)["Available"].status == "True")
        return d if ok else None

    await eventually(lambda: available(1, 2))
    await apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}}, _content_type=MERGE)
    d = await eventually(lambda: available(2, 3))
    assert _conditions(d)["Progressing"].reason == "NewReplicaSetAvailable"


async def test_deployment_hold_is_unavailable(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                              eventually: Eventually) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "slow"}
    await apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "slow", "annotations": {OUTCOME_ANNOTATION: "hold"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })

    async def observed() -> Any:
        d = await apps.read_namespaced_deployment_status("slow", namespace)
        return d if d.status.observed_generation == 1 else None

    d = await eventually(observed)
    assert _conditions(d)["Available"].status == "False"
    assert not d.status.ready_replicas


async def test_pod_becomes_running_and_ready(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                             eventually: Eventually) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_pod(namespace, {"metadata": {"name": "nb"}, "spec": POD_SPEC})
    await core.create_namespaced_pod(namespace, {
        "metadata": {"name": "held", "annotations": {OUTCOME_ANNOTATION: "hold"}}, "spec": POD_SPEC})

    async def ready() -> Any:
        pod = await core.read_namespaced_pod_status("nb", namespace)
        return pod if pod.status.phase == "Running" and _conditions(pod).get("Ready") else None

    pod = await eventually(ready)
    assert _conditions(pod)["Ready"].status == "True"
    assert pod.status.pod_ip == "127.0.0.1"
    assert [(c.name, c.ready) for c in pod.status.container_statuses] == [("main", True)]
    assert pod.status.container_statuses[0].state.running is not None

    held = await core.read_namespaced_pod_status("held", namespace)
    assert held.status.phase == "Pending"


async def test_gc_deletes_orphans_only(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                       eventually: Eventually) -> None:
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    survivor = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "survivor"}})
    labels = {"app": "own"}
    dep_owner = await apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "dep-owner"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })
    ref = _owner_ref(owner, "v1", "ConfigMap")
    await batch.create_namespaced_job(namespace, _job("child-job", owner=ref))
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "child-cm", "ownerReferences": [ref]}})
    await core.create_namespaced_service(namespace, {"metadata": {
        "name": "child-svc", "ownerReferences": [_owner_ref(dep_owner, "apps/v1", "Deployment")]},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})
    await core.create_namespaced_service_account(namespace, {"metadata": {
        "name": "kept-sa", "ownerReferences": [_owner_ref(survivor, "v1", "ConfigMap")]}})

    await asyncio.sleep(simulator.gc_interval * 2)
    assert await simulator.gc_once() == 0, "nothing is orphaned while owners exist"

    await core.delete_namespaced_config_map("owner", namespace)
    await apps.delete_namespaced_deployment("dep-owner", namespace)

    async def gone(read: Callable[[], Awaitable[Any]]) -> bool:
        try:
            await read()
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(lambda: gone(lambda: batch.read_namespaced_job("child-job", namespace)))
    await eventually(lambda: gone(lambda: core.read_namespaced_config_map("child-cm", namespace)))
    await eventually(lambda: gone(lambda: core.read_namespaced_service("child-svc", namespace)))
    # A dependent of a still-existing owner is kept.
    sa = await core.read_namespaced_service_account("kept-sa", namespace)
    assert sa.metadata.owner_references[0].uid == survivor.metadata.uid


async def test_gc_recreated_owner_with_new_uid(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                               eventually: Eventually) -> None:
    """An owner reference is by uid: an owner recreated under the same name does not keep the child."""
    core = client.CoreV1Api(api_client)
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    await core.create_namespaced_secret(namespace, {"metadata": {
        "name": "child", "ownerReferences": [_owner_ref(owner, "v1", "ConfigMap")]}})
    await core.delete_namespaced_config_map("owner", namespace)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})

    async def gone() -> bool:
        try:
            await core.read_namespaced_secret("child", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(gone)


async def test_gc_foreground_deletion(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                      eventually: Eventually) -> None:
    """Foreground deletion: dependents go first, then the owner's finalizer is removed."""
    core = client.CoreV1Api(api_client)
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "fg-owner"}})
    await core.create_namespaced_config_map(namespace, {"metadata": {
        "name": "fg-child", "ownerReferences": [_owner_ref(owner, "v1", "ConfigMap")]}})
    await core.delete_namespaced_config_map("fg-owner", namespace, propagation_policy="Foreground")

    async def all_gone() -> bool:
        for name in ("fg-owner", "fg-child"):
            try:
                await core.read_namespaced_config_map(name, namespace)
                return False
            except ApiException as e:
                if e.status != 404:
                    raise
        return True

    await eventually(all_gone)


async def test_simulator_survives_apiserver_restart_and_compaction(
        local_controlplane: ControlPlane, simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
        eventually: Eventually) -> None:
    """Broken watches (apiserver restart) and expired resourceVersions (410 after compaction) re-list."""
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    await asyncio.to_thread(local_controlplane.restart_apiserver)
    for attempt in range(3):  # the client's pooled keep-alive connection died with the old apiserver
        try:
            await core.create_namespaced_config_map(namespace, {"metadata": {"name": "bump"}})
            break
        except aiohttp.ClientError:
            if attempt == 2:
                raise
    await asyncio.to_thread(local_controlplane.compact)
    await batch.create_namespaced_job(namespace, _job("after-restart"))

    async def complete() -> bool:
        return "Complete" in _conditions(await batch.read_namespaced_job_status("after-restart", namespace))

    await eventually(complete, timeout=30)


async def test_simulator_relists_after_410(local_controlplane: ControlPlane, api_client: ApiClient, namespace: str,
                                           eventually: Eventually, caplog: pytest.LogCaptureFixture) -> None:
    """A watch that ends and resumes from a compacted resourceVersion gets 410 Gone and re-lists."""
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    caplog.set_level(logging.INFO, logger="substratus.testing.simulator")
    async with ClusterSimulator(api_client, namespace=namespace, watch_timeout=1, gc_interval=0, job_delay=0.1):
        # Writes elsewhere move etcd's revision past the simulator's resourceVersion, then compact.
        for i in range(3):
            await core.create_namespaced_config_map("default", {"metadata": {"generateName": "bump-"},
                                                                "data": {"i": str(i)}})
        await asyncio.to_thread(local_controlplane.compact)

        async def relisted() -> bool:
            return "watch expired, re-listing" in caplog.text

        await eventually(relisted, timeout=15)
        await batch.create_namespaced_job(namespace, _job("after-410"))

        async def complete() -> bool:
            return "Complete" in _conditions(await batch.read_namespaced_job_status("after-410", namespace))

        await eventually(complete)


# --- Pods of Jobs and Deployments, and Pods that cannot start (kubelet-shaped) ------------------------


async def _pods(core: Any, namespace: str, selector: str) -> list[Any]:
    return (await core.list_namespaced_pod(namespace, label_selector=selector)).items


async def test_job_gets_a_pod_that_ends_with_it(simulator: ClusterSimulator, api_client: ApiClient, namespace: str,
                                                eventually: Eventually) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    job = await batch.create_namespaced_job(namespace, {
        "metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"app": "j"}}, "spec": POD_SPEC}}})

    async def done() -> Any:
        pods = await _pods(core, namespace, "app=j")
        return pods if pods and pods[0].status.phase == "Succeeded" else None

    (pod,) = await eventually(done)
    assert pod.metadata.labels["job-name"] == "j" and pod.metadata.labels["controller-uid"] == job.metadata.uid
    assert [(r.kind, r.name, r.controller) for r in pod.metadata.owner_references] == [("Job", "j", True)]
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")

    # The Job's status follows its Pod's, as the Job controller writes it after seeing the Pod end.
    async def complete() -> Any:
        c = _conditions(await batch.read_namespaced_job_status("j", namespace)).get("Complete")
        return c if c is not None and c.status == "True" else None

    assert (await eventually(complete)).status == "True"


async def test_missing_secret_keeps_the_job_pod_waiting_until_it_exists(
        simulator: ClusterSimulator, api_client: ApiClient, namespace: str, eventually: Eventually) -> None:
    """The kubelet's CreateContainerConfigError: the Job stays active while its Pod cannot start."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    spec = {**POD_SPEC, "containers": [{"name": "main", "image": "busybox", "env": env}]}
    await batch.create_namespaced_job(namespace, {
        "metadata": {"name": "needs-secret"},
        "spec": {"template": {"metadata": {"labels": {"app": "s"}}, "spec": spec}}})

    async def waiting() -> Any:
        pods = await _pods(core, namespace, "app=s")
        cs = pods[0].status.container_statuses if pods else None
        return pods[0] if cs and cs[0].state.waiting else None

    pod = await eventually(waiting)
    assert pod.status.phase == "Pending"
    w = pod.status.container_statuses[0].state.waiting
    assert (w.reason, w.message) == ("CreateContainerConfigError", 'secret "hf" not found')
    assert _conditions(pod)["Ready"].status == "False" and _conditions(pod)["PodScheduled"].status == "True"
    await asyncio.sleep(1.5)  # several kubelet retries and job delays
    job = await batch.read_namespaced_job_status("needs-secret", namespace)
    assert job.status.active == 1 and not job.status.conditions

    await core.create_namespaced_secret(namespace, {"metadata": {"name": "hf"}, "data": {"other": "eA=="}})

    async def wrong_key() -> Any:
        p = (await _pods(core, namespace, "app=s"))[0]
        return p if "couldn't find key token" in (p.status.container_statuses[0].state.waiting or w).message else None

    await eventually(wrong_key)
    await core.patch_namespaced_secret("hf", namespace, {"data": {"token": "eA=="}})

    async def complete() -> Any:
        j = await batch.read_namespaced_job_status("needs-secret", namespace)
        return j if _conditions(j).get("Complete") else None

    await eventually(complete)


@pytest.mark.parametrize("fault", ["ImagePullBackOff", "Unschedulable", "OOMKilled", "CrashLoopBackOff"])
async def test_pod_faults_are_kubelet_shaped(local_controlplane: ControlPlane, api_client: ApiClient, namespace: str,
                                             eventually: Eventually, fault: str) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    async with ClusterSimulator(api_client, namespace=namespace, job_delay=0.1, gc_interval=0,
                                pod_fault=lambda p: fault if p["metadata"]["labels"].get("app") == "f" else None):
        gpu = {"limits": {"nvidia.com/gpu": "1"}}
        always = {"containers": [{"name": "main", "image": "trainer:1", "resources": gpu}], "restartPolicy": "Always"}
        await core.create_namespaced_pod(namespace, {"metadata": {"name": "nb", "labels": {"app": "f"}},
                                                     "spec": always})
        await batch.create_namespaced_job(namespace, {"metadata": {"name": "job"}, "spec": {
            "backoffLimit": 0, "template": {"metadata": {"labels": {"app": "f", "role": "job"}}, "spec": {
                **POD_SPEC, "containers": [{"name": "main", "image": "trainer:1"}]}}}})

        async def settled(selector: str) -> Any:
            pods = await _pods(core, namespace, selector)
            return pods[0] if pods and pods[0].status.conditions else None

        nb = await eventually(lambda: settled("app=f,!role"))
        job_pod = await eventually(lambda: settled("role=job"))
        if fault == "Unschedulable":
            for p in (nb, job_pod):
                c = _conditions(p)["PodScheduled"]
                assert (p.status.phase, c.status, c.reason) == ("Pending", "False", "Unschedulable")
                assert not p.status.container_statuses
            assert "Insufficient nvidia.com/gpu" in _conditions(nb)["PodScheduled"].message
        elif fault == "ImagePullBackOff":
            for p in (nb, job_pod):
                w = p.status.container_statuses[0].state.waiting
                assert (p.status.phase, w.reason, w.message) == ("Pending", "ImagePullBackOff",
                                                                 'Back-off pulling image "trainer:1"')
        else:
            # restartPolicy Always: a crash loop with the last run's end; Never: the Pod fails.
            code, reason = (137, "OOMKilled") if fault == "OOMKilled" else (1, "Error")
            cs = nb.status.container_statuses[0]
            assert nb.status.phase == "Running" and cs.state.waiting.reason == "CrashLoopBackOff"
            assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.reason) == (code, reason)
            assert cs.restart_count >= 1 and not cs.ready

            async def failed() -> Any:
                p = await settled("role=job")
                return p if p.status.phase == "Failed" else None

            p = await eventually(failed)
            term = p.status.container_statuses[0].state.terminated
            assert (term.exit_code, term.reason) == (code, reason)

            async def job_failed() -> Any:
                j = await batch.read_namespaced_job_status("job", namespace)
                return j if _conditions(j).get("Failed") else None

            await eventually(job_failed)
        if fault in ("Unschedulable", "ImagePullBackOff"):
            await asyncio.sleep(1.0)
            job = await batch.read_namespaced_job_status("job", namespace)
            assert job.status.active == 1 and not job.status.conditions  # never started, never finished


async def test_deployment_pods_come_from_a_replica_set_and_gate_availability(
        local_controlplane: ControlPlane, api_client: ApiClient, namespace: str, eventually: Eventually) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    faults: dict[str, str] = {"web": "ImagePullBackOff"}
    async with ClusterSimulator(api_client, namespace=namespace, gc_interval=0.3,
                                pod_fault=lambda p: faults.get(p["metadata"]["labels"].get("app", ""))):
        labels = {"app": "web"}
        await apps.create_namespaced_deployment(namespace, {"metadata": {"name": "web"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})

        async def stuck() -> Any:
            pods = await _pods(core, namespace, "app=web")
            cs = pods[0].status.container_statuses if pods else None
            return pods[0] if cs and cs[0].state.waiting else None

        pod = await eventually(stuck)
        (rs,) = (await apps.list_namespaced_replica_set(namespace)).items
        assert pod.metadata.owner_references[0].name == rs.metadata.name and rs.metadata.owner_references[0].name == "web"
        assert pod.metadata.labels["pod-template-hash"] in rs.metadata.name
        await asyncio.sleep(0.8)
        d = await apps.read_namespaced_deployment_status("web", namespace)
        assert _conditions(d)["Available"].status == "False" and not d.status.available_replicas

        faults.clear()  # the image is pushed: the kubelet's next pull works

        async def available() -> Any:
            d = await apps.read_namespaced_deployment_status("web", namespace)
            return d if d.status.available_replicas == 1 and _conditions(d)["Available"].status == "True" else None

        await eventually(available)
        await apps.delete_namespaced_deployment("web", namespace)

        async def collected() -> bool:
            return not (await _pods(core, namespace, "app=web")) and \
                not (await apps.list_namespaced_replica_set(namespace)).items

        await eventually(collected)


# --- status shapes per server version (pure) ------------------------------------------------------
# The rules are those of validateJobStatus / ValidateJobStatusUpdate in kubernetes'
# pkg/apis/batch/validation (current release, JobManagedBy's strengthened checks); a current
# server applies them to every status write, 1.20 applies none of them. Each intermediate state a
# patch produces must pass, not only the last one.

VERSIONS = [KubeVersion(1, 20, 2), KubeVersion(1, 24), KubeVersion(1, 29), KubeVersion(1, 31), KubeVersion(1, 36, 2)]


def _true(status: dict[str, Any], ctype: str) -> bool:
    return any(c["type"] == ctype and c["status"] == "True" for c in status.get("conditions") or [])


def _current_rules(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    errors = []
    complete, failed = _true(new, "Complete"), _true(new, "Failed")
    finished = complete or failed
    if complete and not _true(new, "SuccessCriteriaMet"):
        errors.append("Complete=True without SuccessCriteriaMet=True")
    if failed and not _true(new, "FailureTarget"):
        errors.append("Failed=True without FailureTarget=True")
    if complete and (failed or _true(new, "FailureTarget")):
        errors.append("Complete with Failed/FailureTarget")
    if _true(new, "SuccessCriteriaMet") and (failed or _true(new, "FailureTarget")):
        errors.append("SuccessCriteriaMet with Failed/FailureTarget")
    if new.get("completionTime") and not complete:
        errors.append("completionTime without Complete")
    if complete and not new.get("completionTime"):
        errors.append("Complete without completionTime")
    if new.get("completionTime") and new.get("startTime") and new["completionTime"] < new["startTime"]:
        errors.append("completionTime before startTime")
    if finished and not new.get("startTime"):
        errors.append("finished without startTime")
    if finished and (new.get("active") or 0) > 0:
        errors.append("finished with active pods")
    if finished and (new.get("terminating") or 0) > 0:
        errors.append("finished with terminating pods")
    if (new.get("ready") or 0) > (new.get("active") or 0):
        errors.append("more ready than active")
    for counter in ("succeeded", "failed"):
        if (new.get(counter) or 0) < (old.get(counter) or 0):
            errors.append(f"{counter} decreased")
    for ctype in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"):
        if _true(old, ctype) and not _true(new, ctype):
            errors.append(f"{ctype}=True removed")
    if old.get("startTime") and new.get("startTime") != old["startTime"]:
        errors.append("startTime changed")
    return errors


def _merge(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(status)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("version", VERSIONS, ids=str)
@pytest.mark.parametrize("succeed", [True, False], ids=["succeed", "fail"])
def test_job_status_shapes_pass_current_validation(version: KubeVersion, succeed: bool) -> None:
    start = "2026-01-01T00:00:00Z"
    status = job_running_status(version, start)
    job = {"spec": {"backoffLimit": 2}, "status": status}
    states = [status]
    for patch in job_finish_patches(version, job, succeed, "2026-01-01T00:00:05Z"):
        states.append(_merge(states[-1], patch))
    terminal = "Complete" if succeed else "Failed"
    assert _true(states[-1], terminal) and not _true(states[-2], terminal)
    if version >= JOB_INTERIM_CONDITIONS_SINCE:
        # Every write is valid for the current rules, the terminal one a write after its forerunner.
        for old, new in itertools.pairwise(states):
            assert _current_rules(old, new) == [], (version, new)
        assert len(states) == 3
    else:
        # Older controllers write the terminal condition at once and know no forerunner.
        assert len(states) == 2
        assert not ({"SuccessCriteriaMet", "FailureTarget"} & {c["type"] for c in states[-1]["conditions"]})
    assert ("ready" in status) is (version >= KubeVersion(1, 24))
    assert ("terminating" in status) is (version >= KubeVersion(1, 29))
