"""How API fields declare their wire name, documentation and OpenAPI constraints.

Every attrs field of an API class is declared with :func:`api_field`, so that one declaration
feeds three consumers that must never disagree: the cattrs converter (JSON name, omission of
unset optionals), the CRD schema generator (description, constraints, server-side default) and
the error messages of the converter and validator (field paths in JSON spelling).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

DESCRIPTION = "substratus.description"
JSON_NAME = "substratus.json"
OPENAPI = "substratus.openapi"
EMIT_DEFAULT = "substratus.emit_default"


def api_field(
    description: str,
    *,
    json: str | None = None,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    openapi: Mapping[str, Any] | None = None,
    emit_default: bool = False,
) -> Any:
    """An attrs field carrying its description, JSON name and extra OpenAPI keywords.

    ``json`` overrides the automatic snake_case → camelCase name (needed for ``requestID``).
    ``emit_default`` copies the Python default into the CRD schema so the API server fills it
    in too; only use it for JSON literals.
    """
    metadata = {
        DESCRIPTION: description,
        JSON_NAME: json,
        OPENAPI: dict(openapi or {}),
        EMIT_DEFAULT: emit_default,
    }
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def camel(name: str) -> str:
    """snake_case → camelCase, the Kubernetes JSON convention."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_name(a: attrs.Attribute[Any]) -> str:
    """The key this attribute has in the JSON the API server stores."""
    return a.metadata.get(JSON_NAME) or camel(a.name)


def description(a: attrs.Attribute[Any]) -> str:
    return str(a.metadata.get(DESCRIPTION) or "")


def openapi_extra(a: attrs.Attribute[Any]) -> dict[str, Any]:
    return dict(a.metadata.get(OPENAPI) or {})


def emits_default(a: attrs.Attribute[Any]) -> bool:
    return bool(a.metadata.get(EMIT_DEFAULT))


def is_omittable(a: attrs.Attribute[Any]) -> bool:
    """Optional fields (default None or ``""``, or an empty list/dict) are left out of the JSON
    we write when unset or empty, like Go's ``omitempty``: we never send ``url: null``.

    Empty strings matter beyond tidiness: the kube-apiserver 1.20.2 we test against rejects
    ``""`` in any ``type: string`` field of a custom resource ("must be of type string: null").
    """
    d = a.default
    if d is None or d == "":
        return True
    # attrs.Factory instance (typed as a function in attrs' stubs, hence getattr)
    return getattr(d, "factory", None) in (list, dict) and not getattr(d, "takes_self", True)


def is_empty(value: Any) -> bool:
    """None, ``""``, ``[]`` or ``{}``: what an omittable field is left out for."""
    return value is None or (isinstance(value, str | list | dict) and not value)
