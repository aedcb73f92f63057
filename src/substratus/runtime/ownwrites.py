"""A controller's memory of its own writes, so that the watch echo of a write does not wake the
reconcile that made it.

A reconcile that creates or applies a child, or patches its object's status, gets the object back
as stored, with the resourceVersion the write produced, and has already acted on it. The watch
then delivers exactly that version (ADDED for a new child, MODIFIED for a status patch); mapped
back to the same request it would run a second reconcile with nothing new to read — the second
of the two reconciles per Dataset that docs/benchmarks.md counted before this.

So every write made inside a reconcile is recorded as ``(resource, namespace/name) →
(resourceVersion, request)`` for the controller running it (a context variable the controller
sets around each reconcile; the client reports every successful create/replace/patch/apply), and
the controller drops *that request only*, from *one live watch event* carrying *exactly that
version*. Everything else still enqueues: a change by anyone else (another version: every write
is its own watch event), a DELETE, the list/relist/resync replays (a relist's diff can fold
someone else's change into the version we wrote), other requests the same event maps to
(dependents), other controllers. And only while the reconcile that wrote is the request's
latest: once another reconcile of the same request starts, it may have read the cache before
the echo arrived, so the echo wakes it as before. An echo can also arrive before the answer to
the write that caused it (two connections): live events for a request whose reconcile is
running are held until it ends and then matched against what it wrote; any that is not its own
echo enqueues it again, as the work queue's dirty mark would have. A reconcile that wrote and then failed or
asked for a requeue comes back through the queue as before: its retry never depended on the
echo. The contract for reconcilers: act on what a write returns (or come back with ``requeue``),
never count on being woken by the echo of your own write.

Prior art, same idea at other grain: kube-controller-manager's ``ControllerExpectations`` (a
ReplicaSet sync waits until its own Pod creations are observed, instead of reacting to each)
and controller-runtime's update predicates (``GenerationChangedPredicate`` drops every
status-only update, which would also drop someone else's status change: too coarse here).

Memory: an entry is forgotten when its echo (or a newer version, or a DELETE) of the object is
seen or the same request is reconciled again, and writes of kinds the controller does not watch
are never recorded; a hard cap drops the oldest entries (e.g. a write filtered out of the
informer by a label selector, never echoed), at the price of at most one extra reconcile each.
"""

from __future__ import annotations

import contextvars
from typing import Any

from substratus.runtime.reconcile import Request
from substratus.runtime.resource import Resource, object_key

DEFAULT_LIMIT = 10_000
"""Entries kept per controller at most; only writes whose echo is still on its way are held."""

_ACTIVE: contextvars.ContextVar[tuple[OwnWrites, Request] | None] = contextvars.ContextVar(
    "substratus_own_writes", default=None)


def newer(rv: str, than: str) -> bool:
    """``rv`` is a later version than ``than``: etcd revisions compare as integers (what
    client-go's mutation cache relies on too); anything else only as different."""
    if rv.isdigit() and than.isdigit():
        return int(rv) > int(than)
    return rv != than


Event = tuple[Resource, str, str]
"""One live watch event as (resource, namespace/name, resourceVersion)."""


class OwnWrites:
    """One controller's record of the versions its reconciles wrote, by object, and of the live
    events heard for a request while its reconcile runs."""

    def __init__(self, *, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._resources: set[Resource] = set()
        self._entries: dict[tuple[Resource, str], tuple[str, Request]] = {}
        self._by_request: dict[Request, set[tuple[Resource, str]]] = {}
        self._running: dict[Request, list[Event]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def track(self, res: Resource) -> None:
        """Record writes of ``res`` (a kind the controller watches; nothing else ever echoes)."""
        self._resources.add(res)

    def clear(self) -> None:
        self._entries.clear()
        self._by_request.clear()
        self._running.clear()

    # --- the reconcile side -----------------------------------------------------------------

    def begin(self, request: Request) -> contextvars.Token[tuple[OwnWrites, Request] | None]:
        """A reconcile of ``request`` starts: attribute the writes of the running task (and of
        tasks it starts) to it until :meth:`end`.

        What earlier reconciles of the same request wrote is forgotten first: this one may have
        read the cache before those echoes arrived, so they must wake it again as before."""
        keys = self._by_request.pop(request, None)
        if keys:
            for k in keys:
                self._entries.pop(k, None)
        self._running[request] = []
        return _ACTIVE.set((self, request))

    def record(self, res: Resource, obj: dict, request: Request) -> None:
        """``obj`` as the API server returned it from a write made by ``request``'s reconcile."""
        if res not in self._resources:
            return
        meta = obj.get("metadata")
        if type(meta) is not dict:
            return
        rv = meta.get("resourceVersion")
        if not rv or not meta.get("name"):
            return
        k = (res, object_key(obj))
        self._drop(k)  # re-inserted last: the dict's order is the eviction order
        self._entries[k] = (rv, request)
        self._by_request.setdefault(request, set()).add(k)
        if len(self._entries) > self.limit:
            self._drop(next(iter(self._entries)))

    def end(self, request: Request, token: contextvars.Token[tuple[OwnWrites, Request] | None]) -> bool:
        """The reconcile of ``request`` is over: True if a live event heard meanwhile was not
        the echo of one of its own writes (the caller enqueues ``request`` again).

        Its own echoes can be heard before the answer to the write that caused them: both
        arrive on different connections. Held until here, they are matched with what it wrote."""
        _ACTIVE.reset(token)
        heard = self._running.pop(request, None)
        again = False
        for res, key, rv in heard or ():
            k = (res, key)
            if self._entries.get(k) == (rv, request):
                self._drop(k)
            else:
                again = True
        return again

    # --- the event side ---------------------------------------------------------------------

    def observe(self, res: Resource, obj: dict) -> tuple[Request | None, Event | None]:
        """For one live watch event of ``obj``: the request whose reconcile wrote exactly this
        version (the event must not wake it), and the event itself for :meth:`defer`.

        Seeing the written version, or a newer one, ends the entry: each write is skipped once."""
        if not self._entries and not self._running:
            return None, None
        meta = obj.get("metadata") or {}
        ns, name, rv = meta.get("namespace"), meta.get("name"), meta.get("resourceVersion")
        if not name or not isinstance(rv, str):
            return None, None
        key = f"{ns}/{name}" if ns else name
        k = (res, key)
        entry = self._entries.get(k)
        if entry is not None:
            if rv == entry[0]:
                self._drop(k)
                return entry[1], None
            if newer(rv, entry[0]):
                self._drop(k)
        return None, (res, key, rv)

    def defer(self, request: Request, event: Event) -> bool:
        """Hold ``event`` for ``request`` if its reconcile is running (decided at :meth:`end`);
        False if it is not running (the caller enqueues it now)."""
        heard = self._running.get(request)
        if heard is None:
            return False
        if not heard or heard[-1] is not event:  # one event can map to a request more than once
            heard.append(event)
        return True

    def forget(self, res: Resource, obj: dict) -> None:
        """The object is gone (a DELETE): nothing it echoes any more can be ours."""
        if self._entries:
            meta = obj.get("metadata") or {}
            if meta.get("name"):
                self._drop((res, object_key(obj)))

    def _drop(self, k: tuple[Resource, str]) -> None:
        entry = self._entries.pop(k, None)
        if entry is not None:
            keys = self._by_request.get(entry[1])
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del self._by_request[entry[1]]


def note_write(res: Resource, obj: Any) -> None:
    """Called by the client with what a successful write returned; records it for the
    reconcile that is running, if any (writes made outside a reconcile are nobody's echo)."""
    active = _ACTIVE.get()
    if active is not None and type(obj) is dict:
        active[0].record(res, obj, active[1])
