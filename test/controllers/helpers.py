"""Small readers shared by the reconciler tests."""

from __future__ import annotations

from typing import Any

from substratus.runtime import metrics
from substratus.runtime.client import Client
from substratus.runtime.resource import EVENTS, Resource
from substratus.testing.wait import eventually

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


async def get_obj(client: Client, res: Resource, name: str, ns: str) -> dict[str, Any] | None:
    return await client.get_or_none(res, name, ns)


def metric_writes(methods: tuple[str, ...] | None = WRITE_METHODS) -> float:
    """Every write request (or, with ``methods=None``, every request) this process has sent to
    any API server, by client-go's request metric."""
    total = 0.0
    for family in metrics.REGISTRY.collect():
        if family.name != "rest_client_requests":
            continue
        for s in family.samples:
            if s.name == "rest_client_requests_total" and (methods is None or s.labels.get("method") in methods):
                total += s.value
    return total


async def ready(client: Client, res: Resource, name: str, ns: str) -> dict[str, Any] | None:
    obj = await client.get_or_none(res, name, ns)
    return obj if obj and (obj.get("status") or {}).get("ready") else None


async def gone(client: Client, res: Resource, name: str, ns: str) -> bool:
    return await client.get_or_none(res, name, ns) is None


async def event_reasons(client: Client, ns: str, name: str) -> set[str]:
    events = (await client.list(EVENTS, ns))["items"]
    return {e["reason"] for e in events if e["involvedObject"]["name"] == name}


def queues_idle(operator: Any) -> bool:
    return all(c.queue is not None and c.queue.idle() for c in operator.manager.controllers)


async def settled(operator: Any) -> None:
    """Work queues idle and the Events of the last transitions written (they are asynchronous)."""
    await eventually(lambda: queues_idle(operator), timeout=10)
    await operator.manager.recorder.flush(10)


async def writes_on_resync(operator: Any) -> float:
    """API writes caused by re-delivering every cached object to the controllers, as a resync
    period or a restart would, counted once the operator has settled before and after."""
    await settled(operator)
    before = metric_writes()
    for inf in operator.manager.cache.informers:
        inf.resync()
    await settled(operator)
    return metric_writes() - before


async def create_secret(client: Client, ns: str, name: str = "hf", **data: str) -> None:
    """A Secret a workload's ``${{ secrets.NAME.KEY }}`` names: without it, the kubelet (and the
    simulator) keeps the Pod in CreateContainerConfigError, as on a real cluster."""
    import base64

    from substratus.runtime.resource import SECRETS

    await client.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                                  "data": {k: base64.b64encode(v.encode()).decode()
                                           for k, v in (data or {"token": "t0ken"}).items()}}, ns)


async def requests_on_resync(operator: Any) -> float:
    """As :func:`writes_on_resync`, counting reads (GET, LIST) too: what a converged reconcile
    costs the API server (it should read only the cache)."""
    await settled(operator)
    before = metric_writes(None)
    for inf in operator.manager.cache.informers:
        inf.resync()
    await settled(operator)
    return metric_writes(None) - before
