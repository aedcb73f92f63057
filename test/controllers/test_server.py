"""Server reconciler end to end: real API server, local cloud, cluster simulator."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import condition, create_secret, event_reasons, get_obj, gone, writes_on_resync

from substratus import naming
from substratus.controllers.resources import MODELS, SERVERS
from substratus.controllers.server import deployment_state
from substratus.install import crd_enforces_cel
from substratus.runtime.client import Invalid
from substratus.runtime.resource import CONFIGMAPS, DEPLOYMENTS, JOBS, SERVICES
from substratus.testing.simulator import OUTCOME_ANNOTATION
from substratus.testing.wait import eventually


def model(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/model-loader:v1"}, **spec}}


def server(name: str, ns: str, model_name: str = "opt", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": "Server", "metadata": {"name": name, "namespace": ns},
            "spec": {"image": {"name": "substratusai/basaran:v1"}, "model": {"name": model_name}, **spec}}


def serving(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    return condition(obj, "Serving")


async def _serving_reason(client, name: str, ns: str, reason: str) -> dict[str, Any] | None:
    obj = await get_obj(client, SERVERS, name, ns)
    c = serving(obj)
    return obj if c and c["reason"] == reason else None


async def test_server_waits_for_model_then_serves(operator, namespace: str) -> None:
    client = operator.client
    await client.create(SERVERS, server("chat", namespace, params={"max_tokens": 64}, env={"LOG_LEVEL": "debug"}))

    obj = await eventually(lambda: _serving_reason(client, "chat", namespace, "WaitingForDependency"), timeout=30)
    assert f"Model {namespace}/opt" in serving(obj)["message"] and "not found" in serving(obj)["message"]
    assert obj["status"]["ready"] is False
    assert operator.manager.cache.get(DEPLOYMENTS, "chat-server", namespace) is None, "nothing before the Model"

    # Creating the Model wakes the Server through the depends-on index (no polling).
    await client.create(MODELS, model("opt", namespace))
    obj = await eventually(lambda: _serving_reason(client, "chat", namespace, "Available"), timeout=30)
    assert obj["status"]["ready"] is True
    assert obj["status"]["url"] == f"http://chat-server.{namespace}.svc.cluster.local:8080"
    assert f"http://chat-server.{namespace}.svc.cluster.local:8080" in serving(obj)["message"]
    assert condition(obj, "Built")["reason"] == "ImageProvided"

    dep = await client.get(DEPLOYMENTS, "chat-server", namespace)
    labels = {"app.kubernetes.io/managed-by": "substratus", "substratus.ai/server": "chat",
              "substratus.ai/role": "workload"}
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"] == labels
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["labels"] == labels
    pod = tmpl["spec"]
    assert pod["restartPolicy"] == "Always"
    c = pod["containers"][0]
    assert c["image"] == "substratusai/basaran:v1" and "command" not in c, "the image's own command"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/", "port": "http", "scheme": "HTTP"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PARAM_MAX_TOKENS"] == "64" and env["LOG_LEVEL"] == "debug"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/content/model"]["readOnly"] is True
    assert mounts["/content/params.json"]["readOnly"] is True
    assert "/content/output" not in mounts
    model_url = f"{operator.cloud.bucket_url}/{naming.storage_hash('test-cluster', namespace, 'models', 'opt')}"
    vol = next(v for v in pod["volumes"] if v["name"] == mounts["/content/model"]["name"])
    assert vol["hostPath"]["path"] == model_url.removeprefix("file://") + "/model"
    ref = dep["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "Server" and ref["name"] == "chat" and ref["controller"] and ref["blockOwnerDeletion"]

    svc = await client.get(SERVICES, "chat-server", namespace)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == labels
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"], port["name"]) == (8080, 8080, "TCP", "http")
    assert svc["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    cm = await client.get(CONFIGMAPS, "chat-server-params", namespace)
    assert '"max_tokens": 64' in cm["data"]["params.json"]

    reasons = await eventually(lambda: event_reasons(client, namespace, "chat"))
    assert {"WaitingForDependency", "Available"} <= reasons

    # Deleting the Server removes its children (owner references; the simulator is the GC).
    await client.delete(SERVERS, "chat", namespace)
    for res in (DEPLOYMENTS, SERVICES, CONFIGMAPS):
        name = "chat-server-params" if res is CONFIGMAPS else "chat-server"
        await eventually(lambda res=res, name=name: gone(client, res, name, namespace), timeout=30)


async def test_model_url_change_rolls_the_deployment(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, server("roll", namespace))
    await eventually(lambda: _serving_reason(client, "roll", namespace, "Available"), timeout=30)
    before = await client.get(DEPLOYMENTS, "roll-server", namespace)
    assert before["metadata"]["generation"] == 1

    # Our Model controller derives status.url from the object's identity and would put it back
    # at once; pause it so the moved URL stays, as if the Model had been restored elsewhere.
    model_ctl = next(c for c in operator.manager.controllers if c.name == "model")
    await model_ctl.stop()
    moved = f"{operator.cloud.bucket_url}/{'0' * 32}"
    # (The Model controller writes url and artifactsURL together; dependents mount the latter.)
    await client.patch_status(MODELS, "opt", {"status": {"url": moved, "artifactsURL": f"{moved}/model"}}, namespace)

    async def rolled() -> dict[str, Any] | None:
        d = await client.get(DEPLOYMENTS, "roll-server", namespace)
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        return d if vols["model"]["hostPath"]["path"] == moved.removeprefix("file://") + "/model" else None

    after = await eventually(rolled, timeout=30)
    assert after["metadata"]["generation"] == 2, "the template changed: a new rollout"
    assert after["metadata"]["uid"] == before["metadata"]["uid"], "updated in place, not recreated"
    # Serving again once the (simulated) Deployment controller has rolled out generation 2. The
    # Server's status lags the apply by one write (it still reads Available from before the roll
    # until its Deploying lands), so wait for the rolled-out Deployment *and* an Available Server.
    async def served_after_roll() -> dict[str, Any] | None:
        d = await client.get(DEPLOYMENTS, "roll-server", namespace)
        if (d.get("status") or {}).get("observedGeneration") != 2:
            return None
        return await _serving_reason(client, "roll", namespace, "Available")

    obj = await eventually(served_after_roll, timeout=30)
    assert serving(obj)["observedGeneration"] == 1  # the Server's own generation did not change
    d = await client.get(DEPLOYMENTS, "roll-server", namespace)
    assert d["status"]["observedGeneration"] == 2
    assert deployment_state(d)[0], "the Server is Available only on a rolled-out Deployment"


async def test_unavailable_deployment_is_deploying(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, server("slow", namespace))
    await eventually(lambda: _serving_reason(client, "slow", namespace, "Available"), timeout=30)

    # The Pod stops being available (the simulator's "hold": no ready replicas).
    await client.patch(DEPLOYMENTS, "slow-server", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "hold"}}},
                       namespace)
    # (A Deployment's generation counts annotation changes too: first "rolling out generation 2".)
    async def unavailable() -> dict[str, Any] | None:
        obj = await _serving_reason(client, "slow", namespace, "Deploying")
        return obj if obj and "0/1 replicas available" in serving(obj)["message"] else None

    obj = await eventually(unavailable, timeout=30)
    assert obj["status"]["ready"] is False
    # The hand-added annotation is not ours to remove.
    d = await client.get(DEPLOYMENTS, "slow-server", namespace)
    assert d["metadata"]["annotations"][OUTCOME_ANNOTATION] == "hold"

    await client.patch(DEPLOYMENTS, "slow-server", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "succeed"}}},
                       namespace)
    obj = await eventually(lambda: _serving_reason(client, "slow", namespace, "Available"), timeout=30)
    assert obj["status"]["ready"] is True


async def test_params_change_updates_deployment_and_removes_old_env(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, server("tune", namespace, params={"a": 1, "b": 2}))
    await eventually(lambda: _serving_reason(client, "tune", namespace, "Available"), timeout=30)
    await client.patch(SERVERS, "tune", {"spec": {"params": {"a": 3, "b": None}}}, namespace)

    async def updated() -> dict[str, Any] | None:
        d = await client.get(DEPLOYMENTS, "tune-server", namespace)
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        return d if env == {"PARAM_A": "3"} else None

    d = await eventually(updated, timeout=30)
    assert d["metadata"]["generation"] == 2
    cm = await client.get(CONFIGMAPS, "tune-server-params", namespace)
    assert '"b"' not in cm["data"]["params.json"]
    await eventually(lambda: _serving_reason(client, "tune", namespace, "Available"), timeout=30)


async def test_server_image_from_git_build(operator, namespace: str) -> None:
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, {**server("built", namespace),
                                  "spec": {"image": {"git": {"url": "https://github.com/org/serve", "tag": "v2"}},
                                           "model": {"name": "opt"}}})
    job = await eventually(lambda: operator.manager.cache.get(JOBS, "built-server-bld", namespace), timeout=30)
    repo = f"registry.test:5000/test-cluster-server-{namespace}-built"
    assert job["metadata"]["annotations"]["substratus.ai/image"] == repo
    obj = await eventually(lambda: _serving_reason(client, "built", namespace, "Available"), timeout=30)
    expected = obj["status"]["image"]
    assert expected.startswith(f"{repo}@sha256:") and "name" not in obj["spec"]["image"]
    assert condition(obj, "Built")["reason"] == "BuildSucceeded"
    dep = await client.get(DEPLOYMENTS, "built-server", namespace)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == expected


async def test_server_without_model_is_rejected_by_the_schema(operator, namespace: str) -> None:
    body = server("nomodel", namespace)
    del body["spec"]["model"]
    with pytest.raises(Invalid) as err:
        await operator.client.create(SERVERS, body)
    assert err.value.status == 422 and "model" in err.value.message


async def test_server_name_too_long_is_rejected_or_invalid_spec(operator, namespace: str) -> None:
    client = operator.client
    name = "s" * 51
    await client.create(MODELS, model("opt", namespace))
    if await crd_enforces_cel(client, "servers.substratus.ai"):
        # The CRD's CEL rule rejects it at admission (SPEC §2): nothing is stored.
        with pytest.raises(Invalid) as err:
            await client.create(SERVERS, server(name, namespace))
        assert err.value.status == 422 and "metadata.name must be at most 50" in err.value.message
        return
    # A server without CEL (1.20) stores it; the controller must not act on it.
    await client.create(SERVERS, server(name, namespace))
    obj = await eventually(lambda: _serving_reason(client, name, namespace, "InvalidSpec"), timeout=30)
    assert "metadata.name" in serving(obj)["message"]
    assert obj["status"]["ready"] is False
    assert not [d for d in (await client.list(DEPLOYMENTS, namespace))["items"]], "no children"


async def test_converged_servers_resync_with_zero_writes(operator, namespace: str) -> None:
    client = operator.client
    await create_secret(client, namespace)
    await client.create(MODELS, model("opt", namespace))
    for i in range(2):
        await client.create(SERVERS, server(f"steady-{i}", namespace, params={"i": i},
                                            env={"TOKEN": "${{ secrets.hf.token }}"}))
    for i in range(2):
        await eventually(lambda i=i: _serving_reason(client, f"steady-{i}", namespace, "Available"), timeout=30)
    assert await writes_on_resync(operator) == 0, "a converged reconcile must not write"


async def test_env_that_a_param_also_sets_is_invalid_spec(operator, namespace: str) -> None:
    """Two sources for one variable: the API server refuses duplicate env names (a 500 on every
    apply), so the controller says which field to fix and creates nothing (SPEC §1)."""
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, server("dup", namespace, params={"max_tokens": 256},
                                        env={"PARAM_MAX_TOKENS": "512", "LOG_LEVEL": "debug"}))
    obj = await eventually(lambda: _serving_reason(client, "dup", namespace, "InvalidSpec"), timeout=30)
    message = serving(obj)["message"]
    assert "spec.env.PARAM_MAX_TOKENS" in message and "spec.params.max_tokens" in message, message
    assert obj["status"]["ready"] is False
    for res in (DEPLOYMENTS, SERVICES, CONFIGMAPS):
        assert await client.get_or_none(res, "dup-server" + ("-params" if res is CONFIGMAPS else ""),
                                        namespace) is None, f"no {res.kind}"
    assert "InvalidSpec" in await eventually(lambda: event_reasons(client, namespace, "dup"))


async def test_gpu_server_recreates_and_reports_its_url(operator, namespace: str) -> None:
    """SPEC §4: a Server requesting GPUs rolls out with Recreate (a one-GPU Deployment must
    never need a second GPU to roll); status.url is its in-cluster URL. Switching GPUs off and on
    again changes the strategy on the live Deployment (the API server refuses a leftover
    rollingUpdate next to Recreate)."""
    client = operator.client
    await client.create(MODELS, model("opt", namespace))
    await client.create(SERVERS, server("gpu", namespace, resources={"gpu": {"type": "nvidia-l4", "count": 1}}))
    obj = await eventually(lambda: _serving_reason(client, "gpu", namespace, "Available"), timeout=30)
    assert obj["status"]["url"] == f"http://gpu-server.{namespace}.svc.cluster.local:8080"
    dep = await client.get(DEPLOYMENTS, "gpu-server", namespace)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    limits = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"

    async def strategy(want: str, generation: int) -> dict[str, Any] | None:
        d = await client.get(DEPLOYMENTS, "gpu-server", namespace)
        s = await _serving_reason(client, "gpu", namespace, "Available")
        ok = d["spec"]["strategy"]["type"] == want and s and s["status"]["conditions"] and all(
            c["observedGeneration"] == generation for c in s["status"]["conditions"])
        return d if ok else None

    # GPUs off: back to a rolling update (the new Pod is ready before the old one stops).
    await client.patch(SERVERS, "gpu", {"spec": {"resources": {"gpu": None}}}, namespace)
    dep = await eventually(lambda: strategy("RollingUpdate", 2), timeout=30)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "nvidia.com/gpu" not in dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    # And on again: the live rollingUpdate must go, or the API server rejects the apply.
    await client.patch(SERVERS, "gpu", {"spec": {"resources": {"gpu": {"type": "nvidia-l4", "count": 2}}}}, namespace)
    dep = await eventually(lambda: strategy("Recreate", 3), timeout=30)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}

    # A Server without GPUs from the start: a rolling update, and its URL.
    await client.create(SERVERS, server("cpu", namespace))
    obj = await eventually(lambda: _serving_reason(client, "cpu", namespace, "Available"), timeout=30)
    assert obj["status"]["url"] == f"http://cpu-server.{namespace}.svc.cluster.local:8080"
    dep = await client.get(DEPLOYMENTS, "cpu-server", namespace)
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"


def test_deployment_state() -> None:
    def dep(gen: int, **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "d", "generation": gen}, "spec": {"replicas": 1}, "status": status}

    assert deployment_state(None) == (False, "waiting for the Deployment to be created")
    assert deployment_state(dep(2, observedGeneration=1, updatedReplicas=1, availableReplicas=1)) == (
        False, "Deployment d: rolling out generation 2")
    assert deployment_state(dep(2, observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1))[0]
    # The old ReplicaSet is still the available one: not yet.
    assert deployment_state(dep(2, observedGeneration=2, replicas=1, updatedReplicas=0, availableReplicas=1))[0] \
        is False
    # RollingUpdate with a new Pod that never becomes available (ImagePullBackOff) behind the old,
    # serving one: updatedReplicas already equals the wanted 1, but the rollout is not done (the
    # shape kube-controller-manager reports; `kubectl rollout status` keeps waiting, then fails).
    ok, message = deployment_state(dep(2, observedGeneration=2, replicas=2, updatedReplicas=1, readyReplicas=1,
                                       availableReplicas=1, unavailableReplicas=1))
    assert not ok and message == ("Deployment d: rollout not finished, 1/1 replicas updated, 1 available of 2; "
                                  "the previous version keeps serving (1 old replica)")
    ok, message = deployment_state(dep(2, observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1,
                                       conditions=[{"type": "Progressing", "status": "False",
                                                    "reason": "ProgressDeadlineExceeded",
                                                    "message": 'ReplicaSet "d-1" has timed out progressing.'}]))
    assert not ok and message.endswith('(1 old replica); ProgressDeadlineExceeded: ReplicaSet "d-1" has timed '
                                       'out progressing.')
    ok, message = deployment_state(dep(1, observedGeneration=1, updatedReplicas=1, availableReplicas=0, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]))
    assert not ok and message == ("Deployment d: 0/1 replicas available, 1/1 updated; "
                                  "ProgressDeadlineExceeded: timed out")


# --- helpers ------------------------------------------------------------------------------------


