"""A controller: event sources → a rate-limited work queue → N workers calling ``reconcile``.

Semantics follow controller-runtime's ``internal/controller``: an error requeues with the
rate limiter's backoff; ``Result.requeue_after`` comes back after that delay; a
``TerminalError`` is counted and dropped; success forgets the item's failures; ``NotLeader``
(leadership lost mid-reconcile) drops the item uncounted, as the controller is stopping. An unexpected
exception (a bug — Go would panic) is caught, logged with the object and counted as a panic,
and then handled like an error, so one bad object never takes the operator down.

The watch echo of a reconcile's own write (a child it created, its own status patch) does not
wake that reconcile's request again: it already acted on what the write returned
(runtime/ownwrites.py says exactly when an event is skipped; docs/operations.md, performance).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable

import aiohttp

from substratus import logs
from substratus.runtime import metrics
from substratus.runtime.cache import Cache
from substratus.runtime.client import ApiError, NotLeader
from substratus.runtime.ownwrites import Event, OwnWrites
from substratus.runtime.ratelimiter import RateLimiter, default_controller_rate_limiter
from substratus.runtime.reconcile import Reconciler, Request, TerminalError
from substratus.runtime.resource import Resource
from substratus.runtime.workqueue import RateLimitingQueue, ShutDown

log = logging.getLogger(__name__)

MapFunc = Callable[[dict], Iterable[Request]]
UpdatePredicate = Callable[[dict, dict], bool]

# Errors a reconciler is expected to hit against a live cluster; anything else is a bug.
# NotLeader: a write refused by the leader-election fence while leadership ends (SPEC §7).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ApiError, NotLeader, OSError, TimeoutError,
                                                    aiohttp.ClientError)


def request_for(obj: dict) -> Request:
    meta = obj.get("metadata") or {}
    return Request(meta.get("namespace"), meta["name"])


def controller_owner(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


class _Source:
    """Everything one controller watches of one resource, heard through one informer handler:
    its routes (a mapping to requests and an optional update predicate, one per ``for_`` /
    ``owns`` / ``watches`` call) and the controller's memory of its own writes.

    A live watch event carrying exactly the version a reconcile of request R wrote does not
    enqueue R — R already acted on it (runtime/ownwrites.py) — and still enqueues every other
    request it maps to. Replays (list, relist, resync) and DELETEs enqueue everything."""

    def __init__(self, controller: Controller, res: Resource) -> None:
        self._controller = controller
        self.res = res
        self.routes: list[tuple[MapFunc, UpdatePredicate | None]] = []
        self._informer = controller.cache.informer(res)
        self._own = controller.own_writes

    def on_add(self, obj: dict) -> None:
        q = self._controller.queue
        if q is None:
            return
        skip, event = self._own.observe(self.res, obj) if self._informer.live else (None, None)
        for mapper, _ in self.routes:
            for req in mapper(obj):
                self._enqueue(q, req, skip, event)

    def on_update(self, old: dict, new: dict) -> None:
        q = self._controller.queue
        if q is None:
            return
        skip, event = self._own.observe(self.res, new) if self._informer.live else (None, None)
        for mapper, predicate in self.routes:
            if predicate is not None and not predicate(old, new):
                continue
            # Both sides: a reference that moved away must wake whoever it used to point at.
            for req in mapper(old):
                self._enqueue(q, req, skip, event)
            if old is not new:
                for req in mapper(new):
                    self._enqueue(q, req, skip, event)

    def _enqueue(self, q: RateLimitingQueue, req: Request, skip: Request | None, event: Event | None) -> None:
        if skip is not None and req == skip:
            return  # the echo of this request's own write
        if event is not None and self._own.defer(req, event):
            return  # its reconcile is running: decided when it ends
        q.add(req)

    def on_delete(self, obj: dict) -> None:
        self._own.forget(self.res, obj)
        q = self._controller.queue
        if q is None:
            return
        for mapper, _ in self.routes:
            for req in mapper(obj):
                q.add(req)


class Controller:
    def __init__(self, name: str, reconciler: Reconciler, cache: Cache, *, max_concurrent_reconciles: int = 1,
                 rate_limiter: Callable[[], RateLimiter] = default_controller_rate_limiter) -> None:
        self.name = name
        self.reconciler = reconciler
        self.cache = cache
        self.max_concurrent_reconciles = max(1, max_concurrent_reconciles)
        self._rate_limiter_factory = rate_limiter
        self.queue: RateLimitingQueue | None = None
        self._sources: dict[Resource, _Source] = {}
        self.own_writes = OwnWrites()
        """The versions this controller's reconciles wrote, whose watch echo wakes nobody."""
        self._workers: list[asyncio.Task[None]] = []
        self._primary: Resource | None = None
        self._m_total = {r: metrics.RECONCILE_TOTAL.labels(name, r)
                         for r in ("success", "error", "requeue", "requeue_after")}
        self._m_errors = metrics.RECONCILE_ERRORS.labels(name)
        self._m_terminal = metrics.TERMINAL_RECONCILE_ERRORS.labels(name)
        self._m_panics = metrics.RECONCILE_PANICS.labels(name)
        self._m_time = metrics.RECONCILE_TIME.labels(name)
        self._m_active = metrics.ACTIVE_WORKERS.labels(name)
        metrics.MAX_CONCURRENT_RECONCILES.labels(name).set(self.max_concurrent_reconciles)
        self._m_active.set(0)

    # --- wiring -------------------------------------------------------------------------------

    def _watch(self, res: Resource, mapper: MapFunc, update_predicate: UpdatePredicate | None) -> Controller:
        source = self._sources.get(res)
        if source is None:
            self.cache.informer(res)  # created now so the manager waits for its sync
            source = self._sources[res] = _Source(self, res)
            self.own_writes.track(res)
        source.routes.append((mapper, update_predicate))
        return self

    def for_(self, res: Resource, update_predicate: UpdatePredicate | None = None) -> Controller:
        """The primary kind: each of its objects is a request for itself."""
        self._primary = res
        return self._watch(res, lambda o: (request_for(o),), update_predicate)

    def owns(self, res: Resource, update_predicate: UpdatePredicate | None = None) -> Controller:
        """Children: an event on one wakes its controlling owner of the primary kind."""
        if self._primary is None:
            raise ValueError("call for_() before owns()")
        primary = self._primary

        def to_owner(obj: dict) -> Iterable[Request]:
            ref = controller_owner(obj)
            if ref is None or ref.get("kind") != primary.kind:
                return ()
            group = ref.get("apiVersion", "").rpartition("/")[0]
            if group != primary.group:
                return ()
            return (Request((obj.get("metadata") or {}).get("namespace"), ref["name"]),)

        return self._watch(res, to_owner, update_predicate)

    def watches(self, res: Resource, mapper: MapFunc, update_predicate: UpdatePredicate | None = None) -> Controller:
        """Any kind, mapped to requests by ``mapper`` (dependency wake-ups through an index)."""
        return self._watch(res, mapper, update_predicate)

    @property
    def watched_resources(self) -> list[Resource]:
        return list(self._sources)

    # --- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the queue, connect the sources (replaying the cache) and start the workers."""
        if self.queue is not None:
            raise RuntimeError(f"controller {self.name} already started")
        self.queue = RateLimitingQueue(name=self.name, controller=self.name, rate_limiter=self._rate_limiter_factory())
        self.own_writes.clear()  # a restart replays every cached object anyway
        for res, source in self._sources.items():
            self.cache.informer(res).add_handler(source)
        self._workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                         for i in range(self.max_concurrent_reconciles)]
        log.info("controller started", extra={"controller": self.name, "workers": self.max_concurrent_reconciles})

    async def stop(self, drain: bool = True) -> None:
        """Stop taking work; with ``drain`` wait for in-flight reconciles, else cancel them."""
        q = self.queue
        if q is None:
            return
        if drain:
            await q.shutdown_with_drain()
        else:
            q.shutdown()
            for t in self._workers:
                t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self.queue = None
        log.info("controller stopped", extra={"controller": self.name})

    async def _worker(self) -> None:
        q = self.queue
        assert q is not None
        while True:
            try:
                req = await q.get()
            except ShutDown:
                return
            self._m_active.inc()
            try:
                await self._process(q, req)
            finally:
                self._m_active.dec()
                q.done(req)

    async def _process(self, q: RateLimitingQueue, req: Request) -> None:
        # Every line logged during this reconcile carries these fields (controller-runtime's keys).
        token = logs.bind(controller=self.name, kind=self._primary.kind if self._primary else None,
                          namespace=req.namespace, name=req.name, reconcileID=str(uuid.uuid4()))
        # What this reconcile writes is remembered as its own: the echo will not wake it again.
        writes = self.own_writes.begin(req)
        try:
            await self._reconcile_one(q, req)
        finally:
            if self.own_writes.end(req, writes):
                q.add(req)  # changed by someone else meanwhile: once more (done() re-queues it)
            logs.reset(token)

    async def _reconcile_one(self, q: RateLimitingQueue, req: Request) -> None:
        started = time.monotonic()
        try:
            result = await self.reconciler.reconcile(req)
        except asyncio.CancelledError:
            raise
        except NotLeader as exc:
            # Leadership ended mid-reconcile and the write fence refused a write: not an error of
            # the object, so not counted or logged as one, and not requeued — this replica stops
            # reconciling (the manager is stopping its controllers, as controller-runtime does on
            # a lost lease) and the new leader's informers replay every object.
            q.forget(req)
            log.info("reconcile abandoned: leadership lost", extra={"error": str(exc)})
            return
        except TerminalError as exc:
            self._m_errors.inc()
            self._m_terminal.inc()
            self._m_total["error"].inc()
            q.forget(req)
            log.error("reconcile failed terminally, not requeued", extra={"error": str(exc)})
            return
        except Exception as exc:
            if not isinstance(exc, EXPECTED_ERRORS):
                self._m_panics.inc()
                log.exception("reconcile panicked (bug), requeued with backoff")
            else:
                log.warning("reconcile error, requeued with backoff", extra={"error": repr(exc)})
            self._m_errors.inc()
            self._m_total["error"].inc()
            q.add_rate_limited(req)
            return
        finally:
            self._m_time.observe(time.monotonic() - started)
        if result.requeue_after > 0:
            q.forget(req)
            q.add_after(req, result.requeue_after)
            self._m_total["requeue_after"].inc()
        elif result.requeue:
            q.add_rate_limited(req)
            self._m_total["requeue"].inc()
        else:
            q.forget(req)
            self._m_total["success"].inc()
