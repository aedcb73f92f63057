"""Smoke test of the benchmark harness (``python -m bench``): structure, never speed.

Runs the convergence section with N=5 against the session's control plane (every contender but
the 20-worker variant; kopf only when the ``bench`` extra is installed), two memory cells, then
the report writer into a tmp dir: about 40 s on 2 cores. The whole ``python -m bench --quick``
(its own control plane, every section, ~2-3 min) runs only with ``SUBSTRATUS_BENCH_QUICK=1``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level directory of the repository, not installed
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from bench import common, convergence, memory, report, workqueue_bench  # noqa: E402
from substratus.controllers.resources import DATASETS  # noqa: E402
from substratus.install import install_crds  # noqa: E402
from substratus.runtime.client import Client  # noqa: E402

HAVE_KOPF = importlib.util.find_spec("kopf") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


async def test_convergence_n5_and_report(kubeconfig: Path, tmp_path: Path) -> None:
    contenders = ("ceiling", "ceiling-same-writes", "substratus", *(("kopf", "kopf-same-job") if HAVE_KOPF else ()))
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        await install_crds(client)
        machine = {**common.machine_info(), "apiserver": await common.apiserver_version(client), "cluster": "test"}
        conv = await convergence.run(client, str(kubeconfig), [5], concurrency=5, workdir=tmp_path / "work",
                                     contenders=contenders, log=lambda *_: None)
    finally:
        await client.close()

    assert conv["sizes"] == [5]
    assert [r["contender"] for r in conv["runs"]] == list(contenders)
    for r in conv["runs"]:
        assert r["n"] == 5 and r["converged"] and r["missing"] == 0, r
        assert r["seconds"] > 0 and r["objects_per_second"] > 0
        # Every contender creates the Dataset, its ConfigMap and its Job; the API server saw them all.
        for resource in ("datasets", "configmaps", "jobs"):
            assert r["writes"].get(resource, 0) >= 5, r["writes"]
    ours = next(r for r in conv["runs"] if r["contender"] == "substratus")
    assert ours["reconciles"] >= 6 and ours["reconcile_errors"] == 0
    # Like for like: the same-writes contenders make substratus's writes, resource by resource
    # (kopf adds its own annotation patch on the Dataset), and write the status substratus writes.
    by_resource = {k: v for k, v in ours["writes"].items() if k != "endpoints"}
    same = next(r for r in conv["runs"] if r["contender"] == "ceiling-same-writes")
    assert {k: v for k, v in same["writes"].items() if k != "endpoints"} == by_resource
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        def comparable(ds: dict[str, Any]) -> dict[str, Any]:
            status = dict(ds["status"])
            status["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                    for c in status["conditions"]]
            status["url"] = status["url"].rsplit("/", 1)[0]  # the hash differs per namespace
            return status

        mine = await client.get(DATASETS, "ds-0000", ours["namespace"])
        theirs = await client.get(DATASETS, "ds-0000", same["namespace"])
        assert comparable(theirs) == comparable(mine)
    finally:
        await client.close()
    if HAVE_KOPF:
        kopf_same = next(r for r in conv["runs"] if r["contender"] == "kopf-same-job")
        assert {k: v for k, v in kopf_same["writes"].items() if k not in ("endpoints", "datasets")} == {
            k: v for k, v in by_resource.items() if k != "datasets"}
    assert ours["exit_code"] == 0, "SIGTERM is a clean shutdown"
    assert [s["contender"] for s in conv["summary"]] == list(contenders)
    assert all(s["median_seconds"] and s["converged"] == 1 for s in conv["summary"])

    [steady] = conv["steady"]
    assert steady["objects"] == 6  # five plus the warm-up Dataset
    assert steady["server_own"][0] == "endpoints" and set(steady["server_own"]) <= {"endpoints", "leases"}
    for phase in ("restart", "resync"):
        assert steady[phase]["reconciles"] >= 6
        assert steady[phase]["writes"] == 0, steady  # a converged reconcile never writes
        # nor does anything else: only what this API server writes by itself (probed: the kubernetes
        # Service's endpoints, and its identity Lease where it keeps one)
        assert set(steady[phase]["apiserver_writes"]) <= set(steady["server_own"]), steady
    assert steady["resync"]["reads"] == 0 and steady["restart"]["reconcile_reads"] == 0

    results = {"machine": machine, "convergence": conv, "total_seconds": 1.0, "args": {"argv": "--sizes 5"}}
    written = report.write(results, tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "bench")
    md = written["markdown"].read_text()
    for heading in ("# Benchmarks", "## Environment", "## 1. Convergence", "### N = 5", "## 2. Steady state"):
        assert heading in md
    for c in contenders:
        assert f"| {report.LABELS[c]} |" in md
    assert md.count("<sub>Measured ") >= 3, "the machine line goes with every table"
    assert any(line.startswith("  convergence N=5: substratus/ceiling-same-writes ") for line in report.headline(results))
    if HAVE_MATPLOTLIB:
        assert "![convergence](bench/convergence.png)" in md
        assert written["convergence"].read_bytes().startswith(b"\x89PNG")


async def test_memory_cells(kubeconfig: Path, controlplane: Any, tmp_path: Path) -> None:
    """The operator's own objects of every kind it caches; one cell from the API server and one
    synthesised from them, each in its own subprocess."""
    if controlplane is None:
        pytest.skip("the memory section's objects come from the operator with the cluster simulator")
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        await install_crds(client)
        ns, raw = await memory.populate(client, 1, tmp_path / "work")
    finally:
        await client.close()
    assert set(raw) == set(memory.KINDS) and all(raw.values()), {k: len(v) for k, v in raw.items()}
    pages = tmp_path / "pages.jsonl"
    memory.write_items(raw["jobs"], 12, pages)
    n = len(raw["jobs"])
    api = memory._measure_in_subprocess(str(kubeconfig), ns, "jobs", n, False, "tracemalloc", None)
    synth = memory._measure_in_subprocess(str(kubeconfig), ns, "jobs", 12, True, "rss", pages)
    assert api["source"] == "api" and api["objects"] == n and api["bytes_per_object"] > 0
    assert api["managed_fields_json_bytes"] > 0, "server-side apply leaves managedFields"
    assert synth["source"] == "synthesised" and synth["objects"] == 12
    assert synth["managed_fields_json_bytes"] == 0, "strip_bulk drops them"


@pytest.mark.skipif(not os.environ.get("SUBSTRATUS_BENCH_QUICK"), reason="set SUBSTRATUS_BENCH_QUICK=1 (~3 min)")
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """``python -m bench --quick``: its own control plane, every section, the report and the plots."""
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), "--workdir",
                           str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = out.read_text()
    for heading in ("## 1. Convergence", "## 2. Steady state", "## 3. Memory", "## 4. Work queue",
                    "## 5. Leader takeover"):
        assert heading in md
    assert "headline (" in proc.stdout


def _has_commit(ref: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{ref}^{{commit}}"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_commit(convergence.BASELINE), reason=f"{convergence.BASELINE} not in this clone's history")
async def test_baseline_contender_runs_the_old_commit(kubeconfig: Path, tmp_path: Path) -> None:
    """``substratus@REF`` runs commit REF's operator side by side: its process imports REF's code."""
    contender = f"substratus@{convergence.BASELINE}"
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        await install_crds(client)
        conv = await convergence.run(client, str(kubeconfig), [3], concurrency=3, workdir=tmp_path / "work",
                                     contenders=(contender,), steady=False, log=lambda *_: None)
    finally:
        await client.close()
    (r,) = conv["runs"]
    assert r["contender"] == contender and r["converged"] and r["reconcile_errors"] == 0, r
    assert r["operator_cpu_seconds"] is not None
    src = tmp_path / "work" / f"baseline-{convergence.BASELINE}" / "src" / "substratus"
    assert src.is_dir()
    # The exported tree is that commit's, not this checkout's.
    ours = (ROOT / "src" / "substratus" / "operator.py").read_text()
    assert (src / "operator.py").read_text() != ours
    assert report.LABELS[contender] == f"substratus at {convergence.BASELINE}"


def test_report_renders_every_section(tmp_path: Path) -> None:
    """All five sections from results shaped like a real run (work queue measured for real)."""
    wq = [workqueue_bench.run(2000, w, metrics=m) for w in workqueue_bench.WORKER_COUNTS for m in (True, False)]
    mem = [{"kind": k, "count": c, "strip": s, "method": m, "source": "api" if c == 10 else "synthesised",
            "objects": c, "bytes": 1000 * c, "bytes_per_object": 1000 if s else 2000, "json_bytes_per_object": 900,
            "peak_bytes_per_object": 3000, "managed_fields_json_bytes": 400, "fill_seconds": 0.1}
           for k in report.KIND_LABELS for c in (10, 100) for s in (False, True) for m in ("tracemalloc", "rss")]
    leader = {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0, "rounds": [
        {"round": 1, "signal": "SIGKILL", "lease_acquired_seconds": 14.0, "first_reconcile_seconds": 14.1,
         "create_seconds": 0.01, "old_leader_exit_code": -9},
        {"round": 2, "signal": "SIGTERM", "lease_acquired_seconds": 1.9, "first_reconcile_seconds": 2.0,
         "create_seconds": 0.01, "old_leader_exit_code": 0}]}
    results: dict[str, Any] = {
        "machine": {**common.machine_info(), "apiserver": "v0.0.0", "cluster": "none"}, "total_seconds": 1.0,
        "args": {"argv": ""}, "memory": {"real_objects": {k: 10 for k in report.KIND_LABELS}, "parents_per_kind": 3,
                                          "counts": [10, 100], "results": mem},
        "workqueue": {"results": wq, "default_workers": workqueue_bench.DEFAULT_WORKERS}, "leader": leader,
        "notes": ["something was not measured"]}
    written = report.write(results, tmp_path / "benchmarks.md", tmp_path / "plots")
    md = written["markdown"].read_text()
    for heading in ("## 3. Memory per cached object", "## 4. Work queue", "## 5. Leader takeover",
                    "## Not measured / limits"):
        assert heading in md
    assert "## 1. Convergence" not in md, "only what was measured"
    assert "SIGKILL / SIGTERM = 7.0x" in md
    assert list(report.KIND_LABELS) == list(memory.KINDS), "the report names every kind the bench measures"
    for label in report.KIND_LABELS.values():  # every cached kind has its rows and its target
        assert f"| {label} | 100 | synthesised |" in md and f"| RSS per cached {label} at 100 | ≤ 4,096 B |" in md
    # The work queue target is judged at the operator's default worker count, the 1-worker bound explained.
    dw = workqueue_bench.DEFAULT_WORKERS
    assert f"| work queue, metrics on, asyncio, {dw} workers (the default) |" in md
    assert "work queue, metrics on, asyncio, 1 worker(s)" not in md
    assert "µs per cycle with 1 worker" in md
    if HAVE_MATPLOTLIB:
        assert {"memory", "workqueue", "leader"} <= set(written)
        assert "![memory](plots/memory.png)" in md
