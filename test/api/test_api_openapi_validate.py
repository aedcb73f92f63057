from __future__ import annotations

from typing import Any

import pytest

from substratus.api.openapi_validate import apply_defaults, check_structural, validate_openapi


@pytest.mark.parametrize(
    ("value", "schema", "errors"),
    [
        (1, {"type": "integer"}, []),
        (True, {"type": "integer"}, ["(root): expected integer, got boolean"]),
        (1, {"type": "number"}, []),
        (1.5, {"type": "integer"}, ["(root): expected integer, got number"]),
        (None, {"type": "string"}, ["(root): must not be null"]),
        (None, {"type": "string", "nullable": True}, []),
        ("b", {"type": "string", "enum": ["a"]}, ["(root): 'b' is not one of ['a']"]),
        ("abc", {"type": "string", "maxLength": 2}, ["(root): longer than 2 characters"]),
        ("abc", {"type": "string", "minLength": 4}, ["(root): shorter than 4 characters"]),
        ({"a": 1}, {"type": "object", "additionalProperties": False}, ["a: unknown field"]),
        ({"a": "x"}, {"type": "object", "additionalProperties": {"type": "integer"}}, ["a: expected integer, got string"]),
        ([1, "x"], {"type": "array", "items": {"type": "integer"}}, ["[1]: expected integer, got string"]),
        ({}, {"type": "object", "required": ["a"]}, ["a: required field missing"]),
        # object/array keywords are vacuous for other JSON types (the params trick relies on it)
        ("x", {"minProperties": 1, "maxProperties": 0, "minItems": 1, "maxItems": 0}, []),
        (3, {"minProperties": 1, "maxProperties": 0, "minItems": 1, "maxItems": 0, "pattern": "^a$"}, []),
        ({"k": 1}, {"x-kubernetes-preserve-unknown-fields": True}, []),
        (5, {"anyOf": [{"minimum": 10}, {"maximum": 6}]}, []),
        (8, {"anyOf": [{"minimum": 10}, {"maximum": 6}]}, ["(root): does not match any schema of anyOf"]),
        ({"a": 1, "b": 2}, {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "not": {"required": ["a", "b"]}},
         ["(root): must not match the schema in not"]),
        (2, {"oneOf": [{"minimum": 1}, {"minimum": 2}]}, ["(root): must match exactly one schema of oneOf"]),
        (1, {"allOf": [{"minimum": 2}]}, ["(root): 1 is less than the minimum 2"]),
        ("x", {"x-kubernetes-int-or-string": True}, []),
        (1.5, {"x-kubernetes-int-or-string": True}, ["(root): expected integer or string, got number"]),
    ],
)  # fmt: skip
def test_validate(value: Any, schema: dict[str, Any], errors: list[str]) -> None:
    assert validate_openapi(value, schema) == errors


def test_unknown_fields_strict_vs_lenient() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert validate_openapi({"a": 1, "b": 2}, schema) == ["b: unknown field"]
    assert validate_openapi({"a": 1, "b": 2}, schema, strict=False) == []


def test_apply_defaults_recurses_into_defaulted_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "r": {"type": "object", "default": {}, "properties": {"cpu": {"type": "integer", "default": 2}}},
            "l": {
                "type": "array",
                "items": {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}},
            },
            "m": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"x": {"type": "string", "default": "d"}},
                },
            },
        },
    }
    value = {"l": [{}, {"n": 5}], "m": {"k": {}}}
    assert apply_defaults(value, schema) == {
        "r": {"cpu": 2},
        "l": [{"n": 1}, {"n": 5}],
        "m": {"k": {"x": "d"}},
    }
    assert value == {"l": [{}, {"n": 5}], "m": {"k": {}}}  # input untouched


def test_check_structural() -> None:
    good = {
        "type": "object",
        "properties": {"metadata": {"type": "object"}, "a": {"type": "string", "default": "x"}},
    }
    assert check_structural(good) == []
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "a": {"description": "no type"},
            "b": {"type": "array"},
            "c": {"type": "integer", "default": "x"},
            "d": {
                "type": "object",
                "properties": {"e": {"type": "string"}},
                "additionalProperties": {"type": "string"},
            },
            "f": {"type": "string", "anyOf": [{"type": "string"}]},
            "g": {"type": "string", "$ref": "#/x"},
        },
    }
    errors = check_structural(bad)
    for fragment in (
        "properties.metadata: must be exactly",
        "properties.a.type: must be set",
        "properties.b.items: must be set",
        "properties.c.default: expected integer, got string",
        "properties.d: properties and additionalProperties are mutually exclusive",
        "properties.f.anyOf[0].type: not allowed inside a logical junctor",
        "properties.g: unknown keywords ['$ref']",
    ):
        assert any(fragment in e for e in errors), (fragment, errors)
