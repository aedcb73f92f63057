"""The same job as substratus's Dataset controller, written the way a Python user would with kopf.

On Dataset create: render the params ConfigMap and the Job, adopt them (owner reference), create
them. Children come from substratus's own render functions so both operators send the API server
identical objects; what differs is the framework around them. Async handlers with
kubernetes-asyncio (already a dependency) are kopf's fast path: no thread pool.

    KUBECONFIG=... kopf run --standalone --namespace NS bench/kopf_operator.py

``--standalone`` skips peering, so no KopfPeering CRDs are needed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # kopf loads this file by path

from bench.common import ChildRenderer

RENDERER = ChildRenderer()


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(client_configuration=cfg)  # $KUBECONFIG
    memo.api = client.ApiClient(configuration=cfg)


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


async def _create(fn: Any, namespace: str, body: dict[str, Any]) -> None:
    try:
        await fn(namespace, body)
    except ApiException as exc:
        if exc.status != 409:  # a retried handler finds what its first attempt created
            raise


@kopf.on.create("substratus.ai", "v1", "datasets")
async def create_children(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    raw = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
           "spec": dict(body["spec"])}
    cm, job = RENDERER.children(raw)
    kopf.adopt([cm, job], owner=body)
    await _create(client.CoreV1Api(memo.api).create_namespaced_config_map, namespace, cm)
    await _create(client.BatchV1Api(memo.api).create_namespaced_job, namespace, job)
