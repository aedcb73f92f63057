"""The operator in-process for the plugin tests: real local API server, local cloud (with its
upload endpoint on a free port) in a tmp dir, and the cluster simulator completing Jobs and
readying Pods.

The operator itself is ``substratus.testing.operator``, as for the controller tests; here the
controller and the plugins also poll faster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from plugin_helpers import CLUSTER, REGISTRY

from substratus.controllers import build
from substratus.install import install_crds
from substratus.plugins import upload
from substratus.runtime.client import Client
from substratus.testing.operator import InProcessOperator, local_test_config, running_operator
from substratus.testing.simulator import ClusterSimulator


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
                   crds_installed: dict[str, Any], fast_polls: None) -> AsyncIterator[InProcessOperator]:
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    cfg = local_test_config(tmp_path, namespace, cluster_name=CLUSTER, registry=REGISTRY)
    async with running_operator(client, cfg) as op:
        yield op
