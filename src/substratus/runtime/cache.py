"""The informer cache: one shared informer per resource, however many controllers read it.

Reads (``get``/``list``/``by_index``) never touch the API server; that is what makes a
converged resync cost zero requests.
"""

from __future__ import annotations

import asyncio
import builtins
import logging

from substratus.runtime.client import Client
from substratus.runtime.indexer import IndexFunc
from substratus.runtime.informer import Informer, Transform, strip_bulk
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)


class Cache:
    def __init__(self, client: Client, *, namespace: str | None = None, transform: Transform | None = strip_bulk,
                 resync_period: float | None = None, label_selectors: dict[Resource, str] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        # Cache only what we own of high-volume kinds (e.g. ConfigMaps with our managed-by label).
        self.label_selectors = dict(label_selectors or {})
        self.transform = transform
        self.resync_period = resync_period
        self._informers: dict[Resource, Informer] = {}
        self._started = False

    def informer(self, res: Resource) -> Informer:
        """The shared informer for ``res``, created on first use and started if the cache runs."""
        inf = self._informers.get(res)
        if inf is None:
            inf = Informer(self.client, res, namespace=self.namespace if res.namespaced else None,
                           label_selector=self.label_selectors.get(res), transform=self.transform,
                           resync_period=self.resync_period)
            self._informers[res] = inf
            if self._started:
                inf.start()
        return inf

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
        return self.informer(res).store.get(key)

    def list(self, res: Resource, namespace: str | None = None) -> builtins.list[dict]:
        return self.informer(res).store.list(namespace)

    def by_index(self, res: Resource, index: str, value: str) -> builtins.list[dict]:
        return self.informer(res).store.by_index(index, value)
