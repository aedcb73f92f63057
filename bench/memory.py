"""Memory per cached object: Jobs and Datasets in an informer's store, raw and as the operator caches them.

"Stripped" is the cache's transform for the kind (``operator.CACHE_TRANSFORMS``: Jobs keep only
metadata and status; Datasets get ``strip_bulk``). The objects are written with server-side apply
(spec by one field manager, status by another), so they carry the ``managedFields`` that
``strip_bulk`` drops. Each measurement runs in a fresh
subprocess (``python -m bench.memory measure ...``) that first touches the API once (TLS, JSON,
imports) and then measures the growth caused by filling one store:

* ``tracemalloc``: bytes Python allocated and still holds (exact, allocator overhead excluded);
* ``rss``: resident set growth from ``/proc/self/statm`` (what the kernel charges, in a separate
  process without tracemalloc, whose own bookkeeping would inflate it).

Both fill the store through a real ``Informer`` (paginated LIST, then the transform over the
whole list, then the store, exactly as the operator does). The smallest count comes from the API
server. Larger counts are synthesised from those real objects: the parent process writes renamed
copies with fresh uids as 500-item LIST pages to a file, and the measuring child's informer lists
from that file instead of the API server (same ``json.loads`` per page, same informer code), so
the child never allocates the copies before its baseline. The smallest count is measured both
ways, which shows how far the synthesised path is from the real one.
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bench.common import ChildRenderer, bounded, create_namespace, dataset
from substratus.controllers.resources import DATASETS
from substratus.operator import CACHE_TRANSFORMS
from substratus.runtime.client import Client, loads
from substratus.runtime.informer import Informer, strip_bulk
from substratus.runtime.resource import JOBS, Resource

KINDS: dict[str, Resource] = {"jobs": JOBS, "datasets": DATASETS}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=substratus"  # what the operator's Job informer selects
PAGE = 500


def cache_transform(res: Resource) -> Callable[[dict], dict] | None:
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


def _status(name: str, bucket: str) -> dict[str, Any]:
    """The status substratus writes on a Dataset whose Job is running (no empty ``message``: the
    1.20 API server turns an applied ``""`` in this CRD's list-map conditions into null and rejects it)."""
    t = "2024-01-01T00:00:00Z"
    return {"ready": False, "url": f"{bucket}/{uuid.uuid4().hex[:16]}", "conditions": [
        {"type": "Built", "status": "True", "reason": "ImageProvided", "observedGeneration": 1,
         "lastTransitionTime": t},
        {"type": "Complete", "status": "False", "reason": "JobRunning", "message": f"Job {name}-dataset is running",
         "observedGeneration": 1, "lastTransitionTime": t},
        {"type": "Ready", "status": "False", "reason": "JobRunning", "message": f"Job {name}-dataset is running",
         "observedGeneration": 1, "lastTransitionTime": t}]}


async def populate(client: Client, n: int, concurrency: int = 20) -> str:
    """A namespace with ``n`` Datasets (spec and status applied by different managers) and their Jobs."""
    ns = await create_namespace(client, "bench-memory")
    renderer = ChildRenderer()

    async def one(i: int) -> None:
        name = f"mem-{i:05d}"
        body = dataset(name, ns, limit=1000 + i, shuffle=True)
        ds = await client.apply(DATASETS, body, field_manager="bench-user")
        await client.apply(DATASETS, {"apiVersion": body["apiVersion"], "kind": body["kind"],
                                      "metadata": {"name": name, "namespace": ns},
                                      "status": _status(name, renderer.cloud.bucket_url)},
                           subresource="status", field_manager="substratus")
        _, job = renderer.children(ds)
        await client.apply(JOBS, job, field_manager="substratus")

    await bounded(n, concurrency, one)
    return ns


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


def write_pages(items: list[dict[str, Any]], count: int, path: Path) -> int:
    """``count`` renamed copies of ``items`` as LIST response bodies of 500 items, one per line."""
    with open(path, "w") as f:
        for start in range(0, count, PAGE):
            page = [_renamed(items[i % len(items)], i, len(items)) for i in range(start, min(count, start + PAGE))]
            f.write(json.dumps({"kind": "List", "metadata": {"resourceVersion": "1"}, "items": page}) + "\n")
    return count


class PagesClient:
    """Stands in for ``Client`` in an ``Informer``: LIST pages come from a file, WATCH never ends.

    ``list_all`` does what the real one does with each page body (``json.loads``, then
    apiVersion/kind and the transform onto every item, all items in one list), minus the HTTP
    round trip.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def list_all(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
                       field_selector: str | None = None, page_size: int = 500,
                       transform: Callable[[dict], dict] | None = None) -> tuple[list[dict], str]:
        items: list[dict] = []
        rv = ""
        with open(self.path) as f:  # noqa: ASYNC230 - a local file, read like response bodies
            for line in f:
                page = loads(line.encode())
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", res.api_version)
                    item.setdefault("kind", res.kind)
                    items.append(transform(item) if transform is not None else item)
                rv = (page.get("metadata") or {}).get("resourceVersion", rv)
        return items, rv

    async def watch(self, *_: Any, **__: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached


async def measure(kubeconfig: str, namespace: str, kind: str, count: int, strip: bool, method: str,
                  pages_file: Path | None, after_list: bool = False) -> dict[str, Any]:
    """One cell. ``after_list``: no informer transform, ``strip_bulk`` over the whole store once
    it is filled: how the informer applied its transform before commit ea0d9d1."""
    res = KINDS[kind]
    selector = MANAGED_SELECTOR if res is JOBS else None
    kept = cache_transform(res)
    transform = kept if strip and not after_list else None
    client = await Client.from_kubeconfig(kubeconfig)
    try:
        await client.list(res, namespace, label_selector=selector, limit=1)  # TLS, session, imports
        source: Any = client if pages_file is None else PagesClient(pages_file)
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
        if strip and after_list and kept is not None:
            for obj in store:
                kept(obj)
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
                "strip_mode": ("after-list" if after_list else "per-page") if strip else "none",
                "source": "api" if pages_file is None else "synthesised", "bytes": after - base,
                "bytes_per_object": round((after - base) / n), "peak_bytes_per_object": round(peak / n),
                "json_bytes_per_object": round(json_bytes), "managed_fields_json_bytes": round(mf),
                "fill_seconds": round(fill, 3)}
    finally:
        await client.close()


# --- the parent ---------------------------------------------------------------------------------


def _measure_in_subprocess(kubeconfig: str, namespace: str, kind: str, count: int, strip: bool,
                           method: str, pages_file: Path | None, after_list: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.memory", "measure", "--kubeconfig", kubeconfig, "--namespace", namespace,
            "--kind", kind, "--count", str(count), "--method", method]
    argv += (["--strip"] if strip else []) + (["--pages", str(pages_file)] if pages_file else [])
    argv += ["--after-list"] if after_list else []
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({' '.join(argv)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def run(client: Client, kubeconfig: str, counts: list[int], *, workdir: Path,
              log: Any = print) -> dict[str, Any]:
    """Populate ``min(counts)`` real objects of each kind, then measure every (kind, count, strip, method).

    The smallest count is measured from the API server and synthesised; larger ones synthesised only.
    """
    real = min(counts)
    log(f"memory: applying {real} Datasets (+status) and {real} Jobs with server-side apply ...")
    t0 = time.monotonic()
    ns = await populate(client, real)
    log(f"  done in {time.monotonic() - t0:.1f} s")
    results = []
    for kind, res in KINDS.items():
        raw, _ = await client.list_all(res, ns, label_selector=MANAGED_SELECTOR if res is JOBS else None)
        cells: list[tuple[int, Path | None]] = [(real, None)]
        for count in sorted(set(counts)):
            path = workdir / f"memory-{kind}-{count}.jsonl"
            await asyncio.to_thread(write_pages, raw, count, path)
            cells.append((count, path))
        del raw
        for count, pages in cells:
            # (strip, after_list, method); the after-list variant only changes what the kernel keeps.
            variants = [(False, False, "tracemalloc"), (False, False, "rss"), (True, False, "tracemalloc"),
                        (True, False, "rss"), (True, True, "rss")]
            for strip, after_list, method in variants:
                r = await asyncio.to_thread(_measure_in_subprocess, kubeconfig, ns, kind, count, strip,
                                            method, pages, after_list)
                results.append(r)
                log(f"  {kind:8} {count:>6} {r['source']:11} transform={r['strip_mode']:10} {method:11} "
                    f"{r['bytes_per_object']:>7} B/object (peak {r['peak_bytes_per_object']})")
        for _, pages in cells:
            if pages is not None:
                pages.unlink(missing_ok=True)
    return {"namespace": ns, "real_objects": real, "counts": counts, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one memory measurement (run by python -m bench)")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--kubeconfig", required=True)
    m.add_argument("--namespace", required=True)
    m.add_argument("--kind", choices=sorted(KINDS), required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--strip", action="store_true")
    m.add_argument("--after-list", action="store_true", help="strip the filled store, not page by page")
    m.add_argument("--method", choices=("tracemalloc", "rss"), required=True)
    m.add_argument("--pages", type=Path, help="list from this file of LIST pages instead of the API server")
    args = p.parse_args(argv)
    result = asyncio.run(measure(args.kubeconfig, args.namespace, args.kind, args.count, args.strip, args.method,
                                 args.pages, args.after_list))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
