from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from substratus.runtime.client import Client


@pytest.fixture
async def client(kubeconfig) -> AsyncIterator[Client]:
    """Our own REST client, built explicitly from the test cluster's kubeconfig."""
    c = await Client.from_kubeconfig(str(kubeconfig))
    try:
        yield c
    finally:
        await c.close()
