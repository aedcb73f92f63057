"""The cache reads our own writes back until the watch delivers them (client-go's
integer-resourceVersion MutationCache), and the informer wins as soon as it catches up."""

from __future__ import annotations

import time

from substratus.runtime import cache as cache_module
from substratus.runtime.cache import Cache
from substratus.runtime.client import Client
from substratus.runtime.resource import CONFIGMAPS


def cm(name: str, ns: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"v": value}}


async def test_own_write_is_read_back_until_the_informer_has_it(client: Client, namespace: str) -> None:
    # The informer is not started: its store holds only what we put there, which stands for a
    # watch that has not delivered our write yet.
    cache = Cache(client, namespace=namespace)
    store = cache.informer(CONFIGMAPS).store
    v1 = await client.create(CONFIGMAPS, cm("a", namespace, "1"), namespace)
    store.upsert(v1)
    v2 = await client.patch(CONFIGMAPS, "a", {"data": {"v": "2"}}, namespace)
    assert cache.get(CONFIGMAPS, "a", namespace)["data"]["v"] == "1"  # the stale read this fixes

    cache.mutated(CONFIGMAPS, v2)
    got = cache.get(CONFIGMAPS, "a", namespace)
    assert got["data"]["v"] == "2"
    assert "managedFields" not in got["metadata"], "the cache's transform applies to written objects too"
    assert [o["data"]["v"] for o in cache.list(CONFIGMAPS, namespace)] == ["1"], "lists stay the informer's"

    # The watch delivers a newer version (someone else's write after ours): the informer wins.
    v3 = await client.patch(CONFIGMAPS, "a", {"data": {"v": "3"}}, namespace)
    store.upsert(v3)
    assert cache.get(CONFIGMAPS, "a", namespace)["data"]["v"] == "3"
    # ... and stays the source once it has caught up: an older written copy is ignored.
    cache.mutated(CONFIGMAPS, v2)
    assert cache.get(CONFIGMAPS, "a", namespace)["data"]["v"] == "3"


async def test_a_written_copy_expires_and_never_resurrects_a_delete(client: Client, namespace: str,
                                                                     monkeypatch) -> None:
    cache = Cache(client, namespace=namespace)
    store = cache.informer(CONFIGMAPS).store
    v1 = await client.create(CONFIGMAPS, cm("b", namespace, "1"), namespace)
    store.upsert(v1)
    v2 = await client.patch(CONFIGMAPS, "b", {"data": {"v": "2"}}, namespace)
    cache.mutated(CONFIGMAPS, v2)
    now = time.monotonic()
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now + cache_module.MUTATION_TTL + 1)
    assert cache.get(CONFIGMAPS, "b", namespace)["data"]["v"] == "1"
    monkeypatch.undo()

    cache.mutated(CONFIGMAPS, v2)
    store.delete(f"{namespace}/b")  # the watch says it is gone
    assert cache.get(CONFIGMAPS, "b", namespace) is None


async def test_a_written_copy_is_forgotten_once_the_informer_has_it_even_if_never_read(
        client: Client, namespace: str) -> None:
    # The map must hold only writes whose watch event is still on its way. Before, an entry left
    # only when its object was read again (or swept once the map held 4,096 entries, rebuilding it
    # on every write after that): a converged object is never read again, so at scale every write
    # paid for a sweep of thousands of entries.
    cache = Cache(client, namespace=namespace)
    store = cache.informer(CONFIGMAPS).store
    v1 = await client.create(CONFIGMAPS, cm("c", namespace, "1"), namespace)
    store.upsert(v1)
    gone = await client.create(CONFIGMAPS, cm("d", namespace, "1"), namespace)
    store.upsert(gone)
    v2 = await client.patch(CONFIGMAPS, "c", {"data": {"v": "2"}}, namespace)
    cache.mutated(CONFIGMAPS, v2)
    d2 = await client.patch(CONFIGMAPS, "d", {"data": {"v": "2"}}, namespace)
    cache.mutated(CONFIGMAPS, d2)
    await client.delete(CONFIGMAPS, "d", namespace)
    assert cache.pending_mutations == 2

    cache.start()  # the informer lists: v2 of "c" arrives, "d" is gone
    try:
        assert await cache.wait_for_sync(30)
        assert cache.pending_mutations == 0, "caught-up writes stay in the mutation map"
        assert cache.get(CONFIGMAPS, "c", namespace)["data"]["v"] == "2"
        assert cache.get(CONFIGMAPS, "d", namespace) is None
    finally:
        await cache.stop()


async def test_expired_written_copies_are_swept_by_the_next_write_without_reads(
        client: Client, namespace: str, monkeypatch) -> None:
    cache = Cache(client, namespace=namespace)
    store = cache.informer(CONFIGMAPS).store
    written = []
    for name in ("e", "f", "g"):
        store.upsert(await client.create(CONFIGMAPS, cm(name, namespace, "1"), namespace))
        written.append(await client.patch(CONFIGMAPS, name, {"data": {"v": "2"}}, namespace))
    cache.mutated(CONFIGMAPS, written[0])
    cache.mutated(CONFIGMAPS, written[1])
    now = time.monotonic()
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now + cache_module.MUTATION_TTL + 1)
    cache.mutated(CONFIGMAPS, written[2])
    assert cache.pending_mutations == 1, "expired entries outlive the next write"
    assert cache.get(CONFIGMAPS, "g", namespace)["data"]["v"] == "2"
