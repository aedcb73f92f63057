"""Render manifests/prometheus/dashboard.json to docs/dashboard.png from a real run.

Grafana is not installable here (package registries only), so this plays its part and nothing
else: a real kube-apiserver + etcd, the cluster simulator, two operator *processes* with leader
election, and a real Prometheus (from Debian's package, ``make tools``) scraping both. A scripted
workload runs for a few minutes (imports, finetunes waiting on their dependencies, invalid specs,
failing Jobs, and a SIGKILL of the leader half-way); then every panel's own PromQL from the
dashboard JSON is evaluated by that Prometheus (``query_range``; Grafana's ``$__rate_interval`` and
``$__range`` filled in the way Grafana would for this scrape interval and time range) and drawn
with matplotlib on the dashboard's grid.

    make dashboard            # ~4 minutes; writes docs/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from substratus.controllers.resources import DATASETS, MODELS
from substratus.install import install_crds
from substratus.runtime.client import Client
from substratus.runtime.resource import Resource
from substratus.testing.controlplane import ControlPlane
from substratus.testing.simulator import ClusterSimulator, Outcome

log = logging.getLogger("render-dashboard")

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "manifests" / "prometheus" / "dashboard.json"
TOOLS = Path(os.environ.get("SUBSTRATUS_TOOLS_DIR") or Path.home() / ".cache/substratus/tools")
JOB = "substratus-metrics"
SCRAPE_INTERVAL = 2
NAMESPACES = ("team-a", "team-b")
NAMESPACE_RES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the run ----------------------------------------------------------------------------------


def start_operator(name: str, kubeconfig: Path, work: Path, metrics_port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "substratus", "run", "--kubeconfig", str(kubeconfig), "--leader-elect",
            "--cluster-name", "dashboard", "--cloud", "local", "--bucket-url", f"file://{work}/bucket",
            "--registry", "registry.local:5000", "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
            "--health-probe-bind-address", f"127.0.0.1:{free_port()}",
            "--upload-bind-address", f"127.0.0.1:{free_port()}", "--upload-signing-key", "dashboard",
            "--object-count-interval", "2", "--log-format", "json"]
    out = (work / f"{name}.log").open("wb")
    # POD_NAME becomes the Lease holder identity, as the Deployment's downward API sets it.
    env = {**os.environ, "POD_NAME": name}
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def start_prometheus(work: Path, targets: dict[str, int], port: int) -> subprocess.Popen[bytes]:
    binary = TOOLS / "prometheus"
    if not binary.exists():
        raise SystemExit(f"{binary} missing: run `make tools` first")
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "evaluation_interval": f"{SCRAPE_INTERVAL}s"},
        "scrape_configs": [{
            "job_name": JOB, "honor_labels": True,
            # What the ServiceMonitor's relabelling yields in a cluster: namespace and pod labels.
            "static_configs": [{"targets": [f"127.0.0.1:{p}"], "labels": {"pod": pod, "namespace": "substratus"}}
                               for pod, p in targets.items()],
        }],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))
    out = (work / "prometheus.log").open("wb")
    return subprocess.Popen([str(binary), f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=out, stderr=subprocess.STDOUT)


def dataset(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/dataset-loader:v1"}, "params": {"rows": 1000}}}


def model(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/model-trainer:v1"}, **spec}}


def job_outcome(job: dict[str, Any]) -> Outcome:
    """One import in twelve fails its Job: it and the finetune waiting on it stay not ready."""
    return "fail" if job["metadata"]["name"].endswith("-7-dataset") else "succeed"


async def leader(ports: dict[str, int]) -> str | None:
    """The replica whose /metrics says it leads (Lease holder identities are hostname_uuid)."""
    async with aiohttp.ClientSession() as http:
        for pod, port in ports.items():
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    if re.search(r'^leader_election_master_status\{[^}]*\} 1\.0$', await resp.text(), re.M):
                        return pod
    return None


async def workload(client: Client, operators: dict[str, subprocess.Popen[bytes]], ports: dict[str, int],
                   minutes: float) -> None:
    """Waves of imports and finetunes, a few broken objects, and the leader killed mid-run."""
    start = time.monotonic()
    per_wave = 12
    waves = 6
    wave_gap = minutes * 60 / (waves + 1)
    killed = False
    for wave in range(waves):
        for i in range(per_wave):
            ns = NAMESPACES[i % 2]
            base = f"base-w{wave}-{i}"
            data = f"data-w{wave}-{i}"
            await client.create(MODELS, model(base, ns))
            await client.create(DATASETS, dataset(data, ns))
            await client.create(MODELS, model(f"tuned-w{wave}-{i}", ns, baseModel={"name": base},
                                              trainingDataset={"name": data}))
        # An invalid spec per wave: a cycle only the controller can see (InvalidSpec condition).
        await client.create(MODELS, model(f"loop-w{wave}", "team-b", baseModel={"name": f"loop-w{wave}"}))
        if wave == waves // 2 and not killed:
            holder = await leader(ports)
            if holder in operators:
                log.info("SIGKILL leader %s", holder)
                operators[holder].send_signal(signal.SIGKILL)
                killed = True
        await asyncio.sleep(max(0.0, start + (wave + 1) * wave_gap - time.monotonic()))
    await asyncio.sleep(max(0.0, start + minutes * 60 - time.monotonic()))


@contextlib.asynccontextmanager
async def cluster(work: Path) -> AsyncIterator[tuple[ControlPlane, Client]]:
    cp = ControlPlane(work_dir=work / "controlplane")
    await asyncio.to_thread(cp.start)
    client = await Client.from_kubeconfig(str(cp.kubeconfig_path))
    try:
        yield cp, client
    finally:
        await client.close()
        await asyncio.to_thread(cp.stop)


async def run(work: Path, minutes: float) -> tuple[list[dict[str, Any]], float, float]:
    """Run everything and query the panels while Prometheus still runs; (panels, begin, end)."""
    from kubernetes_asyncio.config import new_client_from_config

    async with cluster(work) as (cp, client):
        await install_crds(client)
        for ns in ("substratus", *NAMESPACES):
            await client.create(NAMESPACE_RES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        sim_api = await new_client_from_config(config_file=str(cp.kubeconfig_path), persist_config=False)
        sim = ClusterSimulator(sim_api, job_delay=8.0, job_outcome=job_outcome)
        await sim.start()
        ports = {"substratus-7d9f-a": free_port(), "substratus-7d9f-b": free_port()}
        prom_port = free_port()
        operators: dict[str, subprocess.Popen[bytes]] = {}
        prom = start_prometheus(work, ports, prom_port)
        try:
            for pod, port in ports.items():
                operators[pod] = start_operator(pod, cp.kubeconfig_path, work, port)
                await asyncio.sleep(3)  # the first one becomes leader
            await asyncio.sleep(10)
            begin = time.time()
            await workload(client, operators, ports, minutes)
            # The killed replica comes back, as its Deployment would restart it.
            for pod, proc in operators.items():
                if proc.poll() is not None:
                    operators[pod] = start_operator(pod, cp.kubeconfig_path, work, ports[pod])
            await asyncio.sleep(20)
            end = time.time()
            await asyncio.sleep(2 * SCRAPE_INTERVAL)
            return await query_panels(prom_port, begin, end), begin, end
        finally:
            for proc in (prom, *operators.values()):
                proc.send_signal(signal.SIGTERM)
            for proc in (prom, *operators.values()):
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await sim.stop()
            await sim_api.close()


# --- querying ---------------------------------------------------------------------------------


def grafana_vars(expr: str, range_s: float) -> str:
    # Grafana: $__rate_interval = max($__interval + scrape interval, 4 * scrape interval).
    expr = expr.replace("$__rate_interval", f"{4 * SCRAPE_INTERVAL * 2}s")
    expr = expr.replace("$__range", f"{int(range_s)}s")
    return expr.replace("$job", JOB)


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


async def query_panels(port: int, begin: float, end: float) -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    base = f"http://127.0.0.1:{port}/api/v1"
    step = SCRAPE_INTERVAL
    panels = []
    async with aiohttp.ClientSession() as http:
        for p in dashboard["panels"]:
            series = []
            for t in p.get("targets", []):
                expr = grafana_vars(t["expr"], end - begin)
                instant = p["type"] in ("stat", "table", "bargauge")
                url = f"{base}/query" if instant else f"{base}/query_range"
                params = {"query": expr, "time": str(end)} if instant else \
                    {"query": expr, "start": str(begin), "end": str(end), "step": f"{step}s"}
                async with http.get(url, params=params) as resp:
                    body = await resp.json()
                if body.get("status") != "success":
                    raise SystemExit(f"panel {p.get('title')!r}: {expr}: {body}")
                for r in body["data"]["result"]:
                    values = [r["value"]] if instant else r["values"]
                    pts = [(float(ts) - begin, float(v)) for ts, v in values]
                    series.append({"name": legend(t.get("legendFormat"), r["metric"]), "points": pts})
            panels.append({**p, "series": series})
    return panels


# --- drawing ----------------------------------------------------------------------------------

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357", "#96d98d",
          "#ca95e5", "#fade2a", "#ff7383"]


def gaps_as_breaks(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Like Grafana: no line across missing scrapes (a killed replica's series just stops)."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        if xs and x - xs[-1] > 2 * SCRAPE_INTERVAL:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def draw(panels: list[dict[str, Any]], out: Path, begin: float, end: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_w, unit_h = 1.0, 0.42
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 0.8), facecolor=BG)
    title = json.loads(DASHBOARD.read_text())["title"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    fig.suptitle(f"{title} — rendered from a real run ({int(end - begin)} s, two replicas, leader killed mid-run; "
                 f"{stamp})", color=TEXT, fontsize=13, x=0.01, ha="left", y=0.995)
    top = 1 - 0.6 / (rows * unit_h + 0.8)

    def rect(g: dict[str, int]) -> tuple[float, float, float, float]:
        pad = 0.004
        x0 = g["x"] / 24 + pad
        w = g["w"] / 24 - 2 * pad
        h = g["h"] / rows * top - 2 * pad
        y0 = top - (g["y"] + g["h"]) / rows * top + pad
        return (x0, y0, w, h)

    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            ax = fig.add_axes(rect(g))
            ax.axis("off")
            ax.text(0, 0.5, p["title"], color=TEXT, fontsize=12, weight="bold", va="center")
            continue
        x0, y0, w, h = rect(g)
        ax = fig.add_axes((x0 + 0.025 * w + 0.012, y0 + 0.16 * h, w * 0.975 - 0.016, h * 0.70))
        frame = fig.add_axes((x0, y0, w, h), zorder=-1)
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for s in frame.spines.values():
            s.set_color(GRID)
        frame.text(0.01, 0.96, p["title"], color=TEXT, fontsize=10, va="top", transform=frame.transAxes)
        ax.set_facecolor(PANEL)
        ax.tick_params(colors=TEXT, labelsize=7)
        for s in ax.spines.values():
            s.set_color(GRID)
        series = p["series"]
        if p["type"] == "timeseries":
            for i, s in enumerate(sorted(series, key=lambda s: s["name"])):
                xs, ys = gaps_as_breaks(s["points"])
                if xs:
                    ax.plot(xs, ys, color=COLORS[i % len(COLORS)], lw=1.2, label=s["name"])
            ax.grid(color=GRID, lw=0.5)
            ax.set_xlim(0, end - begin)
            ax.set_xlabel("seconds into the run", color=TEXT, fontsize=7)
            unit = (p.get("fieldConfig") or {}).get("defaults", {}).get("unit")
            if unit:
                ax.set_ylabel(unit, color=TEXT, fontsize=7)
            if series:
                ax.legend(fontsize=6, loc="upper left", ncol=2, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT)
            else:
                ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", transform=ax.transAxes)
        elif p["type"] == "stat":
            ax.axis("off")
            value = sum(s["points"][-1][1] for s in series) if series else float("nan")
            ok = value == 1
            ax.text(0.5, 0.5, "no data" if math.isnan(value) else f"{value:g}", fontsize=40, ha="center",
                    va="center", color="#73bf69" if ok else "#f2495c", transform=ax.transAxes)
            ax.text(0.5, 0.08, series[0]["name"] if series else "", color=TEXT, fontsize=8, ha="center",
                    transform=ax.transAxes)
        elif p["type"] == "table":
            ax.axis("off")
            rows_ = sorted((s["name"], s["points"][-1][1]) for s in series)
            lines = [f"{name:<32} {value:>6g}" for name, value in rows_] or ["(none)"]
            ax.text(0.0, 1.0, "\n".join(lines[:14]), family="monospace", fontsize=8, color=TEXT, va="top",
                    transform=ax.transAxes)
        elif p["type"] == "bargauge":
            vals = sorted(((s["name"], s["points"][-1][1]) for s in series if math.isfinite(s["points"][-1][1])),
                          reverse=True)
            rows_at = list(range(len(vals)))
            ax.barh(rows_at, [v for _, v in vals], color=[COLORS[i % len(COLORS)] for i in rows_at])
            ax.set_yticks(rows_at, [n for n, _ in vals], fontsize=7, color=TEXT)
            ax.set_xlabel("seconds", color=TEXT, fontsize=7)
            ax.grid(color=GRID, lw=0.5, axis="x")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70, facecolor=BG)
    plt.close(fig)


async def main_async(out: Path, minutes: float, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="substratus-dashboard-"))
    log.info("work dir %s", work)
    panels, begin, end = await run(work, minutes)
    empty = [p["title"] for p in panels if p["type"] != "row" and not p["series"]]
    if empty:
        log.warning("panels without data: %s", empty)
    draw(panels, out, begin, end)
    # The numbers behind the picture, kept with the logs and the TSDB when --keep.
    (work / "panels.json").write_text(json.dumps(
        {"begin": begin, "end": end, "panels": [{"title": p.get("title"), "series": p["series"]}
                                                for p in panels if p["type"] != "row"]}))
    log.info("wrote %s", out)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the scripted workload")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, TSDB)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main_async(args.out, args.minutes, args.keep))


if __name__ == "__main__":
    main()
