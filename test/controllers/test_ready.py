"""The ``Ready`` condition on every kind, read by the real ``kubectl wait`` (SPEC §1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from helpers import condition, get_obj

from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.testing.wait import eventually


def obj(kind: str, name: str, ns: str, image: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": image}, **spec}}


async def test_kubectl_wait_for_ready_on_every_kind(operator, namespace: str, kubectl) -> None:
    client = operator.client
    # The Server comes first and waits for its Model: Ready=False says why, kubectl sees it.
    await client.create(SERVERS, obj("Server", "chat", namespace, "substratusai/basaran:v1", model={"name": "opt"}))

    async def held_back() -> dict[str, Any] | None:
        s = await get_obj(client, SERVERS, "chat", namespace)
        return s if (condition(s, "Ready") or {}).get("reason") == "WaitingForDependency" else None

    s = await eventually(held_back, timeout=30)
    ready = condition(s, "Ready")
    assert ready is not None and ready["status"] == "False" and s["status"]["ready"] is False
    assert ready["message"] == condition(s, "Serving")["message"] and "opt" in ready["message"]
    await asyncio.to_thread(kubectl, "-n", namespace, "wait", "--for=condition=Ready=False", "--timeout=30s",
                            "server/chat")
    columns = (await asyncio.to_thread(kubectl, "-n", namespace, "get", "server", "chat", "--no-headers")).stdout
    assert columns.split()[1:3] == ["false", "WaitingForDependency"], columns

    await client.create(MODELS, obj("Model", "opt", namespace, "substratusai/model-loader:v1"))
    await client.create(DATASETS, obj("Dataset", "squad", namespace, "substratusai/dataset-loader:v1"))
    await client.create(NOTEBOOKS, obj("Notebook", "lab", namespace, "substratusai/notebook:v1"))

    names = ["model/opt", "dataset/squad", "server/chat", "notebook/lab"]
    proc = await asyncio.to_thread(kubectl, "-n", namespace, "wait", "--for=condition=Ready", "--timeout=90s",
                                   *names, timeout=120)
    assert sorted(line.split()[0] for line in proc.stdout.splitlines()) == sorted(
        f"{n.split('/')[0]}.substratus.ai/{n.split('/')[1]}" for n in names), proc.stdout

    # Same truth as status.ready, with the reason of the condition that made it ready.
    got = json.loads((await asyncio.to_thread(kubectl, "-n", namespace, "get", "ai", "-o", "json")).stdout)
    summary = {(o["kind"], o["metadata"]["name"]): (o["status"]["ready"], condition(o, "Ready")["reason"])
               for o in got["items"]}
    assert summary == {("Model", "opt"): (True, "JobSucceeded"), ("Dataset", "squad"): (True, "JobSucceeded"),
                       ("Server", "chat"): (True, "Available"), ("Notebook", "lab"): (True, "Available")}


async def test_ready_reports_invalid_spec(operator, namespace: str, kubectl) -> None:
    client = operator.client
    # Valid for the schema on every server, rejected by the controller: a malformed secret reference.
    await client.create(DATASETS, obj("Dataset", "clash", namespace, "substratusai/dataset-loader:v1",
                                      env={"TOKEN": "${{ secrets.hf }}"}))
    await asyncio.to_thread(kubectl, "-n", namespace, "wait", "--for=condition=Ready=False", "--timeout=30s",
                            "dataset/clash")

    async def invalid() -> dict[str, Any] | None:
        d = await get_obj(client, DATASETS, "clash", namespace)
        return d if (condition(d, "Ready") or {}).get("reason") == "InvalidSpec" else None

    d = await eventually(invalid, timeout=30)
    assert "spec.env.TOKEN" in condition(d, "Ready")["message"]
    assert d["status"]["ready"] is False
