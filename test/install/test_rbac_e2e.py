"""The operator, in-process, authenticated as its ServiceAccount with nothing but the shipped roles:
every kind reaches ready with leader election on, and the API server answers no request with 403.

The scan in test_manifests.py says which calls the code *can* make; this says the calls it *does*
make in a full run are all allowed — including ones a scan could miss."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from manifest_helpers import delete_cluster_scoped, relocate, rendered, stream

from substratus import rbac
from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.install import install_crds
from substratus.operator import build_manager, check_crds
from substratus.runtime import metrics
from substratus.runtime.client import Client
from substratus.runtime.resource import EVENTS, LEASES
from substratus.testing.simulator import ClusterSimulator
from substratus.testing.wait import eventually

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def forbidden_count() -> float:
    return sum(s.value for family in metrics.REGISTRY.collect() if family.name == "rest_client_requests"
               for s in family.samples if s.name == "rest_client_requests_total" and s.labels.get("code") == "403")


def service_account_kubeconfig(admin: Path, token: str, out: Path) -> Path:
    cfg = yaml.safe_load(admin.read_text())
    cluster = cfg["clusters"][0]
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
        "current-context": "sa"}))
    return out


def obj(kind: str, name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": f"example.test/{kind.lower()}:v1"}, **spec}}


async def test_operator_runs_with_only_the_shipped_rbac(kubectl: Kubectl, kubeconfig: Path, namespace: str,
                                                         simulator: ClusterSimulator, tmp_path: Path) -> None:
    rbac_objs = relocate([o for o in rendered("local") if o["kind"] in (
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")], namespace)
    admin = await Client.from_kubeconfig(str(kubeconfig))
    sa_client: Client | None = None
    task: asyncio.Task[int] | None = None
    try:
        await install_crds(admin)
        kubectl("apply", "-f", "-", input=stream(rbac_objs))
        token = kubectl("create", "token", rbac.NAME, "-n", namespace, "--duration=1h").stdout.strip()
        sa_client = await Client.from_kubeconfig(str(service_account_kubeconfig(kubeconfig, token,
                                                                                tmp_path / "sa.kubeconfig")))
        assert await check_crds(sa_client) == []

        # As deployed (leader election on, the Lease in the operator's namespace), but watching the
        # test's namespace only: the shared API server holds other tests' objects.
        cfg = OperatorConfig(cloud="local", bucket_url=f"file://{tmp_path}/bucket", namespace=namespace,
                             leader_elect=True, leader_election_namespace=namespace,
                             metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0",
                             upload_bind_address="127.0.0.1:0", upload_base_url="http://127.0.0.1:0",
                             upload_signing_key="test-key")
        cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
        mgr = build_manager(sa_client, cloud, cfg)
        before = forbidden_count()
        task = asyncio.create_task(mgr.run(handle_signals=False))
        await asyncio.wait_for(mgr.ready.wait(), 60)

        for res, o in ((DATASETS, obj("Dataset", "data", namespace)), (MODELS, obj("Model", "opt", namespace)),
                       (SERVERS, obj("Server", "chat", namespace, model={"name": "opt"})),
                       (NOTEBOOKS, obj("Notebook", "lab", namespace, model={"name": "opt"}, dataset={"name": "data"}))):
            await admin.create(res, o, namespace)

        async def all_ready() -> bool:
            for res, name in ((DATASETS, "data"), (MODELS, "opt"), (SERVERS, "chat"), (NOTEBOOKS, "lab")):
                got = await admin.get(res, name, namespace)
                assert (got.get("status") or {}).get("ready") is True, (name, got.get("status"))
            return True

        await eventually(all_ready, timeout=60)
        lease = await admin.get(LEASES, rbac.LEADER_ELECTION_LEASE, namespace)
        assert lease["spec"]["holderIdentity"]
        events = (await admin.list(EVENTS, namespace))["items"]
        assert any(e.get("source", {}).get("component") == "substratus" for e in events)
        assert forbidden_count() == before, "the operator was refused a request with only the shipped RBAC"

        mgr.stop()
        assert await asyncio.wait_for(task, 60) == 0
        task = None
        released = await admin.get(LEASES, rbac.LEADER_ELECTION_LEASE, namespace)
        assert not released["spec"].get("holderIdentity"), "graceful stop releases the Lease (update allowed)"
        await cloud.close()
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if sa_client is not None:
            await sa_client.close()
        await admin.close()
        delete_cluster_scoped(kubectl, rbac_objs)
