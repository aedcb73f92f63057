"""OpenAPI v3 structural schemas generated from the attrs API classes.

The classes are the single source of truth: field names, types, descriptions, defaults and
constraints all come from the ``api_field`` declarations, so the CRDs cannot drift from what the
converter reads. The schema must be accepted by kube-apiserver 1.20 (our test server) and by
current servers, hence these choices:

- ``metadata`` is only ``type: object``; the 50-character DNS-1035 name rule is a CEL rule at
  the root (ignored by servers without CEL, always enforced by the controller).
- ``params`` is the only place with ``x-kubernetes-preserve-unknown-fields``: a structural schema
  cannot say "string | integer | number | boolean" (``anyOf`` branches may not carry ``type``), so
  each value is an untyped preserved node restricted to scalars with four vacuous-for-scalars
  keywords: ``minProperties: 1`` + ``maxProperties: 0`` reject every object and ``minItems: 1`` +
  ``maxItems: 0`` reject every array, while scalars pass (object/array keywords do not apply to
  them). This works on every server version, without CEL.
- The image and git exclusivity rules are CEL (``x-kubernetes-validations``) mirrored in
  :mod:`substratus.api.validate`.
- ``spec`` also declares the original Substratus' renamed fields (:mod:`substratus.api.upstream`)
  so the server keeps them for the controller to reject by name (SPEC §9), and ``spec.image`` is
  required by a CEL rule rather than ``required``: an upstream manifest has ``spec.build`` instead,
  and on a server without CEL it must be stored to be told ``spec.build: use spec.image.git``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from substratus.api.common import GitSource, Image, ParamValue
from substratus.api.fields import description, emits_default, json_name, openapi_extra
from substratus.api.kinds import KindClass
from substratus.api.meta import ObjectMeta
from substratus.api.upstream import spec_properties, spec_rules
from substratus.api.validate import GIT_RULES, IMAGE_RULES, NAME_RULES

PRESERVE = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"

PARAM_VALUE_SCHEMA: dict[str, Any] = {
    PRESERVE: True,
    "minProperties": 1,
    "maxProperties": 0,
    "minItems": 1,
    "maxItems": 0,
}
"""A params value: any scalar; objects and arrays fail (see the module docstring)."""

_CLASS_RULES: dict[type, tuple[tuple[str, str], ...]] = {Image: IMAGE_RULES, GitSource: GIT_RULES}

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values."
)
KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. In CamelCase."
)


def _rules(rules: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"rule": rule, "message": message} for rule, message in rules]


def type_schema(tp: Any, *, cel: bool = True) -> dict[str, Any]:
    """Schema of a Python type used in an API class."""
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and tp != ParamValue:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) != 1:
            raise TypeError(f"unsupported union {tp!r}: only X | None is representable")
        return type_schema(non_none[0], cel=cel)
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is ObjectMeta:
        return {"type": "object"}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], cel=cel)}
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"map keys must be strings: {tp!r}")
        if args[1] == ParamValue:
            return {"type": "object", "additionalProperties": dict(PARAM_VALUE_SCHEMA)}
        return {"type": "object", "additionalProperties": type_schema(args[1], cel=cel)}
    if attrs.has(tp):
        return object_schema(tp, cel=cel)
    raise TypeError(f"no OpenAPI mapping for {tp!r}")


def object_schema(cls: type, *, cel: bool = True) -> dict[str, Any]:
    """Schema of an attrs class: properties in declaration order, required = no default."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for a in attrs.fields(cls):
        name = json_name(a)
        prop = type_schema(hints[a.name], cel=cel)
        desc = description(a)
        if desc:
            prop["description"] = desc
        if emits_default(a):
            prop["default"] = a.default
        prop.update(openapi_extra(a))
        properties[name] = prop
        if a.default is attrs.NOTHING:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if cel and cls in _CLASS_RULES:
        schema[VALIDATIONS] = _rules(_CLASS_RULES[cls])
    return schema


def kind_schema(cls: KindClass, *, cel: bool = True) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a kind's CRD."""
    schema = object_schema(cls, cel=cel)
    schema["description"] = " ".join((cls.__doc__ or "").split())
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": API_VERSION_DESCRIPTION}
    props["kind"] = {"type": "string", "description": KIND_DESCRIPTION}
    props["metadata"] = {"type": "object"}
    if cel:
        schema[VALIDATIONS] = _rules(NAME_RULES)
    _declare_upstream_fields(cls.KIND, props["spec"], cel=cel)
    return schema


IMAGE_REQUIRED_RULE = ("has(self.image)", "spec.image: required: set one of git, upload or name")


def _declare_upstream_fields(kind: str, spec: dict[str, Any], *, cel: bool) -> None:
    """Declare the upstream field names under ``spec`` (never pruned), and move ``image`` from
    ``required`` to a CEL rule (see the module docstring)."""
    spec["properties"].update(spec_properties(kind))
    required = [r for r in spec.get("required", ()) if r != "image"]
    if required:
        spec["required"] = required
    else:
        spec.pop("required", None)
    if cel:
        spec.setdefault(VALIDATIONS, []).extend(_rules((IMAGE_REQUIRED_RULE, *spec_rules(kind))))
