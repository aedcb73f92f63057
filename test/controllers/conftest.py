"""The operator in-process against the real local API server, with the local cloud in a tmp
dir and the cluster simulator standing in for the kubelet and kube-controller-manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from substratus.install import install_crds
from substratus.runtime.client import Client
from substratus.testing.operator import InProcessOperator, local_test_config, running_operator


@pytest.fixture(scope="session")
def crds_installed() -> dict[str, Any]:
    return {}


@pytest.fixture
async def operator(client: Client, namespace: str, tmp_path: Path, simulator: Any,
                   crds_installed: dict[str, Any]) -> AsyncIterator[InProcessOperator]:
    if not crds_installed:
        crds_installed["names"] = await install_crds(client)
    cfg = local_test_config(tmp_path, namespace, object_count_interval=1)
    async with running_operator(client, cfg) as op:
        yield op
