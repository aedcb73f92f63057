"""Scenario 8: converged means silent — zero requests for any converged object of any kind.

Every kind, in a minimal variant (every optional field empty: no params, no env, no command,
no references — the Server with neither params nor env is the reported case: its rendered
``env: []`` is dropped by the API server) and a maximal one (params with ``$``, env with a
secret reference, command, every resource, a GPU, references, a git build), converges behind a
recording proxy, next to objects settled without being ready (InvalidSpec, a running and a failed
Job, a reference another namespace did not allow, a missing dependency, an upload not yet made —
re-checked in storage every few seconds). Then, counted at the proxy: re-delivering every cached object (a resync) and
restarting the operator (a new process-worth of caches over the same objects) must send **no
request about any object in the namespace** — no apply, no status patch, no create, no GET.
Only the informers' own LISTs and WATCHes may pass.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

from faultproxy import Record
from reliability_helpers import condition, dataset, model, notebook, server, wait_ready

from substratus.controllers.build import UPLOAD_POLL_SECONDS
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.runtime.resource import JOBS, SECRETS
from substratus.testing.simulator import OUTCOME_ANNOTATION
from substratus.testing.wait import eventually

GPU = {"type": "nvidia-l4", "count": 1}
MAX_COMMON: dict[str, Any] = {
    "params": {"password": "pa$$word", "epochs": 3, "lr": 0.5, "flag": False, "name": "tiiuae/falcon-7b",
               "empty": ""},
    "env": {"LOG_LEVEL": "debug", "HF_TOKEN": "${{ secrets.hf.token }}"},
    "command": ["python", "main.py", "--verbose"],
    "resources": {"cpu": 4, "memory": 16, "disk": 30, "gpu": GPU},
}
GIT = {"git": {"url": "https://github.com/org/loader", "branch": "main", "path": "sub/dir"}}


def variants(ns: str) -> list[tuple[Any, dict[str, Any]]]:
    return [
        (DATASETS, dataset("ds-min", ns)),
        (DATASETS, dataset("ds-max", ns, **MAX_COMMON)),
        (DATASETS, dataset("ds-git", ns, image=GIT)),
        (MODELS, model("m-min", ns)),
        (MODELS, model("m-max", ns, baseModel={"name": "m-min"}, trainingDataset={"name": "ds-max", "namespace": ns},
                       **MAX_COMMON)),
        (SERVERS, server("s-min", ns, model={"name": "m-min"})),
        (SERVERS, server("s-max", ns, model={"name": "m-max", "namespace": ns}, **MAX_COMMON)),
        (SERVERS, server("s-git", ns, model={"name": "m-min"}, image=GIT, params={"a": 1})),
        (NOTEBOOKS, notebook("nb-min", ns)),
        (NOTEBOOKS, notebook("nb-max", ns, model={"name": "m-max"}, dataset={"name": "ds-max"}, **MAX_COMMON)),
        (NOTEBOOKS, notebook("nb-suspended", ns, suspend=True, model={"name": "m-min"}, params={"a": "b"})),
    ]


# Objects that are settled without being ready: each state must be as silent as "ready".
UPLOAD = {"upload": {"checksum": "0" * 32, "requestID": "r1"}}


def not_ready_variants(ns: str) -> list[tuple[Any, dict[str, Any], str, str]]:
    """(resource, object, condition type, reason it settles in)."""
    return [
        # Invalid on every server: no CRD CEL rule covers a malformed secret reference, so a server
        # that enforces CEL stores it too and the controller marks it.
        (DATASETS, dataset("ds-invalid", ns, env={"TOKEN": "${{ secrets.hf }}"}), "Complete", "InvalidSpec"),
        (DATASETS, dataset("ds-running", ns), "Complete", "JobRunning"),
        (DATASETS, dataset("ds-failed", ns), "Complete", "JobFailed"),
        (MODELS, model("m-other-ns", ns, baseModel={"name": "m-min", "namespace": "elsewhere"}),
         "Complete", "ReferenceNotPermitted"),
        (SERVERS, server("s-waiting", ns, model={"name": "missing"}), "Serving", "WaitingForDependency"),
        (NOTEBOOKS, notebook("nb-upload", ns, image=UPLOAD), "Built", "AwaitingUpload"),
    ]


_PREFIX = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)/")


def object_requests(records: list[Record], ns: str) -> list[str]:
    """Requests about objects in ``ns``: everything but the informers' LISTs and WATCHes (and
    requests outside the namespace, such as discovery)."""
    out = []
    for r in records:
        rest = _PREFIX.sub("", r.path)
        parts = rest.split("/")
        if parts[:2] != ["namespaces", ns]:
            continue
        is_list = r.method == "GET" and len(parts) == 3
        if r.watch or is_list:
            continue
        out.append(f"{r.method} {r.path}")
    return out


async def settle(op: Any) -> None:
    """Queues idle twice, 0.5 s apart (a status write's own watch event must come back and find
    nothing to do), and the Event writers flushed."""
    for _ in range(2):
        await eventually(op.queues_idle, timeout=30)
        await op.manager.recorder.flush(10)
        await asyncio.sleep(0.5)
    await eventually(op.queues_idle, timeout=30)


async def converge(admin: Any, ns: str) -> None:
    await wait_ready(admin, DATASETS, ns, ["ds-min", "ds-max", "ds-git"], timeout=90)
    await wait_ready(admin, MODELS, ns, ["m-min", "m-max"], timeout=90)
    await wait_ready(admin, SERVERS, ns, ["s-min", "s-max", "s-git"], timeout=90)
    await wait_ready(admin, NOTEBOOKS, ns, ["nb-min", "nb-max"], timeout=90)

    async def suspended() -> bool:
        c = condition(await admin.get(NOTEBOOKS, "nb-suspended", ns), "Serving")
        return bool(c and c["reason"] == "Suspended")

    await eventually(suspended, timeout=30)
    for res, obj, type_, reason in not_ready_variants(ns):
        name = obj["metadata"]["name"]

        async def settled_in(res: Any = res, name: str = name, type_: str = type_, reason: str = reason) -> bool:
            c = condition(await admin.get(res, name, ns), type_)
            return bool(c and c["reason"] == reason)

        await eventually(settled_in, timeout=30)


async def test_converged_objects_of_every_kind_send_no_request_on_resync_or_restart(
        start_operator, make_proxy, sim, admin, namespace, tmp_path) -> None:
    ns = namespace
    proxy = await make_proxy("converged")
    kubeconfig = proxy.write_kubeconfig(tmp_path / "kubeconfig")
    await admin.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": ns},
                                 "stringData": {"token": "t"}})
    op = await start_operator(kubeconfig_path=kubeconfig, workers=4)
    sim.held.update({"ds-running-dataset", "ds-failed-dataset"})
    for res, obj in variants(ns) + [(r, o) for r, o, _, _ in not_ready_variants(ns)]:
        await admin.create(res, obj)
    await eventually(lambda: admin.get_or_none(JOBS, "ds-failed-dataset", ns), timeout=30)
    await admin.patch(JOBS, "ds-failed-dataset", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "fail"}}}, ns)
    await converge(admin, ns)
    await settle(op)

    # Resync: every cached object is delivered to its controllers again.
    mark = len(proxy.records)
    for inf in op.manager.cache.informers:
        inf.resync()
    await settle(op)
    on_resync = object_requests(proxy.records[mark:], ns)

    # Restart: a new operator over the same objects and children.
    await op.stop()
    mark = len(proxy.records)
    op = await start_operator(kubeconfig_path=kubeconfig, workers=4)
    await settle(op)
    # Long enough for the upload re-check (a storage read on a timer) to have run too.
    await asyncio.sleep(UPLOAD_POLL_SECONDS + 1)
    await settle(op)
    on_restart = object_requests(proxy.records[mark:], ns)
    lists = sum(1 for r in proxy.records[mark:] if r.method == "GET" and not r.watch)
    print(f"\nRELIABILITY converged: 17 objects of 4 kinds (11 ready, 6 settled otherwise); requests about objects: resync {len(on_resync)}, "
          f"restart {len(on_restart)} (restart LIST/GETs outside: {lists})")
    assert on_resync == [], f"a resync of converged objects sent requests: {Counter(on_resync).most_common(10)}"
    assert on_restart == [], f"a restart over converged objects sent requests: {Counter(on_restart).most_common(10)}"
    # Still converged (nothing was silent because something broke).
    await converge(admin, ns)
