"""The REST client against the real API server: what it costs per request, proxies, request bodies
and per-request credentials."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from kubernetes_asyncio import client as k8s_client

from substratus.install import install_crds
from substratus.runtime.client import ApiError, Client, _urlencode, dumps
from substratus.runtime.resource import CONFIGMAPS, NAMESPACES, Resource
from substratus.testing.controlplane import ControlPlane

MODELS = Resource("substratus.ai", "v1", "models", "Model")


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


async def test_bodies_orjson_cannot_encode_still_reach_the_api_server(client: Client, namespace: str) -> None:
    """Bodies are encoded with orjson, which refuses integers beyond 64 bits: such a body falls
    back to ``json`` and is sent, and the server stores the number (as the float64 it decodes it
    to). Non-ASCII text goes out as UTF-8 and comes back unchanged."""
    await install_crds(client)
    params = {"big": 2**70, "negative": -(2**64) - 1, "name": "données 日本語 🙂", "max": 2**63 - 1}
    out = await client.create(MODELS, {"metadata": {"name": "params", "namespace": namespace},
                                       "spec": {"image": {"name": "x"}, "params": params}})
    stored = (await client.get(MODELS, "params", namespace))["spec"]["params"]
    assert out["spec"]["params"] == stored
    assert stored == {"big": float(2**70), "negative": float(-(2**64) - 1), "name": "données 日本語 🙂",
                      "max": 2**63 - 1}
    await client.create(CONFIGMAPS, {"metadata": {"name": "text", "namespace": namespace}, "data": {"k": "a"}})
    patched = await client.patch(CONFIGMAPS, "text", {"data": {"k": "ünïcode ✓", "k2": "tab\tquote\""}}, namespace)
    assert patched["data"] == {"k": "ünïcode ✓", "k2": "tab\tquote\""}


def test_dumps_encodes_what_the_generated_client_did() -> None:
    """What ``ApiClient.call_api`` sent for a body, ``dumps`` sends: JSON of the same value (models
    by their wire names, dates in ISO 8601, big integers exact), never a crash on orjson's limits."""
    body = {"n": 2**70, "s": "é", "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            "day": datetime.date(2026, 1, 2), "model": k8s_client.V1ObjectMeta(name="x", resource_version="7"),
            1: "int key", "t": (1, 2)}
    assert json.loads(dumps(body)) == {"n": 2**70, "s": "é", "when": "2026-01-02T03:04:05+00:00", "day": "2026-01-02",
                                       "model": {"name": "x", "resourceVersion": "7"}, "1": "int key", "t": [1, 2]}
    assert json.loads(dumps({"s": "é 🙂"})) == {"s": "é 🙂"}
    assert dumps({"a": [1, None, True]}) == b'{"a":[1,null,true]}'
    with pytest.raises(TypeError):
        dumps({"x": object()})


async def test_the_bearer_token_is_read_for_every_request(local_controlplane: ControlPlane) -> None:
    """A rotating token (in-cluster token file, kubeconfig exec plugin) reaches the next request:
    the Configuration's ``refresh_api_key_hook`` runs before each request and its token is sent."""
    current = {"token": local_controlplane.token}
    calls = []

    def refresh(cfg: k8s_client.Configuration) -> None:
        calls.append(1)
        cfg.api_key["BearerToken"] = current["token"]

    cfg = k8s_client.Configuration(host=local_controlplane.server_url)
    cfg.ssl_ca_cert = str(local_controlplane.ca_path)
    cfg.api_key = {"BearerToken": "stale"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    cfg.refresh_api_key_hook = refresh
    client = Client(k8s_client.ApiClient(configuration=cfg))
    try:
        assert (await client.get(NAMESPACES, "default"))["metadata"]["name"] == "default"
        current["token"] = "revoked"
        with pytest.raises(ApiError) as err:
            await client.get(NAMESPACES, "default")
        assert err.value.status == 401
        current["token"] = local_controlplane.token
        assert (await client.get(NAMESPACES, "default"))["metadata"]["name"] == "default"
        assert len(calls) == 3
    finally:
        await client.close()


@pytest.mark.parametrize("params", [
    [("fieldManager", "substratus"), ("force", "true")],
    [("labelSelector", "app in (x, y),!z"), ("fieldSelector", "metadata.name=é"), ("continue", "eyJ2Ijoi+/=="),
     ("odd key&", "a=b")],
])
def test_query_strings_are_encoded_as_urlencode_does(params: list[tuple[str, str]]) -> None:
    assert _urlencode(params) == urlencode(params)
