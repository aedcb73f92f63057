"""Memory per cached object: every kind the operator caches, in an informer's store, raw and as
the operator caches it.

The objects are the operator's own: :func:`populate` runs the real operator in-process (the
manager, its controllers and its caches, as ``substratus.testing.operator`` does for tests)
with the cluster simulator standing in for the kubelet and kube-controller-manager, on a mix of
Datasets, Models, Servers and Notebooks (a minimal and a maximal variant of each, and a git
build), until every one is ready. So every kind carries what it carries in a cluster: spec by one
field manager and status by another (the ``managedFields`` server-side apply leaves), Job and Pod
statuses as the Job controller and kubelet write them, build Jobs and their Pods, Deployments with
their ReplicaSets' Pods, the params ConfigMaps, the Service, the Notebook token Secret. The kinds
measured are the operator's cached kinds, read from its running manager (a kind cached but not
measured fails the benchmark).

"Stripped" is the cache's transform for the kind (``operator.CACHE_TRANSFORMS``, else
``strip_bulk``). Each measurement runs in a fresh subprocess (``python -m bench.memory measure
...``) that first touches the API once (TLS, JSON, imports) and then measures the growth caused
by filling one store:

* ``tracemalloc``: bytes Python allocated and still holds (exact, allocator overhead excluded);
* ``rss``: resident set growth from ``/proc/self/statm`` (what the kernel charges, in a separate
  process without tracemalloc, whose own bookkeeping would inflate it).

Both fill the store through a real ``Informer`` (paginated LIST, the transform, the store,
exactly as the operator does, with the operator's label selector for the kind). The real objects
are measured from the API server. Larger counts are synthesised from them: the parent process
writes renamed copies with fresh uids as LIST pages of the informer's page size to a file, and the
measuring child's informer lists from that file instead of the API server (same ``loads`` per
page, same informer and list code), so the child never allocates the copies before its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import create_namespace
from substratus.config import OperatorConfig
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.operator import CACHE_TRANSFORMS, manager_options
from substratus.runtime import client as client_module
from substratus.runtime.client import Client
from substratus.runtime.informer import Informer, Transform, strip_bulk
from substratus.runtime.resource import CONFIGMAPS, DEPLOYMENTS, JOBS, PODS, SECRETS, SERVICES, Resource

KINDS: dict[str, Resource] = {r.plural: r for r in (DATASETS, MODELS, SERVERS, NOTEBOOKS, JOBS, PODS, DEPLOYMENTS,
                                                    CONFIGMAPS, SERVICES, SECRETS)}
"""Every kind the operator caches (checked against its running manager by :func:`populate`)."""
SELECTORS: dict[Resource, str] = manager_options(OperatorConfig()).label_selectors
"""The operator's informers' label selectors (children: only ours)."""
VARIANTS: tuple[tuple[bool, str], ...] = ((False, "tracemalloc"), (False, "rss"), (True, "tracemalloc"), (True, "rss"))
"""(stripped, method) measured per cell."""
STRIPPED_ONLY: tuple[tuple[bool, str], ...] = tuple(v for v in VARIANTS if v[0])
"""``--quick``: as the operator caches them only."""


def cache_transform(res: Resource) -> Transform | None:
    """What the operator's cache applies to ``res`` (operator.CACHE_TRANSFORMS, else strip_bulk)."""
    return CACHE_TRANSFORMS[res] if res in CACHE_TRANSFORMS else strip_bulk


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    """Peak resident set (VmHWM) of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- the objects: the operator's own ----------------------------------------------------------

LOADER = "substratusai/loader:v1"
GIT = {"git": {"url": "https://github.com/org/loader", "branch": "main", "path": "sub/dir"}}
MAX_COMMON: dict[str, Any] = {
    "params": {"epochs": 3, "lr": 0.5, "flag": False, "name": "tiiuae/falcon-7b", "prompt": "Summarise: $text"},
    "env": {"LOG_LEVEL": "debug", "HF_TOKEN": "${{ secrets.hf.token }}"},
    "command": ["python", "main.py", "--verbose"],
    "resources": {"cpu": 4, "memory": 16, "disk": 30, "gpu": {"type": "nvidia-l4", "count": 1}},
}


def _obj(res: Resource, name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def parents(ns: str, k: int) -> list[tuple[Resource, dict[str, Any]]]:
    """``k`` of each custom kind, in dependency order: every third a maximal variant (params, env
    with a secret reference, command, every resource, a GPU), every fifth Dataset and Server built
    from git; Models train on their Dataset, Servers serve their Model, Notebooks mount both."""
    out: list[tuple[Resource, dict[str, Any]]] = []
    for i in range(k):
        big = MAX_COMMON if i % 3 == 1 else {}
        image = GIT if i % 5 == 2 else {"name": LOADER}
        out.append((DATASETS, _obj(DATASETS, f"ds-{i:03d}", ns, image=image,
                                   params={"url": f"https://example.com/ds-{i}.jsonl", "limit": 1000 + i}, **{
                                       k: v for k, v in big.items() if k != "params"})))
    for i in range(k):
        big = MAX_COMMON if i % 3 == 1 else {}
        out.append((MODELS, _obj(MODELS, f"m-{i:03d}", ns, image={"name": LOADER},
                                 trainingDataset={"name": f"ds-{i:03d}"}, **big)))
    for i in range(k):
        big = MAX_COMMON if i % 3 == 1 else {}
        image = GIT if i % 5 == 2 else {"name": "substratusai/server:v1"}
        out.append((SERVERS, _obj(SERVERS, f"s-{i:03d}", ns, image=image, model={"name": f"m-{i:03d}"}, **big)))
    for i in range(k):
        big = MAX_COMMON if i % 3 == 1 else {}
        out.append((NOTEBOOKS, _obj(NOTEBOOKS, f"nb-{i:03d}", ns, image={"name": "substratusai/notebook:v1"},
                                    model={"name": f"m-{i:03d}"}, dataset={"name": f"ds-{i:03d}"}, **big)))
    return out


async def populate(client: Client, k: int, workdir: Path, timeout: float = 600.0,
                   log: Any = print) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """A namespace where the operator made everything for ``k`` of each custom kind, converged
    (every parent ready); returns it and the raw objects of every cached kind, as its informers
    list them."""
    from substratus.testing.operator import local_test_config, running_operator
    from substratus.testing.simulator import ClusterSimulator

    ns = await create_namespace(client, "bench-memory")
    await client.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": ns},
                                  "stringData": {"token": "t"}})
    sim = ClusterSimulator(client.api, namespace=ns, job_delay=0.2, gc_interval=0)
    await sim.start()
    try:
        cfg = local_test_config(workdir / "memory-operator", ns, cluster_name="substratus-1", max_concurrent_reconciles=8)
        async with running_operator(client, cfg) as op:
            cached = {inf.resource for inf in op.manager.cache.informers}
            if cached != set(KINDS.values()):
                raise AssertionError(f"the operator caches {sorted(map(str, cached))}, the benchmark measures "
                                     f"{sorted(map(str, KINDS.values()))}: measure every cached kind")
            for res, obj in parents(ns, k):
                await client.create(res, obj)
            deadline = time.monotonic() + timeout
            for res in (DATASETS, MODELS, SERVERS, NOTEBOOKS):
                while True:
                    items = (await client.list(res, ns))["items"]
                    waiting = [o["metadata"]["name"] for o in items if not (o.get("status") or {}).get("ready")]
                    if len(items) == k and not waiting:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{len(waiting)} {res.plural} not ready after {timeout:.0f} s: "
                                           f"{[o.get('status') for o in items if not (o.get('status') or {}).get('ready')][:2]}")
                    await asyncio.sleep(1.0)
            await asyncio.sleep(1.0)  # the last status writes' watch events settle
    finally:
        await sim.stop()
    raw = {}
    for kind, res in KINDS.items():
        raw[kind], _ = await client.list_all(res, ns, label_selector=SELECTORS.get(res))
        if not raw[kind]:
            raise AssertionError(f"the operator made no {res.plural}")
    return ns, raw


# --- the measuring child --------------------------------------------------------------------------


def _renamed(obj: dict[str, Any], i: int, n_real: int) -> dict[str, Any]:
    """A copy of ``obj`` under a new name and uid, sharing everything else (it is serialised next)."""
    uid = str(uuid.uuid4())
    meta = {**obj["metadata"], "name": f"{obj['metadata']['name']}-c{i // n_real}", "uid": uid,
            "resourceVersion": str(100000 + i)}
    out = {**obj, "metadata": meta}
    spec = obj.get("spec") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if "controller-uid" in match:  # every Job has its own selector and pod labels
        template = spec["template"]
        out["spec"] = {**spec, "selector": {**spec["selector"], "matchLabels": {**match, "controller-uid": uid}},
                       "template": {**template, "metadata": {**template["metadata"], "labels": {
                           **template["metadata"]["labels"], "controller-uid": uid}}}}
    return out


def write_items(items: list[dict[str, Any]], count: int, path: Path) -> int:
    """``count`` renamed copies of ``items`` (as a LIST returns them: no apiVersion/kind), one JSON
    object per line; :class:`PagesClient` serves them as LIST pages of any size."""
    with open(path, "w") as f:
        for i in range(count):
            item = {k: v for k, v in _renamed(items[i % len(items)], i, len(items)).items()
                    if k not in ("apiVersion", "kind")}
            f.write(json.dumps(item, separators=(",", ":")) + "\n")
    return count


class PagesClient:
    """Stands in for ``Client`` in an ``Informer``: LIST pages come from a file, WATCH never ends.

    ``list`` answers one page (``limit`` items, a continue token for the rest) as the bytes of a
    LIST response, decoded by the client's own ``loads``; ``list_all`` is the real client's, so
    what it does with each page is measured, minus the HTTP round trip.
    """

    list_all = Client.list_all

    def __init__(self, path: Path, count: int) -> None:
        """Serves the first ``count`` objects of ``path``."""
        self.path = path
        with open(path, "rb") as f:
            self._offsets = [0]
            for line in f:
                if len(self._offsets) > count:
                    break
                self._offsets.append(self._offsets[-1] + len(line))

    async def list(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict:
        start = int(continue_ or 0)
        end = min(len(self._offsets) - 1, start + limit) if limit else len(self._offsets) - 1
        with open(self.path, "rb") as f:  # noqa: ASYNC230 - a local file, read like a response body
            f.seek(self._offsets[start])
            lines = f.read(self._offsets[end] - self._offsets[start]).splitlines()
        token = str(end) if end < len(self._offsets) - 1 else ""
        body = b'{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"1","continue":"' + token.encode() \
            + b'"},"items":[' + b",".join(lines) + b"]}"
        del lines
        return client_module.loads(body)

    async def watch(self, *_: Any, **__: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached


async def measure(kubeconfig: str, namespace: str, kind: str, count: int, strip: bool, method: str,
                  pages_file: Path | None) -> dict[str, Any]:
    """One cell: fill one informer store, report the growth per object."""
    res = KINDS[kind]
    selector = SELECTORS.get(res)
    transform = cache_transform(res) if strip else None
    client = await Client.from_kubeconfig(kubeconfig)
    try:
        await client.list(res, namespace, label_selector=selector, limit=1)  # TLS, session, imports
        source: Any = client if pages_file is None else PagesClient(pages_file, count)
        gc.collect()
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:  # noqa: ASYNC230
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        if method == "tracemalloc":
            tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
        t0 = time.perf_counter()
        inf = Informer(source, res, namespace=namespace, label_selector=selector, transform=transform)
        inf.start()
        if not await inf.wait_for_sync(300):
            raise TimeoutError("informer did not sync")
        await inf.stop()
        store = inf.store
        fill = time.perf_counter() - t0
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
        peak = tracemalloc.get_traced_memory()[1] - base if method == "tracemalloc" else _hwm_bytes() - base
        if method == "tracemalloc":
            tracemalloc.stop()
        n = len(store)
        if n != count:
            raise AssertionError(f"the store holds {n} objects, expected {count}")
        sample = list(store)[:200]
        json_bytes = sum(len(json.dumps(o, separators=(",", ":"))) for o in sample) / len(sample)
        mf = sum(len(json.dumps(o["metadata"]["managedFields"], separators=(",", ":")))
                 for o in sample if "managedFields" in o["metadata"]) / len(sample)
        return {"kind": kind, "count": count, "objects": n, "strip": strip, "method": method,
                "strip_mode": "per-page" if strip else "none",
                "source": "api" if pages_file is None else "synthesised", "bytes": after - base,
                "bytes_per_object": round((after - base) / n), "peak_bytes_per_object": round(peak / n),
                "json_bytes_per_object": round(json_bytes), "managed_fields_json_bytes": round(mf),
                "fill_seconds": round(fill, 3)}
    finally:
        await client.close()


# --- the parent ---------------------------------------------------------------------------------


def _measure_in_subprocess(kubeconfig: str, namespace: str, kind: str, count: int, strip: bool,
                           method: str, pages_file: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.memory", "measure", "--kubeconfig", kubeconfig, "--namespace", namespace,
            "--kind", kind, "--count", str(count), "--method", method]
    argv += (["--strip"] if strip else []) + (["--pages", str(pages_file)] if pages_file else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({' '.join(argv)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def run(client: Client, kubeconfig: str, counts: list[int], *, workdir: Path, parents_per_kind: int = 12,
              variants: tuple[tuple[bool, str], ...] = VARIANTS, kinds: list[str] | None = None,
              log: Any = print) -> dict[str, Any]:
    """Let the operator converge ``parents_per_kind`` of each custom kind, then measure every
    (kind, count, stripped, method): the real objects from the API server, and each of ``counts``
    synthesised from them."""
    log(f"memory: the operator converging {parents_per_kind} Datasets, Models, Servers and Notebooks "
        "(with the cluster simulator) ...")
    t0 = time.monotonic()
    ns, raw = await populate(client, parents_per_kind, workdir, log=log)
    log(f"  done in {time.monotonic() - t0:.1f} s: " + ", ".join(f"{len(v)} {k}" for k, v in raw.items()))
    results = []
    for kind in kinds or list(KINDS):
        items = raw[kind]
        path = workdir / f"memory-{kind}.jsonl"
        cells: list[tuple[int, Path | None]] = [(len(items), None)]
        cells += [(count, path) for count in sorted(set(counts))]
        await asyncio.to_thread(write_items, items, max(counts), path)
        for count, pages in cells:
            for strip, method in variants:
                if pages is None and method == "rss":
                    continue  # a few dozen real objects: their RSS growth is page-granular noise
                r = await asyncio.to_thread(_measure_in_subprocess, kubeconfig, ns, kind, count, strip, method, pages)
                results.append(r)
                log(f"  {kind:11} {count:>6} {r['source']:11} {'stripped' if strip else 'raw':8} {method:11} "
                    f"{r['bytes_per_object']:>7} B/object (peak {r['peak_bytes_per_object']})")
        path.unlink(missing_ok=True)
    return {"namespace": ns, "real_objects": {k: len(v) for k, v in raw.items()}, "parents_per_kind": parents_per_kind,
            "counts": counts, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one memory measurement (run by python -m bench)")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--kubeconfig", required=True)
    m.add_argument("--namespace", required=True)
    m.add_argument("--kind", choices=sorted(KINDS), required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--strip", action="store_true")
    m.add_argument("--method", choices=("tracemalloc", "rss"), required=True)
    m.add_argument("--pages", type=Path, help="list from this file of objects instead of the API server")
    args = p.parse_args(argv)
    result = asyncio.run(measure(args.kubeconfig, args.namespace, args.kind, args.count, args.strip, args.method,
                                 args.pages))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
