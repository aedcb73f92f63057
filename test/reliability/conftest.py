"""Fixtures for the reliability scenarios: operators that can be pointed anywhere (e.g. at a
fault proxy), a cluster simulator whose Jobs can be held, and proxies in front of the API server.

Everything runs against the session's real local control plane; scenarios that restart it,
compact etcd or need the simulator skip on an external cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from faultproxy import FaultProxy
from kubernetes_asyncio.client import ApiClient

from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.install import install_crds
from substratus.operator import build_manager
from substratus.runtime.client import Client, ClientOptions
from substratus.runtime.manager import Manager
from substratus.runtime.resource import JOBS
from substratus.testing.controlplane import ControlPlane
from substratus.testing.simulator import OUTCOME_ANNOTATION, ClusterSimulator

log = logging.getLogger(__name__)

CLUSTER = "test-cluster"
SIGNING_KEY = "reliability-key"


@pytest.fixture(scope="session")
async def crds(kubeconfig: Path) -> list[str]:
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        return await install_crds(client)
    finally:
        await client.close()


@pytest.fixture
def admin(client: Client) -> Client:
    """The test's own client (admin, straight to the API server, never through a proxy)."""
    return client


# --- the cluster simulator, with holds ------------------------------------------------------------

@attrs.define
class Sim:
    """A :class:`ClusterSimulator` whose Jobs succeed unless held (all, or by name)."""

    simulator: ClusterSimulator
    namespace: str
    hold_all: bool = False
    held: set[str] = attrs.field(factory=set)

    def policy(self, job: dict[str, Any]) -> str:
        return "hold" if self.hold_all or job["metadata"]["name"] in self.held else "succeed"

    async def release(self, client: Client, names: list[str] | None = None) -> None:
        """Let held Jobs finish: the simulator only re-decides on an event, so poke each Job."""
        if names is None:
            self.hold_all = False
            self.held.clear()
            names = [j["metadata"]["name"] for j in (await client.list(JOBS, self.namespace))["items"]]
        else:
            self.held.difference_update(names)
        for name in names:
            with contextlib.suppress(Exception):
                await client.patch(JOBS, name, {"metadata": {"annotations": {OUTCOME_ANNOTATION: "succeed"}}},
                                   self.namespace)


@pytest.fixture
async def sim(controlplane: ControlPlane | None, api_client: ApiClient, namespace: str) -> AsyncIterator[Sim]:
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    holder: dict[str, Sim] = {}
    simulator = ClusterSimulator(api_client, namespace=namespace, job_delay=0.3, gc_interval=0.5,
                                 job_outcome=lambda job: holder["sim"].policy(job))  # type: ignore[arg-type,return-value]
    s = holder["sim"] = Sim(simulator, namespace)
    await simulator.start()
    try:
        yield s
    finally:
        await simulator.stop()


# --- in-process operators ---------------------------------------------------------------------------

@attrs.define
class RunningOperator:
    manager: Manager
    client: Client
    cloud: LocalCloud
    config: OperatorConfig
    task: asyncio.Task[int]
    bucket: Path

    @property
    def health_port(self) -> int:
        return self.manager.bound_ports["health"]

    def controller(self, name: str) -> Any:
        return next((c for c in self.manager.controllers if c.name == name), None)

    def queues_idle(self) -> bool:
        return all(c.queue is not None and c.queue.idle() for c in self.manager.controllers)

    async def stop(self) -> int | None:
        if self.task.done():
            return None if self.task.cancelled() else self.task.result()
        self.manager.stop()
        try:
            return await asyncio.wait_for(self.task, 60)
        finally:
            await self.cloud.close()
            await self.client.close()


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture
async def start_operator(kubeconfig: Path, namespace: str, tmp_path: Path,
                         crds: list[str]) -> AsyncIterator[StartOperator]:
    """``await start_operator(kubeconfig_path=..., workers=4, client_options=...)`` → a running
    in-process operator watching the test's namespace, bucket in ``tmp_path/bucket``."""
    running: list[RunningOperator] = []

    async def start(*, kubeconfig_path: Path | None = None, workers: int = 4,
                    client_options: ClientOptions | None = None, **overrides: Any) -> RunningOperator:
        client = await Client.from_kubeconfig(str(kubeconfig_path or kubeconfig), options=client_options)
        bucket = tmp_path / "bucket"
        bucket.mkdir(exist_ok=True)
        values: dict[str, Any] = dict(
            cluster_name=CLUSTER, cloud="local", bucket_url=f"file://{bucket}", registry="registry.test:5000",
            namespace=namespace, metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0",
            upload_bind_address="127.0.0.1:0", upload_base_url="http://127.0.0.1:0",
            upload_signing_key=SIGNING_KEY, max_concurrent_reconciles=workers)
        values.update(overrides)
        cfg = OperatorConfig(**values)
        cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
        mgr = build_manager(client, cloud, cfg)
        task = asyncio.create_task(mgr.run(handle_signals=False), name="operator-under-test")
        op = RunningOperator(mgr, client, cloud, cfg, task, bucket)
        running.append(op)
        await asyncio.wait_for(mgr.ready.wait(), 60)
        return op

    try:
        yield start
    finally:
        for op in running:
            try:
                await op.stop()
            except Exception:
                log.exception("operator did not stop cleanly")


# --- proxies ---------------------------------------------------------------------------------------

@pytest.fixture
async def make_proxy(local_controlplane: ControlPlane) -> AsyncIterator[Callable[..., Awaitable[FaultProxy]]]:
    proxies: list[FaultProxy] = []

    async def make(name: str = "proxy", capture: str | None = None) -> FaultProxy:
        p = FaultProxy(local_controlplane.server_url, local_controlplane.token, local_controlplane.ca_path,
                       name=name, capture=capture)
        proxies.append(p)
        return await p.start()

    try:
        yield make
    finally:
        for p in proxies:
            await p.stop()
