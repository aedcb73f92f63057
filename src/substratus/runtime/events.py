"""Kubernetes Events, recorded like client-go's ``record`` package.

``kubectl describe`` is where users look first, so every condition transition becomes an
Event. Two protections keep a hot object from flooding etcd: identical events within ten
minutes are aggregated into one whose ``count`` goes up, and each object has a token bucket
(burst 25, one token per 5 minutes). Recording never blocks or fails a reconcile: events go
through a bounded queue drained by a few background writers, and a full queue drops the event —
counted in ``events_dropped_total`` and logged, so a burst that outruns the writers is visible.

Both per-object maps (token buckets, aggregation state) are kept in the order their entries were
last touched, so forgetting what expired pops the oldest ones off the front: O(1) per event however
many objects there are. (Sweeping the whole map on every event once it held 4,096 entries made each
event cost O(objects) at scale: 1.2 ms per event at 10,000 objects; docs/operations.md, performance.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
import zlib
from collections import OrderedDict

import attrs

from substratus.runtime import metrics
from substratus.runtime.client import ApiError, Client, NotFound, NotLeader
from substratus.runtime.resource import EVENTS

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

_AGGREGATE_WINDOW = 600.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(obj: dict, type_: str, reason: str, message: str, *, component: str, host: str) -> dict:
    """A new core/v1 Event about ``obj`` (count 1, both timestamps now), as client-go's recorder
    writes it; the name is the object's name plus a unique hex suffix."""
    meta = obj.get("metadata") or {}
    ts = _now()
    return {
        "metadata": {"name": f"{meta.get('name', 'unknown')}.{time.time_ns():x}",
                     "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason, "message": message, "type": type_, "count": 1,
        "firstTimestamp": ts, "lastTimestamp": ts,
        "source": {"component": component, "host": host},
        "reportingComponent": component, "reportingInstance": host,
    }


@attrs.define
class _Bucket:
    tokens: float
    updated: float


@attrs.define
class _Seen:
    name: str
    namespace: str
    count: int
    at: float


class EventRecorder:
    def __init__(self, client: Client, component: str = "substratus", *, burst: int = 25,
                 refill_seconds: float = 300.0, queue_size: int = 4096, writers: int = 16) -> None:
        self.client = client
        self.component = component
        self.host = socket.gethostname()
        self.burst = burst
        self.refill_seconds = refill_seconds
        # One queue per writer, an object's events always on the same one: its events stay in
        # order and aggregation (which reads what the previous event created) never races.
        self._queues: list[asyncio.Queue[tuple[dict, str, str, str]]] = [
            asyncio.Queue(max(1, queue_size // writers)) for _ in range(writers)]
        # Oldest touch first (move_to_end on every use): expired entries are always at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """Queue an event about ``obj``; never raises, never waits."""
        if not self._allow(obj):
            self._drop(obj, reason, "rate_limited")
            return
        uid = (obj.get("metadata") or {}).get("uid") or ""
        queue = self._queues[zlib.crc32(uid.encode()) % len(self._queues)]
        try:
            queue.put_nowait((obj, type_, reason, message[:1024]))
        except asyncio.QueueFull:
            self._drop(obj, reason, "queue_full")

    def _drop(self, obj: dict, reason: str, why: str) -> None:
        self.dropped += 1
        metrics.EVENTS_DROPPED.labels(why).inc()
        if self.dropped == 1 or self.dropped % 100 == 0:
            meta = obj.get("metadata") or {}
            log.warning("event dropped", extra={"object": f"{meta.get('namespace')}/{meta.get('name')}", "reason": reason,
                                                 "why": why, "droppedTotal": self.dropped})

    def _allow(self, obj: dict) -> bool:
        uid = (obj.get("metadata") or {}).get("uid") or str(id(obj))
        now = time.monotonic()
        buckets = self._buckets
        # A bucket refilled to burst is the same as no bucket: forget those (the oldest first).
        full = self.burst * self.refill_seconds
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest.updated < full:
                break
            buckets.popitem(last=False)
        b = buckets.get(uid)
        if b is None:
            b = buckets[uid] = _Bucket(float(self.burst), now)
        else:
            buckets.move_to_end(uid)
        b.tokens = min(self.burst, b.tokens + (now - b.updated) / self.refill_seconds)
        b.updated = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    def start(self) -> None:
        # Several writers: one request at a time cannot keep up with many workers converging
        # many objects at once (each transition is one POST). 16 writers and 4,096 queued: with
        # 64 workers per controller, 4 writers and 1,000 queued dropped 68% of the Events of a
        # burst of 10,000 new Datasets (docs/benchmarks.md, scale; 10% with 16 workers); client-go
        # queues 1,000 per broadcaster and drops the same way past it.
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(q), name=f"event-recorder-{i}")
                           for i, q in enumerate(self._queues)]

    async def flush(self, timeout: float) -> None:
        """Wait until every queued Event has been posted (or given up on); TimeoutError if not."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(q.join() for q in self._queues))

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if not self._tasks:
            return
        try:
            await self.flush(flush_timeout)
        except TimeoutError:
            pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self, queue: asyncio.Queue[tuple[dict, str, str, str]]) -> None:
        while True:
            obj, type_, reason, message = await queue.get()
            try:
                await self._write(obj, type_, reason, message)
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("could not record event", extra={"reason": reason, "error": repr(exc)})
            except NotLeader:
                log.info("event not recorded: not the leader", extra={"reason": reason})
            except Exception:
                log.exception("event recorder failed", extra={"reason": reason})
            finally:
                queue.task_done()

    async def _write(self, obj: dict, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), type_, reason, message)
        now = time.monotonic()
        # Forget aggregation state past its window (the oldest first) so the map stays bounded.
        while self._seen:
            if now - next(iter(self._seen.values())).at < _AGGREGATE_WINDOW:
                break
            self._seen.popitem(last=False)
        seen = self._seen.get(key)
        if seen is not None and now - seen.at < _AGGREGATE_WINDOW:
            try:
                await self.client.patch(EVENTS, seen.name, {"count": seen.count + 1, "lastTimestamp": _now()},
                                        seen.namespace)
                seen.count += 1
                seen.at = now
                if key in self._seen:  # not forgotten meanwhile
                    self._seen.move_to_end(key)
                return
            except NotFound:
                pass
        body = event_body(obj, type_, reason, message, component=self.component, host=self.host)
        await self.client.create(EVENTS, body, namespace)
        self._seen.pop(key, None)  # re-inserted last: the map's order is the order of ``at``
        self._seen[key] = _Seen(body["metadata"]["name"], namespace, 1, now)
