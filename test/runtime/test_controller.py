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


# --- the echo of a reconcile's own writes ---------------------------------------------------------


class Writer:
    """Converges each parent ConfigMap to: an owned Secret ``<name>-child`` holding ``k=v``, and
    the annotation ``observed=yes`` on the parent — writes whose watch echo comes back to it.
    The first reconcile of a name in ``fail_after_write`` raises after writing."""

    def __init__(self, client: Client, cache: Cache, namespace: str) -> None:
        self.client, self.cache, self.ns = client, cache, namespace
        self.calls: Counter[str] = Counter()
        self.fail_after_write: set[str] = set()

    async def reconcile(self, request: Request) -> Result:
        self.calls[request.name] += 1
        parent = self.cache.get(CONFIGMAPS, request.name, self.ns)
        if parent is None or "wakes" in (parent["metadata"].get("labels") or {}):
            return Result()
        child_name = f"{request.name}-child"
        child = self.cache.get(SECRETS, child_name, self.ns)
        want = {"k": "dg=="}  # base64 of "v"
        if child is None:
            await self.client.create(SECRETS, {
                "metadata": {"name": child_name, "namespace": self.ns, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": request.name,
                    "uid": parent["metadata"]["uid"], "controller": True}]},
                "data": want})
        elif child.get("data") != want:
            await self.client.patch(SECRETS, child_name, {"data": {"k": want["k"], "extra": None}}, self.ns)
        if (parent["metadata"].get("annotations") or {}).get("observed") != "yes":
            await self.client.patch(CONFIGMAPS, request.name, {"metadata": {"annotations": {"observed": "yes"}}},
                                    self.ns)
        if request.name in self.fail_after_write:
            self.fail_after_write.discard(request.name)
            raise ConnectionError("failed after writing")
        return Result()


def reconciles(name: str) -> float:
    """What a user reads on /metrics: every finished reconcile of controller ``name``."""
    return sum(sample("controller_runtime_reconcile_total", controller=name, result=r)
               for r in ("success", "error", "requeue", "requeue_after"))


async def converged(client: Client, namespace: str, name: str) -> bool:
    parent = await client.get(CONFIGMAPS, name, namespace)
    child = await client.get_or_none(SECRETS, f"{name}-child", namespace)
    return ((parent["metadata"].get("annotations") or {}).get("observed") == "yes"
            and child is not None and child.get("data") == {"k": "dg=="})


async def quiet(ctrl: Controller, seconds: float = 1.0) -> None:
    """The queue stays empty with no reconcile running for ``seconds`` (echoes have arrived)."""
    assert ctrl.queue is not None
    await eventually(lambda: ctrl.queue.idle(), timeout=10)
    await asyncio.sleep(seconds)
    await eventually(lambda: ctrl.queue.idle(), timeout=10)


async def test_own_writes_echo_does_not_wake_the_writer(client: Client, namespace: str, cache: Cache) -> None:
    """One reconcile per object: it creates a child and patches its own object, and the watch
    echoes of both (exactly the versions it wrote) wake nobody."""
    name = "own-writes"
    rec = Writer(client, cache, namespace)
    ctrl = Controller(name, rec, cache, max_concurrent_reconciles=4).for_(CONFIGMAPS).owns(SECRETS)
    await start(ctrl, cache)
    try:
        before = reconciles(name)
        names = [f"p{i}" for i in range(6)]
        for n in names:
            await client.create(CONFIGMAPS, {"metadata": {"name": n, "namespace": namespace}})
        for n in names:
            await eventually(lambda n=n: converged(client, namespace, n))
        await quiet(ctrl)
        assert reconciles(name) - before == len(names), dict(rec.calls)
        assert all(rec.calls[n] == 1 for n in names), dict(rec.calls)
        assert len(ctrl.own_writes) == 0, "every echo seen: nothing remembered"
    finally:
        await ctrl.stop()


async def test_change_by_another_client_still_wakes_and_is_repaired(client: Client, namespace: str,
                                                                    cache: Cache) -> None:
    name = "own-writes-drift"
    rec = Writer(client, cache, namespace)
    ctrl = Controller(name, rec, cache).for_(CONFIGMAPS).owns(SECRETS)
    await start(ctrl, cache)
    try:
        await client.create(CONFIGMAPS, {"metadata": {"name": "d", "namespace": namespace}})
        await eventually(lambda: converged(client, namespace, "d"))
        await quiet(ctrl)
        assert rec.calls["d"] == 1
        # Someone edits the child: a version we did not write. It wakes the owner, which repairs it.
        await client.patch(SECRETS, "d-child", {"data": {"k": "aGFuZA==", "extra": "eA=="}}, namespace)
        await eventually(lambda: converged(client, namespace, "d"))
        await quiet(ctrl)
        assert rec.calls["d"] == 2, "the edit wakes it once; the repair's own echo does not"
        # Someone edits the parent (not a field we write): it still wakes the parent.
        await client.patch(CONFIGMAPS, "d", {"data": {"user": "edit"}}, namespace)
        await eventually(lambda: rec.calls["d"] == 3)
        # A DELETE of the child always wakes the owner, which recreates it.
        await client.delete(SECRETS, "d-child", namespace)
        await eventually(lambda: converged(client, namespace, "d"))
        await quiet(ctrl)
        assert rec.calls["d"] == 4
    finally:
        await ctrl.stop()


async def test_own_writes_still_wake_dependents_resync_and_retries(client: Client, namespace: str,
                                                                   cache: Cache) -> None:
    """Only the writer is spared its echo: another request the same event maps to is woken, a
    resync reconciles everything, and a reconcile that wrote and then failed runs again."""
    name = "own-writes-others"
    rec = Writer(client, cache, namespace)
    rec.fail_after_write.add("fails")

    def watcher_of(obj: dict):
        # Every parent's change concerns the "watcher" object too (a dependent, as through an index).
        if "wakes" in (obj["metadata"].get("labels") or {}):
            return []
        return [Request(obj["metadata"]["namespace"], "watcher")]

    ctrl = (Controller(name, rec, cache, rate_limiter=lambda: ItemExponentialFailureRateLimiter(0.05, 1.0))
            .for_(CONFIGMAPS).owns(SECRETS).watches(CONFIGMAPS, watcher_of))
    await client.create(CONFIGMAPS, {"metadata": {"name": "watcher", "namespace": namespace,
                                                  "labels": {"wakes": "no"}}})
    await start(ctrl, cache)
    try:
        await eventually(lambda: rec.calls["watcher"] >= 1)
        await quiet(ctrl)
        watcher0 = rec.calls["watcher"]
        await client.create(CONFIGMAPS, {"metadata": {"name": "w", "namespace": namespace}})
        await eventually(lambda: converged(client, namespace, "w"))
        await quiet(ctrl)
        assert rec.calls["w"] == 1
        # The ADDED event and the echo of w's annotation patch both concern the watcher.
        assert rec.calls["watcher"] >= watcher0 + 1

        await client.create(CONFIGMAPS, {"metadata": {"name": "fails", "namespace": namespace}})
        await eventually(lambda: converged(client, namespace, "fails"))
        await quiet(ctrl)
        assert rec.calls["fails"] == 2, "wrote, failed, retried once by the rate limiter; echoes wake nobody"

        counts = dict(rec.calls)
        for inf in cache.informers:
            inf.resync()
        await quiet(ctrl)
        assert all(rec.calls[n] > counts[n] for n in ("w", "fails", "watcher")), "a resync reconciles everything"
    finally:
        await ctrl.stop()
