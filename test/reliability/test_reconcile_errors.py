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

from faultproxy import Fault
from reliability_helpers import condition, metric, model, server, wait_ready

from substratus.controllers.resources import MODELS, SERVERS
from substratus.explain import explain
from substratus.runtime.resource import DEPLOYMENTS, EVENTS
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
