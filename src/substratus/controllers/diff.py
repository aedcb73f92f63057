"""Pure comparisons that decide whether anything must be written at all."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

HASH_ANNOTATION = "substratus.ai/spec-hash"


def spec_hash(obj: Any) -> str:
    """A stable digest of what we asked for; stamped on children so a converged reconcile can
    tell "unchanged" from the annotation alone, whatever the server defaulted."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


# Kubernetes quantity suffixes (apimachinery resource.Quantity): binary SI, decimal SI, exponent.
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
# Maps whose values are quantities (container resources, pod overhead).
_QUANTITY_MAPS = frozenset({"requests", "limits", "overhead"})


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (``"10Gi"``, ``"500m"``, ``2``, ``"1e3"``) as a number; None if it
    is not one. The API server rewrites quantities to their canonical form (``"1024Mi"`` is
    stored as ``"1Gi"``), so they are compared by value, never as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY_RE.match(value)
    if m is None:
        return None
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        return None
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))


def is_empty(value: Any) -> bool:
    """The zero value the API server leaves out of what it returns (Go's ``omitempty``):
    null, ``""``, ``0``, ``false``, ``[]``, and an object of nothing but zero values."""
    if value is None:
        return True
    if isinstance(value, dict):
        return all(is_empty(v) for v in value.values())
    if isinstance(value, bool | int | float | str | list):
        return not value
    return False


def is_subset(desired: Any, actual: Any, path: tuple[str, ...] = ()) -> bool:
    """Every field we set has our value in ``actual``, compared as the API server means it:

    - fields the server added (defaults, status, managed fields) are ignored;
    - a field we set to its zero value (``env: []``, ``readOnly: false``, ``""``) equals the
      field being absent, because Go's ``omitempty`` drops it from what the server returns;
    - quantities under ``requests``/``limits`` compare by value (``"1024Mi"`` == ``"1Gi"``);
    - lists compare item by item (same length, same order).

    ``path`` is where ``desired`` sits (keys only), for the quantity rule.
    """
    if isinstance(desired, dict):
        if actual is None and is_empty(desired):
            return True
        if not isinstance(actual, dict):
            return False
        for k, v in desired.items():
            if k not in actual or actual[k] is None:
                if not is_empty(v):
                    return False
            elif not is_subset(v, actual[k], (*path, k)):
                return False
        return True
    if isinstance(desired, list):
        if actual is None and not desired:
            return True
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(is_subset(d, a, path) for d, a in zip(desired, actual, strict=True))
    if desired == actual and type(desired) is type(actual):
        return True
    if len(path) >= 2 and path[-2] in _QUANTITY_MAPS:
        want, have = parse_quantity(desired), parse_quantity(actual)
        return want is not None and want == have
    return bool(desired == actual) and isinstance(desired, bool) == isinstance(actual, bool)


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning ``old`` into ``new``; ``None`` when they are equal.

    Keys missing from ``new`` become explicit nulls so fields are really cleared; lists are
    replaced whole, as merge-patch requires.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        patch: dict[str, Any] = {}
        for key in old.keys() - new.keys():
            patch[key] = None
        for key, value in new.items():
            if key not in old:
                patch[key] = value
                continue
            sub = merge_patch(old[key], value)
            if sub is not None:
                patch[key] = sub
        return patch or None
    if old == new:
        return None
    return new
