"""The informer cache: one shared informer per resource, however many controllers read it.

Reads (``get``/``list``/``by_index``) never touch the API server; that is what makes a
converged resync cost zero requests.

Our own writes are remembered for a short while (client-go's integer-resourceVersion
``MutationCache``): a reconcile that runs between a status write and the watch event carrying it
— e.g. woken by the ADDED event of the Job it just created — reads the written object instead of
the stale one, so it neither writes the same status again nor records its transitions twice.
An entry lives only until the informer holds that version: the cache listens to its own
informers and drops it on the event carrying it (or a newer one, or the delete), so the map
holds just the writes whose watch events are still in flight, whether or not the object is read
again. Entries whose event never comes (a write filtered out of the informer) expire after
``MUTATION_TTL``, swept from the oldest: O(1) per write however many objects are cached
(docs/operations.md, performance).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections import OrderedDict

import attrs

from substratus.runtime.client import Client
from substratus.runtime.indexer import IndexFunc
from substratus.runtime.informer import Informer, Transform, strip_bulk
from substratus.runtime.resource import Resource, object_key

log = logging.getLogger(__name__)

MUTATION_TTL = 60.0
"""Seconds a written object may stand in for the informer's; the watch delivers it long before."""


def _rv(obj: dict | None) -> int | None:
    """The resourceVersion as an integer (etcd's revision), or None if it is not one."""
    rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


@attrs.define
class _Mutation:
    obj: dict
    rv: int
    expires: float


class _CaughtUp:
    """An informer handler that forgets a mutation once the informer holds its version."""

    def __init__(self, cache: Cache, res: Resource) -> None:
        self._cache = cache
        self._res = res

    def on_add(self, obj: dict) -> None:
        if self._cache._mutations:
            self._cache._caught_up(self._res, obj, deleted=False)

    def on_update(self, old: dict, new: dict) -> None:
        if self._cache._mutations:
            self._cache._caught_up(self._res, new, deleted=False)

    def on_delete(self, obj: dict) -> None:
        if self._cache._mutations:
            self._cache._caught_up(self._res, obj, deleted=True)


class Cache:
    def __init__(self, client: Client, *, namespace: str | None = None, transform: Transform | None = strip_bulk,
                 resync_period: float | None = None, label_selectors: dict[Resource, str] | None = None,
                 transforms: dict[Resource, Transform | None] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        # Cache only what we own of high-volume kinds (e.g. ConfigMaps with our managed-by label).
        self.label_selectors = dict(label_selectors or {})
        self.transform = transform
        # Per kind, instead of ``transform``: keep only what the reconcilers read of that kind
        # (e.g. informer.keep_only("status") for Jobs); None there stores the kind unchanged.
        self.transforms = dict(transforms or {})
        self.resync_period = resync_period
        self._informers: dict[Resource, Informer] = {}
        self._started = False
        # Oldest write first (a rewrite of the same object moves to the end): expired entries are
        # always at the front.
        self._mutations: OrderedDict[tuple[Resource, str], _Mutation] = OrderedDict()

    def informer(self, res: Resource) -> Informer:
        """The shared informer for ``res``, created on first use and started if the cache runs."""
        inf = self._informers.get(res)
        if inf is None:
            inf = Informer(self.client, res, namespace=self.namespace if res.namespaced else None,
                           label_selector=self.label_selectors.get(res), transform=self.transform_for(res),
                           resync_period=self.resync_period)
            self._informers[res] = inf
            inf.add_handler(_CaughtUp(self, res))
            if self._started:
                inf.start()
        return inf

    def transform_for(self, res: Resource) -> Transform | None:
        """What is applied to every object of ``res`` before it is cached."""
        return self.transforms[res] if res in self.transforms else self.transform

    @property
    def informers(self) -> builtins.list[Informer]:
        return list(self._informers.values())

    def add_index(self, res: Resource, name: str, fn: IndexFunc) -> None:
        self.informer(res).add_indexer(name, fn)

    def start(self) -> None:
        self._started = True
        for inf in self._informers.values():
            inf.start()

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(inf.stop() for inf in self._informers.values()))

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        results = await asyncio.gather(*(inf.wait_for_sync(timeout) for inf in self._informers.values()))
        return all(results)

    @property
    def synced(self) -> bool:
        return all(inf.has_synced for inf in self._informers.values())

    # --- reads --------------------------------------------------------------------------------

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict | None:
        key = f"{namespace}/{name}" if namespace and res.namespaced else name
        cached = self.informer(res).store.get(key)
        if not self._mutations:
            return cached
        m = self._mutations.get((res, key))
        if m is None:
            return cached
        cached_rv = _rv(cached)
        if cached is None or cached_rv is None or cached_rv >= m.rv or time.monotonic() > m.expires:
            # The watch caught up (or the object is gone, or the entry is stale): the informer wins.
            del self._mutations[(res, key)]
            return cached
        return m.obj

    def mutated(self, res: Resource, obj: dict) -> None:
        """Remember an object as the API server returned it from our write, until the informer
        holds that resourceVersion or a newer one. Only reads by name see it; lists and indexes
        stay the informer's."""
        rv = _rv(obj)
        if rv is None:
            return
        key = object_key(obj)
        cached = self.informer(res).store.get(key)
        cached_rv = _rv(cached)
        if cached is None or cached_rv is None or cached_rv >= rv:
            return
        now = time.monotonic()
        mutations = self._mutations
        while mutations and next(iter(mutations.values())).expires <= now:
            mutations.popitem(last=False)
        transform = self.transform_for(res)
        mutations.pop((res, key), None)  # re-inserted last: the map's order is the order of expiry
        mutations[(res, key)] = _Mutation(transform(obj) if transform else obj, rv, now + MUTATION_TTL)

    def _caught_up(self, res: Resource, obj: dict, *, deleted: bool) -> None:
        """The informer now holds ``obj`` (or deleted it): a mutation it supersedes is dropped."""
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        ns = meta.get("namespace")
        k = (res, f"{ns}/{name}" if ns else name)
        m = self._mutations.get(k)
        if m is None:
            return
        rv = _rv(obj)
        if deleted or rv is None or rv >= m.rv:
            del self._mutations[k]

    @property
    def pending_mutations(self) -> int:
        """How many written objects are read from the mutation map (their watch event pending)."""
        return len(self._mutations)

    def list(self, res: Resource, namespace: str | None = None) -> builtins.list[dict]:
        return self.informer(res).store.list(namespace)

    def by_index(self, res: Resource, index: str, value: str) -> builtins.list[dict]:
        return self.informer(res).store.by_index(index, value)
