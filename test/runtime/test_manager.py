"""The manager end to end: endpoints, cache sync → readiness, leader-gated controllers, shutdown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from substratus.runtime import metrics
from substratus.runtime.client import Client, NotLeader
from substratus.runtime.controller import Controller
from substratus.runtime.events import NORMAL, EventRecorder
from substratus.runtime.manager import EXIT_LOST_LEASE, EXIT_OK, Manager, ManagerOptions
from substratus.runtime.reconcile import Request, Result
from substratus.runtime.resource import CONFIGMAPS, EVENTS, LEASES
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane


class Counting:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def reconcile(self, request: Request) -> Result:
        self.seen.append(request.name)
        return Result()


def options(namespace: str, **kw) -> ManagerOptions:
    return ManagerOptions(namespace=namespace, metrics_addr="127.0.0.1:0", health_addr="127.0.0.1:0",
                          leader_election_namespace=namespace, lease_duration=3, renew_deadline=2,
                          retry_period=0.5, **kw)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_manager_serves_probes_and_metrics_and_reconciles(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "x", "namespace": namespace}})
    mgr = Manager(client, options(namespace, leader_election=True, leader_election_id="mgr-test"))
    rec = Counting()
    mgr.add_controller(Controller("mgr-test", rec, mgr.cache).for_(CONFIGMAPS))
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        await eventually(lambda: "health" in mgr.bound_ports and mgr.ready.is_set())
        health = f"http://127.0.0.1:{mgr.bound_ports['health']}"
        assert (await get(health + "/healthz"))[0] == 200
        assert (await get(health + "/readyz"))[0] == 200
        await eventually(lambda: "x" in rec.seen)
        status, body = await get(f"http://127.0.0.1:{mgr.bound_ports['metrics']}/metrics")
        assert status == 200
        for name in ("controller_runtime_reconcile_total", "workqueue_depth", "leader_election_master_status",
                     "rest_client_requests_total", "controller_runtime_reconcile_time_seconds_bucket"):
            assert name in body, name
        assert 'leader_election_master_status{name="mgr-test"} 1.0' in body
    finally:
        mgr.stop()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
    # Graceful stop released the lease.
    lease = await client.get(LEASES, "mgr-test", namespace)
    assert not lease["spec"].get("holderIdentity")


async def test_standby_manager_keeps_a_warm_cache_but_does_not_reconcile(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "y", "namespace": namespace}})
    managers, recs, tasks = [], [], []
    for _ in range(2):
        mgr = Manager(client, options(namespace, leader_election=True, leader_election_id="pair"))
        rec = Counting()
        mgr.add_controller(Controller("pair", rec, mgr.cache).for_(CONFIGMAPS))
        managers.append(mgr)
        recs.append(rec)
        tasks.append(asyncio.create_task(mgr.run(handle_signals=False)))
    try:
        await eventually(lambda: any(r.seen for r in recs))
        await asyncio.sleep(1.0)
        leader = 0 if recs[0].seen else 1
        standby = 1 - leader
        assert not recs[standby].seen, "the standby never reconciles"
        assert managers[standby].cache.get(CONFIGMAPS, "y", namespace) is not None, "but its cache is warm"
        managers[leader].stop()
        assert await asyncio.wait_for(tasks[leader], 30) == EXIT_OK
        await eventually(lambda: "y" in recs[standby].seen, timeout=10)
    finally:
        for m in managers:
            m.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_events_are_aggregated(client: Client, namespace: str) -> None:
    obj = await client.create(CONFIGMAPS, {"metadata": {"name": "ev", "namespace": namespace}})
    rec = EventRecorder(client)
    rec.start()
    try:
        for _ in range(3):
            rec.event(obj, NORMAL, "Tested", "same message")
        rec.event(obj, NORMAL, "Other", "different")
    finally:
        await rec.stop()
    events = (await client.list(EVENTS, namespace))["items"]
    by_reason = {e["reason"]: e for e in events}
    assert by_reason["Tested"]["count"] == 3
    assert by_reason["Tested"]["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert by_reason["Other"]["count"] == 1
    assert len(events) == 2


async def test_losing_the_lease_stops_controllers_and_exits_nonzero(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "z", "namespace": namespace}})
    mgr = Manager(client, options(namespace, leader_election=True, leader_election_id="lost"))
    rec = Counting()
    ctrl = mgr.add_controller(Controller("lost", rec, mgr.cache).for_(CONFIGMAPS))
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        await eventually(lambda: "z" in rec.seen)
        lease = await client.get(LEASES, "lost", namespace)
        lease["spec"]["holderIdentity"] = "someone-else"
        await client.replace(LEASES, lease)
        # Renew deadline (2 s) passes without a successful renewal: step down and exit.
        assert await asyncio.wait_for(task, 30) == EXIT_LOST_LEASE
        assert ctrl.queue is None, "controllers stopped"
        assert lease_holder(await client.get(LEASES, "lost", namespace)) == "someone-else", \
            "a leader that lost the lease must not release (overwrite) it"
    finally:
        mgr.stop()
        await asyncio.gather(task, return_exceptions=True)


def lease_holder(lease: dict) -> str | None:
    return lease["spec"].get("holderIdentity")


async def test_events_over_capacity_are_dropped_counted_and_logged(client: Client, namespace: str, caplog) -> None:
    """A burst larger than the queue drops instead of blocking, and says so (metric + log)."""
    objs = [await client.create(CONFIGMAPS, {"metadata": {"name": f"burst-{i}", "namespace": namespace}})
            for i in range(8)]
    rec = EventRecorder(client, queue_size=8, writers=2)  # 4 per writer; not started: nothing drains
    before = metrics.REGISTRY.get_sample_value("events_dropped_total", {"why": "queue_full"}) or 0.0
    with caplog.at_level("WARNING", logger="substratus.runtime.events"):
        for obj in objs:
            for n in range(3):
                rec.event(obj, NORMAL, "Burst", f"event {n}")
    queued = 24 - rec.dropped
    assert 0 < queued <= 8 and rec.dropped >= 16
    after = metrics.REGISTRY.get_sample_value("events_dropped_total", {"why": "queue_full"})
    assert after == before + rec.dropped
    assert any(r.getMessage() == "event dropped" and getattr(r, "why", None) == "queue_full" for r in caplog.records)
    rec.start()
    await rec.stop()  # what was queued is still posted
    events = [e for e in (await client.list(EVENTS, namespace))["items"] if e["reason"] == "Burst"]
    assert len(events) == queued


async def test_the_managers_client_writes_only_while_leading(client: Client, namespace: str) -> None:
    """SPEC §7 fencing, wired: ``mgr.client`` (what controllers write through) refuses every write
    before the first election, passes them while this manager leads, and refuses them again
    after it stepped down; the client it was built from stays unfenced."""
    mgr = Manager(client, options(namespace, leader_election=True, leader_election_id="fenced"))

    def cm(name: str) -> dict:
        return {"metadata": {"name": name, "namespace": namespace}}

    with pytest.raises(NotLeader):
        await mgr.client.create(CONFIGMAPS, cm("before-election"))
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        await eventually(lambda: mgr.elector is not None and mgr.elector.is_leader)
        await mgr.client.create(CONFIGMAPS, cm("while-leading"))
    finally:
        mgr.stop()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
    with pytest.raises(NotLeader):
        await mgr.client.create(CONFIGMAPS, cm("after-release"))
    await client.create(CONFIGMAPS, cm("unfenced"))
    names = {c["metadata"]["name"] for c in (await client.list(CONFIGMAPS, namespace))["items"]}
    assert {"while-leading", "unfenced"} <= names
    assert not names & {"before-election", "after-release"}
