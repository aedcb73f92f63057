"""Pure comparisons that decide whether anything must be written at all."""

from __future__ import annotations

import hashlib
import json
from typing import Any

HASH_ANNOTATION = "substratus.ai/spec-hash"


def spec_hash(obj: Any) -> str:
    """A stable digest of what we asked for; stamped on children so a converged reconcile can
    tell "unchanged" from the annotation alone, whatever the server defaulted."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def is_subset(desired: Any, actual: Any) -> bool:
    """Every field we set has our value in ``actual`` (fields the server added are ignored)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(k in actual and is_subset(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual)


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
