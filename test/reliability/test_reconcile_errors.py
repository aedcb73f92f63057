"""Scenario 9: a reconcile that keeps failing says so in the status, never an older reason.

The reported case: a Server whose every pass ended in a 500 from the API server kept the
``waiting for Model`` reason of an earlier pass (and ``substratus explain`` repeated it), while
the operator retried forever. Here the proxy answers 500 to every Deployment apply once the
Model exists — the status must move to ``ReconcileError`` naming the child and the server's
message, explain must say it, a Warning Event must be recorded, the work queue must keep
retrying with backoff (not hot-loop), and everything converges once the fault is gone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from faultproxy import Fault
from reliability_helpers import condition, dataset, metric, model, server, wait_ready

from substratus.cloud.local import LocalCloud
from substratus.controllers.resources import DATASETS, MODELS, SERVERS
from substratus.explain import explain
from substratus.operator import build_manager
from substratus.runtime.client import Client, NotLeader
from substratus.runtime.reconcile import Request
from substratus.runtime.resource import DEPLOYMENTS, EVENTS
from substratus.testing.operator import local_test_config
from substratus.testing.wait import eventually

DUPLICATE = ('Deployment.apps "s-server" is invalid: failed to create typed patch object: '
             '.spec.template.spec.containers[name="server"].env: duplicate entries for key [name="X"]')


async def test_a_failing_reconcile_reaches_status_and_explain(start_operator, make_proxy, sim, admin, namespace,
                                                             tmp_path) -> None:
    ns = namespace
    proxy = await make_proxy("errors")
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"), workers=2)
    await admin.create(SERVERS, server("s", ns, model={"name": "m"}))

    async def serving(reason: str) -> dict | None:
        obj = await admin.get(SERVERS, "s", ns)
        c = condition(obj, "Serving")
        return obj if c and c["reason"] == reason else None

    await eventually(lambda: serving("WaitingForDependency"), timeout=30)
    proxy.inject(Fault(500, methods=frozenset({"PATCH"}), path=r"/deployments/s-server$", message=DUPLICATE))
    errors_before = metric("controller_runtime_reconcile_errors_total", controller="server")
    await admin.create(MODELS, model("m", ns))
    obj = await eventually(lambda: serving("ReconcileError"), timeout=30)
    c = condition(obj, "Serving")
    assert c["status"] == "False" and obj["status"]["ready"] is False
    assert f"applying Deployment {ns}/s-server" in c["message"], c["message"]
    assert "500" in c["message"] and "duplicate entries for key" in c["message"], c["message"]
    assert "waiting for Model" not in c["message"]

    text = await explain(admin, "server/s", ns)
    why = text.splitlines()[-1]
    assert why.startswith("why: ") and "ReconcileError" in why and "duplicate entries" in why, text

    async def warned() -> bool:
        events = (await admin.list(EVENTS, ns))["items"]
        return any(e["reason"] == "ReconcileError" and e["type"] == "Warning" and e["involvedObject"]["name"] == "s"
                   for e in events)

    await eventually(warned, timeout=15)

    # Still retrying, with backoff: failures keep coming, but not as a hot loop, and the status
    # is written once for one unchanged error.
    await asyncio.sleep(2)
    patches = len(proxy.select(method="PATCH", path=r"/deployments/s-server$"))
    status_writes = len(proxy.select(method="PATCH", path=r"/servers/s/status$"))
    errors = metric("controller_runtime_reconcile_errors_total", controller="server") - errors_before
    print(f"\nRELIABILITY reconcile-error: {errors:.0f} failed passes, {patches} Deployment applies, "
          f"{status_writes} status writes in total")
    assert errors >= 3 and patches >= 3
    assert patches < 60, f"{patches} applies in a few seconds: not backing off"
    assert status_writes <= 3, "one status write per change, not one per failed pass"

    proxy.clear()
    await wait_ready(admin, SERVERS, ns, ["s"], timeout=60)
    assert condition(await admin.get(SERVERS, "s", ns), "Serving")["reason"] == "Available"
    assert await admin.get_or_none(DEPLOYMENTS, "s-server", ns) is not None
    assert not op.task.done()


async def test_writes_refused_for_lost_leadership_are_not_the_objects_error(
        client: Client, crds, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A replica whose leadership ended has every write refused by its fence (``NotLeader``).
    However many passes end that way, none is a failed pass of the object: no ``ReconcileError``
    is computed, and no status write about it is even attempted (the fence would refuse it too;
    before the fix the third pass tried one and logged that it could not)."""
    cfg = local_test_config(tmp_path, namespace, leader_elect=True, leader_election_namespace=namespace,
                            leader_election_id="not-leader")
    cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
    mgr = build_manager(client, cloud, cfg)  # never run: this replica never leads
    reconciler = next(c.reconciler for c in mgr.controllers if c.name == "dataset")
    refused: list[int] = []

    def fence() -> None:  # the elector's check of a replica that lost the lease
        refused[-1] += 1
        raise NotLeader("not the leader")

    mgr.client.write_fence = fence
    for c in mgr.controllers:
        for res in c.watched_resources:
            mgr.cache.informer(res)
    mgr.cache.start()
    try:
        assert await mgr.cache.wait_for_sync(30)
        await client.create(DATASETS, dataset("d", namespace))
        await eventually(lambda: mgr.cache.get(DATASETS, "d", namespace) is not None, timeout=15)
        caplog.set_level(logging.INFO, logger="substratus")
        for _ in range(4):
            refused.append(0)
            with pytest.raises(NotLeader):
                await reconciler.reconcile(Request(namespace, "d"))
    finally:
        await mgr.cache.stop()
        await cloud.close()
    assert refused[0] >= 1 and refused == [refused[0]] * 4, \
        f"writes attempted per pass: {refused} (a later pass tried to write about the refusal)"
    assert "could not report the reconcile error" not in caplog.text
    obj = await client.get(DATASETS, "d", namespace)
    assert all(c.get("reason") != "ReconcileError" for c in (obj.get("status") or {}).get("conditions") or [])
