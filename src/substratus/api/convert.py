"""One cattrs converter between the API classes and the camelCase JSON the API server stores.

Rules (each is tested):
- wire names come from :func:`substratus.api.fields.json_name` (camelCase, ``requestID``);
- on input, defaults fill in and unknown keys (a newer server/CRD) are ignored — except in
  ``metadata``, which keeps every key;
- on output, unset optionals (None or ``""``) and empty collections are left out;
- scalars are structured strictly (no ``"2"`` → 2, no ``"false"`` → True): a wrong type is an
  error naming the field path in JSON spelling, e.g. ``spec.resources.cpu: expected integer, got string``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from substratus.api.common import ParamValue
from substratus.api.fields import is_empty, is_omittable, json_name
from substratus.api.kinds import KINDS, AnyKind
from substratus.api.meta import API_VERSION, MetaTypeError, ObjectMeta, meta_from_dict, meta_to_dict
from substratus.api.upstream import upstream_problems


class StructureError(ValueError):
    """An object could not be read into the API classes; ``errors`` are messages naming fields."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _TypeMismatch(TypeError):
    """A value of the wrong JSON type; the message is user-facing, ``subpath`` (if any) is
    appended to the field path."""

    def __init__(self, message: str, subpath: str = "") -> None:
        super().__init__(message)
        self.subpath = subpath


_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for t in (bool, int, float, str, dict, list):  # bool before int: bool is an int subclass
        if isinstance(value, t):
            return _JSON_TYPE_NAMES[t]
    return type(value).__name__


def _strict(want: type, accept: tuple[type, ...]) -> Callable[[Any, type], Any]:
    def hook(value: Any, _: type) -> Any:
        if isinstance(value, bool) and want is not bool:
            raise _TypeMismatch(f"expected {_JSON_TYPE_NAMES[want]}, got boolean")
        if not isinstance(value, accept):
            raise _TypeMismatch(f"expected {_JSON_TYPE_NAMES[want]}, got {_json_type(value)}")
        return float(typing.cast(float, value)) if want is float else value

    return hook


def _param_value(value: Any, _: Any) -> ParamValue:
    if isinstance(value, str | int | float | bool):
        return value
    raise _TypeMismatch(f"must be a string, integer, number or boolean, got {_json_type(value)}")


def _is_api_class(cl: Any) -> bool:
    return attrs.has(cl) and cl.__module__.startswith("substratus.api.") and cl is not ObjectMeta


def _structure_factory(cl: type) -> Callable[[Any, type], Any]:
    overrides = {a.name: override(rename=json_name(a)) for a in attrs.fields(cl)}
    fn: Callable[[Any, type], Any] = make_dict_structure_fn(cl, converter, **overrides)  # type: ignore[arg-type]

    def hook(value: Any, t: type) -> Any:
        if not isinstance(value, Mapping):
            raise _TypeMismatch(f"expected object, got {_json_type(value)}")
        return fn(value, t)

    return hook


def _unstructure_factory(cl: type) -> Callable[[Any], dict[str, Any]]:
    fields = attrs.fields(cl)
    overrides = {a.name: override(rename=json_name(a)) for a in fields}
    fn: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cl, converter, **overrides)  # type: ignore[arg-type]
    omittable = frozenset(json_name(a) for a in fields if is_omittable(a))

    def hook(obj: Any) -> dict[str, Any]:
        out = fn(obj)
        return {k: v for k, v in out.items() if not (k in omittable and is_empty(v))}

    return hook


def _structure_meta(value: Any, _: type) -> ObjectMeta:
    try:
        return meta_from_dict(value)
    except MetaTypeError as e:
        raise _TypeMismatch(f"expected {e.expected}, got {_json_type(e.value)}", e.key) from None
    except TypeError:
        raise _TypeMismatch(f"expected object, got {_json_type(value)}") from None


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    c.register_structure_hook(str, _strict(str, (str,)))
    c.register_structure_hook(int, _strict(int, (int,)))
    c.register_structure_hook(float, _strict(float, (int, float)))
    c.register_structure_hook(bool, _strict(bool, (bool,)))
    c.register_structure_hook_func(lambda t: t == ParamValue, _param_value)
    c.register_structure_hook(ObjectMeta, _structure_meta)
    c.register_unstructure_hook(ObjectMeta, meta_to_dict)
    return c


converter: cattrs.Converter = _make_converter()
converter.register_structure_hook_factory(_is_api_class, _structure_factory)
converter.register_unstructure_hook_factory(_is_api_class, _unstructure_factory)


def structure(data: Any, cl: type[Any]) -> Any:
    """Structure any API class (e.g. a status from a watch event); raises StructureError."""
    try:
        return converter.structure(data, cl)
    except StructureError:
        raise
    except Exception as e:
        raise StructureError(spec_errors(e)) from e


def from_dict(obj: Mapping[str, Any]) -> AnyKind:
    """Read an object as stored by the API server, dispatching on ``kind``.

    Raises StructureError (a ValueError) whose ``errors`` name the offending fields, ready for
    an ``InvalidSpec`` condition message. Field names of the original Substratus are reported
    first and alone, with their new names (SPEC §9): they are the cause of whatever else fails.
    """
    if not isinstance(obj, Mapping):
        raise StructureError([f"expected an object, got {_json_type(obj)}"])
    kind = obj.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise StructureError([f"kind: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"])
    api_version = obj.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        raise StructureError([f"apiVersion: expected {API_VERSION!r}, got {api_version!r}"])
    upstream = upstream_problems(obj)
    if upstream:
        raise StructureError(upstream)
    result: AnyKind = structure(obj, cls)
    return result


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-ready dict of an object (or of any API class, e.g. a status)."""
    out: dict[str, Any] = converter.unstructure(obj)
    return out


def spec_errors(exc: BaseException) -> list[str]:
    """Flatten a structuring error into ``path: problem`` messages in JSON spelling
    (``spec.resources.cpu: expected integer, got string``)."""
    if isinstance(exc, StructureError):
        return list(exc.errors)
    out: list[str] = []
    _walk(exc, "", out)
    return out or [str(exc)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(exc: BaseException, path: str, out: list[str]) -> None:
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            _walk(sub, _join(path, _wire_name(note.name)), out)
        for sub in without:
            _walk(sub, path, out)
    elif isinstance(exc, IterableValidationError):
        with_notes_it, without_it = exc.group_exceptions()
        for sub, inote in with_notes_it:
            _walk(sub, _index(path, inote), out)
        for sub in without_it:
            _walk(sub, path, out)
    elif isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            _walk(member, path, out)
    else:
        where = path or "(object)"
        if isinstance(exc, KeyError):
            out.append(f"{where}: required field missing")
        elif isinstance(exc, _TypeMismatch):
            out.append(f"{_join(path, exc.subpath) if exc.subpath else where}: {exc}")
        else:
            out.append(f"{where}: {type(exc).__name__}: {exc}")


def _index(path: str, note: IterableValidationNote) -> str:
    if isinstance(note.index, str):
        return _join(path, note.index)
    return f"{path}[{note.index}]"


_WIRE_NAMES: dict[str, str] = {}


def _wire_name(attr_name: str) -> str:
    """Python attribute name → JSON name. Names map the same way in every API class (a test
    checks), so one table built from all classes suffices."""
    if not _WIRE_NAMES:
        _WIRE_NAMES.update(wire_name_table())
    return _WIRE_NAMES.get(attr_name, attr_name)


def wire_name_table() -> dict[str, str]:
    """Every (attribute name, JSON name) pair used by the API classes."""
    table: dict[str, str] = {}
    seen: set[type] = set()

    def visit(cl: type) -> None:
        if cl in seen or not attrs.has(cl) or cl is ObjectMeta:
            return
        seen.add(cl)
        attrs.resolve_types(cl)
        for a in attrs.fields(cl):
            table.setdefault(a.name, json_name(a))
            for t in _class_args(a.type):
                visit(t)

    for cls in KINDS.values():
        visit(cls)
    return table


def _class_args(tp: Any) -> list[type]:
    if isinstance(tp, type):
        return [tp]
    return [t for arg in typing.get_args(tp) for t in _class_args(arg)]
