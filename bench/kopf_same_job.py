"""kopf doing the same job as substratus's Dataset controller, write for write.

Like ``bench/kopf_operator.py`` (same children from substratus's render functions), plus what
substratus also does for each Dataset: the status it writes (conditions ``Built``, ``Complete``
and ``Ready``, ``ready``, ``url``: one merge patch on ``/status``) and the Event it posts for the
transition (SPEC §7). The writes go through substratus's own ``Client`` (the ConfigMap by
server-side apply and the Job by create, together; then the status; then the Event), so the two
operators send the API server the same requests; what differs is the framework around them.
kopf still adds its own progress annotation to each Dataset (its default state storage).

    KUBECONFIG=... kopf run --standalone --namespace NS bench/kopf_same_job.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kopf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # kopf loads this file by path

from bench.common import ChildRenderer, same_writes
from substratus.runtime.client import AlreadyExists, Client

RENDERER = ChildRenderer()


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    memo.client = await Client.from_kubeconfig()  # $KUBECONFIG


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    await memo.client.close()


@kopf.on.create("substratus.ai", "v1", "datasets")
async def converge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    raw = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
           "spec": dict(body["spec"])}
    try:
        await same_writes(memo.client, RENDERER, raw)
    except AlreadyExists:
        pass  # a retried handler finds what its first attempt created
