"""What every benchmark shares: machine facts, namespaces, the Dataset and its children,
operator subprocesses, and request counters (ours in-process, the operator's ``/metrics``, and
the API server's own ``apiserver_request_total``).

Counting on the API server side is what makes contenders comparable: kopf has no request
metrics, but every request it makes lands in ``apiserver_request_total`` like ours does. Each
contender runs alone in its own window, so the counter's delta over a window is that
contender's traffic (plus the benchmark's own creates, which are the same for everyone).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from substratus import naming
from substratus.api import from_dict
from substratus.api.conditions import BUILT, COMPLETE, Reason
from substratus.cloud.base import Mount
from substratus.cloud.local import LocalCloud
from substratus.controllers import render
from substratus.controllers.resources import DATASETS
from substratus.controllers.status import StatusUpdate, status_dict
from substratus.runtime import metrics
from substratus.runtime.client import ApiError, Client, Gone
from substratus.runtime.events import event_body
from substratus.runtime.resource import CONFIGMAPS, EVENTS, JOBS, LEASES, NAMESPACES, Resource

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_IMAGE = "substratusai/dataset-loader:v1"
CLUSTER_NAME = "substratus-1"  # the operator's default --cluster-name: children render identically
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# apiserver_request_total's verbs; server-side apply is its own verb there.
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION")
BUCKET_ENV = "SUBSTRATUS_BENCH_BUCKET_URL"  # the bucket the kopf operator renders children for
PACKAGES = ("substratus", "kubernetes_asyncio", "aiohttp", "prometheus_client", "kopf", "matplotlib")


# --- machine and versions ---------------------------------------------------------------------


def _first_match(path: str, pattern: str) -> str:
    with contextlib.suppress(OSError):
        m = re.search(pattern, Path(path).read_text(), re.MULTILINE)
        if m:
            return m.group(1).strip()
    return "unknown"


def machine_info() -> dict[str, Any]:
    """nproc, memory, CPU model, Python and package versions, the date: printed with every table."""
    mem_kib = _first_match("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        # Only what is measured: the operator's source (the bench itself may be work in progress).
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout
        if dirty.strip() and commit != "unknown":
            commit += " + uncommitted changes in src/"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(int(mem_kib) / 1024 / 1024, 1) if mem_kib.isdigit() else None,
        "cpu_model": _first_match("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "loadavg_start": loadavg(),
        "commit": commit,
    }


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


async def apiserver_version(client: Client) -> str:
    info = await client.request("GET", "/version")
    return str(info.get("gitVersion", "unknown"))


# --- objects ----------------------------------------------------------------------------------


def short_id() -> str:
    return uuid.uuid4().hex[:6]


async def create_namespace(client: Client, prefix: str) -> str:
    name = f"{prefix}-{short_id()}"
    await client.create(NAMESPACES, {"metadata": {"name": name, "labels": {"substratus.ai/bench": "true"}}})
    return name


def dataset(name: str, namespace: str, **params: Any) -> dict[str, Any]:
    """A Dataset whose image is given: it converges to "params ConfigMap + Job exist"."""
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"image": {"name": DATASET_IMAGE}, "params": {"url": f"https://example.com/{name}.jsonl",
                                                                  **params}}}


def child_names(name: str) -> tuple[str, str]:
    """(ConfigMap, Job) names the operator gives a Dataset's children."""
    return (naming.child_name(name, "Dataset", naming.PARAMS), naming.child_name(name, "Dataset"))


class ChildRenderer:
    """Renders a Dataset's ConfigMap and Job exactly as the operator does (same functions, same
    cloud, same cluster name), so every contender sends the API server the same bytes."""

    def __init__(self, bucket_url: str | None = None) -> None:
        bucket_url = bucket_url or os.environ.get(BUCKET_ENV) or "file:///tmp/substratus-bench-bucket"
        self.cloud = LocalCloud(bucket_url, signing_key="bench", upload_base_url="http://127.0.0.1:0")

    def children(self, ds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        obj = from_dict(ds)
        meta = obj.metadata
        url = naming.storage_url(self.cloud.bucket_url,
                                 naming.storage_hash(CLUSTER_NAME, meta.namespace or "", obj.PLURAL, meta.name))
        mounts = [Mount("output", naming.artifacts_url(url, obj.KIND), f"{render.CONTENT_DIR}/output", False)]
        cm = render.params_configmap(obj)
        job = render.job(obj, name=naming.child_name(meta.name, obj.KIND), image=ds["spec"]["image"]["name"],
                         mounts=mounts, cloud=self.cloud, options=render.RenderOptions(), role_label="workload")
        return cm, job

    def status(self, ds: dict[str, Any]) -> dict[str, Any]:
        """The ``status`` substratus writes for a Dataset (image given) once its Job exists: same
        conditions (Built, Complete, Ready), same messages, same url, from the same functions."""
        obj = from_dict(ds)
        meta = obj.metadata
        update = StatusUpdate(obj)
        update.set(BUILT, True, Reason.IMAGE_PROVIDED, f"using image {obj.spec.image.name}")
        update.set(COMPLETE, False, Reason.JOB_RUNNING, f"Job {naming.child_name(meta.name, obj.KIND)} is running")
        obj.status.url = naming.storage_url(
            self.cloud.bucket_url, naming.storage_hash(CLUSTER_NAME, meta.namespace or "", obj.PLURAL, meta.name))
        obj.status.image = obj.spec.image.name  # the image the workload runs (controllers/build.py)
        obj.status.ready = update.finish(COMPLETE)
        obj.status.conditions = update.conditions
        return status_dict(obj)

    def events(self, ds: dict[str, Any]) -> list[dict[str, Any]]:
        """The Events substratus posts for that status (one per transition that gets one, SPEC §7)."""
        obj = from_dict(ds)
        update = StatusUpdate(obj)
        update.set(BUILT, True, Reason.IMAGE_PROVIDED, f"using image {obj.spec.image.name}")
        update.set(COMPLETE, False, Reason.JOB_RUNNING,
                   f"Job {naming.child_name(obj.metadata.name, obj.KIND)} is running")
        out = []
        for c in update.transitions:
            message = f"{c.type}={c.status}" + (f": {c.message}" if c.message else "")
            out.append(event_body(ds, "Normal", c.reason, message, component="substratus", host=socket.gethostname()))
        return out


async def same_writes(client: Client, renderer: ChildRenderer, ds: dict[str, Any]) -> None:
    """Exactly the writes substratus makes for one Dataset, with a bare client and nothing else:
    the params ConfigMap (server-side apply) and the Job (create) together, then the status
    (merge patch on /status), then its Event(s)."""
    cm, job = renderer.children(ds)
    await asyncio.gather(client.apply(CONFIGMAPS, cm), client.create(JOBS, job))
    meta = ds["metadata"]
    await client.patch_status(DATASETS, meta["name"], {"status": renderer.status(ds)}, meta["namespace"])
    for event in renderer.events(ds):
        await client.create(EVENTS, event, meta["namespace"])


async def bounded(n: int, concurrency: int, fn: Callable[[int], Awaitable[None]]) -> None:
    """``fn(0..n-1)`` with at most ``concurrency`` in flight; the first error cancels the rest."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await fn(i)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, n))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


# --- watching for children ----------------------------------------------------------------------


class ChildObserver:
    """Watches ConfigMaps and Jobs in one namespace and notes when each expected one first appears."""

    def __init__(self, client: Client, namespace: str, resources: Iterable[Resource] = (CONFIGMAPS, JOBS)) -> None:
        self.client = client
        self.namespace = namespace
        self.resources = tuple(resources)
        self.seen: dict[Resource, dict[str, float]] = {r: {} for r in self.resources}
        self._expected: dict[Resource, set[str]] = {r: set() for r in self.resources}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def expect(self, res: Resource, names: Iterable[str]) -> None:
        self._expected[res].update(names)
        self._changed.set()

    def expect_children(self, dataset_names: Iterable[str]) -> None:
        cms, jobs = zip(*(child_names(n) for n in dataset_names), strict=True)
        self.expect(CONFIGMAPS, cms)
        self.expect(JOBS, jobs)

    def missing(self) -> int:
        return sum(len(self._expected[r] - self.seen[r].keys()) for r in self.resources)

    def last_seen(self) -> float:
        return max((self.seen[r][n] for r in self.resources for n in self._expected[r] if n in self.seen[r]),
                   default=float("nan"))

    async def start(self) -> None:
        for res in self.resources:
            items, rv = await self.client.list_all(res, self.namespace)
            now = time.monotonic()
            for item in items:
                self.seen[res].setdefault(item["metadata"]["name"], now)
            self._tasks.append(asyncio.create_task(self._watch(res, rv), name=f"observe-{res}"))

    async def _watch(self, res: Resource, rv: str) -> None:
        while True:
            try:
                async for ev in self.client.watch(res, self.namespace, resource_version=rv, timeout_seconds=600):
                    meta = ev.object.get("metadata") or {}
                    rv = meta.get("resourceVersion") or rv
                    if ev.type == "ADDED":
                        self.seen[res].setdefault(meta["name"], time.monotonic())
                        self._changed.set()
            except Gone:
                items, rv = await self.client.list_all(res, self.namespace)
                now = time.monotonic()
                for item in items:
                    self.seen[res].setdefault(item["metadata"]["name"], now)
                self._changed.set()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)

    async def wait_complete(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.missing():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


# --- request counters -------------------------------------------------------------------------


def client_requests() -> Counter[str]:
    """This process's requests by method, from ``rest_client_requests_total`` (every Client instance)."""
    out: Counter[str] = Counter()
    for family in metrics.REGISTRY.collect():
        if family.name != "rest_client_requests":
            continue
        for s in family.samples:
            if s.name == "rest_client_requests_total":
                out[s.labels["method"]] += int(s.value)
    return out


def reconciles(controller: str = "dataset") -> int:
    total = 0
    for family in metrics.REGISTRY.collect():
        if family.name != "controller_runtime_reconcile":
            continue
        for s in family.samples:
            if s.name == "controller_runtime_reconcile_total" and s.labels.get("controller") == controller:
                total += int(s.value)
    return total


# What an API server writes by itself, nothing else running: the `kubernetes` Service's endpoints
# (about every 10 s, every release) and, where it has an identity Lease (APIServerIdentity, on by
# default from 1.26), that Lease's renewals (every 10 s).
APISERVER_IDENTITY_LABEL = "apiserver.kubernetes.io/identity=kube-apiserver"


async def server_own_writes(client: Client) -> list[str]:
    """The resources (as ``apiserver_request_total`` names them) this API server writes on its own.

    Probed, not keyed on a version: the identity Lease is there or not."""
    own = ["endpoints"]
    try:
        leases = await client.list(LEASES, "kube-system", label_selector=APISERVER_IDENTITY_LABEL)
    except ApiError:  # no Lease API or no access: nothing the server renews there
        leases = {}
    if (leases or {}).get("items"):
        own.append("leases")
    return own


_REQUEST_LINE = re.compile(r'^apiserver_request_total\{([^}]*)\}\s+([0-9.e+]+)$', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def apiserver_requests(client: Client) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` summed by (verb, resource[/subresource]), read from ``/metrics``.

    Read through the transport directly so this process's own request counter does not move.
    """
    resp = await client.api.call_api("/metrics", "GET", header_params={"Accept": "text/plain"},
                                      auth_settings=["BearerToken"], _preload_content=False,
                                      _request_timeout=aiohttp.ClientTimeout(total=30))
    try:
        text = (await resp.read()).decode()
    finally:
        resp.release()
    out: Counter[tuple[str, str]] = Counter()
    for labels, value in _REQUEST_LINE.findall(text):
        lab = dict(_LABEL.findall(labels))
        res = lab.get("resource", "")
        if lab.get("subresource"):
            res += "/" + lab["subresource"]
        out[(lab.get("verb", ""), res)] += int(float(value))
    return out


def writes_of(delta: Counter[tuple[str, str]]) -> Counter[str]:
    """Write requests by resource from an ``apiserver_requests`` delta."""
    out: Counter[str] = Counter()
    for (verb, res), n in delta.items():
        if verb in WRITE_VERBS and n:
            out[res] += n
    return out


async def quiesce(client: Client, settle: float = 2.0, timeout: float = 120.0) -> float:
    """Wait until the API server has seen no write for ``settle`` seconds; returns seconds waited."""
    start = time.monotonic()
    last = sum(writes_of(await apiserver_requests(client)).values())
    stable_since = time.monotonic()
    while time.monotonic() - start < timeout:
        await asyncio.sleep(0.5)
        now = sum(writes_of(await apiserver_requests(client)).values())
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= settle:
            break
    return time.monotonic() - start


# --- subprocesses -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A Prometheus text endpoint as {sample name: [(labels, value)]}."""
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        text = await r.text()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def metric_sum(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str | tuple[str, ...]) -> float:
    total = 0.0
    for labels, value in m.get(name, []):
        if all(labels.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items()):
            total += value
    return total


class Proc:
    """A subprocess with its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed in stop()
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                      env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; log {self.log_path}:\n"
                               f"{tail(self.log_path)}")

    def send(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, timeout)
        return self.popen.poll()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        self.send(sig)
        code = await self.wait(timeout)
        if code is None:
            self.popen.kill()
            code = await self.wait(5)
        self._log.close()
        return code


class OperatorProc(Proc):
    """``python -m substratus run`` scoped to one namespace, with known metrics and health ports."""

    def __init__(self, name: str, kubeconfig: str, namespace: str, workdir: Path, *,
                 leader_elect: bool = False, extra: list[str] | None = None,
                 source: Path | None = None) -> None:
        """``source``: run the ``substratus`` package from this ``src`` directory (an older commit's,
        see ``baseline_source``) instead of the installed one, with the same interpreter and packages."""
        self.metrics_port, self.health_port = free_port(), free_port()
        argv = [sys.executable, "-m", "substratus", "run", "--kubeconfig", kubeconfig, "--namespace", namespace,
                "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
                "--health-probe-bind-address", f"127.0.0.1:{self.health_port}",
                "--upload-bind-address", "127.0.0.1:0", "--cloud", "local",
                "--bucket-url", f"file://{workdir}/bucket"]
        if leader_elect:
            argv += ["--leader-elect", "--leader-election-namespace", namespace]
        super().__init__(name, argv + list(extra or []), workdir / f"{name}.log",
                         env={"PYTHONPATH": str(source)} if source is not None else None)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until ``/readyz`` answers 200 (caches synced)."""
        start = time.monotonic()
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        async with aiohttp.ClientSession() as s:
            while time.monotonic() - start < timeout:
                self.check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return time.monotonic() - start
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; log {self.log_path}:\n{tail(self.log_path)}")

    async def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return await scrape(self.metrics_url)

    async def is_leader(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            return metric_sum(await self.metrics(), "leader_election_master_status") >= 1
        return False

    async def wait_idle(self, settle: float = 2.0, timeout: float = 120.0) -> None:
        """Until the work queues are empty, no worker is busy and no reconcile ran for ``settle`` s."""
        start = time.monotonic()
        last, since = -1.0, time.monotonic()
        while time.monotonic() - start < timeout:
            m = await self.metrics()
            busy = metric_sum(m, "workqueue_depth") + metric_sum(m, "controller_runtime_active_workers")
            total = metric_sum(m, "controller_runtime_reconcile_total")
            if busy or total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= settle:
                return
            await asyncio.sleep(0.25)


def kopf_argv(namespace: str, script: str = "kopf_operator.py") -> list[str]:
    """``kopf run --standalone --namespace NS bench/SCRIPT`` with this interpreter's kopf."""
    kopf = Path(sys.executable).with_name("kopf")
    head = [str(kopf)] if kopf.exists() else [sys.executable, "-m", "kopf"]
    return [*head, "run", "--standalone", "--namespace", namespace, str(REPO_ROOT / "bench" / script)]



def baseline_source(ref: str, workdir: Path) -> Path:
    """The ``src`` directory of commit ``ref`` of this repository, exported once under ``workdir``.

    The baseline contender (``substratus@REF``) runs that commit's operator with this checkout's
    interpreter and packages (``PYTHONPATH`` is searched before the editable install), so the two
    versions are measured side by side in one run. Raises ``RuntimeError`` if ``ref`` is not in the
    repository's history (a shallow clone: ``git fetch --unshallow``).
    """
    out = workdir / f"baseline-{ref}"
    if (out / "src" / "substratus").is_dir():
        return out / "src"
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref, "src"],
                             capture_output=True)
    if archive.returncode != 0:
        raise RuntimeError(f"baseline {ref}: git archive failed: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "src"
