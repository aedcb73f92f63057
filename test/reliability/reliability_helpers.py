"""Readers and recorders shared by the reliability scenarios.

Kept apart from ``test/controllers/helpers.py`` (a different module name: both directories are
on ``sys.path`` in one session).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from substratus.runtime import metrics
from substratus.runtime.client import ApiError, Client, Gone
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)

LOADER = "substratusai/loader:v1"


# --- objects ------------------------------------------------------------------------------------

def dataset(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"name": LOADER})
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def model(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"name": LOADER})
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def server(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"name": "substratusai/server:v1"})
    return {"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def notebook(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"name": "substratusai/notebook:v1"})
    return {"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def conditions_text(obj: dict[str, Any] | None) -> str:
    return " | ".join(f"{c.get('type')}={c.get('status')}/{c.get('reason')}: {c.get('message')}"
                      for c in ((obj or {}).get("status") or {}).get("conditions") or [])


# --- waiting ------------------------------------------------------------------------------------

async def wait_ready(client: Client, res: Resource, ns: str, names: Iterable[str], *, timeout: float,
                     interval: float = 0.5) -> dict[str, dict[str, Any]]:
    """Poll a LIST until every named object is ``status.ready``; returns them by name."""
    want = set(names)
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    while True:
        try:
            items = (await client.list(res, ns))["items"]
            last = {o["metadata"]["name"]: o for o in items}
        except (ApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
            log.info("wait_ready: list failed: %r", exc)
        not_ready = sorted(n for n in want if not ((last.get(n) or {}).get("status") or {}).get("ready"))
        if not not_ready:
            return {n: last[n] for n in want}
        if time.monotonic() > deadline:
            sample = "; ".join(f"{n}: {conditions_text(last.get(n)) or 'missing/no status'}" for n in not_ready[:5])
            raise AssertionError(f"{len(not_ready)}/{len(want)} {res.plural} not ready after {timeout}s: {sample}")
        await asyncio.sleep(interval)


# --- metrics ------------------------------------------------------------------------------------

def metric(sample: str, **labels: str) -> float:
    """Sum of the in-process registry's samples named ``sample`` whose labels include ``labels``."""
    total = 0.0
    for family in metrics.REGISTRY.collect():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def parse_metrics(text: str, sample: str, **labels: str) -> float:
    """The same over a scraped ``/metrics`` text (another process)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.text()


async def readyz(port: int) -> int:
    try:
        return (await http_get(f"http://127.0.0.1:{port}/readyz"))[0]
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0


# --- an independent audit of children -----------------------------------------------------------

class ChildAudit:
    """Every object of one kind in one namespace ever seen, by name → uids, from its own watch.

    Independent of the operator's informers (so their bugs cannot hide a duplicate): LIST then
    WATCH, resuming from the last resourceVersion after a dropped connection (the API server
    replays the gap) and relisting after a 410. ``uids[name]`` holding two uids means the child
    was deleted and created again — a duplicate run.
    """

    def __init__(self, client: Client, res: Resource, namespace: str) -> None:
        self.client = client
        self.res = res
        self.namespace = namespace
        self.uids: dict[str, list[str]] = defaultdict(list)
        self.deleted: list[tuple[str, str]] = []
        self.current: dict[str, dict[str, Any]] = {}
        self.relists = 0
        self._rv = ""
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    def _seen(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if meta["uid"] not in self.uids[meta["name"]]:
            self.uids[meta["name"]].append(meta["uid"])
        self.current[meta["name"]] = obj

    async def _list(self) -> None:
        items, rv = await self.client.list_all(self.res, self.namespace)
        names = set()
        for obj in items:
            names.add(obj["metadata"]["name"])
            self._seen(obj)
        for gone in set(self.current) - names:
            self.deleted.append((gone, self.current.pop(gone)["metadata"]["uid"]))
        self._rv = rv
        self.relists += 1
        self._synced.set()

    async def _run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                async for ev in self.client.watch(self.res, self.namespace, resource_version=self._rv,
                                                  timeout_seconds=120):
                    rv = ev.object.get("metadata", {}).get("resourceVersion")
                    if ev.type in ("ADDED", "MODIFIED"):
                        self._seen(ev.object)
                    elif ev.type == "DELETED":
                        name = ev.object["metadata"]["name"]
                        self.current.pop(name, None)
                        self.deleted.append((name, ev.object["metadata"]["uid"]))
                    if rv:
                        self._rv = rv
            except asyncio.CancelledError:
                raise
            except Gone:
                need_list = True
            except Exception as exc:
                log.info("audit %s: watch interrupted: %r", self.res.plural, exc)
                await asyncio.sleep(0.3)

    async def start(self) -> ChildAudit:
        self._task = asyncio.create_task(self._run(), name=f"audit-{self.res.plural}")
        await asyncio.wait_for(self._synced.wait(), 30)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def duplicates(self) -> dict[str, list[str]]:
        return {n: u for n, u in self.uids.items() if len(u) > 1}


def owner_problems(children: Iterable[dict[str, Any]], owners: dict[str, dict[str, Any]], kind: str) -> list[str]:
    """Children whose controller ownerReference is not exactly their parent of ``kind`` (by uid)."""
    problems = []
    for child in children:
        meta = child["metadata"]
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        if len(refs) != 1:
            problems.append(f"{meta['name']}: {len(refs)} controller refs")
            continue
        ref = refs[0]
        owner = owners.get(ref.get("name", ""))
        if ref.get("kind") != kind or owner is None or owner["metadata"]["uid"] != ref.get("uid") \
                or not ref.get("blockOwnerDeletion") or ref.get("apiVersion") != "substratus.ai/v1":
            problems.append(f"{meta['name']}: bad owner ref {ref}")
    return problems


# --- the bucket ---------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → md5)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
    return out


def hf_secret(ns: str) -> dict[str, Any]:
    """The Secret ``hf`` (key ``token``) that ``${{ secrets.hf.token }}`` names: without it the
    kubelet (and the simulator) keeps the Pod in CreateContainerConfigError, as a real cluster does."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": ns},
            "data": {"token": "dDBrZW4="}}
