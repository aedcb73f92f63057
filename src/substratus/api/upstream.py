"""Field names of the original Substratus (Go, v0.10; same group and version) that this API renamed.

SPEC §9: an upstream manifest must never be pruned into a different meaning. Without this module
the API server would silently drop ``spec.model``/``spec.dataset`` of an upstream fine-tuning
Model (unknown fields are pruned), leaving an import that downloads a base model again. So:

- the CRD schema declares every renamed field (:func:`spec_properties`), so the server keeps it;
- on servers with CEL a rule per field rejects it at admission with the new name
  (:func:`spec_rules`);
- everywhere, :func:`upstream_problems` (called by ``from_dict`` before anything else) turns it
  into ``InvalidSpec`` naming the field and its new name, and nothing runs.

A *string* ``spec.image`` cannot be declared: a structural schema gives every node one type
(``anyOf`` branches may not carry ``type``), and SPEC §1 allows
``x-kubernetes-preserve-unknown-fields`` only under ``params``. The API server therefore rejects
it at admission (``spec.image: Invalid value: "string": spec.image in body must be of type
object``) — loud, nothing stored, nothing runs; ``substratus convert`` rewrites it, and
:func:`upstream_problems` names the new field for manifests read outside the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

CONVERT_HINT = "renamed since the original Substratus; `substratus convert` rewrites such manifests"


@attrs.frozen
class UpstreamField:
    """One upstream ``spec`` field: which kinds had it, what replaces it, the shape it had."""

    name: str
    """JSON name under ``spec``."""
    replacement: dict[str, str]
    """kind → what to write instead, e.g. ``{"Model": "spec.baseModel"}``; a kind missing from
    this map did not have the field upstream but declaring it costs nothing and keeps it visible."""
    schema: dict[str, Any]
    """The structural schema of the upstream shape (so the server keeps the value)."""
    kinds: tuple[str, ...] = ("Model", "Dataset", "Server", "Notebook")

    def message(self, kind: str) -> str:
        new = self.replacement.get(kind)
        if new is None:
            return f"spec.{self.name}: not a {kind} field ({CONVERT_HINT}); remove it"
        return f"spec.{self.name}: use {new} ({CONVERT_HINT})"


_KEPT = "Kept only to report the parent field."


def _strings(*names: str) -> dict[str, Any]:
    return {n: {"type": "string", "description": _KEPT} for n in names}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": _KEPT, "properties": properties}


_REF = _object(_strings("name", "namespace"))

BUILD_SCHEMA: dict[str, Any] = _object({
    "git": _object(_strings("url", "path", "branch", "tag")),
    "upload": _object(_strings("md5Checksum", "requestID")),
})
"""Upstream ``Build`` (api/v1/common_types.go): ``git {url, path, tag, branch}`` or
``upload {md5Checksum, requestID}``."""

_ALL = ("Model", "Dataset", "Server", "Notebook")

FIELDS: tuple[UpstreamField, ...] = (
    UpstreamField("model", {"Model": "spec.baseModel"}, _REF, kinds=("Model",)),
    UpstreamField("dataset", {"Model": "spec.trainingDataset"}, _REF, kinds=("Model",)),
    UpstreamField("build", dict.fromkeys(_ALL, "spec.image.git or spec.image.upload"), BUILD_SCHEMA),
    UpstreamField(
        "modelName",
        {"Model": "spec.baseModel.name", "Server": "spec.model.name", "Notebook": "spec.model.name"},
        {"type": "string"},
    ),
)
"""Every renamed ``spec`` field. Server and Notebook kept ``model``/``dataset`` with our meaning."""


def fields_of(kind: str) -> list[UpstreamField]:
    return [f for f in FIELDS if kind in f.kinds]


def spec_properties(kind: str) -> dict[str, dict[str, Any]]:
    """Schema properties to add under ``spec`` of ``kind``'s CRD (descriptions say they are rejected)."""
    return {
        f.name: {**f.schema, "description": "Field of the original Substratus, rejected here: "
                 + f.message(kind).split(": ", 1)[1] + "."}
        for f in fields_of(kind)
    }


def spec_rules(kind: str) -> list[tuple[str, str]]:
    """CEL rules (rule, message) at ``spec`` rejecting each upstream field on servers with CEL."""
    return [(f"!has(self.{f.name})", f.message(kind)) for f in fields_of(kind)]


def upstream_problems(obj: Mapping[str, Any]) -> list[str]:
    """Messages naming each upstream field in a raw object's ``spec`` and its new name (empty if
    none). A string ``spec.image`` is named too; on the API server it never gets this far."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if not isinstance(kind, str) or not isinstance(spec, Mapping):
        return []
    out = [f.message(kind) for f in fields_of(kind) if f.name in spec]
    if isinstance(spec.get("image"), str):
        out.append(f"spec.image: a string is the original Substratus' form; use spec.image.name ({CONVERT_HINT})")
    return out
