"""Builders shared by the plugin tests (a module name no other test directory uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CLUSTER = "test-cluster"
REGISTRY = "registry.test:5000"
DOCKERFILE = "FROM python:3.11-slim\nWORKDIR /content\nCOPY . .\nCMD [\"python\", \"train.py\"]\n"


def context_dir(root: Path, marker: str = "v1") -> Path:
    """A small build context: Dockerfile, code, and ignored noise."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "train.py").write_text(f"print({marker!r})\n")
    (root / "lib").mkdir(exist_ok=True)
    (root / "lib" / "util.py").write_text("X = 1\n")
    (root / ".dockerignore").write_text(".git\n*.log\n")
    (root / "debug.log").write_text("noise\n")
    return root


def manifest(path: Path, kind: str, name: str, ns: str | None = None, **spec: Any) -> Path:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    spec.setdefault("image", {"name": "placeholder/replaced-by-upload:v0"})
    path.write_text(yaml.safe_dump({"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": meta, "spec": spec}))
    return path


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None
