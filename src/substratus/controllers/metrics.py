"""Domain metrics: how many Substratus objects exist and are ready, and how long readiness takes.

The controller-runtime metrics say whether the operator works; these say whether users' objects
do, which is what the dashboard's "Substratus objects" row and ``kubectl get ai`` summarise.
Both live in the runtime's :data:`~substratus.runtime.metrics.REGISTRY`, so ``/metrics`` serves
them with everything else.

The helpers are small and, apart from the two that write the metrics, pure, so reconcilers call
them without ceremony:

* :class:`ObjectCounts`, an informer event handler per kind that keeps the counts up to date from
  the informer's own events (O(1) per event), and its :meth:`~ObjectCounts.publish`, called
  periodically: it sets ``substratus_objects{kind,namespace,ready}`` and removes series of
  namespaces that no longer have objects, so a deleted namespace does not linger at its last
  count. Publishing costs O(namespaces), not O(objects): recounting a listing of every object
  every few seconds was a cost per object that grew with the number of objects
  (docs/operations.md, performance).
* :func:`set_object_counts` does the same from a full listing of a kind.
* :func:`observe_ready` with the object as read and the status about to be written: it observes
  ``substratus_time_to_ready_seconds{kind}`` on a not-ready → ready transition only, so it counts
  once per transition however often the object is reconciled, and a standby that takes over never
  re-counts objects that were already ready.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Gauge, Histogram

from substratus.api.kinds import KINDS
from substratus.api.meta import parse_time
from substratus.runtime.metrics import REGISTRY

OBJECTS = Gauge(
    "substratus_objects",
    "Number of Substratus objects by kind, namespace and status.ready",
    ["kind", "namespace", "ready"],
    registry=REGISTRY,
)
TIME_TO_READY = Histogram(
    "substratus_time_to_ready_seconds",
    "Seconds an object was not ready before it became ready: from creation, or from when its ready "
    "condition last turned false",
    ["kind"],
    # Minutes to a day: imports and builds take minutes, training runs hours.
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400),
    registry=REGISTRY,
)

_lock = threading.Lock()
_series: dict[str, set[tuple[str, str]]] = {}
"""kind → the (namespace, ready) label pairs last set, to remove the ones that disappear."""


def ready_label(obj: Mapping[str, Any]) -> str:
    """``"true"`` or ``"false"`` from ``status.ready`` (absent means not ready)."""
    return "true" if (obj.get("status") or {}).get("ready") is True else "false"


def count_objects(objects: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str]]:
    """(namespace, ready) → number of objects; both readiness values appear for every namespace,
    so a namespace whose last object became ready shows ``ready="false"`` 0 rather than nothing."""
    counts: Counter[tuple[str, str]] = Counter()
    for obj in objects:
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        counts[(ns, ready_label(obj))] += 1
        counts[(ns, "true" if ready_label(obj) == "false" else "false")] += 0
    return counts


def set_object_counts(kind: str, objects: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str]]:
    """Set ``substratus_objects`` for every namespace of ``kind`` from a full listing of that kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    counts = count_objects(objects)
    _publish(kind, counts)
    return counts


class ObjectCounts:
    """``substratus_objects`` of one kind, kept from an informer's events (an ``EventHandler``).

    Each add, update and delete moves one object between (namespace, ready) counts: the informer
    hands every handler the object as last delivered on update and delete (a relist's diff too),
    so the counts equal a recount of its store without ever listing it, and nothing is kept per
    object. :meth:`publish` sets the gauge from them. Raises ``ValueError`` for a kind that is not
    one of ours.
    """

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self._counts: Counter[tuple[str, str]] = Counter()

    @staticmethod
    def _label(obj: Mapping[str, Any]) -> tuple[str, str]:
        return (obj.get("metadata") or {}).get("namespace") or "", ready_label(obj)

    def on_add(self, obj: dict) -> None:
        self._counts[self._label(obj)] += 1

    def on_update(self, old: dict, new: dict) -> None:
        was, now = self._label(old), self._label(new)
        if was != now:
            self._counts[was] -= 1
            self._counts[now] += 1

    def on_delete(self, obj: dict) -> None:
        self._counts[self._label(obj)] -= 1

    def counts(self) -> Counter[tuple[str, str]]:
        """What :func:`count_objects` would say of the informer's store: (namespace, ready) →
        objects, both readiness values for every namespace that has any."""
        out: Counter[tuple[str, str]] = Counter()
        for (ns, ready), n in self._counts.items():
            if n > 0:
                out[(ns, ready)] += n
                out[(ns, "true" if ready == "false" else "false")] += 0
        return out

    def publish(self) -> Counter[tuple[str, str]]:
        """Set ``substratus_objects`` for this kind from the counts: O(namespaces)."""
        counts = self.counts()
        _publish(self.kind, counts)
        return counts


def _publish(kind: str, counts: Counter[tuple[str, str]]) -> None:
    with _lock:
        for ns, ready in _series.get(kind, set()) - set(counts):
            OBJECTS.remove(kind, ns, ready)
        for (ns, ready), n in counts.items():
            OBJECTS.labels(kind, ns, ready).set(n)
        _series[kind] = set(counts)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == type_),
                None)


def seconds_to_ready(obj: Mapping[str, Any], new_status: Mapping[str, Any], now: dt.datetime) -> float | None:
    """Seconds the object was not ready, if writing ``new_status`` makes it ready; else None.

    Not ready since: the lastTransitionTime of its ready condition (Complete or Serving) while that
    was not True — every reconciler sets it on its first pass, so this is about the creation time
    for a new object and the moment it stopped being ready otherwise — falling back to
    ``metadata.creationTimestamp``.
    """
    old_status = obj.get("status") or {}
    if old_status.get("ready") is True or new_status.get("ready") is not True:
        return None
    cls = KINDS.get(str(obj.get("kind")))
    since: str | None = None
    if cls is not None:
        cond = _condition(old_status, cls.READY_CONDITION)
        if cond is not None and cond.get("status") != "True":
            since = cond.get("lastTransitionTime") or None
    since = since or (obj.get("metadata") or {}).get("creationTimestamp")
    if not since:
        return None
    try:
        start = parse_time(since)
    except ValueError:
        return None
    return max((now - start).total_seconds(), 0.0)


def observe_ready(obj: Mapping[str, Any], new_status: Mapping[str, Any],
                  now: dt.datetime | None = None) -> float | None:
    """Observe ``substratus_time_to_ready_seconds`` if ``new_status`` makes ``obj`` ready.

    ``obj`` is the object as read (its ``kind`` labels the observation), ``new_status`` the status
    about to be written; returns the seconds observed, or None when this is not a transition.
    """
    seconds = seconds_to_ready(obj, new_status, now or dt.datetime.now(dt.UTC))
    kind = str(obj.get("kind"))
    if seconds is None or kind not in KINDS:
        return None
    TIME_TO_READY.labels(kind).observe(seconds)
    return seconds


def reset() -> None:
    """Forget every series (tests)."""
    with _lock:
        OBJECTS.clear()
        TIME_TO_READY.clear()
        _series.clear()
