"""Scenario 1: kube-apiserver restarted while 200 Datasets converge.

Nothing lost (every Dataset gets its ConfigMap and Job and ends ready), nothing duplicated
(exactly one Job and one ConfigMap per Dataset, never deleted and re-created, owner refs to the
right uid), the operator task never dies and ``/readyz`` answers 200 afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time

from reliability_helpers import ChildAudit, condition, dataset, metric, owner_problems, readyz, wait_ready

from substratus import naming
from substratus.controllers.resources import DATASETS
from substratus.runtime.resource import CONFIGMAPS, JOBS
from substratus.testing.wait import eventually

N = 200


async def test_apiserver_restart_while_200_datasets_converge(local_controlplane, start_operator, sim, admin,
                                                              namespace) -> None:
    op = await start_operator(workers=8)
    jobs = await ChildAudit(admin, JOBS, namespace).start()
    cms = await ChildAudit(admin, CONFIGMAPS, namespace).start()
    panics = metric("controller_runtime_reconcile_panics_total")
    t0 = time.monotonic()
    names = [f"ds-{i:03d}" for i in range(N)]
    sem = asyncio.Semaphore(16)

    async def create(i: int, name: str) -> None:
        async with sem:
            await admin.create(DATASETS, dataset(name, namespace, params={"index": i, "shard": f"s{i % 7}"}))

    await asyncio.gather(*(create(i, n) for i, n in enumerate(names)))
    created_s = time.monotonic() - t0

    # Mid-run: some Jobs exist, most Datasets are not ready yet.
    await eventually(lambda: len(jobs.current) >= N // 4, timeout=120, message="a quarter of the Jobs")
    jobs_at_restart = len(jobs.current)

    samples: list[tuple[float, int]] = []

    async def sample_readyz() -> None:
        while True:
            samples.append((time.monotonic(), await readyz(op.health_port)))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_readyz())
    t_restart = time.monotonic()
    await asyncio.to_thread(local_controlplane.restart_apiserver)
    restart_s = time.monotonic() - t_restart
    assert not op.task.done(), "operator task ended during the API server restart"

    objs = await wait_ready(admin, DATASETS, namespace, names, timeout=240)
    converged_s = time.monotonic() - t0
    after_restart_s = time.monotonic() - t_restart - restart_s
    async def ready_200() -> bool:
        return await readyz(op.health_port) == 200

    await eventually(ready_200, timeout=30, message="/readyz 200")
    sampler.cancel()

    # Every Dataset converged through its own Job: the marker names it, and the condition says
    # JobSucceeded — even where the status write after the marker was lost to the restart (the
    # retry finds the marker and must still recognise its own succeeded Job, not FoundInStorage).
    misreported = []
    for name, obj in objs.items():
        marker = json.loads(await op.cloud.read(naming.completed_marker_url(obj["status"]["url"])))
        assert marker["job"] == f"{name}-dataset", marker
        c = condition(obj, "Complete")
        if c is None or c["reason"] != "JobSucceeded":
            misreported.append((name, c and c["reason"]))
    assert misreported == [], f"{len(misreported)} Datasets run here do not say JobSucceeded: {misreported[:5]}"

    # Exactly one Job and one ConfigMap per Dataset, each created once, owned by the right uid.
    await eventually(lambda: len(jobs.current) == N and len(cms.current) == N, timeout=10)
    assert set(jobs.current) == {f"{n}-dataset" for n in names}
    assert set(cms.current) == {f"{n}-dataset-params" for n in names}
    assert jobs.duplicates() == {} and jobs.deleted == [], (jobs.duplicates(), jobs.deleted)
    assert cms.duplicates() == {} and cms.deleted == [], (cms.duplicates(), cms.deleted)
    live_jobs = (await admin.list(JOBS, namespace))["items"]
    live_cms = (await admin.list(CONFIGMAPS, namespace))["items"]
    assert owner_problems(live_jobs, objs, "Dataset") == []
    assert owner_problems([c for c in live_cms if c["metadata"]["name"].endswith("-params")], objs, "Dataset") == []

    assert not op.task.done(), "the operator task must survive"
    assert metric("controller_runtime_reconcile_panics_total") == panics, "no reconcile panicked"
    await jobs.stop()
    await cms.stop()
    not_ready = [s for _, s in samples if s != 200]
    assert samples and all(s != 0 for _, s in samples), "the health endpoint stopped answering (process hung?)"
    print(f"\nRELIABILITY restart: creates={created_s:.1f}s jobs_at_restart={jobs_at_restart} "
          f"restart={restart_s:.1f}s converged_after_restart={after_restart_s:.1f}s total={converged_s:.1f}s "
          f"readyz_samples={len(samples)} non200={len(not_ready)}")
