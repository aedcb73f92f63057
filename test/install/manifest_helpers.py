"""Shared by the install tests: the repository layout and the rendered kustomize overlays."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("local", "gcp")
KUBECTL = os.environ.get("KUBECTL", "kubectl")
NS = "substratus"
"""The namespace the manifests install into."""


def kustomize(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH`` (kustomize is built into kubectl) as a list of objects."""
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


_rendered: dict[str, list[dict[str, Any]]] = {}


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k manifests/overlays/<overlay>`` would apply (rendered once)."""
    if overlay not in _rendered:
        _rendered[overlay] = kustomize(MANIFESTS / "overlays" / overlay)
    return _rendered[overlay]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def relocate(objs: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    """The overlay moved into namespace ``ns`` (what a user's ``namespace:`` overlay does), with
    the cluster-scoped RBAC names suffixed so parallel installs in one cluster do not collide."""
    out = copy.deepcopy(objs)
    for o in out:
        meta = o["metadata"]
        if o["kind"] == "Namespace":
            meta["name"] = ns
        elif meta.get("namespace") == NS:
            meta["namespace"] = ns
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{ns}"
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for s in o["subjects"]:
                s["namespace"] = ns
            if o["roleRef"]["kind"] == "ClusterRole":
                o["roleRef"]["name"] = f"{o['roleRef']['name']}-{ns}"
        if o["kind"] == "ServiceMonitor":
            o["spec"]["namespaceSelector"]["matchNames"] = [ns]
        if o["kind"] == "ConfigMap" and meta["name"] == "substratus-config":
            o["data"]["SUBSTRATUS_LEADER_ELECTION_NAMESPACE"] = ns
    return out


def stream(objs: list[dict[str, Any]]) -> str:
    return "\n---\n".join(yaml.safe_dump(o) for o in objs)


def delete_cluster_scoped(kubectl: Callable[..., subprocess.CompletedProcess[str]], objs: list[dict[str, Any]]) -> None:
    for o in objs:
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "--ignore-not-found", check=False)
