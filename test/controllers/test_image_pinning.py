"""The spec is the user's; built images are pinned by digest; complete artifacts are never
rebuilt or rerun silently (SPEC §1, §2, §3, §6) — against the real API server.

The cluster simulator holds build Jobs until a test decides (annotations: outcome, and the
digest/commit the build Pod's containers report in their termination messages, as kaniko and the
clone step write them). Workload Jobs of objects named ``held-*`` are held too, so a Model can be
observed while incomplete.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import condition, event_reasons, get_obj, ready

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.rerun import main as rerun_main
from substratus.runtime.resource import DEPLOYMENTS, JOBS, PODS, Resource
from substratus.testing.simulator import DIGEST_ANNOTATION, OUTCOME_ANNOTATION, ClusterSimulator
from substratus.testing.wait import eventually

REGISTRY = "registry.test:5000"
GIT = {"url": "https://github.com/substratusai/model-loader-huggingface", "branch": "main"}
D1, D2 = "sha256:" + "d1" * 32, "sha256:" + "d2" * 32


def _policy(job: dict[str, Any]) -> str:
    labels = job["metadata"].get("labels") or {}
    if labels.get("substratus.ai/role") == "build":
        return "hold"
    parent = next((v for k, v in labels.items() if k.startswith("substratus.ai/") and k != "substratus.ai/role"), "")
    return "hold" if parent.startswith("held") else "succeed"


@pytest.fixture
async def simulator(controlplane: Any, api_client: Any, namespace: str) -> AsyncIterator[ClusterSimulator]:
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    sim = ClusterSimulator(api_client, namespace=namespace, job_delay=0.2, gc_interval=0.5,
                           job_outcome=_policy)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def manifest(kind: str, name: str, ns: str, image: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"image": image or {"git": dict(GIT)}, **spec}}


async def finish_build(client: Any, obj_name: str, kind: str, ns: str, digest: str | None = None,
                       previous_uid: str | None = None) -> dict[str, Any]:
    """Wait for the (new) build Job and let it succeed, pushing ``digest`` (default: the
    simulator's reproducible digest of the Job's Pod template)."""
    name = f"{obj_name}-{kind.lower()}-bld"

    async def job() -> dict[str, Any] | None:
        j = await client.get_or_none(JOBS, name, ns)
        return j if j and j["metadata"]["uid"] != previous_uid and not j["metadata"].get("deletionTimestamp") else None

    j = await eventually(job, timeout=20)
    annotations = {OUTCOME_ANNOTATION: "succeed", **({DIGEST_ANNOTATION: digest} if digest else {})}
    await client.patch(JOBS, name, {"metadata": {"annotations": annotations}}, ns)
    return j


async def status_image(client: Any, res: Resource, name: str, ns: str, prefix: str = "") -> str | None:
    obj = await get_obj(client, res, name, ns)
    c = condition(obj, "Built")
    image = ((obj or {}).get("status") or {}).get("image")
    return image if c and c["reason"] == "BuildSucceeded" and image and image.startswith(prefix) else None


def workload_image(kind: str, child: dict[str, Any]) -> str:
    spec = child["spec"] if kind == "Notebook" else child["spec"]["template"]["spec"]
    return str(spec["containers"][0]["image"])


WORKLOAD: dict[str, tuple[Resource, str]] = {
    "Dataset": (JOBS, "{}-dataset"), "Model": (JOBS, "{}-model"),
    "Server": (DEPLOYMENTS, "{}-server"), "Notebook": (PODS, "{}-notebook"),
}
RESOURCE = {"Dataset": DATASETS, "Model": MODELS, "Server": SERVERS, "Notebook": NOTEBOOKS}


@pytest.mark.parametrize("kind", ["Dataset", "Model", "Server", "Notebook"])
async def test_build_never_writes_spec_and_pins_digest(operator: Any, namespace: str, kind: str) -> None:
    client = operator.client
    res = RESOURCE[kind]
    extra: dict[str, Any] = {"model": {"name": "base"}} if kind == "Server" else {}
    if kind == "Server":
        await client.create(MODELS, manifest("Model", "base", namespace, {"name": "loader:v1"}))
    created = await client.create(res, manifest(kind, "app", namespace, **extra))
    await finish_build(client, "app", kind, namespace, D1)
    repo = f"{REGISTRY}/test-cluster-{kind.lower()}-{namespace}-app"
    image = await eventually(lambda: status_image(client, res, "app", namespace), timeout=30)
    assert image == f"{repo}@{D1}", "pinned by the digest from the build Pod's termination message"
    obj = await eventually(lambda: ready(client, res, "app", namespace), timeout=30)
    assert obj["metadata"]["generation"] == created["metadata"]["generation"] == 1
    assert obj["spec"] == created["spec"], "the controller never writes spec"
    assert obj["status"]["build"]["commit"] and len(obj["status"]["build"]["commit"]) == 40
    wres, wname = WORKLOAD[kind]
    child = await client.get(wres, wname.format("app"), namespace)
    assert workload_image(kind, child) == image


async def test_server_rebuild_same_digest_restarts_nothing_new_digest_rolls(operator: Any, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, manifest("Model", "base", namespace, {"name": "loader:v1"}))
    await client.create(SERVERS, manifest("Server", "chat", namespace, model={"name": "base"}))
    first = await finish_build(client, "chat", "Server", namespace)  # the reproducible digest
    await eventually(lambda: ready(client, SERVERS, "chat", namespace), timeout=30)
    image = (await get_obj(client, SERVERS, "chat", namespace))["status"]["image"]
    dep = await client.get(DEPLOYMENTS, "chat-server", namespace)
    assert workload_image("Server", dep) == image

    # A rebuild (e.g. to pick up new commits) that pushes the same digest: nothing restarts.
    await client.patch(SERVERS, "chat", {"metadata": {"annotations": {naming.REBUILD_ANNOTATION: "1"}}}, namespace)
    second = await finish_build(client, "chat", "Server", namespace, previous_uid=first["metadata"]["uid"])

    async def rebuilt(value: str) -> dict[str, Any] | None:
        o = await get_obj(client, SERVERS, "chat", namespace)
        b = (o or {}).get("status", {}).get("build") or {}
        return o if b.get("rebuild") == value and condition(o, "Built")["reason"] == "BuildSucceeded" else None

    obj = await eventually(lambda: rebuilt("1"), timeout=30)
    assert obj["status"]["image"] == image and obj["metadata"]["generation"] == 1
    await asyncio.sleep(1.0)
    again = await client.get(DEPLOYMENTS, "chat-server", namespace)
    assert again["metadata"]["generation"] == dep["metadata"]["generation"], "same digest: no rollout"

    # A new commit → a new digest → the Deployment rolls to it.
    await client.patch(SERVERS, "chat", {"metadata": {"annotations": {naming.REBUILD_ANNOTATION: "2"}}}, namespace)
    await finish_build(client, "chat", "Server", namespace, D2, previous_uid=second["metadata"]["uid"])
    obj = await eventually(lambda: rebuilt("2"), timeout=30)
    assert obj["status"]["image"].endswith(D2) and obj["metadata"]["generation"] == 1

    async def rolled() -> dict[str, Any] | None:
        d = await client.get(DEPLOYMENTS, "chat-server", namespace)
        return d if workload_image("Server", d) == obj["status"]["image"] else None

    rolled_dep = await eventually(rolled, timeout=20)
    assert rolled_dep["metadata"]["generation"] > dep["metadata"]["generation"]


async def test_notebook_and_incomplete_model_roll_on_new_digest(operator: Any, namespace: str) -> None:
    client = operator.client
    await client.create(NOTEBOOKS, manifest("Notebook", "nb", namespace))
    await client.create(MODELS, manifest("Model", "held-m", namespace))
    nb_build = await finish_build(client, "nb", "Notebook", namespace, D1)
    m_build = await finish_build(client, "held-m", "Model", namespace, D1)
    await eventually(lambda: ready(client, NOTEBOOKS, "nb", namespace), timeout=30)
    pod = await client.get(PODS, "nb-notebook", namespace)

    async def workload_job(image: str) -> dict[str, Any] | None:
        j = await client.get_or_none(JOBS, "held-m-model", namespace)
        return j if j and workload_image("Model", j) == image else None

    job = await eventually(lambda: workload_job(f"{REGISTRY}/test-cluster-model-{namespace}-held-m@{D1}"), timeout=30)

    for kind, name in (("Notebook", "nb"), ("Model", "held-m")):
        await client.patch(RESOURCE[kind], name, {"metadata": {"annotations": {naming.REBUILD_ANNOTATION: "x"}}},
                           namespace)
    await finish_build(client, "nb", "Notebook", namespace, D2, previous_uid=nb_build["metadata"]["uid"])
    await finish_build(client, "held-m", "Model", namespace, D2, previous_uid=m_build["metadata"]["uid"])

    new_job = await eventually(lambda: workload_job(f"{REGISTRY}/test-cluster-model-{namespace}-held-m@{D2}"),
                               timeout=30)
    assert new_job["metadata"]["uid"] != job["metadata"]["uid"], "an incomplete Model gets a new Job"

    async def new_pod() -> dict[str, Any] | None:
        p = await client.get_or_none(PODS, "nb-notebook", namespace)
        return p if p and p["metadata"]["uid"] != pod["metadata"]["uid"] and workload_image("Notebook", p).endswith(
            D2) else None

    await eventually(new_pod, timeout=30)
    await eventually(lambda: ready(client, NOTEBOOKS, "nb", namespace), timeout=30)


async def test_restore_complete_object_creates_no_job(operator: Any, namespace: str) -> None:
    """SPEC §3: completed.json exists → complete without a build Job or a workload Job."""
    client = operator.client
    await client.create(MODELS, manifest("Model", "imp", namespace))
    await finish_build(client, "imp", "Model", namespace, D1)
    first = await eventually(lambda: ready(client, MODELS, "imp", namespace), timeout=30)
    url = first["status"]["url"]
    marker = json.loads(await operator.cloud.read(naming.completed_marker_url(url)))
    assert marker["image"] == first["status"]["image"] and marker["generation"] == 1
    assert marker["build"]["commit"] == first["status"]["build"]["commit"]

    await client.delete(MODELS, "imp", namespace)

    async def children_gone() -> bool:
        return not (await client.list(JOBS, namespace))["items"]

    await eventually(children_gone, timeout=30)
    await eventually(lambda: _absent(client, MODELS, "imp", namespace), timeout=30)
    await client.create(MODELS, manifest("Model", "imp", namespace))
    obj = await eventually(lambda: ready(client, MODELS, "imp", namespace), timeout=30)
    assert condition(obj, "Complete")["reason"] == "FoundInStorage"
    assert condition(obj, "Built")["status"] == "True"
    assert obj["status"]["image"] == first["status"]["image"], "the image that produced the artifacts"
    await asyncio.sleep(1.5)
    assert (await client.list(JOBS, namespace))["items"] == [], "no build Job, no workload Job"


async def _absent(client: Any, res: Resource, name: str, ns: str) -> bool:
    return await client.get_or_none(res, name, ns) is None


async def test_spec_change_after_completion_then_rerun(operator: Any, namespace: str, kubeconfig: Any) -> None:
    client = operator.client
    await client.create(MODELS, manifest("Model", "done", namespace, {"name": "loader:v1"}, params={"epochs": 1}))
    first = await eventually(lambda: ready(client, MODELS, "done", namespace), timeout=30)
    url = first["status"]["url"]
    await operator.cloud.write(f"{url}/model/weights.bin", b"w" * 100)
    job_uid = (await client.get(JOBS, "done-model", namespace))["metadata"]["uid"]

    await client.patch(MODELS, "done", {"spec": {"params": {"epochs": 2}}}, namespace)

    async def told() -> dict[str, Any] | None:
        o = await get_obj(client, MODELS, "done", namespace)
        c = condition(o, "Complete")
        return o if c and c["observedGeneration"] == 2 and "rerun" in c["message"] else None

    obj = await eventually(told, timeout=20)
    c = condition(obj, "Complete")
    assert c["status"] == "True" and obj["status"]["ready"] is True, "stays complete with its artifacts"
    assert "generation 1" in c["message"] and "now generation 2" in c["message"]
    assert "substratus rerun model/done" in c["message"] and "new name" in c["message"]
    assert condition(obj, "Ready")["message"] == c["message"], "Ready says it too (SPEC §3)"

    async def evented() -> bool:
        return "SpecChangedAfterCompletion" in await event_reasons(client, namespace, "done")

    await eventually(evented, timeout=10)
    await asyncio.sleep(1.0)
    assert (await client.get(JOBS, "done-model", namespace))["metadata"]["uid"] == job_uid, "nothing reran"

    # The command a user runs; it reaches the (local) bucket by status.url and says what it did.
    out = io.StringIO()
    assert await rerun_main("model/done", namespace, str(kubeconfig), out=out) == 0
    printed = out.getvalue()
    moved_to = re.search(r"^moved \S+/completed\.json to (\S+) \(nothing deleted\)$", printed, re.M)
    stamp = re.search(rf"^annotated model/done {naming.RERUN_ANNOTATION}=(\S+): the controller runs Job "
                      r"done-model again$", printed, re.M)
    assert moved_to and stamp, printed
    done = SimpleNamespace(moved_to=moved_to.group(1), stamp=stamp.group(1))
    assert done.moved_to.startswith(f"{url}/history/completed-")
    moved = json.loads(await operator.cloud.read(done.moved_to))
    assert moved["generation"] == 1, "the old marker is kept, not deleted"

    async def reran() -> dict[str, Any] | None:
        j = await client.get_or_none(JOBS, "done-model", namespace)
        return j if j and j["metadata"]["uid"] != job_uid else None

    new_job = await eventually(reran, timeout=30)
    assert new_job["metadata"]["annotations"][naming.RERUN_ANNOTATION] == done.stamp

    async def complete_again() -> dict[str, Any] | None:
        o = await ready(client, MODELS, "done", namespace)
        c = condition(o, "Complete")
        return o if c and "rerun" not in c["message"] and await operator.cloud.exists(
            naming.completed_marker_url(url)) else None

    await eventually(complete_again, timeout=30)
    marker = json.loads(await operator.cloud.read(naming.completed_marker_url(url)))
    assert marker["generation"] == 2
    assert await operator.cloud.read(f"{url}/model/weights.bin") == b"w" * 100, "data is never deleted"
    assert await operator.cloud.exists(done.moved_to)


@pytest.mark.parametrize("kind", ["Server", "Notebook"])
async def test_restored_built_object_adopts_bucket_record(operator: Any, namespace: str, kind: str) -> None:
    """SPEC §6: a Server/Notebook built once, deleted and re-applied, runs the digest recorded in
    ``build.json`` without a build Job; a new source or rebuild request still builds."""
    client = operator.client
    res = RESOURCE[kind]
    extra: dict[str, Any] = {"model": {"name": "base"}} if kind == "Server" else {}
    if kind == "Server":
        await client.create(MODELS, manifest("Model", "base", namespace, {"name": "loader:v1"}))
    await client.create(res, manifest(kind, "app", namespace, **extra))
    await finish_build(client, "app", kind, namespace, D1)
    first = await eventually(lambda: ready(client, res, "app", namespace), timeout=30)
    image = first["status"]["image"]
    assert image.endswith(D1)

    await client.delete(res, "app", namespace)
    bld = f"app-{kind.lower()}-bld"
    await eventually(lambda: _absent(client, JOBS, bld, namespace), timeout=30)
    await eventually(lambda: _absent(client, res, "app", namespace), timeout=30)
    await client.create(res, manifest(kind, "app", namespace, **extra))
    obj = await eventually(lambda: ready(client, res, "app", namespace), timeout=30)
    assert obj["status"]["image"] == image, "the recorded digest, not a new build"
    assert obj["status"]["build"]["commit"] == first["status"]["build"]["commit"]
    assert "restored from the bucket record" in condition(obj, "Built")["message"]
    wres, wname = WORKLOAD[kind]
    assert workload_image(kind, await client.get(wres, wname.format("app"), namespace)) == image
    await asyncio.sleep(1.5)
    assert await client.get_or_none(JOBS, bld, namespace) is None, "no build Job"

    # A rebuild request with a new value builds, even though the record matches the source.
    await client.patch(res, "app", {"metadata": {"annotations": {naming.REBUILD_ANNOTATION: "1"}}}, namespace)
    await finish_build(client, "app", kind, namespace, D2)
    await eventually(lambda: status_image(client, res, "app", namespace, image.split("@")[0] + "@" + D2),
                     timeout=30)

    # Restored again with an older source: the record (now D2, rebuild "1") does not match → builds.
    await client.delete(res, "app", namespace)
    await eventually(lambda: _absent(client, JOBS, bld, namespace), timeout=30)
    await eventually(lambda: _absent(client, res, "app", namespace), timeout=30)
    changed = manifest(kind, "app", namespace, {"git": {**GIT, "branch": "dev"}}, **extra)
    await client.create(res, changed)
    await finish_build(client, "app", kind, namespace, D1)
    await eventually(lambda: status_image(client, res, "app", namespace), timeout=30)
