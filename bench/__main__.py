"""Run every benchmark and write ``docs/benchmarks.md`` + ``docs/bench/*.png`` (``make bench``).

    python -m bench                                  # local control plane, everything (see docs/benchmarks.md)
    python -m bench --quick                          # small sizes, ~2 min; writes to a temp dir, not docs/
    python -m bench --sizes 100 --only convergence   # one section, one size
    python -m bench --kubeconfig ~/.kube/config      # any cluster (see the caveats in docs/benchmarks.md)
    python -m bench --from-json results.json         # re-render the report only

Sections: convergence (+ steady state), memory, workqueue, leader. Each prints its numbers as it
goes; the report contains only what was measured in this invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import REPO_ROOT, apiserver_version, loadavg, machine_info

SECTIONS = ("convergence", "scale", "memory", "workqueue", "leader")
FULL: dict[str, Any] = {"contenders": "ceiling,ceiling-same-writes,substratus,substratus@431d200,substratus-w16,kopf,"
                                      "kopf-same-job",
                        "sizes": [100, 1000], "repeats": [3, 3], "scale_sizes": [100, 1000, 10000],
                        "memory_counts": [1000, 10000], "memory_parents": 12, "memory_raw": True,
                        "workqueue_cycles": 200_000, "workqueue_rounds": 3, "leader_rounds": 2}
QUICK: dict[str, Any] = {"contenders": "ceiling,ceiling-same-writes,substratus,kopf,kopf-same-job",
                         "sizes": [20], "repeats": [1], "scale_sizes": [20, 40], "memory_counts": [1000],
                         "memory_parents": 3, "memory_raw": False,
                         "workqueue_cycles": 20_000,
                         "workqueue_rounds": 1, "leader_rounds": 1}


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    p.add_argument("--quick", action="store_true",
                   help="a small run to check the machinery: N=20, one round, 1000 cached objects per kind, one "
                        "leader round; writes the report to a temp dir unless --out is given")
    p.add_argument("--sizes", type=_ints, help="Dataset counts for convergence (100,1000; quick: 20)")
    p.add_argument("--repeats", type=_ints,
                   help="convergence rounds per size (one value, or one per size), medians reported (3,3; quick: 1)")
    p.add_argument("--concurrency", type=int, default=20, help="creates in flight (20)")
    p.add_argument("--contenders",
                   help="convergence contenders (ceiling,ceiling-same-writes,substratus,substratus-wK: K workers,"
                        "substratus@REF: commit REF's operator,kopf,kopf-same-job; default: all of "
                        f"{FULL['contenders']}; quick: without substratus@431d200 and substratus-w16)")
    p.add_argument("--scale-sizes", type=_ints,
                   help="Dataset counts for substratus's scale curve (100,1000,10000; quick: 20,40); sizes "
                        "the convergence section measured reuse its rounds")
    p.add_argument("--memory-counts", type=_ints,
                   help="objects per cache, synthesised from the operator's own (1000,10000; quick: 1000)")
    p.add_argument("--memory-parents", type=int,
                   help="Datasets, Models, Servers and Notebooks (each) the operator converges for the memory "
                        "section's real objects (12; quick: 3)")
    p.add_argument("--memory-raw", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure every kind untransformed (default on; quick: off)")
    p.add_argument("--workqueue-cycles", type=int, help="items per work queue run (200000; quick: 20000)")
    p.add_argument("--workqueue-rounds", type=int, help="runs per work queue configuration, median kept (3; quick: 1)")
    p.add_argument("--leader-rounds", type=int, help="SIGKILL + SIGTERM pairs (2; quick: 1)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--out", type=Path, help="the Markdown report (docs/benchmarks.md)")
    p.add_argument("--plots", type=Path, help="where the PNGs go (docs/bench, or next to --out)")
    p.add_argument("--json", type=Path, help="also write the raw results here (default: results.json next to "
                   "the plots)")
    p.add_argument("--from-json", type=Path, help="skip measuring: render the report from this results file")
    p.add_argument("--workdir", type=Path, help="operator logs and bucket (default: a new temp dir, kept)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    profile = QUICK if args.quick else FULL
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.contenders = tuple(c.strip() for c in args.contenders.split(",") if c.strip())
    if len(args.repeats) == 1:
        args.repeats = args.repeats * len(args.sizes)
    if len(args.repeats) != len(args.sizes):
        p.error(f"--repeats: one value, or one per size ({len(args.sizes)})")
    if args.out is None:
        args.out = (Path(tempfile.mkdtemp(prefix="substratus-bench-quick-")) / "benchmarks.md" if args.quick
                    else REPO_ROOT / "docs" / "benchmarks.md")
    if args.plots is None:
        args.plots = (REPO_ROOT / "docs" / "bench" if args.out == REPO_ROOT / "docs" / "benchmarks.md"
                      else args.out.parent / "bench")
    if args.json is None and not args.from_json:
        args.json = args.plots / "results.json"  # the raw numbers go next to the plots they came from
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


async def measure(args: argparse.Namespace, kubeconfig: str, server_pids: dict[str, int | None],
                  cluster: str, workdir: Path) -> dict[str, Any]:
    from bench import convergence, leader, memory
    from bench.workqueue_bench import DEFAULT_WORKERS
    from bench.workqueue_bench import run_rounds as workqueue_rounds
    from substratus.install import install_crds
    from substratus.runtime.client import Client

    results: dict[str, Any] = {"machine": machine_info(), "notes": []}
    client = await Client.from_kubeconfig(kubeconfig)
    try:
        results["machine"]["apiserver"] = await apiserver_version(client)
        results["machine"]["cluster"] = cluster
        await install_crds(client)
        m = results["machine"]
        log(f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; Python {m['python']}; "
            f"kube-apiserver {m['apiserver']}; {m['date']}")
        if "convergence" in args.only:
            results["convergence"] = await convergence.run(
                client, kubeconfig, args.sizes, concurrency=args.concurrency, workdir=workdir,
                contenders=args.contenders, server_pids=server_pids, repeats=args.repeats, log=log)
            for r in results["convergence"]["runs"]:
                if not r["converged"]:
                    results["notes"].append(f"convergence {r['contender']} N={r['n']}: {r.get('note')}")
        if "scale" in args.only:
            from bench import scale

            results["scale"] = await scale.run(
                client, kubeconfig, args.scale_sizes, concurrency=args.concurrency, workdir=workdir,
                server_pids=server_pids, convergence_runs=(results.get("convergence") or {}).get("runs"), log=log)
        if "memory" in args.only:
            results["memory"] = await memory.run(
                client, kubeconfig, args.memory_counts, workdir=workdir, parents_per_kind=args.memory_parents,
                variants=memory.VARIANTS if args.memory_raw else memory.STRIPPED_ONLY, log=log)
        if "workqueue" in args.only:
            log("work queue ...")
            wq = await asyncio.to_thread(workqueue_rounds, args.workqueue_cycles, args.workqueue_rounds, log)
            results["workqueue"] = {"results": wq, "default_workers": DEFAULT_WORKERS}
        if "leader" in args.only:
            log("leader takeover ...")
            results["leader"] = await leader.run(client, kubeconfig, workdir, rounds=args.leader_rounds, log=log)
    finally:
        await client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        started = time.monotonic()
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="substratus-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"work dir (operator logs, bucket): {workdir}")
        if "convergence" in args.only:
            from bench.common import baseline_source
            from bench.convergence import baseline_ref

            for ref in filter(None, map(baseline_ref, args.contenders)):
                try:  # before anything starts: a shallow clone fails here, not an hour in
                    log(f"baseline {ref}: {baseline_source(ref, workdir)}")
                except RuntimeError as e:
                    print(f"error: {e} (a shallow clone? `git fetch --unshallow`, or leave substratus@{ref} "
                          "out of --contenders)", file=sys.stderr)
                    return 2
        cp = None
        if args.kubeconfig:
            kubeconfig, server_pids = args.kubeconfig, {}
            cluster = f"external cluster from --kubeconfig {args.kubeconfig}"
        else:
            from substratus.testing.controlplane import ControlPlane

            # The watch cache is on as in any real cluster (the test suite turns it off); etcd is on tmpfs.
            # A loaded shared machine can take over a minute to bring an API server up.
            cp = ControlPlane(watch_cache=True, start_timeout=240.0).start()
            kubeconfig = str(cp.kubeconfig_path)
            server_pids = {"kube-apiserver": cp.apiserver_pid, "etcd": cp.etcd_pid}
            cluster = "local control plane started by the bench (watch cache on, etcd 3.4 on tmpfs, no controllers)"
        try:
            results = asyncio.run(measure(args, kubeconfig, server_pids, cluster, workdir))
        finally:
            if cp is not None:
                cp.stop()
        results["total_seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_end"] = loadavg()
        results["args"] = {"argv": shlex.join(sys.argv[1:] if argv is None else argv)}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        (workdir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        log(f"raw results: {workdir / 'results.json'}")
    written = report.write(results, args.out, args.plots)
    for line in report.headline(results):
        log(line)
    for path in written.values():
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
