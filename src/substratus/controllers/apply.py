"""Apply the difference between a desired child and the cached one — and nothing else.

A converged reconcile must issue zero writes, so every child is compared first: the hash
annotation says whether what we rendered changed, and for mutable kinds a subset check also
catches drift someone introduced by hand. Only then do we create, server-side apply, or — for
kinds whose spec is immutable (Jobs, Pods) — delete so the next pass recreates it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from substratus.controllers.diff import HASH_ANNOTATION, is_subset
from substratus.runtime.cache import Cache
from substratus.runtime.client import AlreadyExists, ApiError, Client, NotFound
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)


class Action(enum.Enum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"  # an immutable child with an outdated spec; recreated on a later pass


def _hash_of(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)


def _drifted(desired: dict[str, Any], actual: dict[str, Any]) -> bool:
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    meta = desired.get("metadata") or {}
    wanted_meta = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return not (is_subset(body, actual) and is_subset(wanted_meta, actual.get("metadata") or {}))


class Applier:
    def __init__(self, client: Client, cache: Cache) -> None:
        self.client = client
        self.cache = cache

    async def ensure(self, res: Resource, desired: dict[str, Any], *, immutable: bool = False,
                     ) -> tuple[dict[str, Any] | None, Action]:
        """Make the child match ``desired``; returns the child as now known and what was done.

        An API error leaves with a note naming the child ("applying Deployment ns/x"), which the
        status shows when a pass keeps failing."""
        meta = desired["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        try:
            actual = self.cache.get(res, name, ns)
            if actual is None:
                try:
                    if immutable:
                        created = await self.client.create(res, desired, ns)
                    else:
                        # Server-side apply from the first write on, so one field manager owns every
                        # field we set and a later apply can remove what we no longer render.
                        created = await self.client.apply(res, desired)
                    log.info("created child", extra={"childKind": res.kind, "childName": name})
                    return created, Action.CREATED
                except AlreadyExists:
                    # Our cache is behind the server: compare against the real thing.
                    actual = await self.client.get_or_none(res, name, ns)
                    if actual is None:
                        raise
            if (actual.get("metadata") or {}).get("deletionTimestamp"):
                return actual, Action.DELETED  # on its way out; the delete event brings us back
            same_hash = _hash_of(actual) == _hash_of(desired)
            if immutable:
                if same_hash:
                    return actual, Action.UNCHANGED
                await self.client.delete(res, name, ns, propagation_policy="Background",
                                         uid=(actual.get("metadata") or {}).get("uid"))
                log.info("deleted outdated child (spec is immutable; recreated next pass)",
                         extra={"childKind": res.kind, "childName": name})
                return None, Action.DELETED
            if same_hash and not _drifted(desired, actual):
                return actual, Action.UNCHANGED
            applied = await self.client.apply(res, desired)
            log.info("updated child", extra={"childKind": res.kind, "childName": name})
            return applied, Action.UPDATED
        except ApiError as exc:
            exc.add_note(f"applying {res.kind} {ns}/{name}")
            raise

    async def ensure_all(self, *children: tuple[Resource, dict[str, Any], bool],
                         ) -> list[tuple[dict[str, Any] | None, Action]]:
        """:meth:`ensure` for several independent children ``(resource, desired, immutable)`` at
        once: one round trip's wait instead of one per child. Results are in the given order.

        Every child is attempted even if another fails; the first failure (in the given order)
        is then raised, so a reconcile fails exactly as it would have serially, with the rest done.
        Only for children that do not read each other (a Job may be created before the
        ConfigMap it mounts: the kubelet waits for the volume's source to exist)."""
        results = await asyncio.gather(*(self.ensure(res, desired, immutable=immutable)
                                         for res, desired, immutable in children), return_exceptions=True)
        out: list[tuple[dict[str, Any] | None, Action]] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            out.append(r)
        return out

    async def delete(self, res: Resource, name: str, namespace: str) -> bool:
        """Delete a child if the cache still has it; True when a delete was issued."""
        actual = self.cache.get(res, name, namespace)
        if actual is None or (actual.get("metadata") or {}).get("deletionTimestamp"):
            return False
        try:
            await self.client.delete(res, name, namespace, propagation_policy="Background",
                                     uid=(actual.get("metadata") or {}).get("uid"))
        except NotFound:
            return False
        log.info("deleted child", extra={"childKind": res.kind, "childName": name})
        return True
