"""The local control plane is a real Kubernetes API: CRDs, status subresource, watches, 410s, kubectl."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from substratus.testing.controlplane import ControlPlane, ControlPlaneNotInstalled, find_binaries

GROUP = "test.substratus.ai"
VERSION = "v1"
MERGE = "application/merge-patch+json"
CEL_RULE = "self.size <= 10"


def _crd(kind: str, plural: str) -> dict[str, Any]:
    """A tiny structural CRD with a status subresource and a CEL rule (which 1.20 does not know)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-validations": [{"rule": CEL_RULE, "message": "size must be <= 10"}],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0},
                                "color": {"type": "string"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "observedGeneration": {"type": "integer"},
                            },
                        },
                    },
                }},
            }],
        },
    }


WIDGETS = _crd("Widget", "widgets")  # applied with kubectl
GADGETS = _crd("Gadget", "gadgets")  # created with kubernetes-asyncio


async def _wait_established(ext: client.ApiextensionsV1Api, name: str) -> dict[str, Any]:
    for _ in range(200):
        crd = await ext.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return crd
        await asyncio.sleep(0.05)
    raise AssertionError(f"CRD {name} not established")


@pytest.fixture
async def crds(api_client: ApiClient, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Both test CRDs installed and established (idempotent across tests and sessions)."""
    # kubectl >= 1.25 validates the CRD against the 1.20 server's OpenAPI, which has no
    # x-kubernetes-validations: hence --validate=false.
    kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(WIDGETS))
    ext = client.ApiextensionsV1Api(api_client)
    try:
        await ext.create_custom_resource_definition(copy.deepcopy(GADGETS))
    except ApiException as e:
        if e.status != 409:
            raise
    await _wait_established(ext, WIDGETS["metadata"]["name"])
    await _wait_established(ext, GADGETS["metadata"]["name"])
    # The REST mapping for a just-established CRD can take a moment to be served.
    custom = client.CustomObjectsApi(api_client)
    for _ in range(100):
        try:
            await custom.list_cluster_custom_object(GROUP, VERSION, "gadgets")
            await custom.list_cluster_custom_object(GROUP, VERSION, "widgets")
            return
        except ApiException as e:
            if e.status != 404:
                raise
            await asyncio.sleep(0.1)


def test_missing_binaries_error_names_install_script(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneNotInstalled, match=r"hack/install-controlplane\.sh"):
        find_binaries(tmp_path)


async def test_server_is_a_real_kube_apiserver_on_loopback(local_controlplane: ControlPlane,
                                                            api_client: ApiClient) -> None:
    # Whatever its version (1.20.2 by default, any via SUBSTRATUS_KUBE_APISERVER: see
    # test_launcher_versions.py), it is the binary the launcher started.
    version = await client.VersionApi(api_client).get_code()
    assert version.git_version.startswith(f"{local_controlplane.version}")
    assert local_controlplane.server_url.startswith("https://127.0.0.1:")
    assert local_controlplane.ca_path.is_file()


async def test_crd_objects_round_trip(crds: None, api_client: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    for plural, kind in (("widgets", "Widget"), ("gadgets", "Gadget")):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": "one", "labels": {"app": "x"}},
            "spec": {"size": 3, "color": "blue", "unknownField": "pruned"},
        }
        created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
        got = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, "one")
        # Structural schemas prune unknown fields: proof that the server really applies the schema.
        assert got["spec"] == {"size": 3, "color": "blue"}
        assert got["metadata"]["labels"] == {"app": "x"}
        listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        assert [i["metadata"]["name"] for i in listed["items"]] == ["one"]
        # OpenAPI validation (minimum: 0) is enforced.
        bad = {**body, "metadata": {"name": "bad"}, "spec": {"size": -1}}
        with pytest.raises(ApiException) as exc:
            await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, bad)
        assert exc.value.status == 422


async def test_cel_rule_is_kept_exactly_where_it_is_enforced(crds: None, api_client: ApiClient,
                                                             namespace: str) -> None:
    """A server without CEL (1.20) drops x-kubernetes-validations and enforces nothing; one with
    CEL keeps the rule and rejects at admission. Either way the stored CRD says which, so it is the
    capability probe the other tests use (substratus.install.crd_enforces_cel)."""
    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    for crd_name in ("widgets", "gadgets"):
        stored = await ext.read_custom_resource_definition(f"{crd_name}.{GROUP}", _preload_content=False)
        raw = json.loads(await stored.read())
        spec_schema = raw["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        big = {"apiVersion": f"{GROUP}/{VERSION}", "kind": crd_name[:-1].capitalize(),
               "metadata": {"name": "big"}, "spec": {"size": 11}}
        if "x-kubernetes-validations" not in spec_schema:
            created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, crd_name, big)
            assert created["spec"]["size"] == 11
        else:
            assert spec_schema["x-kubernetes-validations"][0]["rule"] == CEL_RULE
            with pytest.raises(ApiException) as exc:
                await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, crd_name, big)
            assert exc.value.status == 422 and "size must be <= 10" in json.loads(exc.value.body)["message"]


async def test_status_subresource_and_generation(crds: None, api_client: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    obj = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)
    assert obj["metadata"]["generation"] == 1

    # A status write goes through /status and does not bump the generation.
    obj = await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "widgets", "w", {"status": {"phase": "Ready", "observedGeneration": 1}},
        _content_type=MERGE)
    assert obj["status"] == {"phase": "Ready", "observedGeneration": 1}
    assert obj["metadata"]["generation"] == 1

    # A spec change bumps the generation; status sent to the main resource is ignored.
    obj = await custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "widgets", "w", {"spec": {"size": 2}, "status": {"phase": "Hacked"}},
        _content_type=MERGE)
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["phase"] == "Ready"

    # Metadata-only changes don't bump it either.
    obj = await custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "widgets", "w", {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE)
    assert obj["metadata"]["generation"] == 2


async def test_watch_sees_added_modified_deleted(crds: None, api_client: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "gadgets")
    rv = listed["metadata"]["resourceVersion"]
    events: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def consume() -> None:
        async with watch.Watch() as w:
            async for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "gadgets",
                                     resource_version=rv, timeout_seconds=30):
                events.append((ev["type"], ev["object"]["metadata"]["name"]))
                if ev["type"] == "DELETED":
                    done.set()
                    return

    task = asyncio.create_task(consume())
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}}
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "gadgets", body)
    await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "gadgets", "g", {"spec": {"size": 2}},
                                                _content_type=MERGE)
    await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "gadgets", "g")
    await asyncio.wait_for(done.wait(), 20)
    await task
    assert events == [("ADDED", "g"), ("MODIFIED", "g"), ("DELETED", "g")]


async def test_builtin_kinds_can_be_created(api_client: ApiClient, namespace: str) -> None:
    labels = {"app": "demo"}
    pod_spec = {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}], "restartPolicy": "Never"}
    job = await client.BatchV1Api(api_client).create_namespaced_job(namespace, {
        "metadata": {"name": "job"}, "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}}})
    assert job.spec.template.spec.containers[0].image == "busybox"
    dep = await client.AppsV1Api(api_client).create_namespaced_deployment(namespace, {
        "metadata": {"name": "dep"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": "nginx"}]}}}})
    assert dep.metadata.generation == 1
    core = client.CoreV1Api(api_client)
    svc = await core.create_namespaced_service(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}})
    assert svc.spec.cluster_ip.startswith("10.0.0.")
    # Server-side apply works (1.20 needs the port's protocol set explicitly).
    applied = await core.patch_namespaced_service("svc2", namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc2"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }, field_manager="substratus-test", _content_type="application/apply-patch+yaml")
    assert applied.spec.ports[0].port == 80
    lease = await client.CoordinationV1Api(api_client).create_namespaced_lease(namespace, {
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}})
    assert lease.spec.holder_identity == "me"


async def test_rbac_is_enforced(api_client: ApiClient, namespace: str, kubeconfig: Path) -> None:
    """RBAC is on: a service account token without bindings is forbidden."""
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = await core.create_namespaced_service_account_token("nobody", namespace, {"spec": {}})
    cfg = yaml.safe_load(await asyncio.to_thread(kubeconfig.read_text))
    cfg["users"][0]["user"] = {"token": token.status.token}
    api = await config.new_client_from_config_dict(cfg)
    try:
        with pytest.raises(ApiException) as exc:
            await client.CoreV1Api(api).list_namespaced_pod(namespace)
        assert exc.value.status == 403
    finally:
        await api.close()


async def test_compaction_makes_stale_watch_gone(local_controlplane: ControlPlane, crds: None,
                                                 api_client: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "c"}, "spec": {"size": 1}}
    created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)
    stale_rv = created["metadata"]["resourceVersion"]
    for size in range(2, 5):
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "c", {"spec": {"size": size}},
                                                    _content_type=MERGE)
    # Before compaction the old revision is still watchable.
    async with watch.Watch() as w:
        async for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "widgets",
                                 resource_version=stale_rv, timeout_seconds=5):
            assert ev["type"] == "MODIFIED"
            break

    revision = await asyncio.to_thread(local_controlplane.compact)
    assert revision >= int(stale_rv)
    with pytest.raises(ApiException) as exc:
        async with watch.Watch() as w:
            async for _ in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "widgets",
                                    resource_version=stale_rv, timeout_seconds=5):
                pass
    assert exc.value.status == 410

    # A fresh list + watch from the current resourceVersion still works.
    listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "widgets")
    async with watch.Watch() as w:
        stream = w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "widgets",
                          resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=10)
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "c", {"spec": {"size": 9}},
                                                    _content_type=MERGE)
        async for ev in stream:
            assert ev["type"] == "MODIFIED" and ev["object"]["spec"]["size"] == 9
            break


def test_kubectl_get_namespaces(kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str) -> None:
    out = kubectl("get", "ns", "-o", "name").stdout.split()
    assert "namespace/default" in out
    assert f"namespace/{namespace}" in out


async def test_restart_apiserver_keeps_data(local_controlplane: ControlPlane, kubeconfig: Path, namespace: str,
                                            api_client: ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "keep"}, "data": {"k": "v"}})
    old_pid = local_controlplane.apiserver_pid
    await asyncio.to_thread(local_controlplane.restart_apiserver)
    assert local_controlplane.apiserver_pid not in (None, old_pid)
    fresh = await config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    try:
        cm = await client.CoreV1Api(fresh).read_namespaced_config_map("keep", namespace)
        assert cm.data == {"k": "v"}
    finally:
        await fresh.close()

    # The old client recovers too: aiohttp may surface a dropped keep-alive connection once.
    for attempt in range(3):
        try:
            cm = await core.read_namespaced_config_map("keep", namespace)
            break
        except aiohttp.ClientError:
            if attempt == 2:
                raise
    assert cm.data == {"k": "v"}


def test_cli_up_and_down(local_controlplane: ControlPlane, tmp_path: Path) -> None:
    """`python -m substratus.testing.controlplane up --dir DIR` runs in the foreground until SIGTERM."""
    work = tmp_path / "cp"
    proc = subprocess.Popen([sys.executable, "-m", "substratus.testing.controlplane", "up", "--dir", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"export KUBECONFIG={work / 'kubeconfig'}", proc.stderr.read() if proc.stderr else ""
        state = json.loads((work / "controlplane.json").read_text())
        assert (work / "controlplane.pid").read_text().strip() == str(proc.pid)
        out = subprocess.run(["kubectl", f"--kubeconfig={work / 'kubeconfig'}", "get", "ns", "default", "-o", "name"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "namespace/default", out.stderr
        down = subprocess.run([sys.executable, "-m", "substratus.testing.controlplane", "down", "--dir", str(work)],
                              timeout=60)
        assert down.returncode == 0
        assert proc.wait(timeout=30) == 0
        for pid in (state["apiserverPid"], state["etcdPid"]):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not (work / "controlplane.pid").exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
