"""Scale curve: substratus converging N = 100, 1,000, 10,000 Datasets; time, CPU and memory vs N.

Sizes the convergence section already measured reuse its substratus rounds (the median round);
the others get one run each, the same way (``convergence.run_contender``: fresh namespace,
warm-up Dataset, 20 creates in flight). The growth exponent ``k`` in ``y ≈ c·N^k`` is a least
squares fit of log y on log N: 1.0 is linear (constant cost per object), above 1 each object
costs more as N grows. At the largest size the operator is then restarted on the converged
namespace and every object re-delivered (``convergence.steady_state``): both must write nothing.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench import convergence
from substratus.runtime.client import Client


def fit_exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 3)


def _point(r: dict[str, Any], source: str) -> dict[str, Any]:
    mem = r.get("operator_memory_mib") or {}
    cpu = r.get("operator_cpu_seconds")
    return {"n": r["n"], "source": source, "seconds": r["seconds"], "converged": r["converged"],
            "objects_per_second": r.get("objects_per_second"), "operator_cpu_seconds": cpu,
            "cpu_ms_per_object": round(1000 * cpu / r["n"], 2) if cpu is not None else None,
            "peak_rss_mib": mem.get("VmHWM"), "rss_mib": mem.get("VmRSS"),
            "writes_per_object": r.get("writes_per_object"), "loadavg": r.get("loadavg")}


async def run(client: Client, kubeconfig: str, sizes: list[int], *, concurrency: int, workdir: Path,
              server_pids: dict[str, int | None] | None = None, convergence_runs: list[dict[str, Any]] | None = None,
              log: Any = print) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    steady: dict[str, Any] | None = None
    largest = max(sizes)
    for n in sorted(sizes):
        done = sorted((r for r in convergence_runs or [] if r["contender"] == "substratus" and r["n"] == n
                       and r["converged"]), key=lambda r: r["seconds"])
        if done and n != largest:
            mid = done[(len(done) - 1) // 2]
            points.append(_point(mid, f"convergence section, median of {len(done)}"))
            continue
        log(f"scale: substratus n={n:,} ...")
        res, proc = await convergence.run_contender(
            client, kubeconfig, "substratus", n, concurrency=concurrency, workdir=workdir,
            timeout=max(300.0, n * 0.5), server_pids=server_pids, keep_running=n == largest, rep=1)
        points.append(_point(res, "one run"))
        log(f"  {res['seconds']:.1f} s, operator CPU {res.get('operator_cpu_seconds')} s, "
            f"peak RSS {(res.get('operator_memory_mib') or {}).get('VmHWM')} MiB")
        if proc is not None:
            await proc.stop()
            if res["converged"]:
                log(f"scale: steady state after restart on {n + 1:,} converged Datasets ...")
                steady = await convergence.steady_state(client, res["namespace"], n + 1, workdir)
                steady["n"] = n
                log(f"  restart: {steady['restart']['writes']} writes (API server: "
                    f"{steady['restart']['apiserver_writes']}); resync: {steady['resync']['writes']} writes")
    ok = [p for p in points if p["converged"]]
    exponents = {
        "seconds": fit_exponent([(p["n"], p["seconds"]) for p in ok]),
        "operator_cpu_seconds": fit_exponent([(p["n"], p["operator_cpu_seconds"]) for p in ok]),
        "peak_rss_mib": fit_exponent([(p["n"], p["peak_rss_mib"]) for p in ok]),
    }
    return {"sizes": sorted(sizes), "points": points, "exponents": exponents, "steady": steady}
