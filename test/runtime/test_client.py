"""The REST client against the real API server: what it costs per request, and proxies."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from substratus.runtime.client import Client
from substratus.runtime.resource import NAMESPACES


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.calls.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


async def test_requests_do_not_hop_to_threads(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp with trust_env reads ~/.netrc and the proxy variables on a worker thread for every
    request; the client resolves the environment once, so a request stays on the event loop."""
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    client = await Client.from_kubeconfig(str(kubeconfig))
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    try:
        for _ in range(5):
            await client.get(NAMESPACES, "default")
        assert executor.calls == []
    finally:
        await client.close()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        executor.shutdown()


async def test_https_proxy_from_the_environment_is_used(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving the environment once still honours HTTPS_PROXY: the API server is reached
    through the proxy (a CONNECT), here a listener that records the request and hangs up."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    client = await Client.from_kubeconfig(str(kubeconfig))
    try:
        with pytest.raises(Exception):  # noqa: B017 - the proxy hangs up; what matters is it was asked
            await client.get(NAMESPACES, "default")
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert seen and seen[0].startswith(b"CONNECT ")
