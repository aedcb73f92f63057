"""References between substratus objects, and the index that turns them into wake-ups.

A training Model waits for its base Model and Dataset; a Server for its Model. Rather than
polling, each dependent kind's cache is indexed by what it depends on, so an event on a
Dataset finds exactly the Models that train on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from substratus import naming
from substratus.api import AnyKind
from substratus.cloud.base import Mount
from substratus.controllers.resources import BY_KIND
from substratus.runtime.cache import Cache
from substratus.runtime.reconcile import Request
from substratus.runtime.resource import Resource

DEPENDS_ON_INDEX = "substratus.ai/depends-on"
ALLOWED_NAMESPACES_ANNOTATION = "substratus.ai/allowed-namespaces"

# spec field → kind it references, per dependent kind (SPEC §1).
REFERENCE_FIELDS: dict[str, dict[str, str]] = {
    "Model": {"baseModel": "Model", "trainingDataset": "Dataset"},
    "Server": {"model": "Model"},
    "Notebook": {"model": "Model", "dataset": "Dataset"},
    "Dataset": {},
}


@attrs.frozen
class Dependency:
    kind: str
    namespace: str
    name: str
    field: str

    @property
    def resource(self) -> Resource:
        return BY_KIND[self.kind]


def ref_key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}:{namespace}/{name}"


def _refs(kind: str, namespace: str, spec: dict[str, Any]) -> list[Dependency]:
    out = []
    for field, target in REFERENCE_FIELDS.get(kind, {}).items():
        ref = spec.get(field)
        if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
            ref_ns = ref.get("namespace")
            ns = ref_ns if isinstance(ref_ns, str) and ref_ns else namespace
            out.append(Dependency(target, ns, ref["name"], field))
    return out


def dependencies(obj: AnyKind) -> list[Dependency]:
    """The objects ``obj`` needs complete before its workload can start."""
    from substratus.api import to_dict

    return _refs(obj.KIND, obj.metadata.namespace or "", to_dict(obj.spec))


def depends_on_index(raw: dict[str, Any]) -> list[str]:
    """Index function over raw objects (it must not fail on a malformed spec)."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        return []
    return [ref_key(d.kind, d.namespace, d.name) for d in _refs(raw.get("kind", ""), meta.get("namespace", ""), spec)]


def dependents_of(cache: Cache, dependent: Resource) -> Callable[[dict[str, Any]], Iterable[Request]]:
    """Map an event on a dependency to requests for every ``dependent`` that references it."""
    def mapper(obj: dict[str, Any]) -> Iterable[Request]:
        meta = obj.get("metadata") or {}
        key = ref_key(obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        return [Request(d["metadata"].get("namespace"), d["metadata"]["name"])
                for d in cache.by_index(dependent, DEPENDS_ON_INDEX, key)]
    return mapper


def allowed_namespaces(target: dict[str, Any] | None) -> frozenset[str]:
    """The namespaces ``target`` lets refer to it: its annotation
    ``substratus.ai/allowed-namespaces``, comma-separated (spaces ignored; ``*`` is every one)."""
    annotations = ((target or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ALLOWED_NAMESPACES_ANNOTATION)
    if not isinstance(value, str):
        return frozenset()
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def reference_permitted(dep: Dependency, from_namespace: str, target: dict[str, Any] | None) -> bool:
    """A reference within one namespace always is; across namespaces only when the referenced
    object opted in (SPEC §1 "References across namespaces": namespaces are the tenancy
    boundary, and artifacts are the referenced owner's to share)."""
    if dep.namespace == from_namespace:
        return True
    allowed = allowed_namespaces(target)
    return "*" in allowed or from_namespace in allowed


def forbidden_references(cache: Cache, obj: AnyKind) -> list[str]:
    """A message per reference to another namespace whose object has not opted in.

    A missing object reads the same as one that has not opted in, so a status never tells one
    tenant what exists in another's namespace; creating it with the annotation (or adding the
    annotation) wakes ``obj`` through the depends-on index like any event on a dependency."""
    ns = obj.metadata.namespace or ""
    out = []
    for dep in dependencies(obj):
        if not reference_permitted(dep, ns, cache.get(dep.resource, dep.name, dep.namespace)):
            out.append(f"spec.{dep.field}: {dep.kind} {dep.namespace}/{dep.name} does not allow references "
                       f"from namespace {ns}: its owner must add the annotation "
                       f"{ALLOWED_NAMESPACES_ANNOTATION}: \"{ns}\" (comma-separated namespaces, or \"*\")")
    return out


def unready_dependencies(cache: Cache, obj: AnyKind, awaited: str, *, need_url: bool = False) -> list[str]:
    """A message per dependency that is missing or not ``awaited`` yet (e.g. "to be complete");
    with ``need_url``, a ready dependency without ``status.url`` is still waited for."""
    waiting = []
    for dep in dependencies(obj):
        other = cache.get(dep.resource, dep.name, dep.namespace)
        status = (other or {}).get("status") or {}
        if other is None:
            waiting.append(f"{dep.kind} {dep.namespace}/{dep.name} (not found)")
        elif not status.get("ready") or (need_url and not status.get("url")):
            waiting.append(f"{dep.kind} {dep.namespace}/{dep.name} {awaited}")
    return waiting


def artifacts_of(kind: str, dependency: dict[str, Any] | None) -> str | None:
    """Storage URL of a (complete) Model's or Dataset's artifacts: its ``status.artifactsURL``,
    else — written before that field existed — ``{status.url}/model`` or ``/data``."""
    status = (dependency or {}).get("status") or {}
    recorded = status.get("artifactsURL")
    if isinstance(recorded, str) and recorded:
        return recorded
    url = status.get("url")
    return naming.artifacts_url(url, kind) if isinstance(url, str) and url else None


def dependency_mounts(cache: Cache, obj: AnyKind, content_dir: str) -> list[Mount]:
    """Read-only mounts of the dependencies' artifacts: a Model at ``model/``, a Dataset at ``data/``."""
    out = []
    for dep in dependencies(obj):
        target = cache.get(dep.resource, dep.name, dep.namespace)
        artifacts = artifacts_of(dep.kind, target)
        if not artifacts or not reference_permitted(dep, obj.metadata.namespace or "", target):
            continue
        sub = "model" if dep.kind == "Model" else "data"
        out.append(Mount(sub, artifacts, f"{content_dir}/{sub}", True))
    return out
