"""``substratus dev run`` (what ``make run`` calls): the operator on a developer's machine.

Which cluster, in this order (never a silent ``~/.kube/config``: that is usually someone's real
cluster, and dev mode installs CRDs into it):

1. ``--local``: a local control plane, whatever else is configured;
2. ``--kubeconfig FILE`` or ``$KUBECONFIG``: that cluster; nothing is built or started;
3. otherwise a local control plane (kube-apiserver + etcd on loopback, see
   docs/controlplane.md) together with the cluster simulator — no node can run here, so something
   must play kubelet and kube-controller-manager — and the ``local`` cloud with artifacts under
   ``.dev/artifacts``. A banner says what is simulated (:data:`SIMULATED_BANNER`).

One session per dev directory (``.dev`` of the checkout): a lock file ``.dev/session.lock`` held
for the session's life, and the operator's ports checked before anything starts, so a second
``make run`` stops with one line naming the first instead of taking over its control plane.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import attrs
from kubernetes_asyncio.config import ConfigException

from substratus import logs
from substratus.cloud import build_cloud
from substratus.config import OperatorConfig
from substratus.install import install_crds
from substratus.operator import build_manager
from substratus.runtime import eventloop
from substratus.runtime.client import Client
from substratus.runtime.resource import NAMESPACES

log = logging.getLogger(__name__)

LOCK_NAME = "session.lock"

SIMULATED_BANNER = """\
+--------------------------------------------------------------------------------------------+
| substratus dev cluster: SIMULATED. Nothing here runs a container.                          |
|  - a real kube-apiserver + etcd on loopback, but no node, scheduler or kubelet;            |
|  - a simulator plays kubelet and kube-controller-manager: every Job "succeeds" at once,    |
|    every Pod and Deployment turns Ready, builds push no image (the digest is made up);     |
|  - so artifact directories stay empty, Models report diskSize "0", Servers serve nothing;  |
|  - etcd keeps its data in memory: every object is gone when this process stops.            |
| For real workloads use a real cluster: make run ARGS=--kubeconfig=FILE (docs/quickstart.md)|
+--------------------------------------------------------------------------------------------+"""


class DevError(Exception):
    """A dev session cannot start; the message is the one line the user sees."""


def choose_cluster(cli_kubeconfig: str | None, environ: Mapping[str, str], *, local: bool = False) -> str | None:
    """The kubeconfig to run against, or ``None`` for a local control plane (see the module doc).

    ``~/.kube/config`` is never picked implicitly; pass it with ``--kubeconfig`` to use it.
    """
    if local:
        return None
    return cli_kubeconfig or environ.get("KUBECONFIG") or None


def _home_kubeconfig_exists() -> bool:
    return Path("~/.kube/config").expanduser().exists()


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown pid"


@contextlib.contextmanager
def session_lock(dev_dir: Path) -> Iterator[Path]:
    """Hold ``{dev_dir}/session.lock`` (an exclusive ``flock``) for the block's duration.

    Raises :class:`DevError` naming the other session when it is held. The kernel releases the
    lock when the process dies, so a crashed session never leaves a stale lock behind.
    """
    dev_dir.mkdir(parents=True, exist_ok=True)
    path = dev_dir / LOCK_NAME
    fd: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise DevError(f"another dev session ({_describe_holder(path)}) is running in {dev_dir.resolve()}: "
                           f"stop it (Ctrl-C in its terminal) or pass --dev-dir DIR") from None
        fd.seek(0)
        fd.truncate()
        fd.write(json.dumps({"pid": os.getpid(),
                             "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}))
        fd.flush()
        yield path
    finally:
        fd.close()


def check_ports(cfg: OperatorConfig, *, local: bool) -> None:
    """Raise :class:`DevError` if a port the operator will listen on is taken (before starting anything)."""
    wanted = [("--metrics-bind-address", cfg.metrics_bind_address),
              ("--health-probe-bind-address", cfg.health_probe_bind_address)]
    if local or cfg.cloud == "local":
        wanted.append(("--upload-bind-address", cfg.upload_bind_address))
    for flag, address in wanted:
        if address in ("", "0"):
            continue
        host, _, port = address.rpartition(":")
        if not port.isdigit() or int(port) == 0:
            continue
        host = host.strip("[]") or "0.0.0.0"
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, int(port)))
        except OSError as exc:
            raise DevError(f"port {port} ({flag} {address}) is in use ({exc.strerror}): is another "
                           f"`make run` or operator running? Stop it, or pass {flag}=:PORT") from None


async def ensure_lease_namespace(client: Client, cfg: OperatorConfig) -> None:
    """Create the leader-election namespace when ``--leader-elect`` is on and it is missing.

    The operator itself retries a missing namespace forever, like client-go (an install creates
    it); a dev session installs the CRDs anyway, so it creates the namespace too rather than loop.
    """
    if not cfg.leader_elect:
        return
    if await client.get_or_none(NAMESPACES, cfg.leader_election_namespace) is None:
        await client.create(NAMESPACES, {"metadata": {"name": cfg.leader_election_namespace}})
        log.info("created the leader-election namespace", extra={"lease_namespace": cfg.leader_election_namespace})


async def run_dev(cfg: OperatorConfig, dev_dir: Path, *, local: bool = False,
                  environ: Mapping[str, str] | None = None, banner: IO[str] | None = None) -> int:
    logs.setup(cfg.log_level, cfg.log_format)
    has_home_config = _home_kubeconfig_exists()
    kubeconfig: str | None = choose_cluster(cfg.kubeconfig or None, os.environ if environ is None else environ, local=local)
    use_local = kubeconfig is None
    check_ports(cfg, local=use_local)
    controlplane = None
    simulator = None
    if use_local:
        from kubernetes_asyncio.config import new_client_from_config

        from substratus.testing.controlplane import ControlPlane, ControlPlaneError
        from substratus.testing.simulator import ClusterSimulator

        if has_home_config and not local:
            log.info("not using ~/.kube/config: dev mode never picks a cluster silently",
                     extra={"hint": "make run ARGS=--kubeconfig=$HOME/.kube/config"})
        controlplane = ControlPlane(work_dir=dev_dir / "controlplane", keep_work_dir=True)
        try:
            await asyncio.to_thread(controlplane.start)
        except ControlPlaneError as exc:  # not built yet, or a binary refused to start (its log is named)
            raise DevError(f"the local control plane did not start: {exc}") from None
        kubeconfig = str(controlplane.kubeconfig_path.resolve())
        artifacts = (dev_dir / "artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        port = cfg.upload_bind_address.rpartition(":")[2] or "8082"
        cfg = attrs.evolve(cfg, kubeconfig=kubeconfig, cloud="local",
                           bucket_url=cfg.bucket_url or f"file://{artifacts}",
                           upload_base_url=cfg.upload_base_url or f"http://127.0.0.1:{port}")
        sim_api = await new_client_from_config(config_file=kubeconfig, persist_config=False)
        simulator = ClusterSimulator(sim_api)
    else:
        cfg = attrs.evolve(cfg, kubeconfig=kubeconfig or "")
    try:
        client = await Client.auto(cfg.kubeconfig or None)
    except (ConfigException, OSError, ValueError) as exc:
        raise DevError(f"cannot use the kubeconfig {cfg.kubeconfig}: {exc}") from None
    cloud = build_cloud(cfg)
    try:
        await install_crds(client)
        await ensure_lease_namespace(client, cfg)
        if simulator is not None:
            await simulator.start()
            print(SIMULATED_BANNER, file=banner or sys.stderr, flush=True)
            print(f"kubectl: export KUBECONFIG={kubeconfig}", file=banner or sys.stderr, flush=True)
        else:
            log.info("running against a configured cluster", extra={"kubeconfig": kubeconfig, "server": client.host})
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
    """Raises :class:`DevError` (one line for the user) or ``ValueError`` (bad configuration)."""
    cfg = OperatorConfig.from_sources(args)
    dev_dir = Path(args.dev_dir)
    with session_lock(dev_dir):
        return eventloop.run(run_dev(cfg, dev_dir, local=bool(args.local)))
