"""Profile one operator's convergence with py-spy: a flame graph of where its CPU goes.

    python -m bench.profile [--n 1000] [--contender substratus] [--out docs/bench/profile-substratus-1000.svg]

Starts its own local control plane (as ``python -m bench`` does), runs the convergence of
``--n`` Datasets for one contender exactly as the convergence section does, and samples the
operator process over the timed window. Needs ``py-spy`` (``pip install py-spy``; root or
ptrace permission to attach).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from bench import convergence
from bench.common import REPO_ROOT


async def _main(args: argparse.Namespace, kubeconfig: str, pids: dict[str, int | None]) -> None:
    from substratus.install import install_crds
    from substratus.runtime.client import Client

    client = await Client.from_kubeconfig(kubeconfig)
    try:
        await install_crds(client)
        workdir = Path(tempfile.mkdtemp(prefix="substratus-profile-"))
        # Warm the API server up first, as the convergence section does.
        await convergence.run_contender(client, kubeconfig, "ceiling", min(100, args.n),
                                        concurrency=args.concurrency, workdir=workdir, timeout=120, rep=0)
        res, _ = await convergence.run_contender(
            client, kubeconfig, args.contender, args.n, concurrency=args.concurrency, workdir=workdir,
            timeout=max(120.0, args.n * 0.5), server_pids=pids, profile=args.out)
        keep = ("seconds", "writes_per_object", "writes", "operator_cpu_seconds", "reconciles", "operator_requests")
        print(json.dumps({k: res.get(k) for k in keep}, indent=1))
        print(f"flame graph: {args.out}")
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--contender", default="substratus", choices=[c for c in convergence.CONTENDERS if c not in convergence.CEILINGS])
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.out is None:
        args.out = REPO_ROOT / "docs" / "bench" / f"profile-{args.contender}-{args.n}.svg"
    from substratus.testing.controlplane import ControlPlane

    cp = ControlPlane(watch_cache=True).start()
    try:
        asyncio.run(_main(args, str(cp.kubeconfig_path), {"kube-apiserver": cp.apiserver_pid, "etcd": cp.etcd_pid}))
    finally:
        cp.stop()


if __name__ == "__main__":
    main()
