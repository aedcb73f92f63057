"""Image builds end to end (SPEC §6): real API server, local cloud and its upload endpoint over
real HTTP, and the cluster simulator standing in for kaniko.

Build Jobs are held by this module's simulator until a test annotates them ``succeed`` or
``fail``, so "nothing runs while building" is asserted without racing the simulator.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import attrs
import pytest
import yarl
from helpers import condition, event_reasons, get_obj, metric_writes, queues_idle, ready

from substratus import naming
from substratus.api import from_dict
from substratus.cloud.base import UPLOAD_CONTENT_TYPE
from substratus.cloud.local import LocalCloud
from substratus.controllers import build
from substratus.controllers.resources import DATASETS, MODELS
from substratus.controllers.status import StatusUpdate
from substratus.install import crd_enforces_cel
from substratus.runtime.client import Invalid
from substratus.runtime.resource import JOBS, PODS, Resource
from substratus.testing.simulator import (
    COMMIT_ANNOTATION,
    DIGEST_ANNOTATION,
    OUTCOME_ANNOTATION,
    ClusterSimulator,
)
from substratus.testing.wait import eventually

REGISTRY = "registry.test:5000"


def _hold_builds(job: dict[str, Any]) -> str:
    role = ((job.get("metadata") or {}).get("labels") or {}).get("substratus.ai/role")
    return "hold" if role == "build" else "succeed"


@pytest.fixture
async def simulator(controlplane: Any, api_client: Any, namespace: str) -> AsyncIterator[ClusterSimulator]:
    """Overrides conftest's: build Jobs wait for the test's verdict (annotation); workloads succeed."""
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    sim = ClusterSimulator(api_client, namespace=namespace, job_delay=0.2, gc_interval=0.5,
                           job_outcome=_hold_builds)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture(autouse=True)
def fast_upload_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket cannot notify the controller; poll it quickly so tests don't wait 5 s per upload."""
    monkeypatch.setattr(build, "UPLOAD_POLL_SECONDS", 0.3)


# --- builders and readers ----------------------------------------------------------------------


def build_context(marker: str = "v1") -> tuple[bytes, str]:
    """A real (tiny) .tar.gz build context and its md5, as `kubectl applybuild` would make."""
    files = {"Dockerfile": b"FROM busybox\nCOPY . /content\nCMD [\"sh\", \"/content/run.sh\"]\n",
             "run.sh": f"echo {marker} > /content/output/out.txt\n".encode()}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    body = gzip.compress(raw.getvalue(), mtime=0)
    return body, hashlib.md5(body).hexdigest()


def upload_dataset(name: str, ns: str, checksum: str, request_id: str) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"upload": {"checksum": checksum, "requestID": request_id}}}}


def git_model(name: str, ns: str, **git: str) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"git": {"url": "https://github.com/substratusai/model-loader-huggingface", **git}}}}


def storage_url(operator: Any, ns: str, plural: str, name: str) -> str:
    return naming.storage_url(operator.cloud.bucket_url, naming.storage_hash("test-cluster", ns, plural, name))


async def required_headers(operator: Any, ns: str, name: str, checksum: str) -> dict[str, str]:
    """The headers the local cloud binds its URLs to (``SignedURL.headers``), as a client learns them."""
    obj_url = naming.upload_object_url(storage_url(operator, ns, "datasets", name), checksum)
    headers = (await operator.cloud.signed_upload_url(obj_url, 60, md5=checksum)).headers
    assert headers["Content-Type"] == UPLOAD_CONTENT_TYPE and "Content-MD5" in headers
    return headers


async def put(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.put(yarl.URL(url, encoded=True), data=body, headers=headers) as r:
        return r.status, await r.json()


async def built_reason(client: Any, res: Resource, name: str, ns: str, reason: str) -> dict[str, Any] | None:
    obj = await get_obj(client, res, name, ns)
    c = condition(obj, "Built")
    return obj if c and c["reason"] == reason else None


async def upload_published(client: Any, name: str, ns: str, request_id: str) -> dict[str, Any] | None:
    obj = await get_obj(client, DATASETS, name, ns)
    up = ((obj or {}).get("status") or {}).get("upload") or {}
    return obj if up.get("url") and up.get("requestID") == request_id else None


async def annotate(client: Any, job: str, ns: str, outcome: str) -> None:
    await client.patch(JOBS, job, {"metadata": {"annotations": {OUTCOME_ANNOTATION: outcome}}}, ns)


async def _has_event(client: Any, ns: str, name: str, reason: str) -> bool:
    return reason in await event_reasons(client, ns, name)


async def settled_writes(operator: Any) -> float:
    """Writes so far, once the work queues are idle and no write (status, Event) trickles in."""
    async def stable() -> float | None:
        idle = queues_idle(operator)
        before = metric_writes()
        await asyncio.sleep(0.4)
        return before + 1 if idle and metric_writes() == before else None  # +1: 0 writes is falsy

    return await eventually(stable, timeout=15) - 1


def kaniko_arg(job: dict[str, Any], flag: str) -> str:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))


async def build_pod_messages(client: Any, job_name: str, ns: str) -> dict[str, str]:
    """The termination messages of the (finished) build Pod of ``job_name``, by container —
    what kaniko and the clone step wrote, as the kubelet reports it."""
    job = await client.get(JOBS, job_name, ns)
    pods = [p for p in (await client.list(PODS, ns))["items"]
            if any(r["uid"] == job["metadata"]["uid"] for r in p["metadata"].get("ownerReferences") or [])]
    assert len(pods) == 1, pods
    status = pods[0]["status"]
    return {cs["name"]: cs["state"]["terminated"].get("message", "")
            for cs in status.get("initContainerStatuses", []) + status["containerStatuses"]}


async def built_image(client: Any, res: Resource, name: str, ns: str, image: str | None = None) -> dict[str, Any] | None:
    """The object once Built=True records ``image`` (any image when None) in status.image."""
    obj = await get_obj(client, res, name, ns)
    c = condition(obj, "Built")
    st = (obj or {}).get("status") or {}
    if not c or c["reason"] != "BuildSucceeded" or not st.get("image"):
        return None
    return obj if image is None or st["image"] == image else None


# --- uploads -------------------------------------------------------------------------------------


async def test_upload_build_then_workload(operator: Any, namespace: str) -> None:
    client, cache = operator.client, operator.manager.cache
    body, md5 = build_context()
    await client.create(DATASETS, upload_dataset("web", namespace, md5, "r1"))

    obj = await eventually(lambda: upload_published(client, "web", namespace, "r1"), timeout=20)
    up = obj["status"]["upload"]
    assert up["url"].startswith(f"{operator.cloud.upload_base_url}/uploads/")
    assert ":0/" not in up["url"], "URLs point at the port the upload endpoint really bound"
    assert up["expiresAt"].endswith("Z") and "storedChecksum" not in up
    assert condition(obj, "Built")["status"] == "False" and condition(obj, "Built")["reason"] == "AwaitingUpload"
    assert md5 in condition(obj, "Built")["message"]
    assert condition(obj, "Complete")["reason"] == "WaitingForDependency"
    assert cache.get(JOBS, "web-dataset-bld", namespace) is None and cache.get(JOBS, "web-dataset", namespace) is None

    status, reply = await put(up["url"], body, await required_headers(operator, namespace, "web", md5))
    assert (status, reply["md5"], reply["size"]) == (200, md5, len(body))
    url = storage_url(operator, namespace, "datasets", "web")
    assert await operator.cloud.md5(f"{url}/build/{md5}.tar.gz") == md5

    bjob = await eventually(lambda: get_obj(client, JOBS, "web-dataset-bld", namespace), timeout=20)
    assert kaniko_arg(bjob, "--context") == f"tar:///build/{md5}.tar.gz"
    repo = f"{REGISTRY}/test-cluster-dataset-{namespace}-web"
    assert kaniko_arg(bjob, "--destination") == f"{repo}:{md5}", "the checksum is the tag"
    assert kaniko_arg(bjob, "--digest-file") == "/dev/termination-log"
    pod = bjob["spec"]["template"]["spec"]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "build", "mountPath": "/build", "readOnly": True}]
    assert pod["volumes"][0]["hostPath"]["path"] == f"{operator.cloud.root}/{url.rsplit('/', 1)[1]}/build"
    assert bjob["metadata"]["ownerReferences"][0]["name"] == "web"
    obj = await eventually(lambda: built_reason(client, DATASETS, "web", namespace, "Building"), timeout=20)
    assert obj["status"]["upload"]["storedChecksum"] == md5

    async def build_events() -> bool:  # Events are recorded asynchronously
        return {"AwaitingUpload", "UploadVerified", "Building"} <= await event_reasons(client, namespace, "web")

    await eventually(build_events, timeout=10)

    # Held build: the workload must not start on an image that does not exist yet.
    await asyncio.sleep(1.0)
    assert cache.get(JOBS, "web-dataset", namespace) is None
    assert "image" not in ((await get_obj(client, DATASETS, "web", namespace))["status"])

    await annotate(client, "web-dataset-bld", namespace, "succeed")
    obj = await eventually(lambda: ready(client, DATASETS, "web", namespace), timeout=30)
    # SPEC §1: the spec is the user's — untouched by the build; the image is in status, pinned
    # by the digest the build Pod's termination message carried.
    assert obj["spec"]["image"] == {"upload": {"checksum": md5, "requestID": "r1"}}
    assert obj["metadata"]["generation"] == 1
    digest = (await build_pod_messages(client, "web-dataset-bld", namespace))["build"]
    assert digest.startswith("sha256:") and len(digest) == 71
    expected = f"{repo}@{digest}"
    assert obj["status"]["image"] == expected
    assert obj["status"]["build"]["checksum"] == md5 and obj["status"]["build"]["job"] == "web-dataset-bld"
    assert condition(obj, "Built")["status"] == "True" and condition(obj, "Built")["reason"] == "BuildSucceeded"
    assert condition(obj, "Complete")["reason"] == "JobSucceeded"
    wjob = await client.get(JOBS, "web-dataset", namespace)
    container = wjob["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == expected
    assert container["imagePullPolicy"] == "IfNotPresent", "Kubernetes' default for a digest reference"
    marker = json.loads(await operator.cloud.read(f"{url}/completed.json"))
    assert marker["image"] == expected and marker["generation"] == 1 and marker["specHash"]

    # A new requestID after the build still gets its URL (clients wait for it), and storedChecksum
    # tells them the context is already there; nothing is rebuilt.
    build_uid = (await client.get(JOBS, "web-dataset-bld", namespace))["metadata"]["uid"]
    await client.patch(DATASETS, "web", {"spec": {"image": {"upload": {"requestID": "r2"}}}}, namespace)
    obj = await eventually(lambda: upload_published(client, "web", namespace, "r2"), timeout=20)
    assert obj["status"]["upload"]["storedChecksum"] == md5
    assert (await client.get(JOBS, "web-dataset-bld", namespace))["metadata"]["uid"] == build_uid

    # Converged: re-delivering every object (a resync or restart) writes nothing.
    before = await settled_writes(operator)
    for inf in cache.informers:
        for item in inf.store:
            inf._emit_update(item, item)
    await asyncio.sleep(1.0)
    assert metric_writes() == before, "a converged reconcile must not write"


async def test_new_request_id_gets_fresh_url(operator: Any, namespace: str) -> None:
    client = operator.client
    _, md5 = build_context()
    await client.create(DATASETS, upload_dataset("fresh", namespace, md5, "first"))
    first = (await eventually(lambda: upload_published(client, "fresh", namespace, "first")))["status"]["upload"]
    await eventually(lambda: built_reason(client, DATASETS, "fresh", namespace, "AwaitingUpload"))
    before = await settled_writes(operator)
    await asyncio.sleep(1.2)  # several storage polls while awaiting the upload...
    assert metric_writes() == before, "...that never write (nor re-sign the URL)"
    # (The sleeps also matter below: local URLs have whole-second expiries, so the new one differs.)
    await client.patch(DATASETS, "fresh", {"spec": {"image": {"upload": {"requestID": "second"}}}}, namespace)
    second = (await eventually(lambda: upload_published(client, "fresh", namespace, "second")))["status"]["upload"]
    assert second["url"] != first["url"]
    assert yarl.URL(second["url"]).query["sig"] != yarl.URL(first["url"]).query["sig"]
    assert second["expiresAt"] > first["expiresAt"]


async def test_new_checksum_gets_new_url_and_rebuilds(operator: Any, namespace: str) -> None:
    """A URL is bound to one checksum: a new one (same requestID) needs a new URL, then a new build."""
    client, cache = operator.client, operator.manager.cache
    body1, md5_1 = build_context("v1")
    body2, md5_2 = build_context("v2")
    await client.create(DATASETS, upload_dataset("iter", namespace, md5_1, "r"))
    up = (await eventually(lambda: upload_published(client, "iter", namespace, "r")))["status"]["upload"]
    assert (await put(up["url"], body1, await required_headers(operator, namespace, "iter", md5_1)))[0] == 200
    await eventually(lambda: cache.get(JOBS, "iter-dataset-bld", namespace), timeout=20)
    await annotate(client, "iter-dataset-bld", namespace, "succeed")
    await eventually(lambda: built_reason(client, DATASETS, "iter", namespace, "BuildSucceeded"), timeout=30)
    old_uid = (await client.get(JOBS, "iter-dataset-bld", namespace))["metadata"]["uid"]

    await client.patch(DATASETS, "iter", {"spec": {"image": {"upload": {"checksum": md5_2}}}}, namespace)
    obj = await eventually(lambda: built_reason(client, DATASETS, "iter", namespace, "AwaitingUpload"), timeout=20)
    up2 = obj["status"]["upload"]
    assert md5_2 in up2["url"] and up2["url"] != up["url"]
    # The old URL cannot store the new context: it is bound to the old checksum.
    status, _ = await put(up["url"], body2, await required_headers(operator, namespace, "iter", md5_2))
    assert status == 400
    assert (await put(up2["url"], body2, await required_headers(operator, namespace, "iter", md5_2)))[0] == 200

    async def rebuilt() -> dict[str, Any] | None:
        j = await get_obj(client, JOBS, "iter-dataset-bld", namespace)
        return j if j and j["metadata"]["uid"] != old_uid else None

    job = await eventually(rebuilt, timeout=20)
    assert kaniko_arg(job, "--context") == f"tar:///build/{md5_2}.tar.gz"
    first_image = (await get_obj(client, DATASETS, "iter", namespace))["status"]["image"]
    await annotate(client, "iter-dataset-bld", namespace, "succeed")

    async def second_build() -> dict[str, Any] | None:
        o = await built_image(client, DATASETS, "iter", namespace)
        return o if o and o["status"]["build"]["checksum"] == md5_2 else None

    obj = await eventually(second_build, timeout=30)
    assert obj["status"]["image"] != first_image and "@sha256:" in obj["status"]["image"]
    assert "name" not in obj["spec"]["image"]


async def test_stored_object_with_wrong_md5_is_reported_not_built(operator: Any, namespace: str) -> None:
    client, cache = operator.client, operator.manager.cache
    _, md5 = build_context()
    await client.create(DATASETS, upload_dataset("bad", namespace, md5, "r1"))
    await eventually(lambda: upload_published(client, "bad", namespace, "r1"))
    wrong = b"not the declared context"
    wrong_md5 = hashlib.md5(wrong).hexdigest()
    url = storage_url(operator, namespace, "datasets", "bad")
    await operator.cloud.write(naming.upload_object_url(url, md5), wrong, content_type=UPLOAD_CONTENT_TYPE)

    obj = await eventually(lambda: built_reason(client, DATASETS, "bad", namespace, "BuildFailed"), timeout=20)
    message = condition(obj, "Built")["message"]
    assert md5 in message and wrong_md5 in message
    assert obj["status"]["upload"]["storedChecksum"] == wrong_md5
    assert obj["status"]["ready"] is False
    await asyncio.sleep(1.5)  # several storage polls
    assert await client.get_or_none(JOBS, "bad-dataset-bld", namespace) is None, "never built"
    assert cache.get(JOBS, "bad-dataset", namespace) is None


async def test_put_with_mismatching_body_is_rejected(operator: Any, namespace: str) -> None:
    client = operator.client
    body, md5 = build_context()
    await client.create(DATASETS, upload_dataset("tamper", namespace, md5, "r1"))
    up = (await eventually(lambda: upload_published(client, "tamper", namespace, "r1")))["status"]["upload"]
    headers = await required_headers(operator, namespace, "tamper", md5)

    status, reply = await put(up["url"], body + b"extra", headers)
    assert status == 400 and md5 in reply["error"]
    # Without Content-MD5 the URL's own binding still rejects it.
    no_md5 = {k: v for k, v in headers.items() if k != "Content-MD5"}
    assert (await put(up["url"], b"something else", no_md5))[0] == 400
    url = storage_url(operator, namespace, "datasets", "tamper")
    assert not await operator.cloud.exists(naming.upload_object_url(url, md5)), "nothing stored"

    await asyncio.sleep(1.5)
    obj = await get_obj(client, DATASETS, "tamper", namespace)
    assert condition(obj, "Built")["reason"] == "AwaitingUpload"
    assert await client.get_or_none(JOBS, "tamper-dataset-bld", namespace) is None


# --- git ---------------------------------------------------------------------------------------


async def test_git_build_then_workload(operator: Any, namespace: str) -> None:
    client, cache = operator.client, operator.manager.cache
    created = await client.create(MODELS, git_model("llm", namespace, branch="main", path="src"))
    job = await eventually(lambda: get_obj(client, JOBS, "llm-model-bld", namespace), timeout=20)
    pod = job["spec"]["template"]["spec"]
    # The clone step resolves the branch to its full commit SHA and reports it...
    clone = pod["initContainers"][0]
    assert clone["command"][:2] == ["sh", "-c"] and "rev-parse HEAD" in clone["command"][2]
    assert clone["command"][3:] == ["clone", "https://github.com/substratusai/model-loader-huggingface", "main",
                                    "/workspace/src"]
    assert {"name": "workspace", "emptyDir": {}} in pod["volumes"]
    # ...kaniko is tagged with that commit and writes the pushed digest to its termination message.
    repo = f"{REGISTRY}/test-cluster-model-{namespace}-llm"
    kaniko = pod["containers"][0]
    assert '"--destination=$IMAGE_REPO:$(cat /workspace/commit)"' in kaniko["command"][2]
    assert {"name": "IMAGE_REPO", "value": repo} in kaniko["env"]
    assert kaniko_arg(job, "--context") == "dir:///workspace/src/src"
    assert kaniko_arg(job, "--digest-file") == "/dev/termination-log"
    assert "--insecure" in kaniko["args"], "the local cloud's registry is plain HTTP"
    assert job["metadata"]["labels"]["substratus.ai/model"] == "llm"

    obj = await eventually(lambda: built_reason(client, MODELS, "llm", namespace, "Building"), timeout=20)
    assert "upload" not in obj["status"]
    await asyncio.sleep(1.0)
    assert cache.get(JOBS, "llm-model", namespace) is None, "no workload before Built=True"
    assert condition(await get_obj(client, MODELS, "llm", namespace), "Complete")["reason"] == "WaitingForDependency"

    commit, digest = "9f" * 20, "sha256:" + "1d" * 32
    await client.patch(JOBS, "llm-model-bld", {"metadata": {"annotations": {
        COMMIT_ANNOTATION: commit, DIGEST_ANNOTATION: digest, OUTCOME_ANNOTATION: "succeed"}}}, namespace)
    obj = await eventually(lambda: ready(client, MODELS, "llm", namespace), timeout=30)
    assert await build_pod_messages(client, "llm-model-bld", namespace) == {"clone": commit, "build": digest}
    assert obj["spec"] == created["spec"] and obj["metadata"]["generation"] == 1, "the spec is the user's"
    assert obj["status"]["image"] == f"{repo}@{digest}"
    assert obj["status"]["build"]["commit"] == commit
    assert condition(obj, "Built")["reason"] == "BuildSucceeded" and commit in condition(obj, "Built")["message"]
    assert condition(obj, "Built")["observedGeneration"] == obj["metadata"]["generation"]
    wjob = await client.get(JOBS, "llm-model", namespace)
    assert wjob["spec"]["template"]["spec"]["containers"][0]["image"] == f"{repo}@{digest}"


async def test_git_build_failure_then_new_branch_rebuilds(operator: Any, namespace: str) -> None:
    client, cache = operator.client, operator.manager.cache
    await client.create(MODELS, git_model("gf", namespace, branch="broken"))
    await eventually(lambda: cache.get(JOBS, "gf-model-bld", namespace), timeout=20)
    await annotate(client, "gf-model-bld", namespace, "fail")

    obj = await eventually(lambda: built_reason(client, MODELS, "gf", namespace, "BuildFailed"), timeout=30)
    message = condition(obj, "Built")["message"]
    assert "gf-model-bld" in message and "kubectl logs job/gf-model-bld" in message
    assert "BackoffLimitExceeded" in message
    assert obj["status"]["ready"] is False and "name" not in obj["spec"]["image"]
    assert "image" not in obj["status"]
    await eventually(lambda: _has_event(client, namespace, "gf", "BuildFailed"), timeout=10)
    assert cache.get(JOBS, "gf-model", namespace) is None
    old_uid = (await client.get(JOBS, "gf-model-bld", namespace))["metadata"]["uid"]

    await client.patch(MODELS, "gf", {"spec": {"image": {"git": {"branch": "fixed"}}}}, namespace)

    async def rebuilt() -> dict[str, Any] | None:
        j = await get_obj(client, JOBS, "gf-model-bld", namespace)
        return j if j and j["metadata"]["uid"] != old_uid else None

    job = await eventually(rebuilt, timeout=20)
    assert "fixed" in job["spec"]["template"]["spec"]["initContainers"][0]["command"]
    await eventually(lambda: built_reason(client, MODELS, "gf", namespace, "Building"), timeout=20)
    await annotate(client, "gf-model-bld", namespace, "succeed")
    obj = await eventually(lambda: ready(client, MODELS, "gf", namespace), timeout=30)
    messages = await build_pod_messages(client, "gf-model-bld", namespace)
    assert obj["status"]["image"] == f"{REGISTRY}/test-cluster-model-{namespace}-gf@{messages['build']}"
    assert obj["status"]["build"]["commit"] == messages["clone"]
    assert obj["metadata"]["generation"] == 2, "only the user's patch changed the spec"


async def test_git_tag_builds_tag(operator: Any, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, git_model("tagged", namespace, tag="v1.0.0"))
    job = await eventually(lambda: get_obj(client, JOBS, "tagged-model-bld", namespace), timeout=20)
    assert job["spec"]["template"]["spec"]["initContainers"][0]["command"][5] == "v1.0.0"
    await annotate(client, "tagged-model-bld", namespace, "succeed")
    obj = await eventually(lambda: ready(client, MODELS, "tagged", namespace), timeout=30)
    assert obj["status"]["image"].startswith(f"{REGISTRY}/test-cluster-model-{namespace}-tagged@sha256:")
    assert len(obj["status"]["build"]["commit"]) == 40


async def test_image_name_beside_git_is_invalid_spec(operator: Any, namespace: str) -> None:
    """SPEC §1: exactly one of git / upload / name — at admission where the server enforces the
    CRD's CEL rules, otherwise the controller says so."""
    client = operator.client
    manifest = git_model("both", namespace, branch="main")
    manifest["spec"]["image"]["name"] = "docker.io/me/trainer:1"
    if await crd_enforces_cel(client):
        with pytest.raises(Invalid) as err:
            await client.create(MODELS, manifest)
        assert err.value.status == 422 and "image.name cannot be set together" in err.value.message
        return
    await client.create(MODELS, manifest)

    async def invalid() -> dict[str, Any] | None:
        o = await get_obj(client, MODELS, "both", namespace)
        c = condition(o, "Complete")
        return o if c and c["reason"] == "InvalidSpec" else None

    obj = await eventually(invalid, timeout=20)
    message = condition(obj, "Complete")["message"]
    assert "spec.image.name" in message and "spec.image.git" in message
    await asyncio.sleep(1.0)
    assert await client.get_or_none(JOBS, "both-model-bld", namespace) is None, "no build"
    assert await client.get_or_none(JOBS, "both-model", namespace) is None


async def test_legacy_controller_written_name_is_adopted_not_rebuilt(operator: Any, namespace: str) -> None:
    """SPEC §1 migration: an object an older version built (and wrote spec.image.name into) keeps
    working: the name is read as a past build, moved to status once, and nothing is rebuilt."""
    client, cache = operator.client, operator.manager.cache
    legacy = f"{REGISTRY}/test-cluster-model-{namespace}-old:main"
    manifest = git_model("old", namespace, branch="main")
    manifest["spec"]["image"]["name"] = legacy
    if await crd_enforces_cel(client):
        # A CEL server refuses such an object at admission (the CRD's exactly-one-source rule), so
        # one can only exist from before the upgrade: docs/operations.md says to drop the name.
        with pytest.raises(Invalid) as err:
            await client.create(MODELS, manifest)
        assert err.value.status == 422 and "image.name cannot be set together" in err.value.message
        return
    created = await client.create(MODELS, manifest)
    obj = await eventually(lambda: ready(client, MODELS, "old", namespace), timeout=30)
    assert obj["status"]["image"] == legacy
    assert condition(obj, "Built")["reason"] == "BuildSucceeded"
    assert obj["spec"] == created["spec"], "read, never rewritten"
    assert await client.get_or_none(JOBS, "old-model-bld", namespace) is None, "not rebuilt"
    assert (await client.get(JOBS, "old-model", namespace))["spec"]["template"]["spec"]["containers"][0][
        "image"] == legacy
    assert cache.get(JOBS, "old-model-bld", namespace) is None


# --- upload URL bookkeeping, without a cluster ----------------------------------------------------


async def test_short_ttl_url_is_kept_until_near_expiry(tmp_path: Any) -> None:
    """With a TTL under the refresh margin, every pass used to re-sign (a status write, an event,
    another pass...); the margin is capped at half the TTL."""
    offset = [0.0]
    cloud = LocalCloud(f"file://{tmp_path}/b", signing_key="k", upload_base_url="http://up.test",
                       clock=lambda: time.time() + offset[0])
    ctx = SimpleNamespace(cloud=cloud, upload_url_ttl=60, registry=REGISTRY, cluster_name="c")
    builder = build.Builder(SimpleNamespace(ctx=ctx))
    _, md5 = build_context()
    obj = from_dict({**upload_dataset("d", "ns", md5, "r1"), "metadata": {"name": "d", "namespace": "ns",
                                                                             "generation": 1}})
    url = f"{cloud.bucket_url}/h"
    state = await builder.resolve(obj, {}, url, StatusUpdate(obj))
    assert state.image is None and 0 < state.result.requeue_after <= build.UPLOAD_POLL_SECONDS
    first = obj.status.upload
    assert first is not None and first.request_id == "r1" and first.stored_checksum is None

    offset[0] = 5.0  # a re-signed URL would now carry another expiry
    await builder.resolve(obj, {}, url, StatusUpdate(obj))
    assert obj.status.upload == first

    obj.status.upload = attrs.evolve(first, expires_at="garbled")
    await builder.resolve(obj, {}, url, StatusUpdate(obj))
    assert obj.status.upload.url != first.url and obj.status.upload.expires_at != "garbled"
