"""Scenario 7: security.

* RBAC: the shipped ClusterRole (``manifests/rbac/role.yaml``) is applied under a test-unique
  name and bound to a ServiceAccount of the test's namespace. ``kubectl auth can-i --as`` that
  ServiceAccount: what the operator needs is allowed, what it does not need is denied. Then an
  operator runs *as* that ServiceAccount (the fault proxy impersonates it) and converges a
  Model and a Dataset without a single 403 — the role is sufficient, not just small.
* Signed upload URLs over real HTTP (the local cloud's ``UploadServer``): tampering with any
  signed part, expiry, a wrong checksum, a wrong content type, path traversal — all rejected,
  and nothing stored; then the operator's own endpoint end to end: a tampered and a wrong-body
  upload leave the Dataset ``AwaitingUpload``, the right one builds and converges.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
import yarl
from reliability_helpers import condition, dataset, hf_secret, model, notebook, server, wait_ready

from substratus.cloud.local import TMP_PREFIX, LocalCloud
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.runtime.resource import DEPLOYMENTS, JOBS, PODS, SECRETS, SERVICES
from substratus.testing.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
RBAC_DIR = ROOT / "manifests" / "rbac"
UPLOAD_CONTENT_TYPE = "application/octet-stream"


def shipped_rbac() -> list[dict[str, Any]]:
    docs = []
    for f in sorted(RBAC_DIR.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") in
                 ("ClusterRole", "Role")]
    return docs


@pytest.fixture
def operator_sa(kubectl, namespace: str):
    """The shipped ClusterRole (and leader-election Role) bound to ``{namespace}:substratus``."""
    if not RBAC_DIR.is_dir() or not shipped_rbac():
        pytest.skip("pending: manifests/rbac/ is not there yet")
    sa = f"system:serviceaccount:{namespace}:substratus"
    cluster_role = f"substratus-reltest-{namespace}"[:63]
    objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                                   "metadata": {"name": "substratus", "namespace": namespace}}]
    subject = [{"kind": "ServiceAccount", "name": "substratus", "namespace": namespace}]
    for role in shipped_rbac():
        if role["kind"] == "ClusterRole":
            objs.append({**role, "metadata": {"name": cluster_role}})
            objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                         "metadata": {"name": cluster_role}, "subjects": subject,
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                     "name": cluster_role}})
        else:  # the leader-election Role: same rules, in the test's namespace
            name = role["metadata"]["name"]
            objs.append({**role, "metadata": {"name": name, "namespace": namespace}})
            objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                         "metadata": {"name": name, "namespace": namespace}, "subjects": subject,
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    try:
        yield sa
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", cluster_role, "--ignore-not-found", check=False)


# (verb, resource, extra kubectl args): what the operator does, and what it must not be able to.
NEEDED = [
    ("list", "datasets.substratus.ai", ()), ("watch", "models.substratus.ai", ()),
    ("patch", "datasets.substratus.ai", ("--subresource=status",)),
    ("create", "jobs.batch", ()), ("delete", "jobs.batch", ()), ("create", "configmaps", ()),
    ("create", "events", ()), ("patch", "events", ()), ("create", "deployments.apps", ()),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/models.substratus.ai", ()),
    ("create", "leases.coordination.k8s.io", ()),
    ("update", "leases.coordination.k8s.io/substratus-leader", ()),
    ("get", "pods", ("--subresource=proxy",)), ("delete", "pods", ()), ("create", "secrets", ()),
    ("patch", "services", ()), ("patch", "notebooks.substratus.ai", ("--subresource=status",)),
    ("patch", "servers.substratus.ai", ("--subresource=status",)),
]
DENIED = [
    ("delete", "datasets.substratus.ai", ()), ("delete", "models.substratus.ai", ()),
    # The spec is the user's (SPEC §1): never patched, not even a Notebook's suspend (idleness is
    # recorded in status.idle).
    ("patch", "models.substratus.ai", ()), ("patch", "datasets.substratus.ai", ()),
    ("patch", "servers.substratus.ai", ()), ("patch", "notebooks.substratus.ai", ()),
    ("create", "models.substratus.ai", ()), ("update", "models.substratus.ai", ()),
    ("delete", "namespaces", ()), ("create", "clusterrolebindings.rbac.authorization.k8s.io", ()),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ()), ("bind", "clusterroles.rbac.authorization.k8s.io", ()),
    ("impersonate", "users", ()), ("create", "pods", ("--subresource=exec",)), ("get", "nodes", ()),
    ("create", "serviceaccounts", ("--subresource=token",)), ("delete", "events", ()),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/other.example.com", ()),
    ("update", "leases.coordination.k8s.io/someone-elses-lease", ()),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ()),
    ("delete", "configmaps", ()), ("delete", "secrets", ()), ("delete", "deployments.apps", ()),
    ("delete", "services", ()), ("update", "jobs.batch", ()), ("create", "pods", ("--subresource=eviction",)),
    # The leader-election Role is bound in the operator's namespace only.
    ("update", "leases.coordination.k8s.io/substratus-leader", ("--namespace=default",)),
    ("*", "*", ()),
]


def test_rbac_allows_what_the_operator_needs_and_denies_the_rest(crds, kubectl, operator_sa, namespace) -> None:
    def can(verb: str, resource: str, extra: tuple[str, ...]) -> bool:
        ns = () if any(x.startswith("--namespace=") for x in extra) else ("-n", namespace)
        proc = kubectl("auth", "can-i", verb, resource, *extra, *ns, f"--as={operator_sa}", check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"can-i {verb} {resource}: {proc.stderr}{proc.stdout}"
        return answer == "yes"

    missing = [f"{v} {r} {' '.join(x)}".strip() for v, r, x in NEEDED if not can(v, r, x)]
    excess = [f"{v} {r} {' '.join(x)}".strip() for v, r, x in DENIED if can(v, r, x)]
    assert missing == [], f"the operator needs: {missing}"
    assert excess == [], f"the operator must not be able to: {excess}"


def write_kind(method: str, path: str) -> tuple[str, str]:
    """("PATCH", "datasets/status") from ``PATCH /apis/.../namespaces/ns/datasets/name/status``."""
    m = re.search(r"/namespaces/[^/]+/([^/]+)(?:/[^/]+(/status)?)?$", path)
    return method, (m.group(1) + (m.group(2) or "")) if m else path


async def test_operator_converges_as_its_serviceaccount(operator_sa, make_proxy, start_operator, sim, admin,
                                                        namespace, tmp_path) -> None:
    """Every kind and every write path the operator has, with nothing but the shipped role."""
    ns = namespace
    proxy = await make_proxy("as-sa")
    proxy.impersonate = operator_sa
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"))
    await admin.create(SECRETS, hf_secret(ns), ns)  # what valid ${{ secrets.hf.token }} references need
    await admin.create(MODELS, model("base", ns))
    # A git build: a build Job, then the built image (pinned by digest) recorded in status.image.
    await admin.create(DATASETS, dataset("data", ns, env={"HF_TOKEN": "${{ secrets.hf.token }}"},
                                         image={"git": {"url": "https://github.com/org/loader", "branch": "main"}}))
    await admin.create(MODELS, model("tuned", ns, baseModel={"name": "base"}, trainingDataset={"name": "data"}))
    await admin.create(SERVERS, server("srv", ns, model={"name": "tuned"}))
    await admin.create(NOTEBOOKS, notebook("nb", ns, model={"name": "base"}, dataset={"name": "data"}))
    await wait_ready(admin, MODELS, ns, ["base", "tuned"], timeout=60)
    await wait_ready(admin, SERVERS, ns, ["srv"], timeout=60)
    await wait_ready(admin, NOTEBOOKS, ns, ["nb"], timeout=60)
    data = await admin.get(DATASETS, "data", ns)
    assert condition(data, "Built")["reason"] == "BuildSucceeded" and "@sha256:" in data["status"]["image"]
    assert "name" not in data["spec"]["image"]
    for res, name in ((DEPLOYMENTS, "srv-server"), (SERVICES, "srv-server"), (PODS, "nb-notebook")):
        assert await admin.get_or_none(res, name, ns) is not None, f"{res.plural}/{name}"
    # Suspending the Notebook deletes its Pod.
    await admin.patch(NOTEBOOKS, "nb", {"spec": {"suspend": True}}, ns)

    async def suspended() -> bool:
        c = condition(await admin.get(NOTEBOOKS, "nb", ns), "Serving")
        return bool(c and c["reason"] == "Suspended") and await admin.get_or_none(PODS, "nb-notebook", ns) is None

    await eventually(suspended, timeout=30)
    await eventually(op.queues_idle, timeout=10)
    forbidden = [(r.method, r.path) for r in proxy.records if r.upstream == 403]
    assert forbidden == [], f"the shipped role is missing permissions: {forbidden[:10]}"
    writes = {write_kind(r.method, r.path) for r in proxy.records if r.is_write and r.ok}
    for want in [("POST", "jobs"), ("PATCH", "configmaps"), ("PATCH", "deployments"), ("PATCH", "services"),
                 ("POST", "pods"), ("DELETE", "pods"), ("POST", "secrets"), ("POST", "events"),
                 *(("PATCH", f"{k}/status") for k in ("datasets", "models", "servers",
                                                                              "notebooks"))]:
        assert want in writes, f"{want} was never exercised: {sorted(writes)}"
    assert not op.task.done()


# --- signed upload URLs ---------------------------------------------------------------------------

def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _with_query(url: str, **changes: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))


def _flip(s: str) -> str:
    return s[:-1] + ("0" if s[-1] != "0" else "1")


async def test_signed_upload_urls_reject_tampering_expiry_and_wrong_checksums(tmp_path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    clock = Clock(1_800_000_000.0)
    cloud = LocalCloud(f"file://{bucket}", signing_key="k" * 32, upload_base_url="http://127.0.0.1:0",
                       clock=clock)
    server = cloud.upload_server()
    port = await server.start("127.0.0.1", 0)
    cloud.upload_base_url = f"http://127.0.0.1:{port}"
    body = b"build context " * 1000
    md5 = md5_hex(body)
    other = b"something else entirely"
    h = "f" * 32
    target = f"{cloud.bucket_url}/{h}/build/{md5}.tar.gz"
    signed = await cloud.signed_upload_url(target, 600, md5=md5)
    headers = dict(signed.headers)
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(signed.url).query))["sig"]
    other_path = signed.url.replace(f"/{md5}.tar.gz", f"/{md5_hex(other)}.tar.gz")
    no_md5_header = {"Content-Type": UPLOAD_CONTENT_TYPE}
    expired_clock = clock.t + 601

    # (label, url, body, headers, acceptable statuses, words the answer must contain)
    cases: list[tuple[str, str, bytes, dict[str, str], tuple[int, ...], str]] = [
        ("signature altered", _with_query(signed.url, sig=_flip(sig)), body, headers, (403,), "signature"),
        ("signature missing", _with_query(signed.url, sig=None), body, headers, (403,), "signature"),
        ("expiry extended", _with_query(signed.url, expires=str(int(clock.t) + 10**6)), body, headers, (403,),
         "signature"),
        ("checksum swapped", _with_query(signed.url, md5=md5_hex(other)), other,
         {**headers, "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex(other))).decode()}, (403,), "signature"),
        ("checksum dropped", _with_query(signed.url, md5=None), other, no_md5_header, (403,), "signature"),
        ("other object", other_path, other, no_md5_header, (403,), "signature"),
        ("wrong body", signed.url, other, no_md5_header, (400,), "md5"),
        ("Content-MD5 disagrees", signed.url, body,
         {**headers, "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex(other))).decode()}, (400,), "Content-MD5"),
        ("wrong content type", signed.url, body, {**headers, "Content-Type": "text/plain"}, (403,), "Content-Type"),
        # The server may normalise the dots before routing (404) or refuse the path (400).
        ("path traversal", signed.url.replace(f"/uploads/{h}/", "/uploads/../../../etc/"), body, headers, (400, 404),
         "invalid object path"),
        ("encoded traversal", signed.url.replace(f"/uploads/{h}/", "/uploads/%2e%2e/%2e%2e/"), body, headers, (400,),
         "invalid object path"),
    ]
    seen: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as http:
            async def put(url: str, data: bytes, hdrs: dict[str, str]) -> tuple[int, str]:
                # encoded=True: send the path exactly as written (no client-side dot normalisation).
                async with http.put(yarl.URL(url, encoded=True), data=data, headers=hdrs) as r:
                    return r.status, await r.text()

            for label, url, data, hdrs, want, words in cases:
                status, text = await put(url, data, hdrs)
                seen[label] = status
                assert status in want, (label, status, text)
                assert status == 404 or words.lower() in text.lower(), (label, status, text)
            assert [p for p in bucket.rglob("*") if p.is_file()] == [], "a rejected upload must store nothing"
            assert [p for p in tmp_path.rglob("*") if p.is_file() and "etc" in p.parts] == []

            clock.t = expired_clock
            status, text = await put(signed.url, body, headers)
            assert status == 403 and "expired" in text, (status, text)
            clock.t -= 601
            status, text = await put(signed.url, body, headers)
            assert status == 200, text
    finally:
        await server.stop()
        await cloud.close()
    stored = [p for p in bucket.rglob("*") if p.is_file()]
    assert [p.relative_to(bucket).as_posix() for p in stored] == [f"{h}/build/{md5}.tar.gz"]
    assert md5_hex(stored[0].read_bytes()) == md5
    assert not [p for p in bucket.rglob(f"{TMP_PREFIX}*")]
    print(f"\nRELIABILITY uploads: {seen} expired=403 valid=200")


async def test_operator_upload_endpoint_end_to_end(start_operator, sim, admin, namespace) -> None:
    op = await start_operator(workers=2)
    ns = namespace
    body = b"FROM scratch\n" * 100
    md5 = md5_hex(body)
    await admin.create(DATASETS, dataset("uploaded", ns, image={"upload": {"checksum": md5, "requestID": "r1"}}))

    async def published() -> dict[str, Any] | None:
        obj = await admin.get(DATASETS, "uploaded", ns)
        up = (obj.get("status") or {}).get("upload") or {}
        return up if up.get("url") and up.get("requestID") == "r1" else None

    upload = await eventually(published, timeout=30)
    url = upload["url"]
    assert f"md5={md5}" in url and "sig=" in url and "expires=" in url
    headers = {"Content-Type": UPLOAD_CONTENT_TYPE}
    async with aiohttp.ClientSession() as http:
        for bad_url, data, want in ((_with_query(url, sig=_flip(dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(url).query))["sig"])), body, 403), (url, b"not the context", 400)):
            async with http.put(bad_url, data=data, headers=headers) as r:
                assert r.status == want, await r.text()
        built = condition(await admin.get(DATASETS, "uploaded", ns), "Built")
        assert built["reason"] == "AwaitingUpload", built
        assert await admin.get_or_none(JOBS, "uploaded-dataset-bld", ns) is None, "no build before the upload"
        async with http.put(url, data=body, headers=headers) as r:
            assert r.status == 200, await r.text()
    obj = (await wait_ready(admin, DATASETS, ns, ["uploaded"], timeout=60))["uploaded"]
    assert condition(obj, "Built")["reason"] == "BuildSucceeded"
    assert "@sha256:" in obj["status"]["image"] and obj["status"]["build"]["checksum"] == md5
    assert obj["status"]["upload"]["storedChecksum"] == md5
    assert not op.task.done()
