"""The informer and cache against the real local kube-apiserver."""

from __future__ import annotations

import asyncio

import pytest

from substratus.runtime.client import Client, Gone
from substratus.runtime.informer import Informer
from substratus.runtime.resource import CONFIGMAPS
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def on_add(self, obj: dict) -> None:
        self.events.append(("add", obj["metadata"]["name"], obj))

    def on_update(self, old: dict, new: dict) -> None:
        self.events.append(("update", new["metadata"]["name"], new))

    def on_delete(self, obj: dict) -> None:
        self.events.append(("delete", obj["metadata"]["name"], obj))

    def names(self, kind: str) -> set[str]:
        return {n for k, n, _ in self.events if k == kind}


def cm(name: str, namespace: str, **data: str) -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data}


async def test_list_then_watch_sees_every_change(client: Client, namespace: str) -> None:
    for i in range(5):
        await client.create(CONFIGMAPS, cm(f"pre-{i}", namespace, i=str(i)))
    inf = Informer(client, CONFIGMAPS, namespace=namespace, page_size=2)  # forces pagination
    rec = Recorder()
    inf.add_handler(rec)
    inf.start()
    try:
        assert await inf.wait_for_sync(30)
        assert rec.names("add") == {f"pre-{i}" for i in range(5)}
        assert len(inf.store) == 5
        await client.create(CONFIGMAPS, cm("new", namespace))
        await client.patch(CONFIGMAPS, "pre-0", {"data": {"i": "changed"}}, namespace)
        await client.delete(CONFIGMAPS, "pre-1", namespace)
        await eventually(lambda: "new" in rec.names("add") and "pre-0" in rec.names("update")
                         and "pre-1" in rec.names("delete"))
        assert inf.store.get(f"{namespace}/pre-0")["data"] == {"i": "changed"}
        assert inf.store.get(f"{namespace}/pre-1") is None
        # List items get apiVersion/kind filled in like watch events have them.
        assert inf.store.get(f"{namespace}/pre-2")["kind"] == "ConfigMap"
        # managedFields are stripped before caching.
        assert "managedFields" not in inf.store.get(f"{namespace}/new")["metadata"]
    finally:
        await inf.stop()


async def test_handler_added_after_sync_hears_existing_objects(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, cm("a", namespace))
    inf = Informer(client, CONFIGMAPS, namespace=namespace)
    inf.start()
    try:
        assert await inf.wait_for_sync(30)
        rec = Recorder()
        inf.add_handler(rec)
        assert rec.names("add") == {"a"}
    finally:
        await inf.stop()


async def test_compaction_gap_relists_and_emits_missed_deletes(client: Client, namespace: str,
                                                              local_controlplane) -> None:
    for name in ("keep", "gone", "changed"):
        await client.create(CONFIGMAPS, cm(name, namespace, v="1"))
    inf = Informer(client, CONFIGMAPS, namespace=namespace)
    rec = Recorder()
    inf.add_handler(rec)
    inf.start()
    assert await inf.wait_for_sync(30)
    relists_before = inf.relists
    stale_rv = inf.resource_version
    await inf.stop()  # the watch is down: what happens now is a gap

    await client.delete(CONFIGMAPS, "gone", namespace)
    await client.patch(CONFIGMAPS, "changed", {"data": {"v": "2"}}, namespace)
    await client.create(CONFIGMAPS, cm("born", namespace))
    # Enough churn elsewhere that the server's watch cache no longer reaches back to stale_rv.
    for i in range(120):
        await client.patch(CONFIGMAPS, "keep", {"data": {"n": str(i)}}, namespace)
    local_controlplane.compact()

    # A watch from the stale version is refused with 410 Gone…
    with pytest.raises(Gone):
        async for _ in client.watch(CONFIGMAPS, namespace, resource_version=stale_rv, timeout_seconds=5):
            pass

    # …and the informer, resuming from it, relists and reports exactly what it missed.
    rec.events.clear()
    inf.start()
    try:
        await eventually(lambda: inf.relists > relists_before and "gone" in rec.names("delete"))
        deleted = [o for k, n, o in rec.events if k == "delete" and n == "gone"]
        assert deleted[0]["data"] == {"v": "1"}, "delete carries the last object we knew"
        assert "born" in rec.names("add")
        assert "changed" in rec.names("update")
        assert inf.store.get(f"{namespace}/changed")["data"] == {"v": "2"}
        assert "gone" not in rec.names("add")
    finally:
        await inf.stop()


async def test_informer_survives_apiserver_restart(client: Client, namespace: str, local_controlplane) -> None:
    inf = Informer(client, CONFIGMAPS, namespace=namespace)
    rec = Recorder()
    inf.add_handler(rec)
    inf.start()
    try:
        assert await inf.wait_for_sync(30)
        await asyncio.to_thread(local_controlplane.restart_apiserver)
        await eventually(lambda: _create_quietly(client, cm("after-restart", namespace)), timeout=60)
        await eventually(lambda: "after-restart" in rec.names("add"), timeout=60)
        assert not inf._task.done()
    finally:
        await inf.stop()


async def _create_quietly(client: Client, obj: dict) -> bool:
    try:
        await client.create(CONFIGMAPS, obj)
        return True
    except Exception:
        return False
