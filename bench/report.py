"""Render the benchmark results as ``docs/benchmarks.md`` plus PNG plots (matplotlib, Agg backend).

Every number in the Markdown comes from the results dict that ``python -m bench`` measured (and
also printed); nothing here is typed in by hand. The machine line under every table says where
and when it was measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from statistics import mean, median
from typing import Any

LABELS = {"ceiling": "ceiling (bare client)", "ceiling-same-writes": "ceiling, same writes",
          "substratus": "substratus", "substratus-w20": "substratus, 20 workers",
          "substratus-w4": "substratus, 4 workers", "substratus-w16": "substratus, 16 workers", "substratus@431d200": "substratus at 431d200",
          "kopf": "kopf", "kopf-same-job": "kopf, same job"}
COLORS = {"ceiling": "#9e9e9e", "ceiling-same-writes": "#616161", "substratus": "#1f77b4",
          "substratus-w20": "#6baed6", "substratus-w4": "#9ecae1", "substratus-w16": "#4292c6",
          "substratus@431d200": "#08306b", "kopf": "#ff7f0e", "kopf-same-job": "#d62728"}
# Events substratus records per converged Dataset: one, for Complete=False/JobRunning; the first
# Built=True/ImageProvided asks nothing of anyone and gets none (SPEC §7). Commits before that rule
# (the substratus@REF baseline) recorded both.
EVENTS_PER_DATASET = 1


def events_per_dataset(contender: str) -> int:
    return 2 if contender.startswith("substratus@") else EVENTS_PER_DATASET


def env_line(results: dict[str, Any], section: str | None = None) -> str:
    """The machine line under a table. With several invocations (``merge``), the date, commit and
    load of the invocation ``section`` was kept from, named by its number."""
    m = results.get("machine") or {}
    pk = m.get("packages") or {}
    date, commit, load, which = m.get("date", "?"), _commit(m), m.get("loadavg_start", "?"), ""
    inv = results.get("invocations") or []
    if inv and section is None:  # a table drawing on several sections: every invocation
        date = " and ".join(f"{x.get('date', '?')} (invocation {i})" for i, x in enumerate(inv, 1))
        commit = " and ".join(_commit(x) for x in inv)
        load = " and ".join(str(x.get("loadavg_start", "?")) for x in inv)
    for i, x in enumerate(inv, 1):
        if section in x.get("sections", ()):
            date, commit, load = x.get("date", "?"), _commit(x), x.get("loadavg_start", "?")
            which = f" (invocation {i})"
    return (f"<sub>Measured {date}{which} on {m.get('nproc', '?')} cores ({m.get('cpu_model', '?')}), "
            f"{m.get('memory_gib', '?')} GiB RAM; Python {m.get('python', '?')}, kube-apiserver "
            f"{m.get('apiserver', '?')}, substratus {pk.get('substratus', '?')} ({commit}), "
            f"kopf {pk.get('kopf', '?')}; load average {load} at the start.</sub>")


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.2f}x"


def is_substratus(contender: str) -> bool:
    return contender == "substratus" or contender.startswith(("substratus-w", "substratus@"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# --- sections -----------------------------------------------------------------------------------


def _environment(results: dict[str, Any]) -> list[str]:
    m = results.get("machine") or {}
    pk = m.get("packages") or {}
    a = results.get("args") or {}
    rows = [
        ["date", m.get("date", "?")],
        ["machine", f"{m.get('nproc', '?')} cores, {m.get('cpu_model', '?')}, {m.get('memory_gib', '?')} GiB RAM, "
                    f"Linux {m.get('kernel', '?')}"],
        ["Python", m.get("python", "?")],
        ["API server", f"kube-apiserver {m.get('apiserver', '?')}: {m.get('cluster', '?')}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in pk.items())],
        ["commit", _commit(m)],
        ["command", f"`python -m bench {a.get('argv', '')}`".replace(" `", "`")],
        ["bench wall time", f"{_f(results.get('total_seconds'), 0)} s"],
        ["load average (1, 5, 15 min)", f"{m.get('loadavg_start', '?')} at the start, {m.get('loadavg_end', '?')} at "
                                        "the end (the machine is shared: other jobs ran alongside)"],
    ]
    inv = results.get("invocations")
    if inv:
        rows = [r for r in rows if r[0] not in ("command", "bench wall time", "load average (1, 5, 15 min)", "commit",
                                                "date")]
        for i, x in enumerate(inv, 1):
            cmd = f"`python -m bench {x['argv']}`".replace(" `", "`")
            kept = ", ".join(x["sections"]) or "nothing"
            later = (f"; its {', '.join(x['superseded'])} superseded by a later invocation"
                     if x.get("superseded") else "")
            at = f" at commit {x['commit']}" if x.get("commit") else ""
            rows.append([f"invocation {i}", f"{cmd}{at}, kept: {kept}{later}; started {x['date']}, "
                         f"{_f(x['total_seconds'], 0)} s, load average {x['loadavg_start']} at the start, "
                         f"{x['loadavg_end']} at the end"])
    return ["## Environment", "", *_table(["", ""], rows), ""]


SECTION_KEYS = ("convergence", "scale", "memory", "workqueue", "leader")


def _started(part: dict[str, Any]) -> datetime | None:
    try:
        return datetime.strptime(str(part["machine"].get("date")), "%Y-%m-%d %H:%M UTC")
    except (KeyError, ValueError):
        return None


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several invocations on the same machine: each section is taken
    from the last invocation that measured it (none is mixed), and every invocation is listed
    with the sections kept from it. Whether they ran at the same time or one after the other is
    read off their start times and durations, and said in a note."""
    out: dict[str, Any] = {"machine": dict(parts[0]["machine"]), "notes": [], "invocations": []}
    kept = {k: i for i, part in enumerate(parts) for k in SECTION_KEYS if part.get(k)}
    for i, part in enumerate(parts):
        sections = [k for k in SECTION_KEYS if kept.get(k) == i]
        superseded = [k for k in SECTION_KEYS if part.get(k) and kept.get(k) != i]
        for k in sections:
            out[k] = part[k]
        out["notes"] += part.get("notes") or []
        m = part["machine"]
        out["invocations"].append({"argv": (part.get("args") or {}).get("argv", ""), "sections": sections,
                                   "superseded": superseded,
                                   "date": m.get("date"), "total_seconds": part.get("total_seconds"),
                                   "loadavg_start": m.get("loadavg_start"), "loadavg_end": m.get("loadavg_end"),
                                   "commit": m.get("commit")})
    out["machine"]["loadavg_end"] = parts[-1]["machine"].get("loadavg_end")
    out["args"] = {"argv": " + ".join(x["argv"] for x in out["invocations"])}
    starts = [_started(p) for p in parts]
    sequential = all(a is not None and b is not None and (b - a).total_seconds() + 60 >= (p.get("total_seconds") or 0)
                     for a, b, p in zip(starts, starts[1:], parts, strict=False))
    if sequential:
        out["total_seconds"] = sum(p.get("total_seconds") or 0 for p in parts)
        out["notes"].append(
            f"The sections were measured by {len(parts)} invocations of `python -m bench`, one after the other "
            "(listed under Environment, with the sections kept from each), each with its own local control "
            "plane; nothing else ran meanwhile. Each table's numbers come from one invocation; the "
            "convergence ratios compare contenders measured in the same invocation, interleaved.")
    else:
        out["total_seconds"] = max(p.get("total_seconds") or 0 for p in parts)
        out["notes"].append(
            f"The sections were measured by {len(parts)} invocations of `python -m bench` running at the same "
            "time (listed under Environment), each with its own local control plane, so that the whole run fit "
            "the session; each competed with the others for the 2 cores, besides the other jobs on the machine. "
            "Each table's numbers come from one invocation; the convergence ratios compare contenders measured "
            "in the same invocation, interleaved.")
    return out


def _summary(conv: dict[str, Any]) -> list[dict[str, Any]]:
    if conv.get("summary"):
        return conv["summary"]
    from bench.convergence import summarise

    return summarise(conv["runs"])


def _med(conv: dict[str, Any], n: int, contender: str) -> float | None:
    return next((s["median_seconds"] for s in _summary(conv) if s["n"] == n and s["contender"] == contender), None)


def _median_of(runs: list[dict[str, Any]], fn: Any) -> float | None:
    vals = [v for v in (fn(r) for r in runs) if v is not None]
    return median(vals) if vals else None


def _commit(m: dict[str, Any]) -> str:
    commit = str(m.get("commit", "?"))
    if commit.endswith("+ uncommitted changes"):  # older runs checked src/ and bench/ together
        commit += " in src/ or bench/"
    return commit


def _reading(results: dict[str, Any]) -> list[str]:
    m = results.get("machine") or {}
    return ["## Reading these numbers", "",
            f"- **Ratios, not absolutes.** The machine has {m.get('nproc', '?')} cores shared by the API server, "
            "etcd, the operator under test and the benchmark's own client (and, here, by other jobs: see the load "
            "average). Absolute seconds move from run to run by tens of percent; what the benchmark is built for "
            "is the ratio of contenders measured side by side in one invocation, interleaved round by round, "
            "each round starting with a different contender, reported as medians with their spread. Even the "
            "ratios move between invocations: read a difference smaller than the min-max spread in the tables "
            "as noise.",
            "- **No kubelet, no controllers.** The local control plane is kube-apiserver + etcd only: Jobs are "
            "never run, so a Dataset converges to *params ConfigMap + Job exist, status `JobRunning`*. Nothing "
            "else writes to the cluster while a contender runs, except the API server's own endpoint "
            "reconciler (left out of every write count).",
            "- **`--kubeconfig`** runs the same against any cluster (use a throwaway one: the Jobs will run "
            "there). The API server's CPU seconds are then not measured (they are read from `/proc`), and the "
            "numbers include that cluster's network and controllers.",
            ""]


def _convergence(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    conv = results["convergence"]
    repeats = conv.get("repeats", 1)
    reps = repeats if isinstance(repeats, list) else [repeats] * len(conv["sizes"])
    rep_text = ", ".join(f"{r} times at N={n:,}" for n, r in zip(conv["sizes"], reps, strict=True))
    out = ["## 1. Convergence", "",
           f"N Datasets with `spec.image.name` set are created with {conv['concurrency']} creates in flight; the "
           "clock runs from the first create until a watch has seen every Dataset's params ConfigMap and Job. "
           "Each contender runs alone, in a fresh namespace, after one warm-up Dataset (so process start-up "
           f"and cache sync are not timed). Every contender ran {rep_text}, interleaved round "
           "by round with a rotating start, and the tables give the **median** (min-max over the rounds).", "",
           "- **ceiling**: no operator; the benchmark's own asyncio `Client` creates the Datasets exactly as "
           "for the operators and, as each create returns, that Dataset's ConfigMap then Job (the same "
           f"rendered children), with at most {conv['concurrency']} objects' children in flight besides the "
           "Dataset creates: an operator's pipeline with that many workers, minus watch, queue, cache and "
           "reconcile: the fastest this API server gets the same objects written.",
           "- **ceiling, same writes**: the same bare client making exactly the writes substratus makes per "
           "Dataset (`bench.common.same_writes`): the ConfigMap by server-side apply and the Job by create, "
           "together; then the status substratus writes (same conditions and messages, computed by the same "
           "functions) as one merge patch on `/status`; then the Event for the `Complete=False/JobRunning` "
           "transition. The fastest this API server gets substratus's work done.",
           "- **substratus**: `python -m substratus run --namespace NS` in a subprocess, default flags (64 "
           "workers per controller); **substratus, K workers** adds `--max-concurrent-reconciles K` (16 was "
           "the default before this run's commit, 4 at 431d200); **substratus at REF** runs commit REF's operator (its `src` "
           "exported by `git archive`, started with this checkout's interpreter and packages, that commit's "
           "default flags): 431d200 is the commit issue 18 was measured on, so *substratus / substratus at "
           "431d200* is the change in operator CPU per object measured side by side.",
           "- **kopf**: `kopf run --standalone` on [`bench/kopf_operator.py`](../bench/kopf_operator.py), an "
           "async `@kopf.on.create` handler that renders the same children with substratus's own render "
           "functions and creates them with kubernetes-asyncio: what a Python user would otherwise write. By "
           "default kopf runs one worker task per object with no limit (`settings.queueing.worker_limit = "
           "None`), so with N objects arriving it can have up to N handlers in flight. There is no \"kopf, 20 "
           "workers\": kopf's `worker_limit` also counts kopf's own CRD and namespace streams, and each "
           "per-object worker holds its slot for `idle_timeout` (5 s) after its last event, so a cap of 20 "
           "makes kopf wait for idle workers to time out between batches of objects (an order of magnitude "
           "slower in a trial), which measures that design rather than a concurrency of 20.",
           "- **kopf, same job**: kopf on [`bench/kopf_same_job.py`](../bench/kopf_same_job.py), whose create "
           "handler makes the same writes as *ceiling, same writes* through substratus's own `Client`: the "
           "same children, status and Event as substratus, so what differs is the framework. kopf also patches "
           "its progress annotation onto each Dataset (its state storage), so it makes more writes.", "",
           "The contenders do not do the same *amount* of work: substratus also writes the Dataset's status "
           "(conditions `Built`, `Complete=False/JobRunning` and their summary `Ready`) and one Event per condition "
           "transition (none for `Ready`), as "
           "the SPEC requires (none for `Built=True/ImageProvided` on creation, SPEC §7); *kopf* (1.45 defaults) "
           "writes its own progress annotation onto the Dataset and posts no Events; the *ceiling* writes "
           "nothing beyond the three objects. *ceiling, same writes* and *kopf, same job* do substratus's "
           "work, and are the like-for-like comparisons. Writes and reads are counted "
           "by the API server (`apiserver_request_total`) until it has been quiet for 2 s, so they include "
           "what happens after the children exist, and the benchmark's own N Dataset creates. CPU seconds "
           "are read from `/proc` over the timed window. Columns other than seconds are medians too.", ""]
    for n in conv["sizes"]:
        runs_n = [r for r in conv["runs"] if r["n"] == n]
        ceiling = _med(conv, n, "ceiling")
        rows = []
        for summ in [x for x in _summary(conv) if x["n"] == n]:
            c = summ["contender"]
            mine = [r for r in runs_n if r["contender"] == c]
            ok = [r for r in mine if r["converged"]]
            resources = sorted({k for r in mine for k in r["writes"] if k != "endpoints"})
            by_res = ", ".join(f"{k} {_median_of(mine, lambda r, k=k: r['writes'].get(k, 0) / r['n']):.2f}"
                               for k in resources)
            spread = (f"{_f(summ['min_seconds'])}-{_f(summ['max_seconds'])}"
                      if summ["converged"] > 1 else "")
            label = LABELS.get(c, c)
            if summ["converged"] < summ["rounds"]:
                label += f" (**{summ['rounds'] - summ['converged']} round(s) did not converge**)"
            rows.append([
                label, _f(summ["median_seconds"]), spread,
                _f(n / summ["median_seconds"] if summ["median_seconds"] else None, 0),
                _ratio(summ["median_seconds"], ceiling),
                _f(_median_of(mine, lambda r: _writes_per_object(r, r['n']))), by_res,
                _f(_median_of(ok, lambda r: r.get("operator_cpu_seconds"))),
                _f(_median_of(ok, lambda r: (r.get("server_cpu_seconds") or {}).get("kube-apiserver"))),
                _f(_median_of(ok, lambda r: _server_cpu_ms_per_object(r)), 1),
                _f(_median_of(ok, lambda r: (r.get("operator_memory_mib") or {}).get("VmHWM")), 0),
            ])
        out += [f"### N = {n:,}", "",
                *_table(["contender", "median s", "min-max s", "objects/s", "vs ceiling", "writes/object",
                         "writes/object by resource", "operator CPU s", "apiserver CPU s",
                         "apiserver + etcd CPU ms/object", "operator peak RSS MiB"], rows),
                "", env_line(results, "convergence"), ""]
    rows = []
    for n in conv["sizes"]:
        rows.append([f"{n:,}", *(_ratio(_med(conv, n, a), _med(conv, n, b)) for a, b in RATIOS)])
    out += ["### Ratios of median times to converge", "",
            "*operator / ceiling*: how much longer than the bare client at the same concurrency the operator "
            "takes to get the same writes done (*same writes*: the like-for-like one). *kopf / substratus*: "
            "above 1.00x substratus is faster, below it kopf is. Targets (issue 18): substratus / ceiling, "
            "same writes ≤ 1.15x; kopf, same job / substratus ≥ 1.5x; kopf / substratus ≥ 1.0x.", "",
            *_table(["N", *(f"{LABELS.get(a, a)} / {LABELS.get(b, b).split(' (')[0]}" for a, b in RATIOS)], rows),
            "", env_line(results, "convergence"), ""]
    out += _work_note(conv)
    out += _duplicate_status_note(conv)
    out += _dropped_events_note(conv)
    extra = [r for r in conv["runs"] if r.get("reconciles")]
    if extra:
        rows = [[LABELS.get(r["contender"], r["contender"]), f"{r['n']:,}", str(r.get("rep", 1)),
                 _f(r["reconciles"]), _f(r["reconcile_errors"]),
                 ", ".join(f"{k}: {v}" for k, v in sorted(r["operator_requests"].items()))]
                for r in extra]
        out += ["Requests the substratus process itself made (its `rest_client_requests_total`, warm-up and "
                "informer LIST/WATCH included) and its reconciles, per round:", "",
                *_table(["contender", "N", "round", "reconciles", "reconcile errors",
                         "requests by method and code"], rows),
                "", env_line(results, "convergence"), ""]
    if "convergence" in plots:
        out += [f"![convergence]({plots['convergence']})", ""]
    return out


RATIOS = (("substratus", "ceiling-same-writes"), ("kopf-same-job", "substratus"), ("kopf", "substratus"),
          ("substratus@431d200", "substratus"), ("substratus-w16", "substratus"), ("substratus", "ceiling"), ("kopf", "ceiling"),
          ("kopf-same-job", "ceiling-same-writes"))


def _server_cpu_ms_per_object(r: dict[str, Any]) -> float | None:
    cpu = r.get("server_cpu_seconds") or {}
    if not cpu:
        return None
    return 1000 * sum(cpu.values()) / r["n"]


def _work_note(conv: dict[str, Any]) -> list[str]:
    """What each contender made the API server do per object, at the largest size."""
    n = max(conv["sizes"])
    parts = []
    for summ in [x for x in _summary(conv) if x["n"] == n]:
        ok = [r for r in conv["runs"] if r["n"] == n and r["contender"] == summ["contender"] and r["converged"]]
        w = _median_of(ok, lambda r: _writes_per_object(r, r["n"]))
        cpu = _median_of(ok, _server_cpu_ms_per_object)
        if w is None:
            continue
        parts.append(f"{LABELS.get(summ['contender'], summ['contender'])} {w:.2f} writes"
                     + (f" and {cpu:.1f} ms of API server + etcd CPU" if cpu is not None else ""))
    if not parts:
        return []
    return [f"**Where the time goes.** Per Dataset at N={n:,} (medians): " + "; ".join(parts) + ". The API "
            "server and etcd share the machine's cores with the operator under test, so on this machine "
            "convergence time follows the work each contender makes the API server do per object, and the "
            "number of requests it keeps in flight.", ""]


def _dropped_events_note(conv: dict[str, Any]) -> list[str]:
    """Say so when substratus wrote fewer Events than the transitions it recorded."""
    short = []
    for r in conv["runs"]:
        if is_substratus(r["contender"]) and r["converged"]:
            want = events_per_dataset(r["contender"]) * r["n"]
            missing = want - r["writes"].get("events", 0)
            if missing > 0.02 * want:
                short.append((r, missing))
    if not short:
        return []
    worst, missing = max(short, key=lambda x: x[1] / x[0]["n"])
    return [f"**Dropped Events.** In {len(short)} substratus round(s) fewer Events reached the API server than "
            f"the {events_per_dataset(worst['contender'])} Event(s) each Dataset's condition transitions call for "
            f"(worst: {LABELS.get(worst['contender'], worst['contender'])}, N={worst['n']:,}: {missing:,} of "
            f"{events_per_dataset(worst['contender']) * worst['n']:,} missing). `EventRecorder` (src/substratus/runtime/events.py) "
            "queues Events in bounded per-writer queues (4,096 in all, 16 writers, an object's Events always on "
            "the same one) and drops what does not fit, by design so that recording never blocks a reconcile "
            "(client-go drops the same way); with many workers converging many objects at once, transitions "
            "are produced faster than the writers post them. Each drop is counted in `events_dropped_total` "
            "and logged. Conditions in `.status` carry the same information and are never dropped.", ""]


def _duplicate_status_note(conv: dict[str, Any]) -> list[str]:
    """Explain status writes beyond one per Dataset when the run shows them."""
    dup = [(r, r["writes"].get("datasets/status", 0) - r["n"]) for r in conv["runs"]
           if is_substratus(r["contender"])]
    dup = [(r, d) for r, d in dup if d > 0]
    if not dup:
        return []
    worst = max(dup, key=lambda x: x[1] / x[0]["n"])
    r, d = worst
    return [f"**Extra status writes.** In {len(dup)} of the substratus rounds the Dataset status was patched "
            f"more than once per object (worst: {LABELS.get(r['contender'], r['contender'])}, N={r['n']:,}, "
            f"{d:,} extra status patches, {d / r['n']:.0%} of the objects). The cause is a stale cache read, "
            "not a spec change: the first reconcile creates the Job and patches the status; the Job's ADDED "
            "event enqueues the owner again, and a free worker reconciles it before the Dataset informer has "
            "delivered the status the operator just wrote. That reconcile sees no conditions, sets them again "
            "(a second `PATCH /status`) and, because it sees each condition as a transition, records the two "
            "Events again. It shows more with more workers. It never happens once the cache has caught up: "
            "the steady state below writes nothing.", ""]


# The API server's own endpoint reconciler writes the `kubernetes` Service's endpoints about every
# 10 s, operator or not (an idle control plane shows it too), and current servers renew their
# identity Lease as often: never counted as anyone's traffic. A run records what its server does
# (``steady[].server_own``, bench.common.server_own_writes); older results lack it.
SERVER_OWN = ("endpoints",)


def _server_writes(phase: dict[str, Any], own: Iterable[str] = SERVER_OWN) -> int | None:
    if "apiserver_writes" not in phase:
        return None
    own = set(own)
    return sum(v for k, v in phase["apiserver_writes"].items() if k not in own)


def _mem_mode(r: dict[str, Any]) -> str:
    return r.get("strip_mode") or ("per-page" if r["strip"] else "none")


def _mem_index(mem: dict[str, Any]) -> dict[tuple[str, int, str, str, str], dict[str, Any]]:
    return {(r["kind"], r["count"], r["source"], _mem_mode(r), r["method"]): r for r in mem["results"]}


KIND_LABELS = {"datasets": "Dataset", "models": "Model", "servers": "Server", "notebooks": "Notebook",
               "jobs": "Job", "pods": "Pod", "deployments": "Deployment", "configmaps": "ConfigMap",
               "services": "Service", "secrets": "Secret"}
"""Every kind the operator caches, in the order the memory section lists them (bench.memory.KINDS)."""


def _kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def _mem_kinds(mem: dict[str, Any]) -> list[str]:
    seen = {r["kind"] for r in mem["results"]}
    return [k for k in KIND_LABELS if k in seen] + sorted(seen - KIND_LABELS.keys())


def _mem_cells(mem: dict[str, Any]) -> list[tuple[str, int, str]]:
    order = {k: i for i, k in enumerate(_mem_kinds(mem))}
    return sorted({(r["kind"], r["count"], r["source"]) for r in mem["results"]},
                  key=lambda c: (order[c[0]], c[1], c[2] != "api"))


def _mem_top(mem: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The stripped RSS cell of ``kind`` at the largest count: what the target is about."""
    top = max(mem["counts"])
    return next((x for x in mem["results"] if x["kind"] == kind and x["count"] == top and x["strip"]
                 and x.get("strip_mode", "per-page") == "per-page" and x["method"] == "rss"), None)


def _writes_per_object(r: dict[str, Any], n: int) -> float:
    return sum(v for k, v in r["writes"].items() if k != "endpoints") / n


def _steady(results: dict[str, Any]) -> list[str]:
    steady = results["convergence"].get("steady") or []
    if not steady:
        return []
    out = ["## 2. Steady state", "",
           "On substratus's converged namespace from section 1 (N Datasets plus the warm-up one, each with its "
           "ConfigMap and Job, status `JobRunning`), the operator process is stopped and a new manager is "
           "started in-process on the same objects (**restart**: every object is listed and reconciled), then "
           "every cached object is re-delivered to the controllers, as a resync period would (**resync**). "
           "Requests are counted twice: by the operator's own `rest_client_requests_total`, and by the API "
           "server's `apiserver_request_total` (writes to any resource in the cluster, from anyone — nothing "
           "else runs meanwhile; the API server's own writes to the `kubernetes` Service's endpoints, "
           "which an idle control plane makes every ~10 s, and on current servers the renewals of its "
           "identity Lease, are left out). The GETs at restart are the "
           "informers' paginated LISTs and their WATCHes, one of each per informer; a converged reconcile "
           "reads only the cache.", ""]
    rows = []
    for s in steady:
        r, y = s["restart"], s["resync"]
        own = s.get("server_own", SERVER_OWN)
        rows.append([f"{s['objects']:,}", _f(r["reconciles"]), _f(r["writes"]), _f(_server_writes(r, own)),
                     _f(r["reads"]), _f(r.get("informers")), _f(r.get("reconcile_reads")), _f(r["seconds"]),
                     _f(y["reconciles"]), _f(y["writes"]), _f(_server_writes(y, own)),
                     _f(y["reads"]), _f(y["reads_per_reconcile"], 3), _f(y["seconds"])])
    out += _table(["objects", "restart reconciles", "restart writes", "… seen by API server", "restart GETs",
                   "informers", "GETs not LIST/WATCH", "restart s", "resync reconciles", "resync writes",
                   "… seen by API server", "resync GETs", "GETs per reconcile", "resync s"], rows)
    out += ["", env_line(results, "convergence"), ""]
    return out


def _memory(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    mem = results["memory"]
    real = mem["real_objects"]
    if isinstance(real, dict):  # every cached kind, made by the operator
        k = mem.get("parents_per_kind")
        made = ", ".join(f"{n:,} {_kind_label(kind)}s" for kind, n in real.items())
        intro = (f"The operator (in-process, with the cluster simulator standing in for the kubelet and the Job and "
                 f"Deployment controllers) converges {k} Datasets, Models, Servers and Notebooks (minimal and "
                 f"maximal variants, git builds), leaving what it leaves in a cluster: {made}, each written "
                 "as the operator and those controllers write it (server-side apply, so `managedFields` exist; "
                 "statuses through `/status`). Every kind the operator caches is measured; the benchmark fails "
                 "if its manager caches one more. Each cell is a fresh subprocess filling one informer store "
                 "through a real `Informer` with the operator's label selector for the kind (paginated LIST, "
                 "the transform, the store). The *api* cells list the real objects from the API server; larger "
                 "counts are synthesised: renamed copies of the real objects with fresh uids, served to the "
                 "child's informer as LIST pages of the size it asks for, decoded by the client's own decoder "
                 "and paged by the client's own `list_all` (no HTTP). ")
    else:  # results of an older run: Datasets and Jobs only
        intro = (f"{real:,} Datasets and their {real:,} Jobs written with server-side apply; the {real:,}-object "
                 "cells list them from the API server, larger counts are synthesised copies. ")
    out = ["## 3. Memory per cached object", "",
           intro + "**RSS**: resident-set growth over the fill, in a run without tracemalloc (what the kernel "
           "charges: includes allocator slack and freed-but-kept memory); **peak**: the resident high-water "
           "mark during the fill over the same baseline; **tracemalloc**: bytes Python still holds after the "
           "fill, measured in a separate run. *Stripped* is the operator cache's transform for the kind "
           "(`operator.CACHE_TRANSFORMS`, else `strip_bulk`; per kind in docs/operations.md, \"What the cache "
           "keeps\"); *raw* is no transform. The store keeps each object packed as compact JSON "
           "(`runtime/indexer.py`), and an informer's LIST of 1,000 objects or more ends by handing the "
           "memory it freed back to the kernel (`informer.release_freed_memory`). The target is at most "
           "4 KiB (4,096 B) of RSS per cached object at 10,000 objects, every kind. With fewer objects the RSS "
           "per object is mostly fixed cost spread thin: CPython's arenas that the LIST's peak (a page of raw "
           "objects) grew, which it does not hand back while any object in them lives.", ""]
    by = _mem_index(mem)
    rows = []
    for kind, count, source in _mem_cells(mem):
        def g(mode: str, method: str, field: str = "bytes_per_object",
              kind: str = kind, count: int = count, source: str = source) -> Any:
            return (by.get((kind, count, source, mode, method)) or {}).get(field)

        json_of = g("none", "tracemalloc", "json_bytes_per_object") or g("none", "rss", "json_bytes_per_object")
        mf_of = g("none", "tracemalloc", "managed_fields_json_bytes") or g("none", "rss", "managed_fields_json_bytes")
        rows.append([
            _kind_label(kind), f"{count:,}", source,
            _f(g("none", "rss")), _f(g("per-page", "rss")), _ratio(g("per-page", "rss"), g("none", "rss")),
            _f(g("none", "rss", "peak_bytes_per_object")), _f(g("per-page", "rss", "peak_bytes_per_object")),
            _f(g("none", "tracemalloc")), _f(g("per-page", "tracemalloc")),
            _f(json_of), _f(mf_of),
            _f(g("per-page", "tracemalloc", "json_bytes_per_object") or g("per-page", "rss", "json_bytes_per_object")),
        ])
    out += _table(["kind", "objects", "source", "RSS B/obj raw", "RSS B/obj stripped", "stripped / raw",
                   "peak RSS raw", "peak RSS stripped", "tracemalloc B/obj raw", "tracemalloc stripped",
                   "JSON B/obj raw", "managedFields JSON B/obj", "JSON B/obj stripped"], rows)
    out += ["", env_line(results, "memory"), ""]
    if "memory" in plots:
        out += [f"![memory]({plots['memory']})", ""]
    return out


BASELINE_CONTENDER = "substratus@431d200"
BASELINE_CPU_MS_PER_OBJECT = 12.54
"""Operator CPU per converged Dataset at N = 1,000 before issue 18 (12.54 s for 1,000, the
benchmark at 431d200): the CPU target is half of it."""


def _targets(results: dict[str, Any]) -> list[str]:
    """Issue 18's targets against this run's numbers: met or missed, and by how much."""
    rows: list[list[str]] = []
    conv = results.get("convergence") or {}
    n = 1000 if 1000 in (conv.get("sizes") or []) else max(conv.get("sizes") or [0])

    def add(what: str, target: str, value: float | None, ok: bool | None, unit: str = "x") -> None:
        shown = "—" if value is None else (f"{value:.2f}{unit}" if unit == "x" else f"{value:,.0f}{unit}")
        rows.append([what, target, shown, "—" if ok is None else ("met" if ok else "**missed**")])

    if conv:
        def ratio(a: str, b: str) -> float | None:
            x, y = _med(conv, n, a), _med(conv, n, b)
            return x / y if x and y else None
        v = ratio("substratus", "ceiling-same-writes")
        add(f"substratus / ceiling, same writes (N={n:,})", "≤ 1.15x", v, None if v is None else v <= 1.15)
        v = ratio("kopf-same-job", "substratus")
        add(f"kopf, same job / substratus (N={n:,})", "≥ 1.50x", v, None if v is None else v >= 1.5)
        v = ratio("kopf", "substratus")
        add(f"kopf / substratus (N={n:,})", "≥ 1.00x", v, None if v is None else v >= 1.0)
        def cpu_ms(contender: str) -> float | None:
            cpu = _median_of([x for x in conv["runs"] if x["n"] == n and x["contender"] == contender
                              and x["converged"]], lambda x: x.get("operator_cpu_seconds"))
            return 1000 * cpu / n if cpu is not None else None
        ms, base = cpu_ms("substratus"), cpu_ms(BASELINE_CONTENDER)
        if base is not None:
            v = ms / base if ms is not None else None
            add(f"operator CPU per converged object, substratus / substratus at 431d200, side by side (N={n:,})",
                "≤ 0.50x", v, None if v is None else v <= 0.5)
            if ms is not None:
                rows[-1][2] = f"{v:.2f}x ({ms:.2f} / {base:.2f} ms)"
        add(f"operator CPU per converged object (N={n:,})",
            f"≤ {BASELINE_CPU_MS_PER_OBJECT / 2:.2f} ms (half of {BASELINE_CPU_MS_PER_OBJECT} ms measured at "
            "431d200 when the issue was filed)",
            ms, None if ms is None else ms <= BASELINE_CPU_MS_PER_OBJECT / 2)
        if ms is not None:
            rows[-1][2] = f"{ms:.2f} ms"
    mem = results.get("memory")
    if mem:
        top = max(mem["counts"])
        for kind in _mem_kinds(mem):
            cell = _mem_top(mem, kind)
            v = cell["bytes_per_object"] if cell else None
            add(f"RSS per cached {_kind_label(kind)} at {top:,}", "≤ 4,096 B", v,
                None if v is None else v <= 4096, " B")
    wq = (results.get("workqueue") or {}).get("results") or []
    default_workers = _default_workers(results)
    on = [x for x in wq if x["metrics"] and x.get("cycles_per_cpu_second")]
    # The target is for the queue as controllers run it: the default worker count, metrics on.
    on = [x for x in on if x["workers"] == default_workers] or on
    for x in on:
        add(f"work queue, metrics on, {x.get('loop', 'asyncio')}, {x['workers']} workers (the default)"
            if x["workers"] == default_workers else
            f"work queue, metrics on, {x.get('loop', 'asyncio')}, {x['workers']} worker(s)",
            "≥ 300,000 cycles per CPU second", x["cycles_per_cpu_second"], x["cycles_per_cpu_second"] >= 300_000,
            "/s")
    if not rows:
        return []
    return ["## Targets (issue 18)", "",
            "Each target against this run (medians as in the sections below; on this shared machine the "
            "convergence ratios move by tens of percent between rounds, see the min-max columns).", "",
            *_table(["target", "wanted", "this run", ""], rows), "", env_line(results), "",
            *_bounds(results, rows),
            *_workqueue_bounds(results),
            ""]


def _bounds(results: dict[str, Any], rows: list[list[str]]) -> list[str]:
    """Notes for the targets this run missed (by the rows' verdicts): what bounds each, with the
    evidence to read. Nothing is said about a target that was met."""
    missed = [r[0] for r in rows if r[3] == "**missed**"]
    out = ["What bounds what is missed:" if missed else "Every target listed was met in this run.", ""]
    if any(m.startswith(("substratus / ceiling", "kopf, same job")) for m in missed):
        out.append(
            "- **Convergence.** substratus makes exactly the writes *ceiling, same writes* makes (writes/object "
            "by resource in section 1), so the gap to it is the operator's own per-object work around those "
            "writes — decoding watch events, queue, cache, reconcile, the HTTP client — on two cores it "
            "shares with the API server and etcd (whose CPU per object is in section 1 too): see the flame "
            "graph of a 1,000-Dataset convergence ([after](bench/profile-substratus-1000.svg), [before issue "
            "18](bench/profile-substratus-1000-before.svg)) and its breakdown in "
            "[operations.md](operations.md#performance).")
    conv = results.get("convergence") or {}
    if conv and any(m.startswith("kopf / substratus") for m in missed):
        n = 1000 if 1000 in (conv.get("sizes") or []) else max(conv.get("sizes") or [0])
        kopf, same, ours = (_med(conv, n, c) for c in ("kopf", "ceiling-same-writes", "substratus"))
        writes = {c: _median_of([r for r in conv["runs"] if r["n"] == n and r["contender"] == c],
                                lambda r: r.get("writes_per_object")) for c in ("kopf", "substratus")}
        if kopf and same and ours:
            out.append(
                f"- **Minimal kopf.** At N={n:,} minimal kopf converges in {kopf:.2f} s to substratus's {ours:.2f} s "
                f"with {_f(writes['kopf'])} writes per object to substratus's {_f(writes['substratus'])}: it writes "
                "no status and posts no Events, which SPEC §1 and §7 require of substratus (the `Complete` "
                "condition and its Event). The API server and etcd doing those writes bound it, not the operator: "
                f"*ceiling, same writes* — a bare client with no watch, queue or reconcile making exactly "
                f"substratus's writes at the same concurrency — takes {same:.2f} s, {same / kopf:.2f}x kopf's time, "
                f"and substratus takes {ours / same:.2f}x the ceiling's. Catching minimal kopf would take fewer "
                "or cheaper writes than the SPEC asks for.")
    if any(m.startswith("operator CPU") for m in missed):
        side = next((r for r in rows if r[0].startswith("operator CPU per converged object, substratus /")), None)
        if side is not None and side[3] == "met":
            out.append(
                f"- **Operator CPU.** Measured side by side in this run, substratus needs {side[2]} of 431d200's "
                "CPU per object (met); the absolute figure is compared with 12.54 ms measured on another day, "
                "with another load on the same 2 cores, and CPU seconds grow with contention for the cores and "
                "their caches (see the load average under each table). The side-by-side ratio is the like-for-"
                "like one.")
        else:
            out.append(
                "- **Operator CPU.** What the operator still spends per object is in the flame graph "
                "([after](bench/profile-substratus-1000.svg)) and its breakdown in "
                "[operations.md](operations.md#performance): aiohttp's own request and response handling and "
                "TLS for each of the five writes, decoding watch events, posting Events and logging, with the "
                "reconcile's own work a tenth.")
    if any(m.startswith("RSS per cached") for m in missed):
        out.append(
            "- **Memory.** The RSS columns include allocator slack: compare *tracemalloc stripped*, what "
            "Python still holds. The store holds each object as its compact JSON, so what is left per object "
            "is about its stripped JSON size plus its key and index entries; the rest is memory the LIST freed "
            "that CPython's arenas keep while any object in them lives.")
    return out


def _scale(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    sc = results["scale"]
    out = ["## 6. Scale curve", "",
           "substratus (default flags) converging N Datasets as in section 1 (20 creates in flight), for each N "
           "in " + ", ".join(f"{n:,}" for n in sc["sizes"]) + ": sizes section 1 measured reuse its median "
           "substratus round, the others are one run each. *CPU*: the operator process's user + system seconds "
           "over the timed window; *peak RSS*: its resident high-water mark (VmHWM) for the whole process life "
           "(start-up, warm-up, all N objects cached). The growth exponent k fits y ≈ c·N^k by least squares on "
           "log-log: 1.0 is a constant cost per object.", ""]
    rows = [[f"{p['n']:,}", p["source"], _f(p["seconds"]), _f(p.get("objects_per_second"), 0),
             _f(p.get("operator_cpu_seconds")), _f(p.get("cpu_ms_per_object")), _f(p.get("peak_rss_mib"), 0),
             _f(p.get("writes_per_object")), "yes" if p["converged"] else "no"] for p in sc["points"]]
    out += _table(["N", "source", "seconds", "objects/s", "operator CPU s", "CPU ms/object", "peak RSS MiB",
                   "writes/object", "converged"], rows)
    ex = sc.get("exponents") or {}
    out += ["", "Growth exponents k (y ≈ c·N^k): convergence time " + _f(ex.get("seconds"), 2)
            + ", operator CPU " + _f(ex.get("operator_cpu_seconds"), 2) + ", peak RSS "
            + _f(ex.get("peak_rss_mib"), 2) + " (RSS includes the process's fixed start-up size, so its k is "
            "below the per-object growth).", ""]
    st = sc.get("steady")
    if st:
        r, y = st["restart"], st["resync"]
        def others(w: dict[str, int]) -> int:  # the API server's own endpoints writes left out, as in section 2
            return sum(v for k, v in (w or {}).items() if k != "endpoints")

        out += [f"Steady state at {st['objects']:,} converged Datasets: restart {r['reconciles']:,} reconciles, "
                f"**{r['writes']} writes** by the operator ({others(r.get('apiserver_writes', {}))} counted by the "
                f"API server besides its own endpoints), {r['reads']} GETs of which {r.get('informer_gets')} "
                f"are the informers' first LIST pages and WATCHes, {_f(r['seconds'])} s; resync "
                f"{y['reconciles']:,} reconciles, **{y['writes']} writes** "
                f"({others(y.get('apiserver_writes', {}))} counted by the API server), {y['reads']} GETs, "
                f"{_f(y['seconds'])} s. GETs beyond the first LIST/WATCH are informers re-opening their watches: "
                "each watch is ended by the server after 22-36 s (`ClientOptions.watch_idle_timeout`, the dead-"
                "connection check), and a phase this long sees some; a converged reconcile reads only the cache.",
                ""]
    out += [env_line(results, "scale"), ""]
    if "scale" in plots:
        out += [f"![scale curve]({plots['scale']})", ""]
    return out


def _default_workers(results: dict[str, Any]) -> int:
    """Workers per controller by default, as recorded by the run (16 before it was recorded)."""
    return int((results.get("workqueue") or {}).get("default_workers") or 16)


def _workqueue_bounds(results: dict[str, Any]) -> list[str]:
    """The targets section's note on the work queue: which rows the target is for, what bounds 1 worker."""
    wq = (results.get("workqueue") or {}).get("results") or []
    dw = _default_workers(results)
    one = {r.get("loop", "asyncio"): r["cycles_per_cpu_second"] for r in wq
           if r["workers"] == 1 and r["metrics"] and r.get("cycles_per_cpu_second")}
    full = {r.get("loop", "asyncio"): r["cycles_per_cpu_second"] for r in wq
            if r["workers"] == dw and r["metrics"] and r.get("cycles_per_cpu_second")}
    if not one or not full:
        return []
    per = "; ".join(f"{lp} {1e6 / one[lp]:.2f} µs per cycle with 1 worker, {1e6 / full[lp]:.2f} µs with {dw}"
                    for lp in one if lp in full)
    return [f"- **Work queue.** The target is for the queue as the operator runs it: {dw} workers per controller "
            "(the default `--max-concurrent-reconciles`), metrics on. With 1 worker every cycle is also a full "
            "event-loop iteration — the producer's `sleep(0)`, a poll of the selector, waking the worker's task "
            "through a Future and a `call_soon` handle, and the worker suspending on a new Future — which costs "
            "more than the queue's own add, get and done and bounds that row on either loop whatever the queue "
            f"does ({per}, section 4). With more workers one iteration moves as many items: the first woken "
            "worker takes every waiting item without suspending."]


def _workqueue(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    wq = results["workqueue"]["results"]
    dw = _default_workers(results)
    out = ["## 4. Work queue", "",
           "`bench/workqueue_bench.py`. One **cycle** is one distinct item through `add` (by a producer task), "
           "`get` and `done` (by a worker task), on one event loop. The items are `Request`s (namespace, name), "
           "what controllers queue, made before the clock starts (an informer's handler makes them), so "
           "hashing and comparing them counts; each run puts every item through once. The producer yields to "
           "the loop (`await asyncio.sleep(0)`) after every `workers` adds, so the workers find the queue "
           "empty and are woken by `add` as in a controller, rather than draining a pre-filled queue; the "
           "workers do nothing between `get` and `done`, so what is timed is the queue, its metrics, the "
           "loop and the two loops of the benchmark itself. *metrics on* is how controllers run it "
           "(controller-runtime's workqueue metrics: depth, adds, queue and work durations, per item). All "
           "workers share one event loop, so more workers are not parallel: they move more items per loop "
           f"iteration. {dw} workers is the operator's default (`--max-concurrent-reconciles`), the row the "
           "target is for; with 1 worker every cycle is a full event-loop iteration (producer → worker → "
           "producer), which bounds it. Each configuration runs on asyncio's own loop and on uvloop (the loop "
           "`substratus run` uses when installed). **Per CPU second** divides by the process's CPU time "
           "instead of the wall clock: what one core does when it runs only the queue, the fairer number on a "
           "shared machine.", ""]
    def key(r: dict[str, Any]) -> tuple[str, bool]:
        return (r.get("loop", "asyncio"), r["metrics"])

    base = {key(r): r.get("cycles_per_cpu_second") or r["cycles_per_second"] for r in wq if r["workers"] == 1}
    off = {(r.get("loop", "asyncio"), r["workers"]): r.get("cycles_per_cpu_second") or r["cycles_per_second"]
           for r in wq if not r["metrics"]}
    rows = []
    for r in wq:
        cpu = r.get("cycles_per_cpu_second")
        rate = cpu or r["cycles_per_second"]
        rows.append([r.get("loop", "asyncio"), str(r["workers"]), "on" if r["metrics"] else "off",
                     _f(r["cycles"]), str(r.get("rounds", 1)), _f(cpu, 0) if cpu else "—",
                     (f"{r['min_cycles_per_cpu_second']:,.0f}-{r['max_cycles_per_cpu_second']:,.0f}"
                      if r.get("rounds", 1) > 1 and r.get("min_cycles_per_cpu_second") else ""),
                     _f(1e6 / rate, 2), _f(r["cycles_per_second"], 0),
                     _ratio(rate, base.get(key(r))),
                     _ratio(rate, off.get((r.get("loop", "asyncio"), r["workers"]))) if r["metrics"] else ""])
    out += _table(["loop", "workers", "metrics", "cycles per run", "runs", "cycles per CPU second (median)",
                   "min-max", "CPU µs/cycle", "cycles per wall second", "vs 1 worker", "metrics on / off"], rows)
    out += ["", env_line(results, "workqueue"), ""]
    if "workqueue" in plots:
        out += [f"![work queue]({plots['workqueue']})", ""]
    return out


def _leader(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    ld = results["leader"]
    out = ["## 5. Leader takeover", "",
           f"Two `python -m substratus run --leader-elect` processes share a Lease (duration "
           f"{ld['lease_duration']:g} s, renew deadline {ld['renew_deadline']:g} s, retry period "
           f"{ld['retry_period']:g} s). Once the standby is ready and has watched the lease for "
           f"{2.5 * ld['retry_period']:g} s, the leader gets the signal and a Dataset is created at once; "
           "*first reconcile* is when a watch sees that Dataset's Job, *lease taken* when the standby's "
           "`leader_election_master_status` gauge turned 1 (polled every 50 ms). SIGKILL leaves the lease to "
           "expire: the standby takes it at its first attempt (one every retry period, up to 20% jitter) once a "
           "lease duration has passed since it *saw* the lease renewed. The leader renews every retry period and "
           "the standby notices a renewal up to one attempt late, so expect between "
           f"{ld['lease_duration'] - ld['retry_period']:g} s (lease duration minus a retry period) and "
           f"{ld['lease_duration'] + 2.4 * ld['retry_period']:g} s (plus two jittered retry periods). SIGTERM drains "
           "and releases the lease: the standby takes it at its next attempt, so expect up to "
           f"{1.2 * ld['retry_period']:g} s.", ""]
    rows = [[str(r["round"]), r["signal"], _f(r["lease_acquired_seconds"]), _f(r["first_reconcile_seconds"]),
             _f(r["create_seconds"], 3), str(r["old_leader_exit_code"])] for r in ld["rounds"]]
    out += _table(["round", "signal to old leader", "lease taken s", "first reconcile s",
                   "Dataset create s", "old leader exit code"], rows)
    kill = [r["first_reconcile_seconds"] for r in ld["rounds"] if r["signal"] == "SIGKILL"
            and r["first_reconcile_seconds"] is not None]
    term = [r["first_reconcile_seconds"] for r in ld["rounds"] if r["signal"] == "SIGTERM"
            and r["first_reconcile_seconds"] is not None]
    if kill and term:
        out += ["", f"Mean first reconcile: SIGKILL {mean(kill):.2f} s, SIGTERM {mean(term):.2f} s; "
                    f"SIGKILL / SIGTERM = {mean(kill) / mean(term):.1f}x; SIGKILL / lease duration = "
                    f"{mean(kill) / ld['lease_duration']:.2f}."]
    out += ["", env_line(results, "leader"), ""]
    if "leader" in plots:
        out += [f"![leader takeover]({plots['leader']})", ""]
    return out


# --- plots --------------------------------------------------------------------------------------


def _plots(results: dict[str, Any], plot_dir: Path, rel: str) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    subtitle = _short_env(results)

    def save(fig: Any, name: str) -> None:
        fig.text(0.5, 0.005, subtitle, ha="center", va="bottom", fontsize=7, color="#555555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        fig.savefig(plot_dir / f"{name}.png", dpi=110)
        plt.close(fig)
        made[name] = f"{rel}/{name}.png"

    conv = results.get("convergence")
    if conv:
        sizes = conv["sizes"]
        fig, axes = plt.subplots(1, len(sizes), figsize=(5.4 * len(sizes), 3.4), squeeze=False)
        for ax, n in zip(axes[0], sizes, strict=True):
            summ = [x for x in _summary(conv) if x["n"] == n and x["median_seconds"]]
            ceiling = _med(conv, n, "ceiling")
            names = [LABELS.get(x["contender"], x["contender"]) for x in summ]
            secs = [x["median_seconds"] for x in summ]
            err = [[x["median_seconds"] - x["min_seconds"] for x in summ],
                   [x["max_seconds"] - x["median_seconds"] for x in summ]]
            bars = ax.barh(names, secs, xerr=err if any(x["converged"] > 1 for x in summ) else None, capsize=3,
                           color=[COLORS.get(x["contender"], "#333333") for x in summ])
            for b, x in zip(bars, summ, strict=True):
                v = x["median_seconds"]
                label = f" {v:.1f} s" if v >= 10 else f" {v:.2f} s"
                ax.text(x["max_seconds"], b.get_y() + b.get_height() / 2,
                        label + (f" ({v / ceiling:.2f}x)" if ceiling else ""), va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(0, max(x["max_seconds"] for x in summ) * 1.45)
            ax.set_xlabel("seconds to converge (median; whiskers: min-max)")
            ax.set_title(f"{n:,} Datasets, {conv['concurrency']} creates in flight", fontsize=10)
        save(fig, "convergence")

    mem = results.get("memory")
    if mem:
        by = _mem_index(mem)
        kinds = _mem_kinds(mem)
        top = max(mem["counts"])
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.0), sharey=True)
        for ax, method in zip(axes, ("rss", "tracemalloc"), strict=True):
            xs = range(len(kinds))
            variants = [("none", "#d62728", "raw (no transform)"), ("per-page", "#2ca02c", "as the operator caches it")]
            variants = [v for v in variants if any((k, top, "synthesised", v[0], method) in by for k in kinds)]
            width = 0.8 / max(1, len(variants))
            for i, (mode, color, label) in enumerate(variants):
                off = (i - (len(variants) - 1) / 2) * width
                vals = [(by.get((k, top, "synthesised", mode, method)) or {}).get("bytes_per_object", 0) / 1024
                        for k in kinds]
                bars = ax.bar([x + off for x in xs], vals, width, color=color, label=label)
                for b, v in zip(bars, vals, strict=True):
                    ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.1f}", ha="center", va="bottom",
                            fontsize=6)
            ax.axhline(4.0, color="#555555", linestyle="--", linewidth=0.8, label="target: 4 KiB (RSS)")
            ax.set_xticks(list(xs), [_kind_label(k) for k in kinds], fontsize=7, rotation=30)
            ax.set_title(f"{'RSS growth' if method == 'rss' else 'tracemalloc'}: KiB per cached object at {top:,}",
                         fontsize=10)
            ax.legend(fontsize=8)
        save(fig, "memory")

    wq = (results.get("workqueue") or {}).get("results")
    if wq:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        fig.set_size_inches(max(8, 0.8 * len(wq)), 3.4)
        labels = [f"{r.get('loop', 'asyncio')}\n{r['workers']} worker{'s' if r['workers'] > 1 else ''}\n"
                  f"metrics {'on' if r['metrics'] else 'off'}" for r in wq]
        vals = [(r.get("cycles_per_cpu_second") or r["cycles_per_second"]) / 1000 for r in wq]
        bars = ax.bar(labels, vals, color=["#1f77b4" if r["metrics"] else "#aec7e8" for r in wq])
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:,.0f}k", ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.axhline(300, color="#d62728", lw=0.8, ls="--")
        ax.set_ylabel("thousand add+get+done cycles\nper CPU second")
        ax.set_title("work queue throughput", fontsize=10)
        save(fig, "workqueue")

    sc = results.get("scale")
    if sc and sc.get("points"):
        pts = [p for p in sc["points"] if p["converged"]]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        ns = [p["n"] for p in pts]
        ax.loglog(ns, [p["seconds"] for p in pts], "o-", label="convergence s", color="#1f77b4")
        ax.loglog(ns, [p["operator_cpu_seconds"] or float("nan") for p in pts], "s-", label="operator CPU s",
                  color="#ff7f0e")
        ax.set_xlabel("Datasets (N)")
        ax.set_ylabel("seconds")
        ax2 = ax.twinx()
        ax2.semilogx(ns, [p["peak_rss_mib"] or float("nan") for p in pts], "^--", label="peak RSS MiB",
                     color="#2ca02c")
        ax2.set_ylabel("MiB")
        ex = sc.get("exponents") or {}
        ax.set_title(f"substratus scale curve (k: time {_f(ex.get('seconds'), 2)}, CPU "
                     f"{_f(ex.get('operator_cpu_seconds'), 2)}, RSS {_f(ex.get('peak_rss_mib'), 2)})", fontsize=10)
        lines_, labels_ = ax.get_legend_handles_labels()
        l2, lb2 = ax2.get_legend_handles_labels()
        ax.legend(lines_ + l2, labels_ + lb2, fontsize=8, loc="upper left")
        save(fig, "scale")

    ld = results.get("leader")
    if ld and ld.get("rounds"):
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        rounds = ld["rounds"]
        xs = range(len(rounds))
        first = [r["first_reconcile_seconds"] or 0 for r in rounds]
        lease = [r["lease_acquired_seconds"] or 0 for r in rounds]
        colors = ["#d62728" if r["signal"] == "SIGKILL" else "#2ca02c" for r in rounds]
        ax.bar([x - 0.2 for x in xs], lease, 0.4, color=colors, alpha=0.5, label="lease taken")
        bars = ax.bar([x + 0.2 for x in xs], first, 0.4, color=colors, label="first reconcile")
        for b, v in zip(bars, first, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(ld["lease_duration"], color="#555555", ls="--", lw=1, label=f"lease duration {ld['lease_duration']:g} s")
        ax.set_xticks(list(xs), [f"{r['round']}: {r['signal']}" for r in rounds])
        ax.set_ylabel("seconds after the signal")
        ax.set_title("leader takeover", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "leader")
    return made


def _short_env(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    return (f"{m.get('nproc', '?')} cores, {m.get('cpu_model', '?')}; Python {m.get('python', '?')}; "
            f"kube-apiserver {m.get('apiserver', '?')}; {m.get('date', '?')}")


# --- headline ---------------------------------------------------------------------------------


def headline(results: dict[str, Any]) -> list[str]:
    """The handful of numbers worth quoting, as printed at the end of a run (all from ``results``)."""
    out = ["", "headline (" + _short_env(results) + "):"]
    conv = results.get("convergence")
    if conv:
        for n in conv["sizes"]:
            ratios = ", ".join(f"{a}/{b} {_ratio(_med(conv, n, a), _med(conv, n, b))}" for a, b in RATIOS
                               if _med(conv, n, a) and _med(conv, n, b))
            medians = ", ".join(f"{x['contender']} {_f(x['median_seconds'])} s" for x in _summary(conv) if x["n"] == n)
            out.append(f"  convergence N={n:,}: {ratios} (medians: {medians})")
        for st in conv.get("steady") or []:
            r, y = st["restart"], st["resync"]
            out.append(f"  steady state {st['objects']:,} objects: restart writes {r['writes']} "
                       f"(API server {_server_writes(r, st.get('server_own', SERVER_OWN))}), resync writes "
                       f"{y['writes']} (API server {_server_writes(y, st.get('server_own', SERVER_OWN))}), "
                       "reads per reconcile "
                       f"{_f(y['reads_per_reconcile'], 3)} (restart: {r.get('reconcile_reads')} reads beyond "
                       f"informer LIST/WATCH)")
    mem = results.get("memory")
    if mem:
        for r in mem["results"]:
            if r["method"] == "rss" and r["count"] in (1000, 10000, max(mem["counts"])):
                out.append(f"  memory {r['kind']} {r['count']:,} ({r['source']}, transform "
                           f"{_mem_mode(r)}): {r['bytes_per_object']:,} B/object RSS")
    wq = (results.get("workqueue") or {}).get("results") or []
    for r in wq:
        out.append(f"  work queue {r.get('loop', 'asyncio')} {r['workers']} worker(s), metrics "
                   f"{'on' if r['metrics'] else 'off'}: {r['cycles_per_second']:,.0f} cycles/s wall, "
                   f"{r.get('cycles_per_cpu_second') or 0:,.0f} per CPU second")
    sc = results.get("scale") or {}
    if sc.get("points"):
        ex = sc.get("exponents") or {}
        out.append("  scale: " + ", ".join(f"N={p['n']:,} {_f(p['seconds'])} s / {_f(p.get('operator_cpu_seconds'))} "
                                          f"CPU s / {_f(p.get('peak_rss_mib'), 0)} MiB" for p in sc["points"])
                   + f"; k time {_f(ex.get('seconds'), 2)}, CPU {_f(ex.get('operator_cpu_seconds'), 2)}")
    for r in (results.get("leader") or {}).get("rounds") or []:
        out.append(f"  leader {r['signal']}: first reconcile after {_f(r['first_reconcile_seconds'])} s "
                   f"(lease taken {_f(r['lease_acquired_seconds'])} s)")
    if results.get("total_seconds") is not None:
        out.append(f"  bench wall time {results['total_seconds']:.0f} s")
    return out


# --- entry point --------------------------------------------------------------------------------


def write(results: dict[str, Any], md_path: Path, plot_dir: Path) -> dict[str, Path]:
    """Write the Markdown and the plots; returns {name: path} of every file written."""
    md_path = Path(md_path)
    plot_dir = Path(plot_dir)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(plot_dir, md_path.parent)
    plots = _plots(results, plot_dir, rel)
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`python -m bench`), which starts a local control plane (or uses "
             "`--kubeconfig`), measures, and rewrites this file and `docs/bench/*.png`. Every number here was "
             "printed by, or is in the results file of, the run described under *Environment*; nothing is typed "
             "in by hand. `python -m bench --quick` is a ~2 minute run of every section at small sizes (it writes "
             "to a temp dir, not here). The run's raw results are in "
             f"[`{rel}/results.json`]({rel}/results.json); `python -m bench --from-json PATH/TO/results.json` "
             "re-renders this file and the plots from them without measuring.", ""]
    lines += _environment(results)
    lines += _reading(results)
    lines += _targets(results)
    if results.get("convergence"):
        lines += _convergence(results, plots)
        lines += _steady(results)
    if results.get("memory"):
        lines += _memory(results, plots)
    if results.get("workqueue"):
        lines += _workqueue(results, plots)
    if results.get("leader"):
        lines += _leader(results, plots)
    if results.get("scale"):
        lines += _scale(results, plots)
    notes = results.get("notes") or []
    if notes:
        lines += ["## Not measured / limits", "", *[f"- {n}" for n in notes], ""]
    if not plots:
        lines += ["_matplotlib is not installed: no plots (`pip install -e '.[bench]'`)._", ""]
    md_path.write_text("\n".join(lines).rstrip() + "\n")
    written = {"markdown": md_path}
    written.update({name: plot_dir / f"{name}.png" for name in plots})
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="re-render docs/benchmarks.md from a results JSON")
    p.add_argument("results", nargs="+", help="a results JSON; several are merged (see merge())")
    p.add_argument("--out", default="docs/benchmarks.md")
    p.add_argument("--plots", default="docs/bench")
    p.add_argument("--json", type=Path, help="also write the (merged) results here")
    p.add_argument("--note", action="append", default=[], help="add a line to 'Not measured / limits'")
    args = p.parse_args(argv)
    parts = [json.loads(Path(r).read_text()) for r in args.results]
    results = parts[0] if len(parts) == 1 else merge(parts)
    results.setdefault("notes", []).extend(args.note)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    written = write(results, Path(args.out), Path(args.plots))
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
