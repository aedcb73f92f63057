"""``substratus explain KIND/NAME``: why an object is or is not ready, in one screen.

``kubectl describe`` shows one object; a Model that is not ready is usually waiting on
something else — its Dataset, that Dataset's build Job, a Pod that cannot pull. This walks the
dependency chain and the children and prints the conditions, child states and recent warning
events along it, ending with the first thing that blocks.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, TextIO

import attrs

from substratus.api import parse_time
from substratus.api.conditions import Reason
from substratus.cli import CliError, ExitCode
from substratus.controllers.dependencies import REFERENCE_FIELDS
from substratus.controllers.pods import pod_problem_of
from substratus.controllers.resources import BY_KIND
from substratus.runtime.client import ApiError, Client, Forbidden
from substratus.runtime.resource import DEPLOYMENTS, EVENTS, JOBS, PODS, Resource

ALIASES = {
    "model": "Model", "models": "Model",
    "dataset": "Dataset", "datasets": "Dataset", "data": "Dataset",
    "server": "Server", "servers": "Server",
    "notebook": "Notebook", "notebooks": "Notebook", "nb": "Notebook",
}
CHILDREN: dict[str, list[tuple[Resource, str]]] = {
    "Model": [(JOBS, "{name}-model-bld"), (JOBS, "{name}-model")],
    "Dataset": [(JOBS, "{name}-dataset-bld"), (JOBS, "{name}-dataset")],
    "Server": [(JOBS, "{name}-server-bld"), (DEPLOYMENTS, "{name}-server")],
    "Notebook": [(JOBS, "{name}-notebook-bld"), (PODS, "{name}-notebook")],
}
MAX_DEPTH = 8
# Reasons an object gives for itself, whatever its dependencies do (reported first).
ROOT_CAUSES = frozenset({Reason.INVALID_SPEC, Reason.RECONCILE_ERROR, Reason.REFERENCE_NOT_PERMITTED})


def parse_target(target: str, *, name_optional: bool = False) -> tuple[str, str]:
    """``KIND/NAME`` → (Kind, name); with ``name_optional`` a bare ``KIND`` gives (Kind, "")."""
    kind, sep, name = target.partition("/")
    if (not sep or not name) and not (name_optional and not sep):
        raise ValueError(f"expected KIND/NAME (e.g. model/falcon-7b), got {target!r}")
    resolved = ALIASES.get(kind.lower().split(".")[0])
    if resolved is None:
        raise ValueError(f"unknown kind {kind!r}; one of model, dataset, server, notebook (or nb, data)")
    return resolved, name


@attrs.define
class Node:
    """One object in the chain, with what we found about it."""

    kind: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    children: list[tuple[str, str, dict[str, Any] | None]] = attrs.field(factory=list)
    pods: list[dict[str, Any]] = attrs.field(factory=list)
    """Every Pod labelled with this object (its Jobs', ReplicaSets' and its own)."""
    warnings: list[dict[str, Any]] = attrs.field(factory=list)
    dependencies: list[Node] = attrs.field(factory=list)
    forbidden: str = ""
    """Why the object could not be read (e.g. another tenant's namespace); empty if it was."""

    @property
    def ready(self) -> bool:
        return bool(((self.obj or {}).get("status") or {}).get("ready"))


def _age(ts: str | None, now: dt.datetime) -> str:
    if not ts:
        return "?"
    seconds = int((now - parse_time(ts)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def child_state(kind: str, obj: dict[str, Any] | None) -> str:
    """One line a user can act on, per child kind."""
    if obj is None:
        return "not created"
    status = obj.get("status") or {}
    if kind == "Job":
        for c in status.get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
                tail = f" ({c.get('reason')}: {c.get('message')})" if c.get("type") == "Failed" else ""
                return ("succeeded" if c["type"] == "Complete" else "failed") + tail
        return f"running (active={status.get('active', 0)}, failed={status.get('failed', 0)})"
    if kind == "Deployment":
        want = (obj.get("spec") or {}).get("replicas", 1)
        return f"{status.get('availableReplicas', 0)}/{want} available"
    if kind == "Pod":
        # The kubelet's or scheduler's reason (CreateContainerConfigError, Unschedulable, OOMKilled…).
        problem = pod_problem_of(obj)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        detail = f" ({problem.reason}: {problem.message})".replace(": )", ")") if problem else ""
        return f"{status.get('phase', 'Pending')}{', ready' if ready else ''}{detail}"
    return "present"


def _pods_of_child(kind: str, name: str, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Job's own Pods (by owner), or a Deployment's (every workload Pod of the object)."""
    if kind == "Job":
        return [p for p in pods if any(r.get("kind") == "Job" and r.get("name") == name
                                       for r in (p.get("metadata") or {}).get("ownerReferences") or [])]
    if kind == "Deployment":
        return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get("substratus.ai/role")
                == "workload"]
    return []


def render(node: Node, now: dt.datetime | None = None, out: list[str] | None = None, depth: int = 0) -> list[str]:
    """The report as lines (pure, so it is tested without a cluster)."""
    now = now or dt.datetime.now(dt.UTC)
    out = [] if out is None else out
    pad = "  " * depth
    head = f"{pad}{node.kind} {node.namespace}/{node.name}"
    if node.forbidden:
        out.append(f"{head}: cannot be read with your credentials ({node.forbidden})")
        return out
    if node.obj is None:
        out.append(f"{head}: NOT FOUND")
        return out
    out.append(f"{head}: {'ready' if node.ready else 'not ready'}")
    for c in (node.obj.get("status") or {}).get("conditions") or []:
        msg = f" — {c['message']}" if c.get("message") else ""
        out.append(f"{pad}  {c.get('type')}={c.get('status')} {c.get('reason', '')} "
                   f"({_age(c.get('lastTransitionTime'), now)} ago){msg}")
    if url := (node.obj.get("status") or {}).get("url"):
        out.append(f"{pad}  url: {url}")
    for kind, name, child in node.children:
        if child is None and kind == "Job" and name.endswith("-bld"):
            continue  # no build: the image was given
        out.append(f"{pad}  {kind} {name}: {child_state(kind, child)}")
        if child is not None:
            for pod in _pods_of_child(kind, name, node.pods):
                out.append(f"{pad}    Pod {(pod.get('metadata') or {}).get('name')}: {child_state('Pod', pod)}")
    for ev in node.warnings[-5:]:
        out.append(f"{pad}  warning {ev.get('reason')}: {ev.get('message')} (x{ev.get('count', 1)})")
    if node.dependencies:
        out.append(f"{pad}  depends on:")
        for dep in node.dependencies:
            render(dep, now, out, depth + 2)
    if depth == 0:
        out.append("")
        out.append("why: " + summary(node))
    return out


def summary(node: Node) -> str:
    """The first blocker along the chain, depth first."""
    if node.obj is None:
        return f"{node.kind} {node.namespace}/{node.name} does not exist"
    if node.ready:
        return f"{node.kind} {node.namespace}/{node.name} is ready"
    conds = (node.obj.get("status") or {}).get("conditions") or []
    # The object's own root cause comes before its dependencies' state: a spec to fix, a pass
    # that keeps failing, or a reference it may not follow, whatever the dependency does.
    own = [c for c in conds if c.get("type") != "Ready" and c.get("status") != "True"
           and c.get("reason") in ROOT_CAUSES]
    if own:
        return _blocked(node, own[0])
    for dep in node.dependencies:
        if not dep.ready and not dep.forbidden:
            return summary(dep)
    # Ready names the first condition holding the object back (SPEC §1); say which one it is.
    ready = next((c for c in conds if c.get("type") == "Ready" and c.get("status") != "True"), None)
    held = [c for c in conds if c.get("type") != "Ready" and c.get("status") != "True"]
    if ready is not None:
        source = next((c for c in held if c.get("reason") == ready.get("reason")
                       and c.get("message") == ready.get("message")), ready)
        held = [source]
    if held:
        return _blocked(node, held[-1])
    if not conds:
        return f"{node.kind} {node.namespace}/{node.name} has no status yet: is the operator running?"
    return f"{node.kind} {node.namespace}/{node.name} is not ready"


def _blocked(node: Node, c: dict[str, Any]) -> str:
    return f"{node.kind} {node.namespace}/{node.name}: {c.get('type')} is {c.get('reason')}" + (
        f" — {c['message']}" if c.get("message") else "")


async def gather(client: Client, kind: str, namespace: str, name: str, depth: int = 0,
                 seen: set[str] | None = None) -> Node:
    seen = set() if seen is None else seen
    key = f"{kind}/{namespace}/{name}"
    try:
        obj = await client.get_or_none(BY_KIND[kind], name, namespace)
    except Forbidden as exc:
        if depth == 0:
            raise
        # A dependency in a namespace the user may not read: say so and go on with the rest.
        return Node(kind, namespace, name, None, forbidden=exc.message or str(exc))
    node = Node(kind, namespace, name, obj)
    if obj is None or key in seen or depth >= MAX_DEPTH:
        return node
    seen.add(key)
    for res, pattern in CHILDREN[kind]:
        child_name = pattern.format(name=name)
        try:
            node.children.append((res.kind, child_name, await client.get_or_none(res, child_name, namespace)))
        except Forbidden:
            continue  # another tenant's workload: not shown rather than shown as "not created"
    try:
        node.pods = (await client.list(PODS, namespace, label_selector=f"substratus.ai/{kind.lower()}={name}"))["items"]
    except ApiError:
        node.pods = []
    try:
        events = (await client.list(EVENTS, namespace,
                                    field_selector=f"involvedObject.name={name},type=Warning"))["items"]
        node.warnings = sorted(events, key=lambda e: e.get("lastTimestamp") or "")
    except ApiError:
        node.warnings = []
    spec = obj.get("spec") or {}
    for field, target in REFERENCE_FIELDS.get(kind, {}).items():
        ref = spec.get(field)
        if isinstance(ref, dict) and ref.get("name"):
            node.dependencies.append(await gather(client, target, ref.get("namespace") or namespace, ref["name"],
                                                  depth + 1, seen))
    return node


def to_json(node: Node, now: dt.datetime | None = None) -> dict[str, Any]:
    """The report as data (``-o json``): the same facts as :func:`render`, for scripts."""
    now = now or dt.datetime.now(dt.UTC)
    status = (node.obj or {}).get("status") or {}
    return {
        "kind": node.kind, "namespace": node.namespace, "name": node.name,
        "found": node.obj is not None, "ready": node.ready,
        "conditions": status.get("conditions") or [],
        "url": status.get("url"),
        "children": [{"kind": kind, "name": name, "found": child is not None, "state": child_state(kind, child)}
                     for kind, name, child in node.children],
        "warnings": [{"reason": ev.get("reason"), "message": ev.get("message"), "count": ev.get("count", 1)}
                     for ev in node.warnings[-5:]],
        "dependsOn": [to_json(dep, now) for dep in node.dependencies],
        "why": summary(node),
    }


async def explain(client: Client, target: str, namespace: str) -> str:
    kind, name = parse_target(target)
    node = await gather(client, kind, namespace, name)
    return "\n".join(render(node))


async def gather_all(client: Client, target: str, namespace: str | None) -> list[Node]:
    """``KIND/NAME`` in ``namespace``, or every object of ``KIND`` (in ``namespace``, or all when None)."""
    kind, name = parse_target(target, name_optional=True)
    if name:
        if namespace is None:
            raise ValueError("-A/--all-namespaces needs a KIND without a name (e.g. models)")
        return [await gather(client, kind, namespace, name)]
    items = (await client.list(BY_KIND[kind], namespace))["items"]
    keys = sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in items)
    return [await gather(client, kind, ns, n) for ns, n in keys]


async def main(target: str, namespace: str | None, kubeconfig: str | None, out: TextIO = sys.stdout, *,
               context: str | None = None, all_namespaces: bool = False, output: str = "text") -> int:
    """Exit codes (substratus.cli.ExitCode): 0 all ready, 8 one not ready or missing, 2 bad target,
    3 no cluster, 4 CRDs missing. Raises :class:`substratus.cli.CliError` for the failures."""
    from substratus.plugins.upload import check_crd, connect

    try:
        kind, _ = parse_target(target, name_optional=True)
        if all_namespaces and "/" in target:
            raise ValueError("-A/--all-namespaces needs a KIND without a name (e.g. models)")
    except ValueError as exc:
        raise CliError(ExitCode.USAGE, str(exc)) from None
    client = await connect(kubeconfig, context)
    try:
        await check_crd(client, BY_KIND[kind])
        ns = None if all_namespaces else namespace or _current_namespace(kubeconfig, context)
        nodes = await gather_all(client, target, ns)
    except (ApiError, OSError) as exc:
        raise CliError(ExitCode.NO_CLUSTER if isinstance(exc, OSError) or getattr(exc, "status", 0) in (401, 403)
                       else ExitCode.ERROR, f"talking to the API server at {client.host}: {exc}") from None
    finally:
        await client.close()
    if output == "json":
        doc: Any = [to_json(n) for n in nodes] if "/" not in target else to_json(nodes[0])
        print(json.dumps(doc, indent=2), file=out)
    elif not nodes:
        print(f"no {kind} objects found" + ("" if ns is None else f" in namespace {ns}"), file=out)
    else:
        print("\n\n".join("\n".join(render(n)) for n in nodes), file=out)
    return ExitCode.OK if all(n.ready for n in nodes) else ExitCode.NOT_READY


def _current_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The kubeconfig context's namespace, like kubectl; ``default`` otherwise."""
    try:
        from kubernetes_asyncio.config import list_kube_config_contexts

        contexts, current = list_kube_config_contexts(config_file=kubeconfig)
        if context:
            current = next((c for c in contexts if c.get("name") == context), current)
        return str(((current or {}).get("context") or {}).get("namespace") or "default")
    except Exception:
        return "default"
