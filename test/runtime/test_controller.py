"""Controllers against the real local kube-apiserver: sources, owner mapping, result semantics."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from substratus.runtime import metrics
from substratus.runtime.cache import Cache
from substratus.runtime.client import Client, NotFound
from substratus.runtime.controller import Controller
from substratus.runtime.ratelimiter import ItemExponentialFailureRateLimiter
from substratus.runtime.reconcile import Request, Result, TerminalError
from substratus.runtime.resource import CONFIGMAPS, SECRETS
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane


def sample(metric: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(metric, labels) or 0.0


class Scripted:
    """A reconciler whose answer per object name is scripted by the test."""

    def __init__(self, script: dict[str, list] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.script = script or {}
        self.in_flight: set[Request] = set()
        self.overlap = False

    async def reconcile(self, request: Request) -> Result:
        if request in self.in_flight:
            self.overlap = True
        self.in_flight.add(request)
        try:
            self.calls[request.name] += 1
            await asyncio.sleep(0.01)
            steps = self.script.get(request.name)
            step = steps.pop(0) if steps else Result()
            if isinstance(step, BaseException):
                raise step
            return step
        finally:
            self.in_flight.discard(request)


@pytest.fixture
async def cache(client: Client, namespace: str):
    c = Cache(client, namespace=namespace)
    yield c
    await c.stop()


async def start(ctrl: Controller, cache: Cache) -> None:
    cache.start()
    assert await cache.wait_for_sync(30)
    await ctrl.start()


async def test_owned_child_change_wakes_its_owner(client: Client, namespace: str, cache: Cache) -> None:
    parent = await client.create(CONFIGMAPS, {"metadata": {"name": "parent", "namespace": namespace}})
    rec = Scripted()
    ctrl = Controller("owner-test", rec, cache).for_(CONFIGMAPS).owns(SECRETS)
    await start(ctrl, cache)
    try:
        await eventually(lambda: rec.calls["parent"] >= 1)
        before = rec.calls["parent"]
        await client.create(SECRETS, {
            "metadata": {"name": "child", "namespace": namespace, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}]},
            "stringData": {"k": "v"}})
        # A secret owned by something else (not controller) must not map.
        await client.create(SECRETS, {"metadata": {"name": "stray", "namespace": namespace}})
        await eventually(lambda: rec.calls["parent"] > before)
        await asyncio.sleep(0.3)
        assert "child" not in rec.calls and "stray" not in rec.calls
    finally:
        await ctrl.stop()


async def test_result_semantics_and_metrics(client: Client, namespace: str, cache: Cache) -> None:
    name = "semantics"
    rec = Scripted({
        "flaky": [ConnectionError("transient"), ConnectionError("transient"), Result()],
        "later": [Result(requeue_after=0.3), Result()],
        "bad": [TerminalError("spec can never work")],
        "bug": [KeyError("oops"), Result()],
    })
    ctrl = Controller(name, rec, cache, max_concurrent_reconciles=4,
                      rate_limiter=lambda: ItemExponentialFailureRateLimiter(0.05, 1.0)).for_(CONFIGMAPS)
    errors0 = sample("controller_runtime_reconcile_errors_total", controller=name)
    for n in ("flaky", "later", "bad", "bug"):
        await client.create(CONFIGMAPS, {"metadata": {"name": n, "namespace": namespace}})
    await start(ctrl, cache)
    try:
        await eventually(lambda: rec.calls["flaky"] == 3 and rec.calls["later"] == 2 and rec.calls["bug"] == 2)
        await asyncio.sleep(0.5)
        assert rec.calls["bad"] == 1, "a terminal error is never retried"
        assert rec.calls["flaky"] == 3, "success forgets: no further retries"
        assert sample("controller_runtime_reconcile_errors_total", controller=name) - errors0 == 4
        assert sample("controller_runtime_terminal_reconcile_errors_total", controller=name) == 1
        assert sample("controller_runtime_reconcile_panics_total", controller=name) == 1
        assert sample("controller_runtime_reconcile_total", controller=name, result="requeue_after") == 1
        # client-go counts every add_after as a retry: 2 flaky + 1 bug + 1 requeue_after.
        assert sample("workqueue_retries_total", name=name, controller=name) == 4
        assert sample("controller_runtime_max_concurrent_reconciles", controller=name) == 4
        assert not rec.overlap, "one object is never reconciled by two workers at once"
    finally:
        await ctrl.stop()


async def test_watches_maps_any_kind_through_a_function(client: Client, namespace: str, cache: Cache) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "consumer", "namespace": namespace}})
    rec = Scripted()

    def by_label(obj: dict):
        target = (obj["metadata"].get("labels") or {}).get("wakes")
        return [Request(obj["metadata"]["namespace"], target)] if target else []

    ctrl = Controller("map-test", rec, cache).for_(CONFIGMAPS).watches(SECRETS, by_label)
    await start(ctrl, cache)
    try:
        await eventually(lambda: rec.calls["consumer"] == 1)
        await client.create(SECRETS, {"metadata": {"name": "dep", "namespace": namespace,
                                                   "labels": {"wakes": "consumer"}}})
        await eventually(lambda: rec.calls["consumer"] == 2)
        # Moving the reference away wakes the old target too (both sides of an update).
        await client.patch(SECRETS, "dep", {"metadata": {"labels": {"wakes": "other"}}}, namespace)
        await eventually(lambda: rec.calls["consumer"] == 3 and rec.calls["other"] == 1)
    finally:
        await ctrl.stop()


async def test_stop_drains_in_flight_reconciles(client: Client, namespace: str, cache: Cache) -> None:
    finished: list[str] = []
    started = asyncio.Event()

    class Slow:
        async def reconcile(self, request: Request) -> Result:
            started.set()
            await asyncio.sleep(0.5)
            finished.append(request.name)
            return Result()

    await client.create(CONFIGMAPS, {"metadata": {"name": "slow", "namespace": namespace}})
    ctrl = Controller("drain-test", Slow(), cache).for_(CONFIGMAPS)
    await start(ctrl, cache)
    await asyncio.wait_for(started.wait(), 30)
    await ctrl.stop(drain=True)
    assert finished == ["slow"]


async def test_client_errors_are_typed(client: Client, namespace: str) -> None:
    with pytest.raises(NotFound):
        await client.get(CONFIGMAPS, "missing", namespace)
    assert await client.delete(CONFIGMAPS, "missing", namespace) is None
