"""The whole operator in-process, for tests: real manager and controllers against a real API
server, with the local cloud in a directory the test owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from substratus.cloud.local import LocalCloud
from substratus.config import OperatorConfig
from substratus.operator import build_manager
from substratus.runtime.client import Client
from substratus.runtime.manager import Manager


@attrs.define
class InProcessOperator:
    manager: Manager
    client: Client
    cloud: LocalCloud
    config: OperatorConfig
    task: asyncio.Task[int]


def local_test_config(tmp_path: Path, namespace: str, **overrides: Any) -> OperatorConfig:
    """Local cloud under ``tmp_path``, one namespace, every endpoint on a free loopback port."""
    values: dict[str, Any] = {
        "cluster_name": "test-cluster", "cloud": "local", "bucket_url": f"file://{tmp_path}/bucket",
        "registry": "registry.test:5000", "namespace": namespace,
        "metrics_bind_address": "127.0.0.1:0", "health_probe_bind_address": "127.0.0.1:0",
        "upload_bind_address": "127.0.0.1:0", "upload_base_url": "http://127.0.0.1:0",
        "upload_signing_key": "test-key", "max_concurrent_reconciles": 2,
    }
    return OperatorConfig(**{**values, **overrides})


@contextlib.asynccontextmanager
async def running_operator(client: Client, cfg: OperatorConfig, ready_timeout: float = 60) \
        -> AsyncIterator[InProcessOperator]:
    """Build and run the manager until the block ends; yields once its caches are synced."""
    cloud = LocalCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
    mgr = build_manager(client, cloud, cfg)
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        async with asyncio.timeout(ready_timeout):
            await mgr.ready.wait()
        yield InProcessOperator(mgr, client, cloud, cfg, task)
    finally:
        mgr.stop()
        async with asyncio.timeout(60):
            await task
        await cloud.close()
