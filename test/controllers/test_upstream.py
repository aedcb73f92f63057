"""Users of the original Substratus on the real API server, with the operator running (SPEC §9):
their field names are kept and rejected by name, `substratus convert`'s output is stored as
written and keeps its meaning, workloads mount the output at /content/artifacts too, and an
upstream bucket directory is adopted without a Job."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import condition, create_secret, event_reasons, get_obj, ready, settled

from substratus import naming
from substratus.api import from_dict, to_dict
from substratus.controllers.resources import BY_KIND, DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.migrate import adopt, convert_main
from substratus.runtime.client import Invalid
from substratus.runtime.resource import DEPLOYMENTS, JOBS, PODS
from substratus.testing.wait import eventually

UPSTREAM = Path(__file__).resolve().parents[1] / "upstream"


def upstream(kind: str, name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": spec}


async def invalid_spec(client: Any, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    obj = await get_obj(client, BY_KIND[kind], name, ns)
    c = condition(obj, "Serving" if kind in ("Server", "Notebook") else "Complete")
    return obj if c and c["reason"] == "InvalidSpec" else None


async def test_upstream_fine_tune_is_invalid_spec_never_an_import(operator, namespace: str) -> None:
    client = operator.client
    # Upstream's fine-tune with only the image shape fixed: before SPEC §9 the server pruned
    # spec.model and spec.dataset and the operator ran it as an import.
    stored = await client.create(MODELS, upstream(
        "Model", "tuned", namespace, image={"name": "substratusai/model-trainer-huggingface"},
        model={"name": "base"}, dataset={"name": "squad"}))
    assert stored["spec"]["model"] == {"name": "base"} and stored["spec"]["dataset"] == {"name": "squad"}, \
        "declared in the CRD: not pruned"
    obj = await eventually(lambda: invalid_spec(client, "Model", "tuned", namespace), timeout=30)
    message = condition(obj, "Complete")["message"]
    assert message.startswith("spec.model: use spec.baseModel (")
    assert "spec.dataset: use spec.trainingDataset" in message and "substratus convert" in message
    assert obj["status"]["ready"] is False
    await settled(operator)
    assert await client.get_or_none(JOBS, "tuned-model", namespace) is None, "nothing runs"
    assert await client.get_or_none(JOBS, "tuned-model-bld", namespace) is None
    assert "InvalidSpec" in await event_reasons(client, namespace, "tuned")


async def test_upstream_build_and_model_name_are_invalid_spec(operator, namespace: str) -> None:
    client = operator.client
    # No spec.image at all: stored anyway (image is required by CEL and the controller, not by
    # `required`), so the user learns the new name instead of "spec.image: Required value".
    await client.create(DATASETS, upstream("Dataset", "squad", namespace, build={
        "git": {"url": "https://github.com/substratusai/images", "path": "dataset-squad"}}))
    await client.create(NOTEBOOKS, upstream("Notebook", "nb", namespace, image={"name": "x"}, modelName="opt"))
    # A Server's spec.model stays required by the schema: a Server with only modelName is
    # refused at admission, naming the field to set.
    with pytest.raises(Invalid) as exc:
        await client.create(SERVERS, upstream("Server", "srv", namespace, image={"name": "x"}, modelName="opt"))
    assert "spec.model: Required value" in str(exc.value)
    await client.create(SERVERS, upstream("Server", "srv", namespace, image={"name": "x"}, modelName="opt",
                                          model={"name": "opt"}))
    ds = await eventually(lambda: invalid_spec(client, "Dataset", "squad", namespace), timeout=30)
    assert condition(ds, "Complete")["message"].startswith("spec.build: use spec.image.git or spec.image.upload")
    for kind, name in (("Notebook", "nb"), ("Server", "srv")):
        obj = await eventually(lambda k=kind, n=name: invalid_spec(client, k, n, namespace), timeout=30)
        assert condition(obj, "Serving")["message"].startswith("spec.modelName: use spec.model.name")
    await settled(operator)
    assert await client.get_or_none(JOBS, "squad-dataset-bld", namespace) is None
    assert await client.get_or_none(DEPLOYMENTS, "srv-server", namespace) is None
    assert await client.get_or_none(PODS, "nb-notebook", namespace) is None


async def test_string_image_is_rejected_at_admission(operator, namespace: str) -> None:
    with pytest.raises(Invalid) as exc:
        await operator.client.create(MODELS, upstream("Model", "m", namespace, image="substratusai/loader"))
    assert "spec.image in body must be of type object" in str(exc.value)
    assert await operator.client.get_or_none(MODELS, "m", namespace) is None


def converted(*files: str, default_gpu_type: str | None = "nvidia-l4") -> list[dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    rc = convert_main(argparse.Namespace(paths=[str(UPSTREAM / f) for f in files],
                                         default_gpu_type=default_gpu_type), stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    return list(yaml.safe_load_all(out.getvalue()))


async def test_converted_manifests_are_stored_as_written(operator, namespace: str) -> None:
    """Every fixture, converted, is accepted by the API server with nothing pruned: the stored
    spec is the converted one plus the server's defaults (what from_dict fills in)."""
    client = operator.client
    objs = converted("models.yaml", "datasets.yaml", "servers.yaml", "notebooks.yaml", "any-gpu.yaml",
                     "exported-list.yaml")
    assert len(objs) == 12
    for obj in objs:
        obj["metadata"]["namespace"] = namespace
        # A unique name per kind: two fixtures share names across kinds, not within one.
        stored = await client.create(BY_KIND[obj["kind"]], obj)
        assert stored["spec"] == to_dict(from_dict(obj))["spec"], obj["metadata"]["name"]


async def test_converted_fine_tune_stays_a_fine_tune(operator, namespace: str) -> None:
    client = operator.client
    objs = {o["metadata"]["name"]: o for o in converted("models.yaml", "datasets.yaml")}
    for name in ("opt-125m", "squad", "opt-125m-squad"):
        objs[name]["metadata"]["namespace"] = namespace
    # opt-125m's env names ${{ secrets.ai.HUGGING_FACE_HUB_TOKEN }}: its Pod needs the Secret.
    await create_secret(client, namespace, "ai", HUGGING_FACE_HUB_TOKEN="hf_x")
    await client.create(MODELS, objs["opt-125m"])
    await client.create(DATASETS, objs["squad"])
    await client.create(MODELS, objs["opt-125m-squad"])
    tuned = await eventually(lambda: ready(client, MODELS, "opt-125m-squad", namespace), timeout=60)
    assert condition(tuned, "Complete")["reason"] == "JobSucceeded"
    job = await client.get(JOBS, "opt-125m-squad-model", namespace)
    pod = job["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/content/model"]["readOnly"] and mounts["/content/data"]["readOnly"], "trained, not imported"
    base_hash = naming.storage_hash("test-cluster", namespace, "models", "opt-125m")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/content/model"]["name"]]["hostPath"]["path"].endswith(f"{base_hash}/model")
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


async def test_output_is_mounted_at_output_and_artifacts(operator, namespace: str) -> None:
    """An upstream loader writes /content/artifacts: the same volume as /content/output."""
    client = operator.client
    await client.create(DATASETS, upstream("Dataset", "squad", namespace, image={"name": "substratusai/dataset-squad"}))
    # Read from the API server: the operator's cache keeps Jobs as metadata + status only.
    job = await eventually(lambda: client.get_or_none(JOBS, "squad-dataset", namespace), timeout=30)
    pod = job["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    output, artifacts = mounts["/content/output"], mounts["/content/artifacts"]
    assert output["name"] == artifacts["name"], "one volume, two paths"
    assert not output.get("readOnly") and not artifacts.get("readOnly"), "both writable"
    h = naming.storage_hash("test-cluster", namespace, "datasets", "squad")
    volume = next(v for v in pod["volumes"] if v["name"] == output["name"])
    assert volume["hostPath"]["path"].endswith(f"{h}/data")


async def test_adopt_upstream_bucket_without_a_job(operator, namespace: str) -> None:
    client, cloud = operator.client, operator.cloud
    url = naming.storage_url(cloud.bucket_url, naming.storage_hash("test-cluster", namespace, "models", "falcon"))
    # What the original Substratus left: {hash}/artifacts, no completed.json.
    await cloud.write(f"{url}/artifacts/config.json", b"{}")
    await cloud.write(f"{url}/artifacts/model.safetensors", b"w" * 2048)
    out, err = io.StringIO(), io.StringIO()
    rc = await adopt("model/falcon", namespace, cloud_name="local", cluster_name="test-cluster",
                     bucket_url=cloud.bucket_url, kubeconfig=None, out=out, err=err)
    assert rc == 0, err.getvalue()
    assert f"adopted 2 files (2050 bytes) at {url}/artifacts/" in out.getvalue()
    marker = json.loads(await cloud.read(f"{url}/completed.json"))
    assert marker["artifacts"] == "artifacts" and marker["object"] == f"{namespace}/falcon"

    [model] = converted("models.yaml")[:1]
    model["metadata"] = {"name": "falcon", "namespace": namespace}
    await client.create(MODELS, model)
    obj = await eventually(lambda: ready(client, MODELS, "falcon", namespace), timeout=30)
    assert condition(obj, "Complete")["reason"] == "FoundInStorage"
    assert condition(obj, "Complete")["message"] == f"artifacts at {url}/artifacts"
    assert obj["status"]["artifactsURL"] == f"{url}/artifacts"
    assert obj["status"]["files"] == ["config.json", "model.safetensors"]
    await settled(operator)
    assert await client.get_or_none(JOBS, "falcon-model", namespace) is None, "no Job"

    # A Server of the adopted Model mounts the artifacts where they are.
    await client.create(SERVERS, upstream("Server", "falcon", namespace, image={"name": "basaran"},
                                          model={"name": "falcon"}))
    dep = await eventually(lambda: operator.manager.cache.get(DEPLOYMENTS, "falcon-server", namespace), timeout=30)
    pod = dep["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/content/model")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"].endswith("/artifacts")
    # Nothing moved or deleted; adopting again changes nothing.
    assert await cloud.read(f"{url}/artifacts/model.safetensors") == b"w" * 2048
    again = io.StringIO()
    assert await adopt("model/falcon", namespace, cloud_name="local", cluster_name="test-cluster",
                       bucket_url=cloud.bucket_url, kubeconfig=None, out=again, err=err) == 0
    assert "already complete" in again.getvalue()
    assert json.loads(await cloud.read(f"{url}/completed.json")) == marker


async def test_adopt_reads_the_object_from_the_cluster(operator, namespace: str, kubeconfig: Path) -> None:
    client, cloud = operator.client, operator.cloud
    # A fine-tune waiting for its base Model has its status.url but runs nothing yet.
    await client.create(MODELS, upstream("Model", "tuned", namespace, image={"name": "trainer"},
                                         baseModel={"name": "missing"}))

    async def has_url() -> dict[str, Any] | None:
        obj = await get_obj(client, MODELS, "tuned", namespace)
        return obj if (obj or {}).get("status", {}).get("url") else None

    url = (await eventually(has_url, timeout=30))["status"]["url"]
    out, err = io.StringIO(), io.StringIO()
    assert await adopt("models/tuned", namespace, cloud_name="local", cluster_name=None, bucket_url=None,
                       kubeconfig=str(kubeconfig), out=out, err=err) == 1
    assert f"no artifacts of the original Substratus at {url}/artifacts/" in err.getvalue()
    assert not await cloud.exists(f"{url}/completed.json"), "nothing written"

    await cloud.write(f"{url}/artifacts/adapter.bin", b"a")
    assert await adopt("models/tuned", namespace, cloud_name="local", cluster_name=None, bucket_url=None,
                       kubeconfig=str(kubeconfig), out=out, err=err) == 0, err.getvalue()
    assert json.loads(await cloud.read(f"{url}/completed.json"))["generation"] == 1
    # The next event completes it from storage (the bucket is not watched).
    await client.patch(MODELS, "tuned", {"metadata": {"labels": {"touch": "1"}}}, namespace)
    obj = await eventually(lambda: ready(client, MODELS, "tuned", namespace), timeout=30)
    assert obj["status"]["artifactsURL"] == f"{url}/artifacts"
    assert await client.get_or_none(JOBS, "tuned-model", namespace) is None


async def test_adopt_refuses_kinds_without_artifacts(tmp_path: Path) -> None:
    err = io.StringIO()
    assert await adopt("server/x", "default", cloud_name="local", cluster_name="c", bucket_url=f"file://{tmp_path}",
                       kubeconfig=None, out=io.StringIO(), err=err) == 2
    assert "only a Model or a Dataset" in err.getvalue()
    assert await adopt("model/x", "default", cloud_name="local", cluster_name="c", bucket_url=None,
                       kubeconfig=None, out=io.StringIO(), err=err) == 2
    assert "give both --cluster-name and --bucket-url" in err.getvalue()



UPSTREAM_FIELDS_BY_KIND: list[tuple[str, str, dict[str, Any], str]] = [
    # (kind, name, upstream field(s), message the controller gives), every field upstream_problems names
    ("Model", "m-build", {"build": {"git": {"url": "https://github.com/x/y", "tag": "v1"}}},
     "spec.build: use spec.image.git or spec.image.upload"),
    ("Model", "m-model", {"image": {"name": "x"}, "model": {"name": "base"}}, "spec.model: use spec.baseModel"),
    ("Model", "m-dataset", {"image": {"name": "x"}, "dataset": {"name": "d"}},
     "spec.dataset: use spec.trainingDataset"),
    ("Model", "m-modelname", {"image": {"name": "x"}, "modelName": "base"}, "spec.modelName: use spec.baseModel.name"),
    ("Dataset", "d-build", {"build": {"upload": {"md5Checksum": "0CC175B9C0F1B6A831C399E269772661",
                                                 "requestID": "r"}}},
     "spec.build: use spec.image.git or spec.image.upload"),
    ("Dataset", "d-modelname", {"image": {"name": "x"}, "modelName": "base"}, "spec.modelName: not a Dataset field"),
    ("Server", "s-build", {"build": {"git": {"url": "https://github.com/x/y"}}, "model": {"name": "m"}},
     "spec.build: use spec.image.git or spec.image.upload"),
    ("Notebook", "n-build", {"build": {"git": {"url": "https://github.com/x/y", "branch": "main"}}},
     "spec.build: use spec.image.git or spec.image.upload"),
    ("Notebook", "n-modelname", {"image": {"name": "x"}, "modelName": "m", "dataset": {"name": "d"}},
     "spec.modelName: use spec.model.name"),
]


async def test_every_upstream_field_on_every_kind_is_kept_and_invalid_spec(operator, namespace: str) -> None:
    """Each upstream field name on each kind that had it (api/v1/*_types.go) is stored as
    written (never pruned into another meaning) and reported by name; nothing runs."""
    client = operator.client
    for kind, name, spec, _ in UPSTREAM_FIELDS_BY_KIND:
        stored = await client.create(BY_KIND[kind], upstream(kind, name, namespace, **spec))
        for field, value in spec.items():
            assert stored["spec"][field] == value, f"{kind} spec.{field} pruned or changed"
    for kind, name, _, message in UPSTREAM_FIELDS_BY_KIND:
        obj = await eventually(lambda k=kind, n=name: invalid_spec(client, k, n, namespace), timeout=30)
        got = condition(obj, "Serving" if kind in ("Server", "Notebook") else "Complete")["message"]
        assert got.startswith(message), (kind, name, got)
    await settled(operator)
    for resource in (JOBS, DEPLOYMENTS, PODS):
        assert (await client.list(resource, namespace))["items"] == [], f"nothing runs: {resource}"


async def test_converted_manifest_without_resources_requests_what_upstream_did(operator, namespace: str) -> None:
    """Upstream (GCP) gave an object without spec.resources cpu 2, memory 4 GB, disk 100 GB;
    the converted manifest's Job requests the same, not this product's 10 GB disk default."""
    client = operator.client
    out, err = io.StringIO(), io.StringIO()
    manifest = yaml.safe_dump(upstream("Dataset", "squad", namespace, image="substratusai/dataset-squad"))
    rc = convert_main(argparse.Namespace(paths=["-"], default_gpu_type=None), stdin=io.StringIO(manifest),
                      stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    await client.create(DATASETS, yaml.safe_load(out.getvalue()))
    job = await eventually(lambda: client.get_or_none(JOBS, "squad-dataset", namespace), timeout=30)
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "100Gi"}
