"""A shared informer: client-go's reflector + indexer + event fan-out, on asyncio.

LIST (paginated), then WATCH from the list's resourceVersion — the server replays everything
after that version, so nothing between list and watch is lost. Bookmarks only advance the
version. A 410 Gone (the version was compacted) forces a relist whose diff against the cache
becomes synthetic add/update/delete events, so a delete that happened in the gap still
reaches handlers, with the last object we knew. Any other error reconnects with a jittered
exponential backoff (0.8 s → 30 s) from the last version we saw — including a connection that
went silent past the client's ``watch_idle_timeout`` (SPEC §7: a dead watch is noticed within
60 s, not when its timeout ends).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import random
import time
from collections.abc import Callable
from sys import intern
from typing import Protocol

from substratus.runtime.client import Client, Gone
from substratus.runtime.indexer import Indexer, IndexFunc
from substratus.runtime.resource import Resource, object_key

log = logging.getLogger(__name__)

Transform = Callable[[dict], dict]

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

TRIM_AFTER_ITEMS = 1000
"""A LIST of at least this many objects ends with :func:`release_freed_memory`."""


def strip_bulk(obj: dict) -> dict:
    """Drop what no reconciler reads but costs most of an object's memory, and share the strings
    that every object of a kind repeats.

    ``managedFields`` is often half an object; kubectl's last-applied annotation repeats the spec.
    The JSON decoder gives each object its own copy of every string value; ``apiVersion``,
    ``kind``, the namespace and each condition's ``type``, ``status`` and ``reason`` take a handful
    of values across all objects, so they are interned: one copy each, about 0.5 KiB less per
    cached object with three conditions (docs/benchmarks.md, memory). Only these: interning unique
    values (names, uids, timestamps) would grow the interpreter's table with every object.
    """
    meta = obj.get("metadata")
    if meta:
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if ann and _LAST_APPLIED in ann:
            del ann[_LAST_APPLIED]
            if not ann:
                meta.pop("annotations")
        ns = meta.get("namespace")
        if type(ns) is str:
            meta["namespace"] = intern(ns)
    for key in ("apiVersion", "kind"):
        value = obj.get(key)
        if type(value) is str:
            obj[key] = intern(value)
    status = obj.get("status")
    conditions = status.get("conditions") if type(status) is dict else None
    if type(conditions) is list:
        for c in conditions:
            if type(c) is dict:
                for key in ("type", "status", "reason"):
                    value = c.get(key)
                    if type(value) is str:
                        c[key] = intern(value)
    return obj


_ALWAYS_KEPT = frozenset({"apiVersion", "kind", "metadata"})


def keep_only(*fields: str) -> Transform:
    """A transform for kinds read by only part of their body: :func:`strip_bulk`, then every
    top-level field but ``apiVersion``, ``kind``, ``metadata`` and ``fields`` is dropped.

    E.g. ``keep_only("status")`` for Jobs and Pods the operator created itself: it tells a
    changed spec by the hash annotation (metadata) and reads only their status, while the spec
    (the Pod template) is most of the object. The result is what the cache holds and what
    handlers receive, so a reconciler must never need a dropped field (docs/operations.md lists
    what is kept per kind).
    """
    keep = _ALWAYS_KEPT | set(fields)

    def transform(obj: dict) -> dict:
        strip_bulk(obj)
        for key in [k for k in obj if k not in keep]:
            del obj[key]
        return obj

    transform.__name__ = transform.__qualname__ = f"keep_only({', '.join(map(repr, fields))})"
    return transform


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn  # type: ignore[no-any-return]


def release_freed_memory() -> None:
    """Give the memory a large LIST freed back to the kernel.

    A LIST's pages (raw bytes, decoded objects, the transform's leftovers) are freed once the
    store holds its packed copies, but glibc keeps freed heap memory between live allocations
    for reuse, so the resident set would stay near the LIST's peak. ``malloc_trim(0)`` returns
    every free page, holes between live allocations included (glibc >= 2.8); it costs
    milliseconds, once per LIST. A no-op without glibc. Measured at 10,000 cached Deployments:
    3.6 KiB of RSS per object instead of 4.2 KiB (docs/benchmarks.md, memory).
    """
    trim = _malloc_trim()
    if trim is not None:
        gc.collect()
        trim(0)


class EventHandler(Protocol):
    """Handlers run on the informer's task: they must be cheap (enqueue, don't reconcile)."""

    def on_add(self, obj: dict) -> None: ...

    def on_update(self, old: dict, new: dict) -> None: ...

    def on_delete(self, obj: dict) -> None: ...


class Backoff:
    """Jittered exponential backoff; ``reset`` after a healthy period."""

    def __init__(self, initial: float = 0.8, maximum: float = 30.0, factor: float = 2.0, jitter: float = 1.0):
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return min(delay * (1 + self.jitter * random.random()), self.maximum)

    def reset(self) -> None:
        self._next = self.initial


class Informer:
    """Keeps ``store`` equal to the server's view of one resource and tells handlers what changed."""

    def __init__(self, client: Client, resource: Resource, *, namespace: str | None = None,
                 label_selector: str | None = None, transform: Transform | None = strip_bulk,
                 indexers: dict[str, IndexFunc] | None = None, resync_period: float | None = None,
                 watch_timeout: tuple[int, int] | None = None, page_size: int = 500,
                 backoff: Backoff | None = None) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.transform = transform
        self.store = Indexer(indexers)
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.backoff = backoff or Backoff()
        self.resource_version = ""
        self.relists = 0
        self._handlers: list[EventHandler] = []
        self.live = False
        """True only while handlers hear one watch event: one change the server reported, in
        order. False for replays — the LIST, a relist's diff (which can fold several changes
        into one), a resync, a late handler's catch-up — where an object's version says nothing
        about who last changed it (runtime/ownwrites.py relies on this)."""
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- handlers -----------------------------------------------------------------------------

    def add_handler(self, handler: EventHandler) -> None:
        """Register a handler; one added after sync first hears an add for every cached object."""
        self._handlers.append(handler)
        if self._synced.is_set():
            for obj in self.store:
                self._call(handler.on_add, obj)

    def _call(self, fn: Callable[..., None], *args: dict) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("informer handler failed", extra={"resource": str(self.resource)})

    def _emit_add(self, obj: dict) -> None:
        for h in self._handlers:
            self._call(h.on_add, obj)

    def _emit_update(self, old: dict, new: dict) -> None:
        for h in self._handlers:
            self._call(h.on_update, old, new)

    def _emit_delete(self, obj: dict) -> None:
        for h in self._handlers:
            self._call(h.on_delete, obj)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.resource}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # gather, not try/except CancelledError: that would also swallow a cancel of our caller.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        self.store.add_indexer(name, fn)

    # --- the reflector loop -------------------------------------------------------------------

    async def run(self) -> None:
        # Restarted after a stop: resume watching from the last version seen; a gap too long
        # for the server to replay answers 410 and turns into a relist.
        need_list = not self.has_synced
        resync_task = asyncio.create_task(self._resync_loop()) if self.resync_period else None
        try:
            while True:
                try:
                    if need_list:
                        await self._list()
                        need_list = False
                    started = time.monotonic()
                    await self._watch()
                    if time.monotonic() - started > 10:
                        self.backoff.reset()
                    # A server-side timeout ends the watch cleanly: resume from where we are.
                except Gone:
                    log.info("watch resourceVersion too old, relisting",
                             extra={"resource": str(self.resource), "resourceVersion": self.resource_version})
                    need_list = True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self.backoff.next()
                    log.warning("informer error, retrying",
                                extra={"resource": str(self.resource), "error": repr(exc), "delay": delay})
                    await asyncio.sleep(delay)
        finally:
            if resync_task is not None:
                resync_task.cancel()

    async def _list(self) -> None:
        # Transformed page by page: the whole list never exists with what the transform drops.
        items, rv = await self.client.list_all(self.resource, self.namespace, label_selector=self.label_selector,
                                               page_size=self.page_size, transform=self.transform)
        added, updated, deleted = self.store.replace(items)
        self.resource_version = rv
        self.relists += 1
        first = not self._synced.is_set()
        self._synced.set()
        log.debug("listed", extra={"resource": str(self.resource), "items": len(items), "resourceVersion": rv,
                                   "added": len(added), "updated": len(updated), "deleted": len(deleted)})
        for obj in deleted:
            self._emit_delete(obj)
        for obj in added:
            self._emit_add(obj)
        for old, new in updated:
            self._emit_update(old, new)
        if not first:
            self.backoff.reset()
        if len(items) >= TRIM_AFTER_ITEMS:
            del items, added, updated, deleted  # the decoded objects: the store keeps them packed
            release_freed_memory()

    async def _watch(self) -> None:
        # None: the client draws it inside its idle window (a longer one would be capped anyway).
        timeout = random.randint(*self.watch_timeout) if self.watch_timeout else None
        stream = self.client.watch(self.resource, self.namespace, resource_version=self.resource_version,
                                   timeout_seconds=timeout, label_selector=self.label_selector)
        async for event in stream:
            obj = event.object
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if event.type == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            if self.transform is not None:
                obj = self.transform(obj)
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            self.live = True
            try:
                if event.type in ("ADDED", "MODIFIED"):
                    old = self.store.upsert(obj)
                    if old is None:
                        self._emit_add(obj)
                    else:
                        self._emit_update(old, obj)
                elif event.type == "DELETED":
                    last = self.store.delete(object_key(obj))
                    self._emit_delete(obj if last is None or obj.get("spec") is not None else last)
            finally:
                self.live = False
            if rv:
                self.resource_version = rv
            self.backoff.reset()

    async def _resync_loop(self) -> None:
        """Periodically re-deliver every cached object, like client-go's resync, as a safety net."""
        assert self.resync_period
        await self._synced.wait()
        while True:
            await asyncio.sleep(self.resync_period)
            self.resync()

    def resync(self) -> None:
        """Re-deliver every cached object to the handlers as an update to itself."""
        for obj in self.store:
            self._emit_update(obj, obj)
