"""API group/version and the Kubernetes object metadata we read and write.

``ObjectMeta`` types only the keys the controller uses; every other metadata key
(``managedFields``, ``generateName``, …) rides along in ``extra`` so that an object read from the
API server and written back loses nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import attrs

GROUP = "substratus.ai"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"


@attrs.define(kw_only=True)
class ObjectMeta:
    """The subset of metav1.ObjectMeta the controller touches, plus everything else verbatim."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = attrs.field(factory=dict)
    annotations: dict[str, str] = attrs.field(factory=dict)
    owner_references: list[dict[str, Any]] = attrs.field(factory=list)
    finalizers: list[str] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)
    """Metadata keys not typed above, preserved on round-trip."""


# Typed ObjectMeta attribute ↔ JSON key; order is the output order.
_META_KEYS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("namespace", "namespace"),
    ("uid", "uid"),
    ("resource_version", "resourceVersion"),
    ("generation", "generation"),
    ("creation_timestamp", "creationTimestamp"),
    ("deletion_timestamp", "deletionTimestamp"),
    ("labels", "labels"),
    ("annotations", "annotations"),
    ("owner_references", "ownerReferences"),
    ("finalizers", "finalizers"),
)
_META_TYPES: dict[str, type] = {
    "name": str,
    "namespace": str,
    "uid": str,
    "resourceVersion": str,
    "generation": int,
    "creationTimestamp": str,
    "deletionTimestamp": str,
    "labels": dict,
    "annotations": dict,
    "ownerReferences": list,
    "finalizers": list,
}


class MetaTypeError(TypeError):
    """A typed metadata key holds a value of the wrong type."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        super().__init__(f"metadata.{key}: expected {expected}, got {type(value).__name__}")
        self.key, self.expected, self.value = key, expected, value


_JSON_NAMES = {str: "string", int: "integer", dict: "object", list: "array"}


def meta_from_dict(data: Any) -> ObjectMeta:
    """Structure ``metadata``; raises MetaTypeError naming the key on a wrong type."""
    if data is None:
        return ObjectMeta()
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    extra = dict(data)
    for attr, key in _META_KEYS:
        if key not in extra:
            continue
        value = extra.pop(key)
        if value is None:
            continue
        want = _META_TYPES[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise MetaTypeError(key, _JSON_NAMES[want], value)
        kwargs[attr] = (
            dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
        )
    return ObjectMeta(extra=extra, **kwargs)


def meta_to_dict(meta: ObjectMeta) -> dict[str, Any]:
    """Unstructure ``metadata``, leaving out empty/unset keys like the API server does."""
    out: dict[str, Any] = {}
    for attr, key in _META_KEYS:
        value = getattr(meta, attr)
        if value in (None, "", 0, {}, []):
            continue
        out[key] = (
            dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
        )
    for key, value in meta.extra.items():
        out.setdefault(key, value)
    return out


class HasMeta(Protocol):
    api_version: str
    kind: str
    metadata: ObjectMeta


def owner_reference(owner: HasMeta) -> dict[str, Any]:
    """The controller ownerReference every child carries (SPEC §2): garbage collection
    deletes children with the parent, and ``blockOwnerDeletion`` orders foreground deletes."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def format_time(t: datetime) -> str:
    """metav1.Time wire format: RFC3339, UTC, whole seconds, ``Z`` suffix. Naive = UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime:
    """Parse an RFC3339 timestamp (``Z`` or offset; fractional seconds allowed) to aware UTC."""
    t = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
