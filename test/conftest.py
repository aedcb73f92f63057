"""Shared pytest fixtures: a real Kubernetes API for the whole session, no mocks.

By default one local control plane (kube-apiserver 1.20.2 + etcd, see docs/controlplane.md) is
started per test session. With ``SUBSTRATUS_TEST_KUBECONFIG=/path/to/kubeconfig`` the suite uses
that existing cluster instead and never starts or stops anything; tests that need the local
control plane's extras (``compact()``, ``restart_apiserver()``) or the cluster simulator skip there,
because a real cluster has real controllers.

Keep this file generic: feature-specific fixtures belong next to their tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from substratus.runtime.client import Client
from substratus.testing.controlplane import ControlPlane
from substratus.testing.simulator import ClusterSimulator

logger = logging.getLogger(__name__)

ENV_TEST_KUBECONFIG = "SUBSTRATUS_TEST_KUBECONFIG"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
T = TypeVar("T")

_CLUSTER_FIXTURES = {"controlplane", "local_controlplane", "kubeconfig", "api_client", "namespace", "simulator",
                     "kubectl"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag every test that needs a cluster with the ``controlplane`` marker (``-m 'not controlplane'``)."""
    for item in items:
        if _CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.controlplane)


def external_cluster() -> bool:
    """True when the suite runs against ``$SUBSTRATUS_TEST_KUBECONFIG`` instead of a local control plane."""
    return bool(os.environ.get(ENV_TEST_KUBECONFIG))


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane | None]:
    """The session's local :class:`ControlPlane`, or ``None`` when using an external cluster."""
    if external_cluster():
        logger.info("using external cluster kubeconfig=%s", os.environ[ENV_TEST_KUBECONFIG])
        yield None
        return
    cp = ControlPlane()
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def local_controlplane(controlplane: ControlPlane | None) -> ControlPlane:
    """The local control plane; skips the test on an external cluster."""
    if controlplane is None:
        pytest.skip(f"needs the local control plane ({ENV_TEST_KUBECONFIG} is set)")
    return controlplane


@pytest.fixture(scope="session")
def kubeconfig(controlplane: ControlPlane | None) -> Path:
    """Path of an admin kubeconfig for the session's cluster."""
    if controlplane is None:
        path = Path(os.environ[ENV_TEST_KUBECONFIG]).expanduser()
        if not path.is_file():
            pytest.fail(f"{ENV_TEST_KUBECONFIG}={path} is not a file")
        return path
    return controlplane.kubeconfig_path


@pytest.fixture
async def api_client(kubeconfig: Path) -> AsyncIterator[ApiClient]:
    """A kubernetes-asyncio client built from the session kubeconfig (never the global default config)."""
    api = await config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture(name="client")
async def substratus_client(kubeconfig: Path) -> AsyncIterator[Client]:
    """Our own REST client (``substratus.runtime.client``), built explicitly from the session kubeconfig."""
    c = await Client.from_kubeconfig(str(kubeconfig))
    try:
        yield c
    finally:
        await c.close()


def _ns_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.split("::")[-1].lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}" if base else f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace named after the test, deleted afterwards.

    On the local control plane there is no namespace controller, so deleted namespaces stay
    ``Terminating`` with their contents; names are unique, so that does not leak between tests.
    """
    core = client.CoreV1Api(api_client)
    name = _ns_name(request.node.nodeid)
    await core.create_namespace({"metadata": {"name": name, "labels": {"substratus.ai/test": "true"}}})
    try:
        yield name
    finally:
        try:
            await core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture
async def simulator(controlplane: ControlPlane | None, api_client: ApiClient,
                    namespace: str) -> AsyncIterator[ClusterSimulator]:
    """A :class:`ClusterSimulator` acting on the test's namespace (skipped on external clusters).

    For custom outcome policies or delays, build your own ``ClusterSimulator(api_client, ...)``.
    """
    if controlplane is None:
        pytest.skip("the cluster simulator only runs against the local control plane")
    sim = ClusterSimulator(api_client, namespace=namespace, job_delay=0.3, gc_interval=0.5)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True)`` against the session cluster; returns the completed process."""

    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    return run


async def _eventually(check: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.1,
                      message: str = "condition not met") -> T:
    """Await ``check()`` until it returns a truthy value without raising ``AssertionError``/``ApiException``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = None
        except (AssertionError, ApiException) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s" + (f": {last!r}" if last else ""))
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(async_check, timeout=20)``: poll until truthy (retrying on AssertionError)."""
    return _eventually
