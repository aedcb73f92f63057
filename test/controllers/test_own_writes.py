"""Reconciles per converged object, as a user reads them on /metrics, with the operator alone
on the API server (no kubelet, no controllers: what the convergence benchmark runs on). A new
Dataset is reconciled once: the watch echoes of what that reconcile wrote (its params ConfigMap,
its Job, its own status) wake nobody (runtime/ownwrites.py), while a change someone else makes
to a child still wakes the Dataset, which repairs it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import condition, settled
from test_artifacts import dataset
from test_metrics_scrape import scrape

from substratus.controllers.resources import DATASETS
from substratus.install import install_crds
from substratus.runtime.client import Client
from substratus.runtime.resource import CONFIGMAPS, JOBS
from substratus.testing.operator import InProcessOperator, local_test_config, running_operator
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane


@pytest.fixture
async def lone_operator(client: Client, namespace: str, tmp_path: Path,
                        crds_installed: dict) -> AsyncIterator[InProcessOperator]:
    """The operator with nothing else acting on the cluster (no simulator): Jobs stay as created."""
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    cfg = local_test_config(tmp_path, namespace, max_concurrent_reconciles=8)
    async with running_operator(client, cfg) as op:
        yield op


async def dataset_reconciles(op: InProcessOperator) -> float:
    samples = await scrape(op)
    return sum(v for (name, labels), v in samples.items()
               if name == "controller_runtime_reconcile_total" and ("controller", "dataset") in labels)


async def running(client: Client, name: str, ns: str) -> bool:
    obj = await client.get(DATASETS, name, ns)
    complete = condition(obj, "Complete")
    return complete is not None and complete["reason"] == "JobRunning"


async def test_a_new_dataset_is_reconciled_once(lone_operator: InProcessOperator, namespace: str) -> None:
    op, client = lone_operator, lone_operator.client
    await settled(op)
    before = await dataset_reconciles(op)
    names = [f"once-{i}" for i in range(8)]
    for n in names:
        await client.create(DATASETS, dataset(n, namespace, params={"n": n}))
    for n in names:
        await eventually(lambda n=n: running(client, n, namespace), timeout=60)
        assert await client.get_or_none(JOBS, f"{n}-dataset", namespace) is not None
    await settled(op)
    assert await dataset_reconciles(op) - before == len(names), \
        "one reconcile per Dataset: the echoes of its ConfigMap, Job and status writes wake nobody"


async def test_a_child_changed_by_someone_else_is_repaired(lone_operator: InProcessOperator, namespace: str) -> None:
    op, client = lone_operator, lone_operator.client
    await client.create(DATASETS, dataset("drift", namespace, params={"rows": 5}))
    await eventually(lambda: running(client, "drift", namespace), timeout=60)
    await settled(op)
    cm = next(c for c in (await client.list(CONFIGMAPS, namespace))["items"]
              if any(r.get("name") == "drift" for r in c["metadata"].get("ownerReferences") or []))
    name, original = cm["metadata"]["name"], cm["data"]
    before = await dataset_reconciles(op)

    # A version the operator did not write: it wakes the Dataset, which applies its params back.
    await client.patch(CONFIGMAPS, name, {"data": {k: json.dumps({"rows": 99}) for k in original}}, namespace)

    async def repaired() -> bool:
        return (await client.get(CONFIGMAPS, name, namespace))["data"] == original
    await eventually(repaired, timeout=30)
    await settled(op)
    assert await dataset_reconciles(op) - before == 1, "woken once by the edit; the repair's echo wakes nobody"
