"""Notebook reconciler end to end: real API server, local cloud, cluster simulator.

There is no kubelet behind the local API server, so its pod proxy cannot reach a Jupyter.
The idle tests therefore run a real HTTP server on 127.0.0.1 serving ``/api/status`` and point
the reconciler's status reader — and only that network boundary — at it
(:class:`DirectJupyterStatusReader`); everything else is the real reconciler.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import condition, event_reasons, get_obj, gone, requests_on_resync, writes_on_resync

from substratus import naming
from substratus.api import format_time
from substratus.controllers.notebook import (
    JupyterStatus,
    JupyterUnreachable,
    NotebookReconciler,
    PodProxyJupyterStatusReader,
    parse_jupyter_status,
    token_digest,
)
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS
from substratus.runtime.client import Invalid
from substratus.runtime.resource import CONFIGMAPS, EVENTS, PODS, SECRETS
from substratus.testing.wait import eventually


def notebook(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/notebook:v1"}, **spec}}


def model(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/model-loader:v1"}}}


def dataset(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/dataset-loader:v1"}}}


# --- a fake Jupyter at the network boundary -----------------------------------------------------


class FakeJupyter:
    """A real HTTP server answering ``GET /api/status`` like Jupyter (token required)."""

    def __init__(self, last_activity: dt.datetime) -> None:
        self.last_activity = last_activity
        self.tokens: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _status(self, request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        self.tokens.append(token)
        if not token:
            return web.json_response({"message": "Forbidden"}, status=403)
        return web.json_response({"started": format_time(self.last_activity),
                                  "last_activity": self.last_activity.isoformat().replace("+00:00", "Z"),
                                  "connections": 0, "kernels": 1})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/status", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class DirectJupyterStatusReader:
    """TEST DOUBLE for the pod proxy only: GETs ``{base_url}/api/status`` directly, because no
    kubelet stands behind this API server. Parsing and everything after it is production code."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.calls: list[tuple[str, str]] = []

    async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
        self.calls.append((namespace, pod))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                    session.get(f"{self.base_url}/api/status", params={"token": token}) as resp:
                if resp.status != 200:
                    raise JupyterUnreachable(f"HTTP {resp.status}")
                return parse_jupyter_status(await resp.json())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise JupyterUnreachable(repr(exc)) from exc


@pytest.fixture
async def fake_jupyter() -> AsyncIterator[FakeJupyter]:
    fake = FakeJupyter(dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def use_reader(operator, reader: Any) -> None:
    ctl = next(c for c in operator.manager.controllers if c.name == "notebook")
    assert isinstance(ctl.reconciler, NotebookReconciler)
    assert isinstance(ctl.reconciler.status_reader, PodProxyJupyterStatusReader), "production default"
    ctl.reconciler.status_reader = reader


# --- tests --------------------------------------------------------------------------------------


async def test_notebook_waits_for_model_and_dataset_then_runs(operator, namespace: str) -> None:
    client = operator.client
    await client.create(NOTEBOOKS, notebook("dev", namespace, model={"name": "opt"}, dataset={"name": "squad"},
                                            params={"lr": 0.1}, env={"JUPYTER_TOKEN": "mine"}))
    obj = await eventually(lambda: _serving_reason(client, "dev", namespace, "WaitingForDependency"), timeout=30)
    message = condition(obj, "Serving")["message"]
    assert f"Model {namespace}/opt" in message and f"Dataset {namespace}/squad" in message
    assert operator.manager.cache.get(PODS, "dev-notebook", namespace) is None

    await client.create(MODELS, model("opt", namespace))
    await client.create(DATASETS, dataset("squad", namespace))
    obj = await eventually(lambda: _serving_reason(client, "dev", namespace, "Available"), timeout=30)
    assert obj["status"]["ready"] is True
    url = f"{operator.cloud.bucket_url}/{naming.storage_hash('test-cluster', namespace, 'notebooks', 'dev')}"
    assert obj["status"]["url"] == url

    pod = await client.get(PODS, "dev-notebook", namespace)
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    c = spec["containers"][0]
    assert c["image"] == "substratusai/notebook:v1"
    assert c["command"][:2] == ["jupyter", "lab"] and "--port=8888" in c["command"]
    assert c["workingDir"] == "/content"
    assert c["ports"] == [{"name": "notebook", "containerPort": 8888, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/api", "port": "notebook", "scheme": "HTTP"}
    env = {e["name"]: e for e in c["env"]}
    assert env["PARAM_LR"]["value"] == "0.1"
    assert env["JUPYTER_TOKEN"] == {"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "dev-notebook-token", "key": "token"}}}, "the controller's token wins over spec.env"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/content/model"]["readOnly"] and mounts["/content/data"]["readOnly"]
    assert not mounts["/content/output"].get("readOnly")
    # the same output volume at upstream Substratus' path too (SPEC §9)
    assert mounts["/content/artifacts"]["name"] == mounts["/content/output"]["name"]
    assert not mounts["/content/artifacts"].get("readOnly")
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    bucket = operator.cloud.bucket_url.removeprefix("file://")
    model_hash = naming.storage_hash("test-cluster", namespace, "models", "opt")
    data_hash = naming.storage_hash("test-cluster", namespace, "datasets", "squad")
    assert volumes[mounts["/content/output"]["name"]] == url.removeprefix("file://") + "/output"
    assert volumes[mounts["/content/model"]["name"]] == f"{bucket}/{model_hash}/model"
    assert volumes[mounts["/content/data"]["name"]] == f"{bucket}/{data_hash}/data"
    ref = pod["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "Notebook" and ref["controller"] and ref["uid"] == obj["metadata"]["uid"]
    assert pod["metadata"]["labels"]["substratus.ai/notebook"] == "dev"

    secret = await client.get(SECRETS, "dev-notebook-token", namespace)
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 48 and token != "mine"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "substratus"
    assert (await client.get(CONFIGMAPS, "dev-notebook-params", namespace))["data"]["params.json"]

    # Deleting the Notebook removes the Pod, params and token (owner references; simulator GC).
    await client.delete(NOTEBOOKS, "dev", namespace)
    for res, name in ((PODS, "dev-notebook"), (SECRETS, "dev-notebook-token"), (CONFIGMAPS, "dev-notebook-params")):
        await eventually(lambda res=res, name=name: gone(client, res, name, namespace), timeout=30)


async def test_spec_command_overrides_the_default(operator, namespace: str) -> None:
    client = operator.client
    await client.create(NOTEBOOKS, notebook("cmd", namespace, command=["notebook.sh"]))
    await eventually(lambda: _serving_reason(client, "cmd", namespace, "Available"), timeout=30)
    pod = await client.get(PODS, "cmd-notebook", namespace)
    assert pod["spec"]["containers"][0]["command"] == ["notebook.sh"]


async def test_suspend_and_resume(operator, namespace: str) -> None:
    client = operator.client
    await client.create(NOTEBOOKS, notebook("nap", namespace))
    await eventually(lambda: _serving_reason(client, "nap", namespace, "Available"), timeout=30)
    first = await client.get(PODS, "nap-notebook", namespace)
    token = (await client.get(SECRETS, "nap-notebook-token", namespace))["data"]["token"]

    await client.patch(NOTEBOOKS, "nap", {"spec": {"suspend": True}}, namespace)
    obj = await eventually(lambda: _serving_reason(client, "nap", namespace, "Suspended"), timeout=30)
    assert obj["status"]["ready"] is False
    assert condition(obj, "Serving")["status"] == "False"
    await eventually(lambda: gone(client, PODS, "nap-notebook", namespace), timeout=30)
    assert await client.get_or_none(SECRETS, "nap-notebook-token", namespace) is not None, "kept while suspended"

    await client.patch(NOTEBOOKS, "nap", {"spec": {"suspend": False}}, namespace)
    obj = await eventually(lambda: _serving_reason(client, "nap", namespace, "Available"), timeout=30)
    assert obj["status"]["ready"] is True
    again = await client.get(PODS, "nap-notebook", namespace)
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert (await client.get(SECRETS, "nap-notebook-token", namespace))["data"]["token"] == token, "same token"
    reasons = await eventually(lambda: event_reasons(client, namespace, "nap"))
    assert {"Available", "Suspended"} <= reasons


async def test_spec_change_replaces_the_pod(operator, namespace: str) -> None:
    client = operator.client
    await client.create(NOTEBOOKS, notebook("edit", namespace, params={"a": 1}))
    await eventually(lambda: _serving_reason(client, "edit", namespace, "Available"), timeout=30)
    old = await client.get(PODS, "edit-notebook", namespace)

    async def replaced() -> dict[str, Any] | None:
        pod = await client.get_or_none(PODS, "edit-notebook", namespace)
        return pod if pod and pod["metadata"]["uid"] != old["metadata"]["uid"] else None

    await client.patch(NOTEBOOKS, "edit", {"spec": {"params": {"a": 2}}}, namespace)
    pod = await eventually(replaced, timeout=30)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["PARAM_A"] == "2"
    obj = await eventually(lambda: _serving_reason(client, "edit", namespace, "Available"), timeout=30)
    assert condition(obj, "Serving")["observedGeneration"] == 2

    # A change that does not touch the Pod (idleTimeout) keeps it.
    use_reader(operator, DirectJupyterStatusReader("http://127.0.0.1:9"))  # unreachable: never suspends
    await client.patch(NOTEBOOKS, "edit", {"spec": {"idleTimeout": "10h"}}, namespace)

    async def observed_gen3() -> bool:
        c = condition(await get_obj(client, NOTEBOOKS, "edit", namespace), "Serving")
        return bool(c and c["observedGeneration"] == 3 and c["reason"] == "Available")

    await eventually(observed_gen3, timeout=30)
    assert (await client.get(PODS, "edit-notebook", namespace))["metadata"]["uid"] == pod["metadata"]["uid"]


async def test_idle_notebook_is_stopped_without_touching_its_spec(operator, namespace: str,
                                                                  fake_jupyter: FakeJupyter) -> None:
    """SPEC §1: idleness stops the Pod and is recorded in the status; spec and generation stay the
    user's (a GitOps tool sees no drift). A converged idle Notebook makes no request at all."""
    client = operator.client
    reader = DirectJupyterStatusReader(fake_jupyter.url)
    use_reader(operator, reader)
    created = await client.create(NOTEBOOKS, notebook("idle", namespace, idleTimeout="1h"))

    obj = await eventually(lambda: _serving_reason(client, "idle", namespace, "Idle"), timeout=30)
    await eventually(lambda: gone(client, PODS, "idle-notebook", namespace), timeout=30)
    obj = await client.get(NOTEBOOKS, "idle", namespace)
    assert obj["spec"] == created["spec"] and obj["spec"]["suspend"] is False
    assert obj["metadata"]["generation"] == 1
    assert obj["status"]["ready"] is False and condition(obj, "Ready")["reason"] == "Idle"
    idle = obj["status"]["idle"]
    assert "resume" not in idle and idle["generation"] == 1 and idle["since"] and idle["lastActivity"]
    message = condition(obj, "Serving")["message"]
    assert "idleTimeout 1h" in message and "(3h" in message
    assert f"kubectl notebook idle -n {namespace}" in message
    assert f"kubectl annotate notebook/idle -n {namespace} substratus.ai/resume=" in message
    assert reader.calls and reader.calls[0] == (namespace, "idle-notebook")
    secret = await client.get(SECRETS, "idle-notebook-token", namespace)
    assert fake_jupyter.tokens[0] == base64.b64decode(secret["data"]["token"]).decode(), "authenticated"
    events = await eventually(lambda: _events(client, namespace, "idle", "Idle"), timeout=10)
    assert "substratus.ai/resume" in events[0]["message"] and "idleTimeout 1h" in events[0]["message"]

    # Converged: re-delivering it (a resync, a restart) sends nothing and probes nothing.
    probes = len(reader.calls)
    assert await requests_on_resync(operator) == 0
    assert len(reader.calls) == probes

    # A new annotation value resumes it; the spec is still untouched.
    fake_jupyter.last_activity = dt.datetime.now(dt.UTC)
    await client.patch(NOTEBOOKS, "idle", {"metadata": {"annotations": {"substratus.ai/resume": "1"}}}, namespace)
    obj = await eventually(lambda: _serving_reason(client, "idle", namespace, "Available"), timeout=30)
    assert "idle" not in obj["status"] and obj["metadata"]["generation"] == 1 and obj["status"]["ready"] is True
    assert await client.get_or_none(PODS, "idle-notebook", namespace) is not None


async def test_spec_change_resumes_an_idle_notebook(operator, namespace: str, fake_jupyter: FakeJupyter) -> None:
    client = operator.client
    use_reader(operator, DirectJupyterStatusReader(fake_jupyter.url))
    await client.create(NOTEBOOKS, {**notebook("edit-idle", namespace, idleTimeout="1h"),
                                    "metadata": {"name": "edit-idle", "namespace": namespace,
                                                 "annotations": {"substratus.ai/resume": "a"}}})
    obj = await eventually(lambda: _serving_reason(client, "edit-idle", namespace, "Idle"), timeout=30)
    assert obj["status"]["idle"]["resume"] == "a", "an old value does not resume"
    await eventually(lambda: gone(client, PODS, "edit-idle-notebook", namespace), timeout=30)

    fake_jupyter.last_activity = dt.datetime.now(dt.UTC)
    await client.patch(NOTEBOOKS, "edit-idle", {"spec": {"params": {"a": 1}}}, namespace)
    obj = await eventually(lambda: _serving_reason(client, "edit-idle", namespace, "Available"), timeout=30)
    assert "idle" not in obj["status"] and condition(obj, "Serving")["observedGeneration"] == 2
    pod = await client.get(PODS, "edit-idle-notebook", namespace)
    assert {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}["PARAM_A"] == "1"


async def test_user_suspend_still_means_suspend_and_clears_idleness(operator, namespace: str,
                                                                    fake_jupyter: FakeJupyter) -> None:
    client = operator.client
    use_reader(operator, DirectJupyterStatusReader(fake_jupyter.url))
    await client.create(NOTEBOOKS, notebook("both", namespace, idleTimeout="1h"))
    await eventually(lambda: _serving_reason(client, "both", namespace, "Idle"), timeout=30)
    await client.patch(NOTEBOOKS, "both", {"spec": {"suspend": True}}, namespace)
    obj = await eventually(lambda: _serving_reason(client, "both", namespace, "Suspended"), timeout=30)
    assert "idle" not in obj["status"]
    assert await client.get_or_none(PODS, "both-notebook", namespace) is None


async def test_active_notebook_is_stopped_when_the_timeout_expires(operator, namespace: str,
                                                                   fake_jupyter: FakeJupyter) -> None:
    client = operator.client
    started = time.monotonic()
    fake_jupyter.last_activity = dt.datetime.now(dt.UTC)  # active just now
    reader = DirectJupyterStatusReader(fake_jupyter.url)
    use_reader(operator, reader)
    await client.create(NOTEBOOKS, notebook("busy", namespace, idleTimeout="4s"))
    await eventually(lambda: _serving_reason(client, "busy", namespace, "Available"), timeout=30)
    assert reader.calls, "checked as soon as the Pod is ready"
    # No event arrives in between: the reconciler's own requeue comes back when the timeout expires.
    obj = await eventually(lambda: _serving_reason(client, "busy", namespace, "Idle"), timeout=30)
    assert obj["spec"]["suspend"] is False and obj["metadata"]["generation"] == 1
    assert time.monotonic() - started >= 3.5, "not before the last activity is idleTimeout old"
    assert len(reader.calls) >= 2
    await eventually(lambda: gone(client, PODS, "busy-notebook", namespace), timeout=30)


async def test_unreachable_jupyter_never_suspends(operator, namespace: str) -> None:
    client = operator.client
    reader = DirectJupyterStatusReader("http://127.0.0.1:9")  # nothing listens on the discard port
    use_reader(operator, reader)
    await client.create(NOTEBOOKS, notebook("lost", namespace, idleTimeout="1s"))
    await eventually(lambda: _serving_reason(client, "lost", namespace, "Available"), timeout=30)
    await eventually(lambda: len(reader.calls) >= 3, timeout=10)  # retried on its own, every timeout
    obj = await get_obj(client, NOTEBOOKS, "lost", namespace)
    assert obj["spec"]["suspend"] is False and condition(obj, "Serving")["reason"] == "Available"
    assert await client.get_or_none(PODS, "lost-notebook", namespace) is not None


async def test_idle_timeout_validation(operator, namespace: str) -> None:
    client = operator.client
    with pytest.raises(Invalid) as err:
        await client.create(NOTEBOOKS, notebook("garbage", namespace, idleTimeout="soon"))
    assert err.value.status == 422 and "idleTimeout" in err.value.message
    # Matches the schema's pattern but means nothing: the controller's InvalidSpec.
    await client.create(NOTEBOOKS, notebook("zero", namespace, idleTimeout="0s"))
    obj = await eventually(lambda: _serving_reason(client, "zero", namespace, "InvalidSpec"), timeout=30)
    assert "spec.idleTimeout" in condition(obj, "Serving")["message"]
    assert await client.get_or_none(PODS, "zero-notebook", namespace) is None


async def test_converged_notebooks_resync_with_zero_writes(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(NOTEBOOKS, notebook("run", namespace, model={"name": "opt"}))
    await client.create(NOTEBOOKS, notebook("sleep", namespace, suspend=True))
    await eventually(lambda: _serving_reason(client, "run", namespace, "Available"), timeout=30)
    await eventually(lambda: _serving_reason(client, "sleep", namespace, "Suspended"), timeout=30)
    assert await writes_on_resync(operator) == 0, "a converged reconcile must not write"


def test_parse_jupyter_status() -> None:
    s = parse_jupyter_status({"last_activity": "2024-05-01T10:00:00.123456Z", "connections": 2, "kernels": 1})
    assert s.last_activity == dt.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert (s.connections, s.kernels) == (2, 1)
    for bad in ({}, {"last_activity": "yesterday"}, ["not", "a", "dict"], "<html>login</html>"):
        with pytest.raises(JupyterUnreachable):
            parse_jupyter_status(bad)


# --- helpers ------------------------------------------------------------------------------------


async def _serving_reason(client, name: str, ns: str, reason: str) -> dict[str, Any] | None:
    obj = await get_obj(client, NOTEBOOKS, name, ns)
    c = condition(obj, "Serving")
    return obj if c and c["reason"] == reason else None


async def _events(client, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in (await client.list(EVENTS, ns))["items"]
            if e["involvedObject"]["name"] == name and e["reason"] == reason]




# --- issue 20 #8: the token Secret and the running Jupyter always agree -------------------------


class JupyterPerPod:
    """TEST DOUBLE at the pod-proxy boundary that behaves like the Jupyter *in* each Pod: the
    kubelet resolved ``JUPYTER_TOKEN`` from the Secret when that Pod's container started, so each
    Pod (by uid) accepts only the token the Secret held then, and answers 403 to any other."""

    def __init__(self, client: Any, last_activity: dt.datetime) -> None:
        self.client = client
        self.last_activity = last_activity
        self.started_with: dict[str, str] = {}
        self.answers: list[tuple[str, int]] = []  # (pod uid, HTTP status)

    async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
        uid = (await self.client.get(PODS, pod, namespace))["metadata"]["uid"]
        if uid not in self.started_with:
            secret = await self.client.get(SECRETS, f"{pod}-token", namespace)
            self.started_with[uid] = base64.b64decode(secret["data"]["token"]).decode()
        ok = token == self.started_with[uid]
        self.answers.append((uid, 200 if ok else 403))
        if not ok:
            raise JupyterUnreachable("HTTP 403", "HTTP 403: the token was rejected")
        return JupyterStatus(last_activity=self.last_activity)


async def test_deleted_token_secret_rolls_the_pod_so_jupyter_and_secret_agree(operator, namespace: str) -> None:
    client = operator.client
    jupyter = JupyterPerPod(client, dt.datetime.now(dt.UTC))
    use_reader(operator, jupyter)
    await client.create(NOTEBOOKS, notebook("tok", namespace, idleTimeout="1h"))
    await eventually(lambda: _serving_reason(client, "tok", namespace, "Available"), timeout=30)
    first = await client.get(PODS, "tok-notebook", namespace)
    await eventually(lambda: (first["metadata"]["uid"], 200) in jupyter.answers, timeout=10)
    old_token = jupyter.started_with[first["metadata"]["uid"]]

    await client.delete(SECRETS, "tok-notebook-token", namespace)

    async def agreed() -> dict[str, Any] | None:
        pod = await client.get_or_none(PODS, "tok-notebook", namespace)
        if pod is None or pod["metadata"]["uid"] == first["metadata"]["uid"]:
            return None
        return pod if (pod["metadata"]["uid"], 200) in jupyter.answers else None

    pod = await eventually(agreed, timeout=45)
    secret = await client.get(SECRETS, "tok-notebook-token", namespace)
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token != old_token and jupyter.started_with[pod["metadata"]["uid"]] == token
    assert pod["metadata"]["annotations"]["substratus.ai/token-sha256"] == token_digest(token)
    assert not [a for a in jupyter.answers if a[1] == 403], "the idle check never met a Jupyter with another token"
    obj = await eventually(lambda: _serving_reason(client, "tok", namespace, "Available"), timeout=30)
    assert "not enforced" not in condition(obj, "Serving")["message"]


async def test_idle_check_that_cannot_authenticate_is_visible(operator, namespace: str) -> None:
    class Rejecting:
        calls = 0

        async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
            Rejecting.calls += 1
            raise JupyterUnreachable(f"GET /api/v1/.../proxy/api/status?token={token}: 403",
                                     "HTTP 403: the token was rejected")

    use_reader(operator, Rejecting())
    await client_create_and_wait(operator, namespace, "deaf")
    client = operator.client

    async def not_enforced() -> dict[str, Any] | None:
        obj = await _serving_reason(client, "deaf", namespace, "Available")
        return obj if obj and "idleTimeout is not enforced" in condition(obj, "Serving")["message"] else None

    obj = await eventually(not_enforced, timeout=30)
    message = condition(obj, "Serving")["message"]
    assert "HTTP 403: the token was rejected" in message and "token=" not in message
    assert obj["spec"]["suspend"] is False and obj["status"]["ready"] is True
    events = await eventually(lambda: _events(client, namespace, "deaf", "IdleCheckFailed"), timeout=10)
    assert events[0]["type"] == "Warning" and "HTTP 403" in events[0]["message"]
    assert len(events) == 1 and events[0].get("count", 1) == 1, "once per failing streak, not per retry"


async def client_create_and_wait(operator, namespace: str, name: str) -> None:
    await operator.client.create(NOTEBOOKS, notebook(name, namespace, idleTimeout="1h"))
    await eventually(lambda: _serving_reason(operator.client, name, namespace, "Available"), timeout=30)
