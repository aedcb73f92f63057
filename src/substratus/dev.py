"""``substratus dev run`` (what ``make run`` calls): the operator on a developer's machine.

With a cluster configured (``--kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``) the CRDs
are installed there and the operator runs against it. Without one, a local control plane is
started (kube-apiserver + etcd on loopback, see docs/controlplane.md) together with the
cluster simulator — no node can run here, so something must play kubelet and
kube-controller-manager — and the operator uses the ``local`` cloud with artifacts under
``.dev/artifacts``. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import attrs

from substratus import logs
from substratus.cloud import build_cloud
from substratus.config import OperatorConfig
from substratus.install import install_crds
from substratus.operator import build_manager
from substratus.runtime import eventloop
from substratus.runtime.client import Client

log = logging.getLogger(__name__)


def _cluster_configured(kubeconfig: str | None) -> bool:
    return bool(kubeconfig or os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists())


async def run_dev(cfg: OperatorConfig, dev_dir: Path, *, local: bool | None = None) -> int:
    logs.setup(cfg.log_level, cfg.log_format)
    use_local = not _cluster_configured(cfg.kubeconfig or None) if local is None else local
    controlplane = None
    simulator = None
    if use_local:
        from kubernetes_asyncio.config import new_client_from_config

        from substratus.testing.controlplane import ControlPlane
        from substratus.testing.simulator import ClusterSimulator

        controlplane = ControlPlane(work_dir=dev_dir / "controlplane", keep_work_dir=True)
        await asyncio.to_thread(controlplane.start)
        kubeconfig = str(controlplane.kubeconfig_path)
        log.info("local control plane up; use it with: export KUBECONFIG=%s", kubeconfig)
        artifacts = (dev_dir / "artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        port = cfg.upload_bind_address.rpartition(":")[2] or "8082"
        cfg = attrs.evolve(cfg, kubeconfig=kubeconfig, cloud="local",
                           bucket_url=cfg.bucket_url or f"file://{artifacts}",
                           upload_base_url=cfg.upload_base_url or f"http://127.0.0.1:{port}")
        sim_api = await new_client_from_config(config_file=kubeconfig, persist_config=False)
        simulator = ClusterSimulator(sim_api)
    client = await Client.auto(cfg.kubeconfig or None)
    cloud = build_cloud(cfg)
    try:
        await install_crds(client)
        if simulator is not None:
            await simulator.start()
            log.info("cluster simulator running (marks Jobs done, Pods ready; dev mode only)")
        mgr = build_manager(client, cloud, cfg)
        return await mgr.run()
    finally:
        if simulator is not None:
            await simulator.stop()
            await simulator.api.close()
        await cloud.close()
        await client.close()
        if controlplane is not None:
            await asyncio.to_thread(controlplane.stop)


def main(args: argparse.Namespace) -> int:
    cfg = OperatorConfig.from_sources(args)
    dev_dir = Path(args.dev_dir)
    return eventloop.run(run_dev(cfg, dev_dir, local=True if args.local else None))
