"""A small validator, defaulter and structural checker for the OpenAPI subset our CRDs use.

Lets tests (and ``kubectl``-less tooling) check manifests against the generated CRD schemas the
way kube-apiserver would, without a jsonschema dependency. Supported keywords: type, nullable,
properties, required, additionalProperties, items, enum, pattern, minimum, maximum, minLength,
maxLength, minItems, maxItems, minProperties, maxProperties, allOf, anyOf, oneOf, not, default,
x-kubernetes-preserve-unknown-fields. CEL (``x-kubernetes-validations``) is not evaluated.

Like the API server, object/array/string/number keywords only apply to values of that JSON type.
"""

from __future__ import annotations

import copy
import re
from typing import Any

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"

KNOWN_KEYWORDS = frozenset(
    {
        "type", "format", "description", "title", "nullable", "default", "example", "enum",
        "properties", "required", "additionalProperties", "items", "pattern", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems",
        "maxItems", "minProperties", "maxProperties", "allOf", "anyOf", "oneOf", "not",
        "externalDocs", PRESERVE, INT_OR_STRING, "x-kubernetes-embedded-resource",
        "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)  # fmt: skip
"""Keywords apiextensions.k8s.io/v1 JSONSchemaProps knows (x-kubernetes-validations: 1.23+)."""


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _type_ok(value: Any, want: str) -> bool:
    got = json_type(value)
    return got == want or (want == "number" and got == "integer")


def validate_openapi(value: Any, schema: dict[str, Any], path: str = "", *, strict: bool = True) -> list[str]:
    """Errors of ``value`` against ``schema`` as ``path: problem``.

    ``strict`` reports fields the schema does not know (the API server would silently prune
    them: in an example that is a typo worth failing on).
    """
    errors: list[str] = []
    _validate(value, schema, path, strict, errors)
    return errors


def _validate(value: Any, s: dict[str, Any], path: str, strict: bool, errors: list[str]) -> None:
    where = path or "(root)"
    if value is None:
        if s.get("type") and not s.get("nullable"):
            errors.append(f"{where}: must not be null")
        return
    want = s.get("type")
    if s.get(INT_OR_STRING):
        if json_type(value) not in ("integer", "string"):
            errors.append(f"{where}: expected integer or string, got {json_type(value)}")
            return
    elif want and not _type_ok(value, want):
        errors.append(f"{where}: expected {want}, got {json_type(value)}")
        return

    if "enum" in s and value not in s["enum"]:
        errors.append(f"{where}: {value!r} is not one of {s['enum']}")

    if isinstance(value, str):
        if "pattern" in s and not re.search(s["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {s['pattern']}")
        if "minLength" in s and len(value) < s["minLength"]:
            errors.append(f"{where}: shorter than {s['minLength']} characters")
        if "maxLength" in s and len(value) > s["maxLength"]:
            errors.append(f"{where}: longer than {s['maxLength']} characters")

    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in s and value < s["minimum"]:
            errors.append(f"{where}: {value} is less than the minimum {s['minimum']}")
        if "maximum" in s and value > s["maximum"]:
            errors.append(f"{where}: {value} is greater than the maximum {s['maximum']}")

    if isinstance(value, list):
        if "minItems" in s and len(value) < s["minItems"]:
            errors.append(f"{where}: should have at least {s['minItems']} items")
        if "maxItems" in s and len(value) > s["maxItems"]:
            errors.append(f"{where}: should have at most {s['maxItems']} items")
        if "items" in s:
            for i, item in enumerate(value):
                _validate(item, s["items"], f"{path}[{i}]", strict, errors)

    if isinstance(value, dict):
        if "minProperties" in s and len(value) < s["minProperties"]:
            errors.append(f"{where}: should have at least {s['minProperties']} properties")
        if "maxProperties" in s and len(value) > s["maxProperties"]:
            errors.append(f"{where}: should have at most {s['maxProperties']} properties")
        for key in s.get("required", []):
            if key not in value:
                errors.append(f"{_join(path, key)}: required field missing")
        props = s.get("properties", {})
        additional = s.get("additionalProperties")
        for key, item in value.items():
            sub = _join(path, key)
            if key in props:
                _validate(item, props[key], sub, strict, errors)
            elif isinstance(additional, dict):
                _validate(item, additional, sub, strict, errors)
            elif additional is False or (strict and props and not s.get(PRESERVE)):
                errors.append(f"{sub}: unknown field")

    for sub_schema in s.get("allOf", []):
        _validate(value, sub_schema, path, strict, errors)
    if "anyOf" in s and not any(not validate_openapi(value, x, path, strict=False) for x in s["anyOf"]):
        errors.append(f"{where}: does not match any schema of anyOf")
    if "oneOf" in s and sum(not validate_openapi(value, x, path, strict=False) for x in s["oneOf"]) != 1:
        errors.append(f"{where}: must match exactly one schema of oneOf")
    if "not" in s and not validate_openapi(value, s["not"], path, strict=False):
        errors.append(f"{where}: must not match the schema in not")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """A copy of ``value`` defaulted the way kube-apiserver does: a missing property with a
    default gets a copy of it, then defaulting recurses into every value (so ``default: {}``
    on an object triggers its properties' defaults)."""
    out = copy.deepcopy(value)
    _default(out, schema)
    return out


def _default(value: Any, s: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = s.get("properties", {})
        for key, prop in props.items():
            if "default" in prop and (key not in value or (value[key] is None and not prop.get("nullable"))):
                value[key] = copy.deepcopy(prop["default"])
        additional = s.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                _default(item, props[key])
            elif isinstance(additional, dict):
                _default(item, additional)
    elif isinstance(value, list) and "items" in s:
        for item in value:
            _default(item, s["items"])


_JUNCTOR_FORBIDDEN = ("type", "additionalProperties", "default", "title", "description", "nullable",
                      PRESERVE, INT_OR_STRING, "x-kubernetes-embedded-resource",
                      "x-kubernetes-list-type", "x-kubernetes-list-map-keys")  # fmt: skip


def check_structural(schema: dict[str, Any], path: str = "openAPIV3Schema") -> list[str]:
    """The structural-schema rules of apiextensions.k8s.io/v1 that our generator could break:
    known keywords only; ``type`` on every node unless preserve-unknown-fields or
    int-or-string; ``items`` on arrays; ``properties`` and ``additionalProperties`` not
    together; nothing but value validations inside junctors; ``object`` at the root; metadata
    restricted; every default valid against its own node."""
    errors: list[str] = []
    if schema.get("type") != "object":
        errors.append(f"{path}.type: must be object at the root")
    if "additionalProperties" in schema:
        errors.append(f"{path}.additionalProperties: not allowed at the root")
    meta = schema.get("properties", {}).get("metadata")
    if meta is not None and meta != {"type": "object"}:
        errors.append(
            f"{path}.properties.metadata: must be exactly {{type: object}} (we restrict names with CEL)"
        )
    _structural(schema, path, errors)
    return errors


def _structural(s: dict[str, Any], path: str, errors: list[str]) -> None:
    unknown = set(s) - KNOWN_KEYWORDS
    if unknown:
        errors.append(f"{path}: unknown keywords {sorted(unknown)}")
    if not s.get("type") and not s.get(PRESERVE) and not s.get(INT_OR_STRING):
        errors.append(f"{path}.type: must be set (or x-kubernetes-preserve-unknown-fields)")
    if s.get("type") == "array" and "items" not in s:
        errors.append(f"{path}.items: must be set for arrays")
    if s.get("properties") and isinstance(s.get("additionalProperties"), dict):
        errors.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if "default" in s:
        errs = validate_openapi(s["default"], s, path + ".default", strict=True)
        errors.extend(errs)
    for key, prop in s.get("properties", {}).items():
        _structural(prop, f"{path}.properties.{key}", errors)
    if isinstance(s.get("additionalProperties"), dict):
        _structural(s["additionalProperties"], f"{path}.additionalProperties", errors)
    if "items" in s:
        _structural(s["items"], f"{path}.items", errors)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(junctor, [])):
            _junctor(sub, f"{path}.{junctor}[{i}]", errors)
    if "not" in s:
        _junctor(s["not"], f"{path}.not", errors)


def _junctor(s: dict[str, Any], path: str, errors: list[str]) -> None:
    for key in _JUNCTOR_FORBIDDEN:
        if key in s:
            errors.append(f"{path}.{key}: not allowed inside a logical junctor")
    if "metadata" in s.get("properties", {}):
        errors.append(f"{path}.properties.metadata: not allowed inside a logical junctor")
