"""Scenario 4: the API server answering 409 / 429 / 500 for a while (through the fault proxy).

For a window of several seconds the operator's requests — reads, writes and watches — are
answered with 429 + ``Retry-After``, 500, 409 on writes, 410 inside watches, and 500 *after* a
create was committed (the client believes it failed; the retry must not duplicate). Then the
faults stop. Everything converges exactly once, the retries are visible in
``workqueue_retries_total`` and the client honours ``Retry-After``, nothing panics.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

from faultproxy import WRITE_METHODS, Fault, Record
from reliability_helpers import (
    ChildAudit,
    condition,
    dataset,
    metric,
    model,
    owner_problems,
    readyz,
    wait_ready,
)

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS
from substratus.runtime.resource import JOBS
from substratus.testing.wait import eventually

N = 20
WINDOW = 8.0
RETRY_AFTER = 1.0


def retry_gaps(records: list[Record], status: int) -> list[float]:
    """Seconds between a non-watch request faulted with ``status`` and the client's identical retry."""
    by_request: dict[tuple[str, str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if not r.watch:
            by_request[(r.method, r.path, r.query, r.body_md5)].append(r)
    gaps = []
    for reqs in by_request.values():
        for a, b in itertools.pairwise(reqs):
            if a.injected == status and b.started - a.finished < 15:
                gaps.append(b.started - a.finished)
    return gaps


async def test_operator_converges_through_409_429_500(start_operator, make_proxy, sim, admin, namespace,
                                                       tmp_path) -> None:
    ns = namespace
    proxy = await make_proxy("faulty")
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"), workers=4)
    host = f"127.0.0.1:{proxy.port}"
    jobs = await ChildAudit(admin, JOBS, ns).start()
    before = {
        "retries": metric("workqueue_retries_total", controller="dataset"),
        "errors": metric("controller_runtime_reconcile_errors_total", controller="dataset"),
        "panics": metric("controller_runtime_reconcile_panics_total"),
        "seen429": metric("rest_client_requests_total", code="429", host=host),
        "seen500": metric("rest_client_requests_total", code="500", host=host),
    }
    relists = {inf.resource: inf.relists for inf in op.manager.cache.informers}
    faults = [
        # Watches (cut when the window opens): an ERROR 410 inside the stream, 429 and 500 on
        # reconnect — a few of each, so the informers are back while the write faults go on.
        Fault(410, watch=True, as_watch_event=True, every=2, limit=3, reason="Expired",
              message="too old resource version (injected)"),
        Fault(429, watch=True, retry_after=RETRY_AFTER, every=2, limit=4),
        Fault(500, watch=True, every=2, limit=4),
        # Creates of children committed by the API server but reported as failed.
        Fault(500, methods=frozenset({"POST"}), path=r"/(jobs|configmaps)$", after_forward=True, every=3),
        # Optimistic-concurrency conflicts on writes.
        Fault(409, methods=WRITE_METHODS, path=r"/(datasets|models|jobs|configmaps)(/|$)", every=3,
              reason="Conflict", message="the object has been modified; please apply your changes to the latest "
                                         "version and try again (injected)"),
        # Priority and fairness pushing back, on anything.
        Fault(429, retry_after=RETRY_AFTER, every=4),
        Fault(500, methods=frozenset({"GET"}), watch=False, every=5),
    ]
    required = [(429, False), (409, False), (500, False), (429, True), (500, True), (410, True)]

    def every_kind_injected() -> bool:
        """Each kind of fault has hit the operator, a few creates were committed but answered
        500, and the reconcilers (not only the informers) have been retrying for a while."""
        injected = proxy.injected_counts()
        missing: list[object] = [k for k in required if not injected[k]]
        if sum(r.injected == 500 and r.upstream in (200, 201) for r in proxy.records) < 3:
            missing.append("3 x 500 after a committed create")
        if metric("workqueue_retries_total", controller="dataset") - before["retries"] < 10:
            missing.append("10 Dataset reconcile retries")
        assert not missing, f"not injected yet: {missing}"
        return True

    t0 = time.monotonic()
    with proxy.faulting(*faults):
        await admin.create(MODELS, model("base", ns))
        for i in range(N):
            await admin.create(DATASETS, dataset(f"ds-{i:02d}", ns, params={"i": i}))
        await admin.create(MODELS, model("tuned", ns, baseModel={"name": "base"}, trainingDataset={"name": "ds-00"}))
        # At least WINDOW seconds of faults, and longer on a slow machine until every kind of
        # fault has actually been served (the Job creates come late when everything is slow).
        await asyncio.sleep(WINDOW)
        await eventually(every_kind_injected, timeout=90)
    t_clear = time.monotonic()

    names = [f"ds-{i:02d}" for i in range(N)]
    objs = await wait_ready(admin, DATASETS, ns, names, timeout=120)
    models = await wait_ready(admin, MODELS, ns, ["base", "tuned"], timeout=60)
    converged_after = time.monotonic() - t_clear
    assert not op.task.done(), "the operator task must survive"
    assert await readyz(op.health_port) == 200

    injected = proxy.injected_counts()
    after_forward = [r for r in proxy.records if r.injected == 500 and r.upstream in (200, 201)]

    # Nothing duplicated: one Job per object, created once (one successful POST each), never replaced.
    expected_jobs = {f"{n}-dataset" for n in names} | {"base-model", "tuned-model"}
    await eventually(lambda: set(jobs.current) == expected_jobs, timeout=10)
    assert jobs.duplicates() == {} and jobs.deleted == []
    created = [r for r in proxy.records if r.method == "POST" and r.path.endswith("/jobs") and r.upstream == 201]
    assert len(created) == len(expected_jobs), f"{len(created)} Job creates for {len(expected_jobs)} Jobs"
    assert owner_problems([j for j in jobs.current.values() if j["metadata"]["name"].endswith("-dataset")],
                          objs, "Dataset") == []
    assert owner_problems([j for j in jobs.current.values() if j["metadata"]["name"].endswith("-model")],
                          models, "Model") == []

    # Retried with backoff: the work queue shows it, the client honoured Retry-After.
    retries = metric("workqueue_retries_total", controller="dataset") - before["retries"]
    errors = metric("controller_runtime_reconcile_errors_total", controller="dataset") - before["errors"]
    assert retries > 0 and errors > 0, (retries, errors, dict(injected))
    assert metric("controller_runtime_reconcile_panics_total") == before["panics"], "a reconcile panicked"
    assert metric("rest_client_requests_total", code="429", host=host) > before["seen429"]
    assert metric("rest_client_requests_total", code="500", host=host) > before["seen500"]
    gaps = retry_gaps(proxy.records, 429)
    assert gaps, "no 429 was retried"
    assert min(gaps) >= RETRY_AFTER * 0.9, f"a 429 was retried before Retry-After: {sorted(gaps)[:5]}"
    relisted = [inf.resource.plural for inf in op.manager.cache.informers if inf.relists > relists[inf.resource]]
    assert relisted, "an injected watch 410 must have caused a relist"
    print(f"\nRELIABILITY faults: window={t_clear - t0:.1f}s injected={dict(injected)} retries={retries:.0f} "
          f"errors={errors:.0f} committed-but-500={len(after_forward)} 429-retry-gap min={min(gaps):.2f}s "
          f"n={len(gaps)} relisted={relisted} "
          f"converged {converged_after:.1f}s after faults stopped (total {time.monotonic() - t0:.1f}s)")
    await jobs.stop()


async def test_lost_status_write_after_the_completion_marker(start_operator, make_proxy, sim, admin, namespace,
                                                             tmp_path) -> None:
    """The write saying ``JobSucceeded`` fails after ``completed.json`` was written (what the API
    server restart scenario hits by chance): the retry finds the marker, and must still recognise
    the object's own succeeded Job instead of reporting ``FoundInStorage``."""
    ns = namespace
    proxy = await make_proxy("lost-status", capture=r"/datasets/one/status$")
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"), workers=2)
    sim.held.add("one-dataset")
    await admin.create(DATASETS, dataset("one", ns))

    async def running() -> bool:
        c = condition(await admin.get(DATASETS, "one", ns), "Complete")
        return bool(c and c["reason"] == "JobRunning")

    await eventually(running, timeout=30)
    (lost,) = proxy.inject(Fault(500, methods=frozenset({"PATCH"}), path=r"/datasets/one/status$", limit=1))
    await sim.release(admin, ["one-dataset"])
    obj = (await wait_ready(admin, DATASETS, ns, ["one"], timeout=30))["one"]
    assert lost.injected == 1
    failed = next(r for r in proxy.records if r.injected == 500)
    said = [c for c in (failed.request_json or {}).get("status", {}).get("conditions") or []
            if c.get("type") == "Complete"]
    assert said and said[0]["reason"] == "JobSucceeded", f"the lost write was not the JobSucceeded one: {said}"
    assert await op.cloud.exists(naming.completed_marker_url(obj["status"]["url"]))
    c = condition(obj, "Complete")
    assert c["reason"] == "JobSucceeded", f"own Job ran, the marker is ours: {c}"
