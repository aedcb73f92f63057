"""Scenario 2: a watch gap longer than etcd's history (410 Gone) with deletes inside it.

The operator is cut off from its watches — its informers stopped, or the network partitioned
by the fault proxy — while a Dataset that a training Model waits on is deleted and another is
created; etcd is compacted past the informers' resourceVersion. When the operator comes back
its watches get 410, it relists, and the relist's diff must deliver the delete: the Model
reports ``WaitingForDependency`` naming the now-missing Dataset, the Dataset created in the gap
converges, and re-creating the deleted Dataset lets the Model train.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from reliability_helpers import condition, dataset, model, wait_ready

from substratus.controllers.resources import DATASETS, MODELS
from substratus.runtime.resource import CONFIGMAPS, JOBS
from substratus.testing.wait import eventually


@pytest.mark.parametrize("gap", ["informers-stopped", "partition"])
async def test_deletes_in_a_compacted_watch_gap_reach_dependents(gap, local_controlplane, start_operator, make_proxy,
                                                                 sim, admin, namespace, tmp_path) -> None:
    proxy = await make_proxy(f"op-{gap}") if gap == "partition" else None
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig") if proxy else None)
    ns = namespace
    sim.held.add("data-dataset")
    await admin.create(MODELS, model("base", ns))
    await admin.create(DATASETS, dataset("data", ns))
    await admin.create(MODELS, model("tuned", ns, baseModel={"name": "base"}, trainingDataset={"name": "data"}))
    await wait_ready(admin, MODELS, ns, ["base"], timeout=30)

    async def tuned_waiting_for(text: str) -> bool:
        c = condition(await admin.get(MODELS, "tuned", ns), "Complete")
        return bool(c and c["reason"] == "WaitingForDependency" and text in c["message"])

    await eventually(lambda: tuned_waiting_for(f"Dataset {ns}/data to be complete"), timeout=30)
    informers = {inf.resource: inf for inf in op.manager.cache.informers}
    relists = {r: inf.relists for r, inf in informers.items()}

    # --- the gap -----------------------------------------------------------------------------
    t0 = time.monotonic()
    if proxy is None:
        await op.manager.cache.stop()
    else:
        proxy.partition()
    await admin.delete(DATASETS, "data", ns)
    await admin.create(DATASETS, dataset("late", ns))
    await admin.create(CONFIGMAPS, {"metadata": {"name": "filler", "namespace": ns}, "data": {"a": "b"}})
    revision = await asyncio.to_thread(local_controlplane.compact)
    if proxy is None:
        op.manager.cache.start()
    else:
        # Heal only once the operator has really tried and failed to get through.
        await eventually(lambda: [r for r in proxy.records if r.status == 0 and r.started >= t0], timeout=20,
                         message="a request dropped by the partition")
        proxy.heal()

    # --- the delete reaches the dependent ----------------------------------------------------
    await eventually(lambda: tuned_waiting_for(f"Dataset {ns}/data (not found)"), timeout=45)
    reacted_s = time.monotonic() - t0
    assert op.manager.cache.get(DATASETS, "data", ns) is None
    assert informers[DATASETS].relists > relists[DATASETS], "the Dataset informer must have relisted after 410"
    assert int(informers[DATASETS].resource_version) >= revision
    assert await admin.get_or_none(JOBS, "tuned-model", ns) is None, "no training Job without its Dataset"
    # Nothing lost the other way: the Dataset created during the gap converges.
    await wait_ready(admin, DATASETS, ns, ["late"], timeout=45)

    # And back: the Dataset re-created, the Model trains.
    sim.held.clear()
    await admin.create(DATASETS, dataset("data", ns))
    await wait_ready(admin, MODELS, ns, ["tuned"], timeout=45)
    assert not op.task.done()
    print(f"\nRELIABILITY compaction gap={gap}: dependent reacted {reacted_s:.1f}s after the gap began "
          f"(relists datasets {relists[DATASETS]}->{informers[DATASETS].relists})")
