"""What the Pods of a workload say about it: reading them, and mapping them to their parent.

A Job that is ``active`` or a Deployment that is progressing says nothing about *why* nothing
runs; its Pods do (SPEC §1: "a workload whose Pod cannot start or keeps failing is not
running"). Every Pod of ours — a Job's, a ReplicaSet's, a Notebook's — carries the labels
``substratus.ai/{kind}: {name}`` and ``substratus.ai/role: workload|build`` from its template
(SPEC §2), so the Pod informer (filtered by the managed-by label, slimmed by
:func:`pod_transform`) maps each Pod straight to its parent: no ReplicaSet or Job lookups, and no
polling — a Pod's status change is an event that wakes the parent.

The reasons are the kubelet's and the scheduler's (Kubernetes docs, "Pod Lifecycle" and
"Debug Pods"): ``state.waiting.reason`` other than the normal ``ContainerCreating`` /
``PodInitializing``, ``PodScheduled=False`` with ``Unschedulable``, ``state.terminated`` or
``lastState.terminated`` with a non-zero exit code (``OOMKilled`` is 137), and a Pod's own
``status.reason`` (``Evicted``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from substratus.controllers.render import ROLE_LABEL
from substratus.naming import MANAGED_BY, MANAGED_BY_LABEL
from substratus.runtime.cache import Cache
from substratus.runtime.reconcile import Request
from substratus.runtime.resource import PODS

POD_PARENT_INDEX = "substratus.ai/pod-parent"
NORMAL_WAITING = frozenset({"ContainerCreating", "PodInitializing"})

_KEEP_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
              "labels", "annotations", "ownerReferences")
_KEEP_CONTAINER = ("name", "ready", "restartCount", "state", "lastState")


def pod_transform(pod: dict[str, Any]) -> dict[str, Any]:
    """Keep only what reconcilers and mappers read of a Pod: identity, labels, annotations (the
    spec hash), owners, and the status fields :func:`pod_problem` and readiness use. A Pod's spec
    (often most of it, with env and volumes) is never read from the cache."""
    meta = pod.get("metadata") or {}
    slim_meta = {k: meta[k] for k in _KEEP_META if k in meta}
    ann = slim_meta.get("annotations")
    if ann and "kubectl.kubernetes.io/last-applied-configuration" in ann:
        slim_meta["annotations"] = {k: v for k, v in ann.items()
                                    if k != "kubectl.kubernetes.io/last-applied-configuration"}
    status = pod.get("status") or {}
    slim_status: dict[str, Any] = {k: status[k] for k in ("phase", "reason", "message", "startTime") if k in status}
    if "conditions" in status:
        slim_status["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                                     for c in status.get("conditions") or []]
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            slim_status[key] = [{k: cs[k] for k in _KEEP_CONTAINER if k in cs} for cs in status.get(key) or []]
    out: dict[str, Any] = {"metadata": slim_meta, "status": slim_status}
    for key in ("apiVersion", "kind"):
        if key in pod:
            out[key] = pod[key]
    return out


@attrs.frozen
class PodProblem:
    """Why a Pod cannot start or keeps failing, in the kubelet's words."""

    pod: str
    reason: str
    message: str = ""

    def __str__(self) -> str:
        return f"Pod {self.pod}: {self.reason}" + (f": {self.message}" if self.message else "")


# What PodProblem.__str__ writes first: "Pod <name>: <Reason>" (a Pod name is a DNS subdomain,
# a kubelet or scheduler reason is CamelCase).
_PROBLEM_IN_TEXT = re.compile(r"\bPod [a-z0-9](?:[-a-z0-9.]*[a-z0-9])?: ([A-Z][A-Za-z0-9]*)")


def problem_reason_in(message: str) -> str | None:
    """The Pod's reason in a condition message that carries a :class:`PodProblem` (``PodFailing``
    messages), e.g. ``ImagePullBackOff``; None if there is none. The inverse of ``__str__``: the
    reason is read back from the stored status, so it survives a restart of the operator."""
    m = _PROBLEM_IN_TEXT.search(message)
    return m.group(1) if m else None


def _exit(term: dict[str, Any]) -> str:
    return f"exit code {term.get('exitCode')}" + (f": {term['message'].strip()}" if term.get("message") else "")


def _container_problem(cs: dict[str, Any]) -> tuple[str, str] | None:
    state = cs.get("state") or {}
    name = cs.get("name", "")
    waiting = state.get("waiting")
    if waiting and waiting.get("reason") and waiting["reason"] not in NORMAL_WAITING:
        message = waiting.get("message") or ""
        last = (cs.get("lastState") or {}).get("terminated")
        if last:  # a crash loop: what the last run ended with is the useful part
            tail = f"last run ended {last.get('reason') or 'Error'} ({_exit(last)}), restarts {cs.get('restartCount', 0)}"
            message = f"{message}; {tail}" if message else tail
        return waiting["reason"], f"container {name}: {message}" if message else f"container {name}"
    term = state.get("terminated")
    if term and term.get("exitCode") not in (0, None):
        return term.get("reason") or "Error", f"container {name}: {_exit(term)}"
    return None


def pod_problem_of(pod: dict[str, Any]) -> PodProblem | None:
    """The first problem one Pod shows, or None (running, starting normally, or succeeded)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = meta.get("name", "")
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason"):
            return PodProblem(name, c["reason"], c.get("message") or "")
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            found = _container_problem(cs)
            if found:
                return PodProblem(name, *found)
    if status.get("phase") == "Failed":
        return PodProblem(name, status.get("reason") or "Failed", status.get("message") or "")
    return None


def pod_problem(pods: Iterable[dict[str, Any]]) -> PodProblem | None:
    """What keeps a workload's Pods from running, or None.

    A Pod still meant to run (not being deleted, not finished) that shows a problem wins; only
    when none runs does the newest failed Pod speak (e.g. a Job between retries, or one that
    failed). Pods being deleted are history and never speak.
    """
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    live.sort(key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                             (p.get("metadata") or {}).get("name") or ""), reverse=True)
    running = [p for p in live if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    for p in running:
        found = pod_problem_of(p)
        if found:
            return found
    if running:
        return None
    for p in live:
        if (p.get("status") or {}).get("phase") == "Failed":
            return pod_problem_of(p)
    return None


# --- from a Pod to its parent ------------------------------------------------------------------


def _parent_keys(pod: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(kind label, namespace, name, role) for each parent label on one of our Pods."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return []
    role = labels.get(ROLE_LABEL, "")
    return [(key.removeprefix("substratus.ai/"), meta.get("namespace", ""), value, role)
            for key, value in labels.items()
            if key.startswith("substratus.ai/") and key != ROLE_LABEL and value]


def pod_parent_key(kind: str, namespace: str, name: str, role: str) -> str:
    return f"{kind.lower()}:{namespace}/{name}/{role}"


def pod_parent_index(pod: dict[str, Any]) -> list[str]:
    """Index function: every Pod under ``{kind}:{namespace}/{name}/{role}`` of its parent."""
    return [pod_parent_key(*k) for k in _parent_keys(pod)]


def pods_to_parent(kind: str, *, problems_only: bool = False) -> Callable[[dict[str, Any]], Iterable[Request]]:
    """Map a Pod event to a request for its parent of ``kind`` (by the parent label).

    ``problems_only``: only a Pod that shows a problem wakes the parent (an update wakes it when
    either side does, so a problem that clears is seen too). For Job and Deployment Pods, whose
    parents learn everything else from the Job's or Deployment's own status, this keeps hundreds
    of healthy Pods from costing a reconcile each."""
    label = kind.lower()

    def mapper(pod: dict[str, Any]) -> Iterable[Request]:
        if problems_only and pod_problem_of(pod) is None:
            return []
        return [Request(ns, name) for k, ns, name, _ in _parent_keys(pod) if k == label]

    return mapper


def _view(p: dict[str, Any], *, readiness: bool) -> tuple[Any, ...]:
    meta, status = p.get("metadata") or {}, p.get("status") or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return (pod_problem_of(p), meta.get("deletionTimestamp"), meta.get("labels"),
            (status.get("phase"), ready) if readiness else None)


def pod_problem_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Update predicate for parents that read only a Pod's problem (Job and Deployment Pods: the
    Job's or Deployment's own status says when they run or finish)."""
    return old is not new and _view(old, readiness=False) != _view(new, readiness=False)


def pod_status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Update predicate for parents that also read a Pod's phase and readiness (a Notebook's Pod)."""
    return old is not new and _view(old, readiness=True) != _view(new, readiness=True)


def pods_of(cache: Cache, kind: str, namespace: str, name: str, role: str) -> list[dict[str, Any]]:
    """The cached Pods of one parent's workload or build."""
    return cache.by_index(PODS, POD_PARENT_INDEX, pod_parent_key(kind, namespace, name, role))
