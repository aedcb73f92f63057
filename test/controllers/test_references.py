"""References across namespaces (SPEC §1): only to objects that opted in with the annotation
``substratus.ai/allowed-namespaces``; otherwise ``ReferenceNotPermitted`` and nothing mounted.

Namespaces are the tenancy boundary: a Model in ``team-b`` must not mount ``default``'s
artifacts because it names them. The operator here watches every namespace (as it does by
default) so both tenants are in its cache.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import condition

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.install import install_crds
from substratus.runtime.client import Client
from substratus.runtime.resource import DEPLOYMENTS, JOBS, NAMESPACES, PODS
from substratus.testing.operator import InProcessOperator, local_test_config, running_operator
from substratus.testing.wait import eventually

ANNOTATION = "substratus.ai/allowed-namespaces"


def obj(kind: str, name: str, ns: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": meta,
            "spec": {"image": {"name": "substratusai/loader:v1"}, **spec}}


@pytest.fixture
async def owner_ns(client: Client) -> AsyncIterator[str]:
    """A second tenant's namespace (the one whose artifacts are referenced)."""
    name = f"t-owner-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        await client.delete(NAMESPACES, name)


@pytest.fixture
async def all_ns_operator(client: Client, namespace: str, tmp_path: Path, simulator: Any,
                          crds_installed: dict[str, Any]) -> AsyncIterator[InProcessOperator]:
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    async with running_operator(client, local_test_config(tmp_path, "")) as op:
        yield op


async def complete_in_storage(op: InProcessOperator, ns: str, plural: str, name: str) -> str:
    """Artifacts and ``completed.json`` as a finished Job leaves them: the object is complete
    from storage without a Job (the owner's namespace has no simulator)."""
    url = f"{op.cloud.bucket_url}/{naming.storage_hash('test-cluster', ns, plural, name)}"
    sub = "model" if plural == "models" else "data"
    await op.cloud.write(f"{url}/{sub}/weights.bin", b"w" * 100)
    await op.cloud.write(naming.completed_marker_url(url), json.dumps({"job": "elsewhere"}).encode())
    return url


def reason(o: dict[str, Any] | None, type_: str) -> str | None:
    c = condition(o, type_)
    return c["reason"] if c else None


async def test_references_across_namespaces_need_the_owners_opt_in(all_ns_operator, namespace: str,
                                                                   owner_ns: str) -> None:
    op, client, team, owner = all_ns_operator, all_ns_operator.client, namespace, owner_ns
    base_url = await complete_in_storage(op, owner, "models", "base")
    await complete_in_storage(op, owner, "datasets", "data")
    await client.create(MODELS, obj("Model", "base", owner))
    await client.create(DATASETS, obj("Dataset", "data", owner, annotations={ANNOTATION: "*"}))
    for res, name in ((MODELS, "base"), (DATASETS, "data")):
        await eventually(lambda res=res, name=name: _ready(client, res, name, owner), timeout=30)

    ref_base = {"name": "base", "namespace": owner}
    ref_data = {"name": "data", "namespace": owner}
    await client.create(MODELS, obj("Model", "tuned", team, baseModel=ref_base, trainingDataset=ref_data))
    await client.create(SERVERS, obj("Server", "srv", team, model=ref_base))
    await client.create(NOTEBOOKS, obj("Notebook", "nb", team, model=ref_base, dataset=ref_data))
    await client.create(NOTEBOOKS, obj("Notebook", "nb-data", team, dataset=ref_data))
    await client.create(SERVERS, obj("Server", "ghost", team, model={"name": "nope", "namespace": owner}))

    async def status_of(res: Any, name: str, type_: str, want: str) -> dict[str, Any] | None:
        o = await client.get(res, name, team)
        return o if reason(o, type_) == want else None

    tuned = await eventually(lambda: status_of(MODELS, "tuned", "Complete", "ReferenceNotPermitted"), timeout=30)
    message = condition(tuned, "Complete")["message"]
    assert f"spec.baseModel: Model {owner}/base" in message and ANNOTATION in message, message
    assert "trainingDataset" not in message, "the Dataset allows every namespace ('*')"
    assert tuned["status"]["ready"] is False
    srv = await eventually(lambda: status_of(SERVERS, "srv", "Serving", "ReferenceNotPermitted"), timeout=30)
    assert ANNOTATION in condition(srv, "Serving")["message"]
    await eventually(lambda: status_of(NOTEBOOKS, "nb", "Serving", "ReferenceNotPermitted"), timeout=30)
    # A missing object in another namespace reads the same as one that did not opt in: a status
    # never tells one tenant what exists in another's namespace.
    ghost = await eventually(lambda: status_of(SERVERS, "ghost", "Serving", "ReferenceNotPermitted"), timeout=30)
    assert "not found" not in condition(ghost, "Serving")["message"]
    # The Dataset opted in for everyone: that Notebook runs, with the Dataset mounted.
    await eventually(lambda: status_of(NOTEBOOKS, "nb-data", "Serving", "Available"), timeout=30)
    pod = await client.get(PODS, "nb-data-notebook", team)
    assert "/content/data" in {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    # Nothing mounts the Model: no Job, no Deployment, no Pod.
    assert await client.get_or_none(JOBS, "tuned-model", team) is None
    assert await client.get_or_none(DEPLOYMENTS, "srv-server", team) is None
    assert await client.get_or_none(PODS, "nb-notebook", team) is None

    # The owner opts in (among other namespaces): the event on the Model wakes its dependents.
    t0 = time.monotonic()
    await client.patch(MODELS, "base", {"metadata": {"annotations": {ANNOTATION: f"team-x, {team}"}}}, owner)
    await eventually(lambda: status_of(SERVERS, "srv", "Serving", "Available"), timeout=30)
    woke_s = time.monotonic() - t0
    await eventually(lambda: status_of(NOTEBOOKS, "nb", "Serving", "Available"), timeout=30)
    await eventually(lambda: status_of(MODELS, "tuned", "Complete", "JobSucceeded"), timeout=30)
    dep = await client.get(DEPLOYMENTS, "srv-server", team)
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("hostPath", {}).get("path", "").endswith(f"{base_url.removeprefix('file://')}/model")
               for v in volumes), volumes
    print(f"\nREFERENCES opt-in woke the Server in {woke_s:.2f}s")

    # Revoked: the running workloads that mount it stop; the complete Model keeps its artifacts.
    await client.patch(MODELS, "base", {"metadata": {"annotations": {ANNOTATION: None}}}, owner)
    await eventually(lambda: status_of(SERVERS, "srv", "Serving", "ReferenceNotPermitted"), timeout=30)
    await eventually(lambda: status_of(NOTEBOOKS, "nb", "Serving", "ReferenceNotPermitted"), timeout=30)

    async def gone(res: Any, name: str) -> bool:
        o = await client.get_or_none(res, name, team)
        return o is None or bool(o["metadata"].get("deletionTimestamp"))

    async def stopped() -> dict[str, Any] | None:
        # Scaled to zero without the mount (the operator's role cannot delete Deployments).
        d = await client.get(DEPLOYMENTS, "srv-server", team)
        mounts = {m["mountPath"] for m in d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        return d if d["spec"]["replicas"] == 0 and "/content/model" not in mounts else None

    await eventually(stopped, timeout=30)
    await eventually(lambda: gone(PODS, "nb-notebook"), timeout=30)
    assert reason(await client.get(MODELS, "tuned", team), "Complete") == "JobSucceeded"


async def _ready(client: Client, res: Any, name: str, ns: str) -> dict[str, Any] | None:
    o = await client.get_or_none(res, name, ns)
    return o if o and (o.get("status") or {}).get("ready") else None
