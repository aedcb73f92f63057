"""/metrics: process and platform series, no `*_created` twins, and the opt-in secure mode
(HTTPS + TokenReview + SubjectAccessReview, as controller-runtime) against the real API server."""

from __future__ import annotations

import asyncio
import ssl
import uuid

import aiohttp
import pytest

from substratus.runtime.client import Client
from substratus.runtime.manager import EXIT_OK, Manager, ManagerOptions
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane

ROLES = "/apis/rbac.authorization.k8s.io/v1"


async def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the manager's self-signed certificate
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers, ssl=ctx if url.startswith("https") else None) as r:
        return r.status, await r.text()


async def _run(client: Client, namespace: str, **kw: object) -> tuple[Manager, asyncio.Task[int]]:
    mgr = Manager(client, ManagerOptions(namespace=namespace, metrics_addr="127.0.0.1:0", health_addr="127.0.0.1:0",
                                         **kw))  # type: ignore[arg-type]
    task = asyncio.create_task(mgr.run(handle_signals=False))
    await eventually(lambda: "metrics" in mgr.bound_ports)
    return mgr, task


async def test_metrics_have_process_series_and_no_created_twins(client: Client, namespace: str) -> None:
    mgr, task = await _run(client, namespace)
    try:
        status, body = await scrape(f"http://127.0.0.1:{mgr.bound_ports['metrics']}/metrics")
    finally:
        mgr.stop()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
    assert status == 200
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "process_start_time_seconds", "python_info", "python_gc_collections_total"):
        assert f"\n{name}" in body, name
    assert "# TYPE controller_runtime_reconcile_total counter" in body
    assert "_created" not in body


async def _token(client: Client, namespace: str, sa: str) -> str:
    await client.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                         body={"metadata": {"name": sa}})
    review = await client.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                                  body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                        "spec": {"expirationSeconds": 600}})
    return str(review["status"]["token"])


async def test_secure_metrics_need_a_token_allowed_to_get_metrics(client: Client, namespace: str) -> None:
    reader, nobody = await _token(client, namespace, "prometheus"), await _token(client, namespace, "nobody")
    binding = f"metrics-reader-{uuid.uuid4().hex[:8]}"
    # The shipped ClusterRole's rule (manifests/rbac/metrics_reader_role.yaml), bound to one SA only.
    await client.request("POST", f"{ROLES}/clusterroles", body={
        "metadata": {"name": binding}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]})
    await client.request("POST", f"{ROLES}/clusterrolebindings", body={
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": binding},
        "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": namespace}]})
    mgr, task = await _run(client, namespace, metrics_secure=True)
    url = f"https://127.0.0.1:{mgr.bound_ports['metrics']}/metrics"
    try:
        assert (await scrape(url))[0] == 401
        assert (await scrape(url, "not-a-token"))[0] == 401
        status, body = await scrape(url, nobody)
        assert status == 403 and "nobody" in body
        status, body = await scrape(url, reader)
        assert status == 200 and "process_resident_memory_bytes" in body
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
            await scrape(url.replace("https", "http"), reader)
    finally:
        mgr.stop()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
        for kind in ("clusterrolebindings", "clusterroles"):
            await client.request("DELETE", f"{ROLES}/{kind}/{binding}")
