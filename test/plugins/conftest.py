"""The operator in-process for the plugin tests: real local API server, local cloud (with its
upload endpoint on a free port) in a tmp dir, and the cluster simulator completing Jobs and
readying Pods.

Re-declared from ``test/controllers/conftest.py`` rather than imported: conftest modules are
not importable by package, and the plugin tests also want the controller polling storage fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from plugin_helpers import CLUSTER, REGISTRY

from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.controllers import build
from substratus.install import install_crds
from substratus.operator import build_manager
from substratus.plugins import upload
from substratus.runtime.client import Client
from substratus.runtime.manager import Manager
from substratus.testing.simulator import ClusterSimulator


@attrs.define
class Operator:
    manager: Manager
    client: Client
    cloud: LocalCloud
    config: OperatorConfig
    task: asyncio.Task[int]


def _outcome(job: dict[str, Any]) -> str:
    """Build Jobs of objects named ``broken-*`` fail (to test exit code 6); everything else succeeds."""
    return "fail" if job["metadata"]["name"].startswith("broken-") else "succeed"


@pytest.fixture
async def simulator(controlplane: Any, api_client: Any, namespace: str) -> AsyncIterator[ClusterSimulator]:
    """Overrides the root conftest's: same, plus failing builds for ``broken-*`` objects."""
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    sim = ClusterSimulator(api_client, namespace=namespace, job_delay=0.2, gc_interval=0.5,
                           job_outcome=_outcome)  # type: ignore[arg-type]
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture(scope="session")
def crds_installed() -> dict[str, Any]:
    return {}


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket cannot notify the controller (it polls storage every 5 s) and the plugins poll
    the API server every 0.5 s: both quicker here so a test takes seconds, not tens of them."""
    monkeypatch.setattr(build, "UPLOAD_POLL_SECONDS", 0.3)
    monkeypatch.setattr(upload, "POLL_SECONDS", 0.1)


@pytest.fixture
async def operator(client: Client, namespace: str, tmp_path: Path, simulator: Any,
                   crds_installed: dict[str, Any], fast_polls: None) -> AsyncIterator[Operator]:
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    cfg = OperatorConfig(cluster_name=CLUSTER, cloud="local", bucket_url=f"file://{tmp_path}/bucket",
                         registry=REGISTRY, namespace=namespace,
                         metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0",
                         upload_bind_address="127.0.0.1:0", upload_base_url="http://127.0.0.1:0",
                         upload_signing_key="test-key", max_concurrent_reconciles=2)
    cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
    mgr = build_manager(client, cloud, cfg)
    task = asyncio.create_task(mgr.run(handle_signals=False))
    op = Operator(mgr, client, cloud, cfg, task)
    try:
        await asyncio.wait_for(mgr.ready.wait(), 60)
        yield op
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 60)
        await cloud.close()
