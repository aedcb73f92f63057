"""Dataset and Model reconcilers end to end: real API server, local cloud, cluster simulator."""

from __future__ import annotations

import json
from typing import Any

from helpers import condition, create_secret, event_reasons, get_obj, gone, ready, writes_on_resync

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS
from substratus.runtime.resource import CONFIGMAPS, JOBS
from substratus.testing.simulator import OUTCOME_ANNOTATION, container_env
from substratus.testing.wait import eventually


def dataset(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/dataset-loader:v1"}, **spec}}


def model(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/model-loader:v1"}, **spec}}


async def test_dataset_import_end_to_end(operator, namespace: str) -> None:
    client = operator.client
    await client.create(DATASETS, dataset("squad", namespace, params={"url": "https://x/y.jsonl", "limit": 5,
                                                                       "shuffle": True},
                                          env={"LOG_LEVEL": "debug", "HF_TOKEN": "${{ secrets.hf.token }}"}))
    # The API server's copy: the operator's cache keeps only a Job's metadata and status.
    job = await eventually(lambda: get_obj(client, JOBS, "squad-dataset", namespace))
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "substratusai/dataset-loader:v1"
    assert c["workingDir"] == "/content"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 2
    env = {e["name"]: e for e in c["env"]}
    assert env["PARAM_URL"]["value"] == "https://x/y.jsonl"
    assert env["PARAM_LIMIT"]["value"] == "5" and env["PARAM_SHUFFLE"]["value"] == "true"
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "10Gi", "ephemeral-storage": "10Gi"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/content/params.json"]["readOnly"] is True
    assert not mounts["/content/output"].get("readOnly")
    h = naming.storage_hash("test-cluster", namespace, "datasets", "squad")
    out_volume = next(v for v in pod["volumes"] if v["name"] == mounts["/content/output"]["name"])
    assert out_volume["hostPath"]["path"].endswith(f"{h}/data")
    # What the cache holds of it: metadata and status, not the Pod template (operator.CACHE_TRANSFORMS).
    cached = operator.manager.cache.get(JOBS, "squad-dataset", namespace)
    assert "spec" not in cached and "managedFields" not in cached["metadata"]
    assert cached["metadata"]["uid"] == job["metadata"]["uid"] and cached["metadata"]["annotations"]
    ref = job["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "Dataset" and ref["controller"] and ref["blockOwnerDeletion"]
    assert job["metadata"]["labels"]["substratus.ai/dataset"] == "squad"
    cm = await client.get(CONFIGMAPS, "squad-dataset-params", namespace)
    assert json.loads(cm["data"]["params.json"]) == {"url": "https://x/y.jsonl", "limit": 5, "shuffle": True}

    # Issue 20 #7: no Secret `hf` yet — the kubelet cannot create the container, and the Dataset
    # says so (not "running"), with the kubelet's reason and message, in its status and an Event.
    async def pod_failing() -> dict[str, Any] | None:
        c = condition(await get_obj(client, DATASETS, "squad", namespace), "Complete")
        return c if c and c["reason"] == "PodFailing" else None

    c = await eventually(pod_failing, timeout=30)
    assert c["status"] == "False"
    assert "Job squad-dataset cannot run: Pod squad-dataset-" in c["message"]
    assert 'CreateContainerConfigError: container dataset: secret "hf" not found' in c["message"]
    await create_secret(client, namespace)

    obj = await eventually(lambda: ready(client, DATASETS, "squad", namespace), timeout=30)
    assert obj["status"]["url"] == f"{operator.cloud.bucket_url}/{h}"
    assert condition(obj, "Complete")["reason"] == "JobSucceeded"
    assert condition(obj, "Built")["reason"] == "ImageProvided"
    marker = json.loads(await operator.cloud.read(f"{obj['status']['url']}/completed.json"))
    assert marker["job"] == "squad-dataset" and marker["image"] == "substratusai/dataset-loader:v1"
    assert marker["generation"] == 1 and marker["completionTime"]
    reasons = await eventually(lambda: event_reasons(client, namespace, "squad"))
    assert {"JobRunning", "PodFailing", "JobSucceeded"} <= reasons
    # SPEC §7: Built=True/ImageProvided on creation asks nothing of anyone: no Event for it.
    assert "ImageProvided" not in reasons


async def test_model_import_reports_files_and_size(operator, namespace: str) -> None:
    client = operator.client
    url = f"{operator.cloud.bucket_url}/{naming.storage_hash('test-cluster', namespace, 'models', 'opt')}"
    # What the import container would write into /content/output.
    await operator.cloud.write(f"{url}/model/config.json", b"{}" * 10)
    await operator.cloud.write(f"{url}/model/pytorch_model.bin", b"x" * 3000)
    await client.create(MODELS, model("opt", namespace, params={"name": "facebook/opt-125m"}))
    obj = await eventually(lambda: ready(client, MODELS, "opt", namespace), timeout=30)
    assert obj["status"]["files"] == ["config.json", "pytorch_model.bin"]
    assert obj["status"]["diskSize"] == "3Ki"


async def test_finetune_waits_for_dataset_then_proceeds(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("base", namespace))
    await client.create(DATASETS, dataset("data", namespace))
    # Hold the dataset's Job running until we say so.
    job = await eventually(lambda: operator.manager.cache.get(JOBS, "data-dataset", namespace))
    await client.patch(JOBS, "data-dataset", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "hold"}}}, namespace)
    await client.create(MODELS, model("tuned", namespace, baseModel={"name": "base"},
                                      trainingDataset={"name": "data"}))
    await eventually(lambda: ready(client, MODELS, "base", namespace), timeout=30)

    async def waiting() -> bool:
        c = condition(await get_obj(client, MODELS, "tuned", namespace), "Complete")
        return bool(c and c["reason"] == "WaitingForDependency" and "Dataset" in c["message"]
                    and f"{namespace}/data" in c["message"])

    await eventually(waiting, timeout=30)
    assert operator.manager.cache.get(JOBS, "tuned-model", namespace) is None, "no Job before dependencies"
    assert job is not None
    await client.patch(JOBS, "data-dataset", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "succeed"}}},
                       namespace)
    tuned = await eventually(lambda: ready(client, MODELS, "tuned", namespace), timeout=30)
    tjob = await client.get(JOBS, "tuned-model", namespace)
    mounts = {m["mountPath"]: m for m in tjob["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/content/model"]["readOnly"] and mounts["/content/data"]["readOnly"]
    assert not mounts["/content/output"].get("readOnly")
    assert tuned["status"]["ready"] is True


async def test_job_failure_then_spec_fix_retries(operator, namespace: str) -> None:
    client = operator.client
    await client.create(DATASETS, dataset("flaky", namespace))
    await eventually(lambda: operator.manager.cache.get(JOBS, "flaky-dataset", namespace))
    await client.patch(JOBS, "flaky-dataset", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "fail"}}}, namespace)

    async def failed() -> dict | None:
        obj = await get_obj(client, DATASETS, "flaky", namespace)
        c = condition(obj, "Complete")
        return obj if c and c["reason"] == "JobFailed" else None

    obj = await eventually(failed, timeout=30)
    assert "BackoffLimitExceeded" in condition(obj, "Complete")["message"]
    assert obj["status"]["ready"] is False
    old_uid = (await client.get(JOBS, "flaky-dataset", namespace))["metadata"]["uid"]  # kept for kubectl logs
    # Fix the spec: a new generation gets a new Job.
    await client.patch(DATASETS, "flaky", {"spec": {"params": {"fixed": True}}}, namespace)

    async def new_job() -> bool:
        j = await client.get_or_none(JOBS, "flaky-dataset", namespace)
        return j is not None and j["metadata"]["uid"] != old_uid

    await eventually(new_job, timeout=30)
    obj = await eventually(lambda: ready(client, DATASETS, "flaky", namespace), timeout=30)
    assert condition(obj, "Complete")["observedGeneration"] == 2


async def test_restore_from_storage_without_running_a_job(operator, namespace: str) -> None:
    client = operator.client
    await client.create(DATASETS, dataset("kept", namespace))
    first = await eventually(lambda: ready(client, DATASETS, "kept", namespace), timeout=30)
    url = first["status"]["url"]
    stored = await operator.cloud.read(f"{url}/completed.json")
    await client.delete(DATASETS, "kept", namespace)
    await eventually(lambda: gone(client, JOBS, "kept-dataset", namespace), timeout=30)

    await client.create(DATASETS, dataset("kept", namespace))
    again = await eventually(lambda: ready(client, DATASETS, "kept", namespace), timeout=30)
    assert condition(again, "Complete")["reason"] == "FoundInStorage"
    assert again["status"]["url"] == url
    assert await client.get_or_none(JOBS, "kept-dataset", namespace) is None, "no Job re-run"
    assert await operator.cloud.read(f"{url}/completed.json") == stored, "bucket data untouched"


async def test_converged_resync_issues_zero_writes(operator, namespace: str) -> None:
    client = operator.client
    for i in range(3):
        await client.create(DATASETS, dataset(f"steady-{i}", namespace, params={"i": i}))
    for i in range(3):
        await eventually(lambda i=i: ready(client, DATASETS, f"steady-{i}", namespace), timeout=30)
    assert await writes_on_resync(operator) == 0, "a converged reconcile must not write"


# --- helpers ------------------------------------------------------------------------------------




async def test_param_values_reach_the_process_exactly_as_in_params_json(operator, namespace: str) -> None:
    """SPEC §1: ``$`` is escaped for the kubelet, so ``PARAM_*`` and params.json agree —
    checked with the kubelet's own expansion rules on the Job the API server stored."""
    client = operator.client
    params = {"password": "pa$$word", "ref": "$(PARAM_N)/x", "lone": "cost $5", "trailing": "x$", "many": "$$$",
              "plain": "abc", "n": 3}
    await client.create(DATASETS, dataset("dollars", namespace, params=params))
    job = await eventually(lambda: client.get_or_none(JOBS, "dollars-dataset", namespace), timeout=30)
    container = job["spec"]["template"]["spec"]["containers"][0]
    seen = container_env(container)
    cm = await client.get(CONFIGMAPS, "dollars-dataset-params", namespace)
    from_file = json.loads(cm["data"]["params.json"])
    assert from_file == params
    for key, value in params.items():
        env_name = naming.param_env_name(key)
        assert seen[env_name] == str(value), f"{env_name}: the process gets {seen[env_name]!r}, params.json {value!r}"
