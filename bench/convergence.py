"""Convergence: N Datasets until every one has its ConfigMap and Job, three ways side by side.

* ``ceiling``: no operator; the benchmark's own asyncio ``Client`` creates the Datasets (same
  concurrency) and, as each create returns, its ConfigMap then its Job (same rendered children, as
  many objects' children in flight as the 20-worker operator): the fastest the API server allows.
* ``substratus``: ``python -m substratus run --namespace NS`` in a subprocess; we create Datasets.
* ``substratus-w20``: the same with ``--max-concurrent-reconciles 20`` (default 4).
* ``kopf``: ``kopf run --standalone --namespace NS bench/kopf_operator.py`` in a subprocess.

Every contender gets a fresh namespace and a warm-up Dataset first (so start-up is not timed),
then the clock runs from the first create to the moment a watch sees the last child. Writes are
counted on the API server (``apiserver_request_total``) until it has been quiet for 2 s, so what
an operator does after its children exist (status patches, Events, annotations) counts too.

Then, on substratus's converged namespace, the steady state: the manager is restarted in-process
on the same objects and every object is re-delivered (a resync); both must issue zero writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    BUCKET_ENV,
    ChildObserver,
    ChildRenderer,
    OperatorProc,
    Proc,
    apiserver_requests,
    baseline_source,
    bounded,
    child_names,
    client_requests,
    create_namespace,
    dataset,
    kopf_argv,
    loadavg,
    metric_sum,
    quiesce,
    reconciles,
    same_writes,
    server_own_writes,
    writes_of,
)
from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.controllers.resources import DATASETS
from substratus.operator import build_manager
from substratus.runtime.client import Client
from substratus.runtime.manager import Manager
from substratus.runtime.resource import CONFIGMAPS, JOBS

CONTENDERS = ("ceiling", "ceiling-same-writes", "substratus", "substratus-w20", "kopf", "kopf-same-job")
BASELINE = "431d200"
"""The commit issue 18's CPU target is measured against (``substratus@431d200``: the operator as it
was when the issue was filed, default flags of that commit)."""
CEILINGS = ("ceiling", "ceiling-same-writes")
# kopf-same-job: the handler also writes substratus's status and Event for each Dataset, through
# substratus's Client, so the two operators make the same writes (plus kopf's own annotation).
KOPF_SCRIPTS = {"kopf": "kopf_operator.py", "kopf-same-job": "kopf_same_job.py"}
# substratus-w20: the same operator with --max-concurrent-reconciles 20 (the default is 4), i.e. as
# many workers as creates in flight: is the gap to the ceiling the framework or the worker count?
WORKERS = {"substratus": None, "substratus-w20": 20}


def is_substratus(contender: str) -> bool:
    """``substratus`` (default flags), ``substratus-wK`` (``--max-concurrent-reconciles K``) or
    ``substratus@REF`` (commit REF's operator, its default flags)."""
    return (contender == "substratus" or re.fullmatch(r"substratus-w\d+", contender) is not None
            or baseline_ref(contender) is not None)


def baseline_ref(contender: str) -> str | None:
    """REF of a ``substratus@REF`` contender, else None."""
    m = re.fullmatch(r"substratus@([0-9A-Za-z._/-]+)", contender)
    return m.group(1) if m else None


def workers_of(contender: str) -> int | None:
    """The ``--max-concurrent-reconciles`` a substratus contender runs with (None: the default)."""
    if contender in WORKERS or baseline_ref(contender) is not None:
        return WORKERS.get(contender)
    return int(contender.rsplit("-w", 1)[1])
READ_VERBS = ("GET", "LIST", "WATCH")


def _names(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"ds-{i:0{width}d}" for i in range(n)]


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (children excluded), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> dict[str, float]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


async def _start_profiler(pid: int, out: Path) -> asyncio.subprocess.Process:
    """``py-spy record`` attached to ``pid`` (100 samples/s, idle samples left out), until stopped."""
    spy = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        str(spy) if spy.exists() else "py-spy", "record", "--pid", str(pid), "--rate", "100", "--format",
        "flamegraph", "--output", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(1.0)  # attached before the clock starts
    return proc


async def _stop_profiler(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes the graph on Ctrl-C
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        raise
    if proc.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"py-spy exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")


async def _create_all(client: Client, ns: str, names: list[str], concurrency: int,
                      renderer: ChildRenderer | None, same: bool = False) -> None:
    """Create the Datasets, ``concurrency`` in flight; for the ceiling also their children.

    The ceiling pipelines like an operator with ``concurrency`` workers, minus watch, queue, cache
    and reconcile: as each Dataset create returns, its ConfigMap and then its Job are created,
    with at most ``concurrency`` objects' children in flight besides the Dataset creates.
    """
    children: list[asyncio.Task[None]] = []
    slots = asyncio.Semaphore(concurrency)

    async def make_children(ds: dict[str, Any]) -> None:
        assert renderer is not None
        async with slots:
            if same:
                await same_writes(client, renderer, ds)
                return
            cm, job = renderer.children(ds)
            await client.create(CONFIGMAPS, cm)
            await client.create(JOBS, job)

    async def one(i: int) -> None:
        ds = await client.create(DATASETS, dataset(names[i], ns))
        if renderer is not None:
            children.append(asyncio.create_task(make_children(ds)))

    try:
        await bounded(len(names), concurrency, one)
        await asyncio.gather(*children)
    finally:
        for t in children:
            t.cancel()
        await asyncio.gather(*children, return_exceptions=True)


async def run_contender(client: Client, kubeconfig: str, contender: str, n: int, *, concurrency: int,
                        workdir: Path, timeout: float, server_pids: dict[str, int | None] | None = None,
                        keep_running: bool = False, rep: int = 1,
                        profile: Path | None = None) -> tuple[dict[str, Any], OperatorProc | Proc | None]:
    """One contender, one size, fresh namespace. Returns (result, the still-running operator if asked).

    ``profile``: sample the operator process with py-spy over the timed window (from the first
    create until every child is seen) and write a flame graph SVG there.
    """
    ns = await create_namespace(client, f"bench-{contender.replace('@', '-at-')}-{n}")
    tag = f"{contender.replace('@', '-at-')}-{n}-r{rep}"
    bucket_url = f"file://{workdir}/bucket"  # what the operator renders with: identical children
    renderer = ChildRenderer(bucket_url) if contender in CEILINGS else None
    same = contender == "ceiling-same-writes"
    proc: OperatorProc | Proc | None = None
    observer = ChildObserver(client, ns)
    result: dict[str, Any] = {"contender": contender, "n": n, "rep": rep, "concurrency": concurrency,
                              "namespace": ns}
    try:
        started = time.monotonic()
        if is_substratus(contender):
            workers = workers_of(contender)
            ref = baseline_ref(contender)
            proc = OperatorProc(tag, kubeconfig, ns, workdir,
                                extra=["--max-concurrent-reconciles", str(workers)] if workers else None,
                                source=baseline_source(ref, workdir) if ref else None)
            await proc.wait_ready()
        elif contender in KOPF_SCRIPTS:
            proc = Proc(tag, kopf_argv(ns, KOPF_SCRIPTS[contender]), workdir / f"{tag}.log",
                        env={"KUBECONFIG": kubeconfig, BUCKET_ENV: bucket_url})
        await observer.start()
        # Warm-up: the operator is up, watching and has handled one object before the clock starts.
        observer.expect_children(["warmup"])
        await _create_all(client, ns, ["warmup"], 1, renderer, same)
        if not await observer.wait_complete(90):
            if proc is not None:
                proc.check_alive()
            raise TimeoutError(f"{contender}: the warm-up Dataset did not converge in 90 s")
        result["startup_seconds"] = round(time.monotonic() - started, 2)
        await quiesce(client, settle=1.0, timeout=30)

        names = _names(n)
        observer.expect_children(names)
        before = await apiserver_requests(client)
        server_cpu0 = {k: _cpu_seconds(p) for k, p in (server_pids or {}).items()}
        op_cpu0 = _cpu_seconds(proc.popen.pid) if proc else None
        spy = await _start_profiler(proc.popen.pid, profile) if proc is not None and profile else None
        t0 = time.monotonic()
        await _create_all(client, ns, names, concurrency, renderer, same)
        created = time.monotonic()
        converged = await observer.wait_complete(timeout)
        end = observer.last_seen() if converged else time.monotonic()
        op_cpu1 = _cpu_seconds(proc.popen.pid) if proc else None
        if spy is not None:
            await _stop_profiler(spy)
        server_cpu1 = {k: _cpu_seconds(p) for k, p in (server_pids or {}).items()}
        settle = await quiesce(client, settle=2.0, timeout=120)
        if isinstance(proc, OperatorProc):
            await proc.wait_idle()
        delta = await apiserver_requests(client)
        delta.subtract(before)
        writes = writes_of(delta)
        reads = sum(v for (verb, _), v in delta.items() if verb in READ_VERBS)
        seconds = end - t0
        result.update({
            "converged": converged,
            "missing": observer.missing(),
            "seconds": round(seconds, 3),
            "create_seconds": round(created - t0, 3),
            "objects_per_second": round(n / seconds, 1) if seconds > 0 else None,
            "quiesce_seconds": round(settle, 1),
            "writes": dict(sorted(writes.items())),
            "writes_per_object": round(sum(writes.values()) / n, 2),
            "reads_per_object": round(reads / n, 2),
            "operator_cpu_seconds": (round(op_cpu1 - op_cpu0, 2)
                                     if op_cpu0 is not None and op_cpu1 is not None else None),
            "server_cpu_seconds": {k: round(server_cpu1[k] - v, 2) for k, v in server_cpu0.items()
                                   if v is not None and server_cpu1.get(k) is not None},
        })
        if proc is not None:
            result["operator_memory_mib"] = _rss_mib(proc.popen.pid)
        if isinstance(proc, OperatorProc):
            m = await proc.metrics()
            result["operator_requests"] = {
                f"{labels['method']} {labels['code']}": int(v)
                for labels, v in m.get("rest_client_requests_total", []) if v}
            result["reconciles"] = int(metric_sum(m, "controller_runtime_reconcile_total", controller="dataset"))
            result["reconcile_errors"] = int(metric_sum(m, "controller_runtime_reconcile_errors_total",
                                                        controller="dataset"))
        if not converged:
            result["note"] = f"{observer.missing()} children still missing after {timeout:.0f} s"
        return result, (proc if keep_running else None)
    finally:
        await observer.stop()
        if proc is not None and not keep_running:
            code = await proc.stop()
            result["exit_code"] = code


# --- steady state -------------------------------------------------------------------------------


def _queues_busy(mgr: Manager) -> bool:
    # This manager's queues only: the process-wide gauges also hold other managers' series.
    return not all(c.queue is not None and c.queue.idle() for c in mgr.controllers)


async def _wait_idle(mgr: Manager, min_reconciles: int, settle: float = 1.0, timeout: float = 300.0) -> None:
    start = time.monotonic()
    last, since = -1, time.monotonic()
    while time.monotonic() - start < timeout:
        total = reconciles()
        if _queues_busy(mgr) or total != last or total < min_reconciles:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= settle:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"operator not idle after {timeout}s (reconciles {reconciles()}, want >= {min_reconciles})")


def _delta(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {m: after[m] - before[m] for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if after[m] - before[m]}


async def steady_state(client: Client, namespace: str, objects: int, workdir: Path) -> dict[str, Any]:
    """Restart the manager in-process on a converged namespace, then resync: count requests.

    ``objects`` is how many Datasets the namespace holds. The bucket URL and cluster name are the
    ones the subprocess operator used, so a converged object renders to exactly what is stored.
    """
    cfg = OperatorConfig(namespace=namespace, cloud="local", bucket_url=f"file://{workdir}/bucket",
                         metrics_bind_address="0", health_probe_bind_address="0", upload_bind_address="0",
                         upload_signing_key="bench")
    cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url="http://127.0.0.1:0")
    mgr = build_manager(client, cloud, cfg)
    out: dict[str, Any] = {"namespace": namespace, "objects": objects, "server_own": await server_own_writes(client)}
    await quiesce(client, settle=2.0, timeout=60)
    srv0 = await apiserver_requests(client)
    req0, rec0 = client_requests(), reconciles()
    t0 = time.monotonic()
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        await asyncio.wait_for(mgr.ready.wait(), 120)
        await _wait_idle(mgr, rec0 + objects)
        req1, rec1 = client_requests(), reconciles()
        out["restart"] = _phase(req0, req1, rec1 - rec0, time.monotonic() - t0)
        # One paginated LIST and one WATCH per informer; whatever else was read, a reconcile read.
        informer_gets = sum(max(1, math.ceil(len(inf.store) / inf.page_size)) + 1 for inf in mgr.cache.informers)
        out["restart"]["informers"] = len(mgr.cache.informers)
        out["restart"]["informer_gets"] = informer_gets
        out["restart"]["reconcile_reads"] = out["restart"]["reads"] - informer_gets
        srv1 = await apiserver_requests(client)
        out["restart"]["apiserver_writes"] = _server_writes(srv0, srv1)

        t1 = time.monotonic()
        for inf in mgr.cache.informers:  # what a resync period or a relist delivers
            inf.resync()
        await _wait_idle(mgr, rec1 + objects)
        req2, rec2 = client_requests(), reconciles()
        out["resync"] = _phase(req1, req2, rec2 - rec1, time.monotonic() - t1)
        await asyncio.sleep(1.0)  # an Event or patch sent asynchronously would land by now
        srv2 = await apiserver_requests(client)
        out["resync"]["apiserver_writes"] = _server_writes(srv1, srv2)
    finally:
        mgr.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await cloud.close()
    return out


def _server_writes(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> dict[str, int]:
    """Writes the API server counted between two scrapes, by resource (everything on the server)."""
    delta = Counter(after)
    delta.subtract(before)
    return dict(sorted(writes_of(delta).items()))


def _phase(before: Counter[str], after: Counter[str], reconciled: int, seconds: float) -> dict[str, Any]:
    requests = _delta(before, after)
    writes = sum(v for m, v in requests.items() if m != "GET")
    reads = requests.get("GET", 0)
    return {"requests": requests, "writes": writes, "reads": reads, "reconciles": reconciled,
            "reads_per_reconcile": round(reads / reconciled, 4) if reconciled else None,
            "seconds": round(seconds, 2)}


# --- the whole section --------------------------------------------------------------------------


async def run(client: Client, kubeconfig: str, sizes: list[int], *, concurrency: int, workdir: Path,
              contenders: tuple[str, ...] = CONTENDERS, timeout: float | None = None,
              server_pids: dict[str, int | None] | None = None, steady: bool = True,
              repeats: int | list[int] = 1, log: Any = print) -> dict[str, Any]:
    """Every contender ``repeats`` times per size, interleaved (round r runs every contender once).

    The start of the order rotates every round, so no contender always runs first or on the
    fullest etcd. The steady state is measured once per size, on the first substratus round.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    steady_runs: list[dict[str, Any]] = []
    rounds = repeats if isinstance(repeats, list) else [repeats] * len(sizes)
    # A freshly started API server is slower for its first few hundred writes (the first timed
    # run was up to 2x slower than the same run later): warm it up with an untimed ceiling run.
    warm_n = min(100, max(sizes))
    log(f"convergence: warming the API server up ({warm_n} Datasets with children, not recorded) ...")
    await run_contender(client, kubeconfig, "ceiling", warm_n, concurrency=concurrency, workdir=workdir,
                        timeout=120, rep=0)
    k = 0
    for n, reps in zip(sizes, rounds, strict=True):
        for rep in range(1, reps + 1):
            shift = k % len(contenders)
            k += 1
            order = list(contenders[shift:]) + list(contenders[:shift])
            for contender in order:
                log(f"convergence: {contender} n={n} round {rep}/{reps} (load {loadavg()}) ...")
                want_steady = steady and contender == "substratus" and rep == 1
                res, proc = await run_contender(
                    client, kubeconfig, contender, n, concurrency=concurrency, workdir=workdir,
                    timeout=timeout or max(120.0, n * 0.5), server_pids=server_pids,
                    keep_running=want_steady, rep=rep)
                res["order"] = order.index(contender) + 1
                res["loadavg"] = loadavg()
                runs.append(res)
                log(f"  {res['seconds']:.2f} s, {res['writes_per_object']} writes/object, "
                    f"converged={res['converged']}")
                if proc is not None:
                    res["exit_code"] = await proc.stop()
                    log(f"steady state: restart + resync on {n + 1} converged Datasets ...")
                    st = await steady_state(client, res["namespace"], n + 1, workdir)
                    st["n"] = n
                    steady_runs.append(st)
                    log(f"  restart: {st['restart']['writes']} writes (API server: "
                        f"{st['restart']['apiserver_writes']}), {st['restart']['reconcile_reads']} "
                        f"reconcile reads; resync: {st['resync']['writes']} writes (API server: "
                        f"{st['resync']['apiserver_writes']}), "
                        f"{st['resync']['reads_per_reconcile']} reads/reconcile")
    return {"runs": runs, "steady": steady_runs, "sizes": sizes, "concurrency": concurrency, "repeats": rounds,
            "contenders": list(contenders), "summary": summarise(runs),
            "child_names_example": child_names("ds-0000")}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, contender): median, min and max seconds over the rounds that converged."""
    out = []
    keys = sorted({(r["n"], r["contender"]) for r in runs}, key=lambda k: (k[0], CONTENDERS.index(k[1])
                                                                          if k[1] in CONTENDERS else 99))
    for n, contender in keys:
        mine = [r for r in runs if r["n"] == n and r["contender"] == contender]
        secs = [r["seconds"] for r in mine if r["converged"]]
        out.append({"n": n, "contender": contender, "rounds": len(mine), "converged": len(secs),
                    "median_seconds": round(statistics.median(secs), 3) if secs else None,
                    "min_seconds": min(secs) if secs else None, "max_seconds": max(secs) if secs else None})
    return out


def ratio(summary: list[dict[str, Any]], n: int, a: str, b: str) -> float | None:
    """median(a) / median(b) at size n, None if either is missing."""
    med = {s["contender"]: s["median_seconds"] for s in summary if s["n"] == n}
    if not med.get(a) or not med.get(b):
        return None
    return round(med[a] / med[b], 3)
