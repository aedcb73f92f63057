"""The operator in-process against the real local API server, with the local cloud in a tmp
dir and the cluster simulator standing in for the kubelet and kube-controller-manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.install import install_crds
from substratus.operator import build_manager
from substratus.runtime.client import Client
from substratus.runtime.manager import Manager


@attrs.define
class Operator:
    manager: Manager
    client: Client
    cloud: LocalCloud
    config: OperatorConfig
    task: asyncio.Task[int]


@pytest.fixture(scope="session")
def crds_installed() -> dict[str, Any]:
    return {}


@pytest.fixture
async def operator(client: Client, namespace: str, tmp_path: Path, simulator: Any,
                   crds_installed: dict[str, Any]) -> AsyncIterator[Operator]:
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    cfg = OperatorConfig(cluster_name="test-cluster", cloud="local", bucket_url=f"file://{tmp_path}/bucket",
                         registry="registry.test:5000", namespace=namespace,
                         metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0",
                         upload_bind_address="127.0.0.1:0", upload_base_url="http://127.0.0.1:0",
                         upload_signing_key="test-key", max_concurrent_reconciles=2,
                         object_count_interval=1)
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
