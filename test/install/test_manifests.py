"""``kubectl apply -k manifests/overlays/<cloud>``: what it renders, that it applies to a real API
server, and that the RBAC it ships is exactly what the operator's code calls."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from manifest_helpers import (
    KUBECTL,
    MANIFESTS,
    NS,
    OVERLAYS,
    REPO,
    delete_cluster_scoped,
    find,
    kustomize,
    relocate,
    rendered,
    stream,
)

from substratus import rbac
from substratus.api.crd import crd_apply_command, generate_crds
from substratus.config import OperatorConfig
from substratus.install import crd_enforces_cel, crd_install_hint
from substratus.rbac import Permission
from substratus.runtime.client import Client

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

SA_USER = f"system:serviceaccount:{NS}:{rbac.NAME}"

# Flags the ConfigMap deliberately leaves out, and base values that deliberately differ from the
# code's defaults. A new flag fails test_config_map_has_every_flag until it is in one or the other.
NOT_IN_CONFIGMAP = {"kubeconfig", "leader_elect", "upload_signing_key"}
BASE_OVERRIDES = {"log_format": "json"}


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_everything(overlay: str) -> None:
    objs = rendered(overlay)
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
    expected = {
        "Namespace/substratus", "ServiceAccount/substratus", "ClusterRole/substratus", "ClusterRole/substratus-metrics-reader",
        "ClusterRoleBinding/substratus", "Role/substratus-leader-election",
        "RoleBinding/substratus-leader-election", "ConfigMap/substratus-config",
        "Deployment/substratus", "Service/substratus-metrics",
        *(f"CustomResourceDefinition/{p}.substratus.ai" for p in ("datasets", "models", "notebooks", "servers")),
    }
    if overlay == "local":
        expected.add("Service/substratus-upload")
    assert set(kinds) == expected  # nothing that needs a CRD beyond our own: a vanilla cluster takes it
    assert len(kinds) == len(set(kinds))
    for o in objs:
        if o["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == NS, o["metadata"]


def test_crd_kustomization_lists_every_generated_crd() -> None:
    listed = yaml.safe_load((MANIFESTS / "crd" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (MANIFESTS / "crd").glob("substratus.ai_*.yaml"))
    crds = kustomize(MANIFESTS / "crd")
    assert {c["kind"] for c in crds} == {"CustomResourceDefinition"} and len(crds) == 4


def _config(objs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = find(objs, "ConfigMap", "substratus-config")["data"]
    return data


def _manager(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = find(objs, "Deployment", "substratus")
    pod = dep["spec"]["template"]["spec"]
    return dep, next(c for c in pod["containers"] if c["name"] == "manager")


def test_config_map_has_every_flag() -> None:
    """Every SUBSTRATUS_* flag is in the base ConfigMap with the code's default, or excluded on purpose."""
    data = _config(kustomize(MANIFESTS / "manager"))
    fields = {f.name: f for f in attrs.fields(OperatorConfig)}
    assert NOT_IN_CONFIGMAP <= set(fields) and set(BASE_OVERRIDES) <= set(fields)
    expected = {OperatorConfig.env_name(n) for n in fields if n not in NOT_IN_CONFIGMAP}
    assert set(data) == expected
    for name, f in fields.items():
        if name in NOT_IN_CONFIGMAP:
            continue
        value = BASE_OVERRIDES.get(name, f.default)
        assert data[OperatorConfig.env_name(name)] == (str(value).lower() if isinstance(value, bool) else str(value))
    OperatorConfig.from_sources(environ=data)  # and the operator accepts it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_accepts_the_overlay_config(overlay: str) -> None:
    cfg = OperatorConfig.from_sources(environ=_config(rendered(overlay)))
    assert cfg.cloud == overlay
    assert cfg.leader_election_namespace == NS
    assert cfg.leader_election_id == rbac.LEADER_ELECTION_LEASE
    if overlay == "gcp":
        assert cfg.bucket_url.startswith("gs://") and cfg.gcp_project and cfg.gcp_service_account
    else:
        assert cfg.bucket_url == "file:///var/lib/substratus/artifacts"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment(overlay: str) -> None:
    objs = rendered(overlay)
    dep, c = _manager(objs)
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == (1 if overlay == "local" else 2)
    assert c["args"] == ["--leader-elect"]
    assert c["envFrom"] == [{"configMapRef": {"name": "substratus-config"}}]
    assert pod["serviceAccountName"] == rbac.NAME
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 8080 and ports["health"] == 8081
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    # Graceful shutdown drains for up to ManagerOptions.graceful_shutdown_timeout (30 s).
    assert pod["terminationGracePeriodSeconds"] > 30
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    if overlay == "local":
        # The documented exception: root, to write into the root-owned hostPath directories.
        assert pod["securityContext"]["runAsUser"] == 0
        assert volumes[mounts["/var/lib/substratus/artifacts"]]["hostPath"]["path"] == "/var/lib/substratus/artifacts"
        assert ports["upload"] == 8082
        svc = find(objs, "Service", "substratus-upload")["spec"]
        assert svc["ports"] == [{"name": "upload", "port": 8082, "targetPort": "upload", "protocol": "TCP"}]
        assert svc["selector"] == dep["spec"]["selector"]["matchLabels"]
    else:
        assert pod["securityContext"]["runAsNonRoot"] is True and sc.get("runAsNonRoot") is True
        assert pod["securityContext"]["runAsUser"] == 65532
    metrics = find(objs, "Service", "substratus-metrics")["spec"]
    assert metrics["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert metrics["ports"][0]["port"] == 8080


def test_gcp_workload_identity_and_placeholders() -> None:
    objs = rendered("gcp")
    sa = find(objs, "ServiceAccount", rbac.NAME)
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == \
        "substratus@PROJECT_ID.iam.gserviceaccount.com"
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "REGION-docker.pkg.dev/PROJECT_ID/substratus/substratus:0.1.0"
    # Every placeholder the overlay uses is explained in its kustomization and the quickstart.
    quickstart = (REPO / "docs" / "quickstart.md").read_text()
    header = (MANIFESTS / "overlays" / "gcp" / "kustomization.yaml").read_text()
    for placeholder in ("PROJECT_ID", "REGION", "BUCKET"):
        assert placeholder in json.dumps(objs)
        assert placeholder in quickstart and placeholder in header


MONITORING = {"ServiceMonitor/substratus", "PrometheusRule/substratus", "ConfigMap/substratus-dashboard"}


def _user_overlay(root: Path, text: str) -> Path:
    """``text`` as ``{root}/user/kustomization.yaml`` beside ``{root}/substratus`` (the checkout), the
    layout the docs describe: the user's overlay in a sibling directory, nothing tracked edited."""
    (root / "substratus").symlink_to(REPO)
    (root / "user").mkdir()
    (root / "user" / "kustomization.yaml").write_text(text)
    return root / "user"


def test_monitoring_is_an_opt_in_component(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    block = doc.split("# ../substratus-monitored/kustomization.yaml", 1)[1].split("```", 1)[0].split("\n", 1)[1]
    objs = kustomize(_user_overlay(tmp_path, block))
    kinds = {f"{o['kind']}/{o['metadata']['name']}" for o in objs}
    assert MONITORING <= kinds
    assert kinds - MONITORING == {f"{o['kind']}/{o['metadata']['name']}" for o in rendered("local")}


def test_gcp_user_overlay_from_the_quickstart_fills_every_placeholder(tmp_path: Path) -> None:
    """GKE step 7 of docs/quickstart.md, run as a shell would (its heredoc), leaves no placeholder."""
    doc = (REPO / "docs" / "quickstart.md").read_text()
    heredoc = doc.split("cat > ../substratus-gcp/kustomization.yaml <<EOF\n", 1)[1].split("   EOF\n", 1)[0]
    env = {"PROJECT_ID": "my-project", "REGION": "europe-west4", "BUCKET": "my-bucket"}
    text = textwrap.dedent(heredoc).replace('$(basename "$PWD")', "substratus")
    for k, v in env.items():
        text = text.replace(f"${k}", v)
    objs = kustomize(_user_overlay(tmp_path, text))
    rendered_text = json.dumps(objs)
    for placeholder in ("PROJECT_ID", "REGION", "BUCKET"):
        assert placeholder not in rendered_text.replace("SUBSTRATUS_BUCKET_URL", ""), placeholder
    cfg = OperatorConfig.from_sources(environ=_config(objs))
    assert (cfg.cloud, cfg.bucket_url, cfg.gcp_project) == ("gcp", "gs://my-bucket", "my-project")
    assert cfg.registry == "europe-west4-docker.pkg.dev/my-project/substratus"
    assert cfg.gcp_service_account == "substratus-workloads@my-project.iam.gserviceaccount.com"
    assert find(objs, "ServiceAccount", rbac.NAME)["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "substratus@my-project.iam.gserviceaccount.com"}
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "europe-west4-docker.pkg.dev/my-project/substratus/substratus:0.1.0"


# --- applying to a real API server -----------------------------------------------------------


@pytest.fixture(scope="module")
def vanilla_cluster(local_controlplane: Any) -> Iterator[Path]:
    """A fresh local API server of its own: no prometheus-operator CRDs, nothing from other tests."""
    from substratus.testing.controlplane import ControlPlane

    cp = ControlPlane()
    cp.start()
    try:
        yield cp.kubeconfig_path
    finally:
        cp.stop()


def _kubectl_on(kubeconfig: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], input=input, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_release_install_yaml_and_the_overlay_apply_to_a_vanilla_cluster(vanilla_cluster: Path,
                                                                         tmp_path: Path) -> None:
    """`make release-manifests` then `kubectl apply -f dist/install.yaml`, and the README's
    `kubectl apply -k manifests/overlays/local`, on an API server without prometheus-operator."""
    assert _kubectl_on(vanilla_cluster, "get", "crd", "servicemonitors.monitoring.coreos.com").returncode != 0
    make = subprocess.run(["make", "--no-print-directory", "release-manifests"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert make.returncode == 0, make.stderr
    install = REPO / "dist" / "install.yaml"
    objs = [d for d in yaml.safe_load_all(install.read_text()) if d]
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == \
        [(o["kind"], o["metadata"]["name"]) for o in rendered("local")]
    # kube-apiserver 1.20 cannot describe the CRDs' CEL rules to a newer kubectl's client-side
    # validation: --validate=false (the server validates every object anyway). Newer servers need nothing.
    applied = _kubectl_on(vanilla_cluster, "apply", "--validate=false", "-f", str(install))
    assert applied.returncode == 0, applied.stderr
    assert len(applied.stdout.splitlines()) == len(objs)
    again = _kubectl_on(vanilla_cluster, "apply", "--validate=false", "-k", "manifests/overlays/local")
    assert again.returncode == 0, again.stderr
    assert "error" not in again.stderr.lower()
    got = json.loads(_kubectl_on(vanilla_cluster, "get", "-f", str(install), "-o", "json").stdout)["items"]
    assert len(got) == len(objs)

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_to_the_api_server(overlay: str, kubectl: Kubectl, namespace: str) -> None:
    objs = relocate(rendered(overlay), namespace)
    try:
        # 1.20 cannot validate the CRDs' CEL rules client-side: --validate=false; the server still
        # validates every object (the Deployment against its full schema).
        out = kubectl("apply", "--validate=false", "--server-side=false", "-f", "-", input=stream(objs)).stdout
        assert len(out.splitlines()) == len(objs), out
        got = json.loads(kubectl("get", "-f", "-", "-o", "json", input=stream(objs)).stdout)["items"]
        assert [(o["kind"], o["metadata"]["name"]) for o in got] == \
            [(o["kind"], o["metadata"]["name"]) for o in objs]
        dep = json.loads(kubectl("get", "deployment", "substratus", "-n", namespace, "-o", "json").stdout)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True  # survived the server's pruning
        # Re-applying is a no-op: the manifests are stable under the server's defaulting. (Not the
        # CRDs on 1.20: it drops their CEL rules, which kubectl then sends again every time.)
        again = kubectl("apply", "--validate=false", "--server-side=false", "-f", "-", input=stream(objs)).stdout
        changed = [line for line in again.splitlines()
                   if not line.endswith(" unchanged") and not line.startswith("customresourcedefinition")]
        assert not changed, again
    finally:
        delete_cluster_scoped(kubectl, objs)


def test_crd_install_hint() -> None:
    assert crd_apply_command(20) == "kubectl apply -k manifests/crd --validate=false"
    assert crd_apply_command(24) == "kubectl apply -k manifests/crd --validate=false"
    assert crd_apply_command(25) == crd_apply_command(36) == "kubectl apply -k manifests/crd"
    assert "--validate=false" in crd_apply_command(None) and "< 1.25" in crd_apply_command(None)


async def test_the_crd_install_hint_works_on_this_server(client: Client, kubectl: Kubectl) -> None:
    """The command the operator and the plugins print when the CRDs are missing, run with the
    real kubectl against this server (a current kubectl against 1.20 refuses the plain one)."""
    hint = await crd_install_hint(client)
    words = hint.split()
    assert words[:4] == ["kubectl", "apply", "-k", "manifests/crd"], hint
    await asyncio.to_thread(kubectl, "apply", "-k", str(MANIFESTS / "crd"), *words[4:])
    names = [f"crd/{c['metadata']['name']}" for c in generate_crds().values()]
    await asyncio.to_thread(kubectl, "wait", "--for=condition=Established", "--timeout=60s", *names)
    # The rules reach the server where it enforces them; elsewhere the server dropped them.
    assert await crd_enforces_cel(client) is ("--validate=false" not in hint)


# --- RBAC: the shipped rules are what the code calls -------------------------------------------


def test_rbac_manifest_is_generated_from_the_rules() -> None:
    text = (MANIFESTS / "rbac" / "role.yaml").read_text()
    assert text == rbac.render(), "manifests/rbac/role.yaml is stale: run `python -m substratus.rbac`"
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs == [rbac.cluster_role(), rbac.leader_election_role()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_ships_the_generated_rules(overlay: str) -> None:
    objs = rendered(overlay)
    assert find(objs, "ClusterRole", rbac.NAME)["rules"] == rbac.cluster_role()["rules"]
    role = find(objs, "Role", f"{rbac.NAME}-leader-election")
    assert role["rules"] == rbac.leader_election_role()["rules"]
    assert role["metadata"]["namespace"] == rbac.LEADER_ELECTION_NAMESPACE
    for kind, role_kind, role_name in (("ClusterRoleBinding", "ClusterRole", rbac.NAME),
                                       ("RoleBinding", "Role", f"{rbac.NAME}-leader-election")):
        binding = find(objs, kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": rbac.NAME, "namespace": NS}]


@pytest.fixture(scope="module")
def scan() -> rbac.Scan:
    return rbac.scan_permissions()


def test_scan_resolves_every_api_call(scan: rbac.Scan) -> None:
    assert not scan.unresolved, (
        "client calls whose resource the RBAC scan cannot tell; use a Resource constant "
        "(substratus.runtime.resource) or teach substratus/rbac.py the pattern:\n" + "\n".join(scan.unresolved))
    # The scan covers the operator process and nothing else (install.py is `make run`'s, not the Pod's).
    assert "substratus.operator" in scan.modules and "substratus.runtime.leaderelection" in scan.modules
    assert "substratus.install" not in scan.modules and "substratus.testing.controlplane" not in scan.modules


def test_shipped_rules_grant_exactly_what_the_code_calls(scan: rbac.Scan) -> None:
    needed = set(scan.permissions)
    all_rules = rbac.CLUSTER_RULES + rbac.LEADER_ELECTION_RULES
    granted = rbac.granted(all_rules)
    missing = sorted(needed - granted)
    assert not missing, "the operator calls these without RBAC (403 in a cluster): add them to " \
        "substratus/rbac.py and run `python -m substratus.rbac`:\n" + "\n".join(
            f"  {p}: {', '.join(sorted(scan.permissions[p]))}" for p in missing)
    pending = rbac.granted(r for r in all_rules if r.pending)
    unused = sorted(granted - needed - pending)
    assert not unused, f"granted but no code needs them (least privilege): {[str(p) for p in unused]}"
    now_used = sorted(pending & needed)
    if now_used:
        warnings.warn(f"pending RBAC rules are used now, drop their pending marker: {[str(p) for p in now_used]}",
                      stacklevel=1)
    # No wildcards anywhere, and each rule explains itself.
    for r in all_rules:
        assert "*" not in r.verbs + r.resources + (r.group,) and r.why
    # Secrets only when the code touches them; leases only in the namespaced Role.
    uses_secrets = any(p.resource == "secrets" for p in needed)
    assert any(p.resource == "secrets" for p in granted) == uses_secrets
    assert not any(p.group == "coordination.k8s.io" for p in rbac.granted(rbac.CLUSTER_RULES))
    assert {p for p in needed if p.group == "coordination.k8s.io"} == rbac.granted(rbac.LEADER_ELECTION_RULES)


def test_scanner_follows_helpers_branches_constructors_and_raw_paths(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's rules on a small package: what it must find, and what it must not invent."""
    pkg = tmp_path / "scanpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text(textwrap.dedent("""
        from substratus.runtime.resource import CONFIGMAPS, JOBS, PODS, SECRETS, Resource

        class Applier:
            def __init__(self, client):
                self.client = client

            async def ensure(self, res, obj, *, immutable=False):
                try:
                    await self.client.create(res, obj)
                except Exception:
                    await self.client.get_or_none(res, "x")
                if immutable:
                    await self.client.delete(res, "x")
                    return
                await self.client.apply(res, obj)

        class Watcher:
            def __init__(self, client, resource):
                self.client = client
                self.resource = resource

            async def run(self):
                await self.client.list_all(self.resource)

        async def write(client, res):
            await client.patch_status(res, "x", {})
    """))
    (pkg / "main.py").write_text(textwrap.dedent("""
        from scanpkg.helpers import Applier, Watcher, write
        from substratus.runtime.resource import CONFIGMAPS, JOBS, PODS, SECRETS, SERVICES

        class Thing:
            resource = SERVICES

        async def main(client, name):
            a = Applier(client)
            await a.ensure(JOBS, {}, immutable=True)
            await a.ensure(CONFIGMAPS, {})
            for res in (SECRETS,):
                Watcher(client, res)
            await write(client, Thing().resource)
            await client.request("GET", f"/api/v1/namespaces/x/pods/{name}:8888/proxy/api/status")
            await client.get(unknown_thing, "x")
            {}.get("not a resource")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    scan = rbac.scan_permissions("scanpkg.main", tmp_path)
    got = {str(p) for p in scan.permissions}
    assert got == {
        "create jobs.batch", "get jobs.batch", "delete jobs.batch",  # immutable=True: no apply
        "create configmaps", "get configmaps", "patch configmaps",  # apply creates, so create too
        "list secrets",  # through the Watcher's constructor
        "patch services/status",  # a class attribute `resource = SERVICES`
        "get pods/proxy",  # a raw request's path
    }
    assert len(scan.unresolved) == 1 and "unknown_thing" in scan.unresolved[0]
    assert scan.modules == ["scanpkg", "scanpkg.helpers", "scanpkg.main"]


def test_rbac_module_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "role.yaml"
    subprocess.run([sys.executable, "-m", "substratus.rbac", str(out)], check=True, capture_output=True)
    assert out.read_text() == rbac.render()
    proc = subprocess.run([sys.executable, "-m", "substratus.rbac", "--scan"], capture_output=True, text=True)
    assert proc.returncode == 0 and "get customresourcedefinitions.apiextensions.k8s.io" in proc.stdout


# What the operator must never be able to do (checked against the real authorizer).
DENIED: list[tuple[str, ...]] = [
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("get", "nodes"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("delete", "secrets"),
    ("update", "secrets"),
    ("delete", "configmaps"),
    ("delete", "deployments.apps"),
    ("delete", "services"),
    ("update", "jobs.batch"),
    ("patch", "jobs.batch"),
    ("delete", "models.substratus.ai"),
    ("create", "models.substratus.ai"),
    ("update", "models.substratus.ai"),
    ("update", "servers.substratus.ai/status"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/certificates.cert-manager.io"),
    ("delete", "leases.coordination.k8s.io/substratus-leader"),
    ("get", "leases.coordination.k8s.io/kube-scheduler"),
    ("delete", "events"),
    ("create", "persistentvolumes"),
]


def _can_i(kubectl: Kubectl, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    if "/" in resource and resource.split("/", 1)[1] in ("status", "proxy", "exec", "log", "token"):
        res, sub = resource.split("/", 1)
        args = ["auth", "can-i", verb, res, f"--subresource={sub}", f"--as={user}"]
    if namespace:
        args += ["-n", namespace]
    proc = kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def _resource_arg(p: Permission) -> str:
    plural, _, sub = p.resource.partition("/")
    base = f"{plural}.{p.group}" if p.group else plural
    return f"{base}/{sub}" if sub else base


def test_impersonated_service_account_can_do_exactly_that(kubectl: Kubectl, namespace: str,
                                                         scan: rbac.Scan) -> None:
    """The generated roles on a real RBAC authorizer, asked with ``kubectl auth can-i --as``."""
    objs = relocate([o for o in rendered("local") if o["kind"] in (
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")], namespace)
    user = f"system:serviceaccount:{namespace}:{rbac.NAME}"
    elsewhere = f"team-{uuid.uuid4().hex[:6]}"  # any namespace: the ClusterRole is cluster-wide
    try:
        kubectl("apply", "-f", "-", input=stream(objs))
        needed: list[tuple[str, str, str | None]] = []
        for p in sorted(scan.permissions):
            ns: str | None = namespace if p.group == "coordination.k8s.io" else elsewhere
            resource = _resource_arg(p)
            if p.group == "coordination.k8s.io" and p.verb != "create":
                resource += f"/{rbac.LEADER_ELECTION_LEASE}"
            if p.group == "apiextensions.k8s.io":
                resource += "/models.substratus.ai"
                ns = None
            needed.append((p.verb, resource, ns))
        with ThreadPoolExecutor(4) as pool:
            yes = list(pool.map(lambda q: _can_i(kubectl, user, *q), needed))
            refused = [f"{v} {r}" for (v, r, _), ok in zip(needed, yes, strict=True) if not ok]
            assert not refused, f"the shipped roles refuse calls the code makes: {refused}"
            yes = list(pool.map(lambda q: _can_i(kubectl, user, q[0], q[1], elsewhere), DENIED))
            allowed = [f"{v} {r}" for (v, r), ok in zip(DENIED, yes, strict=True) if ok]
            assert not allowed, f"the operator's ServiceAccount may do more than it needs: {allowed}"
        # The Lease is only ours in the operator's namespace.
        assert not _can_i(kubectl, user, "create", "leases.coordination.k8s.io", elsewhere)
        assert _can_i(kubectl, user, "create", "leases.coordination.k8s.io", namespace)
    finally:
        delete_cluster_scoped(kubectl, objs)


def test_server_side_apply_that_creates_needs_create(kubectl: Kubectl, namespace: str) -> None:
    """Why the scan maps Client.apply to patch *and* create: the API server authorizes both."""
    sa = f"ssa-{uuid.uuid4().hex[:6]}"
    user = f"system:serviceaccount:{namespace}:{sa}"
    kubectl("create", "serviceaccount", sa, "-n", namespace)
    kubectl("create", "role", f"{sa}-patch", "--verb=get,patch", "--resource=configmaps", "-n", namespace)
    kubectl("create", "rolebinding", f"{sa}-patch", f"--role={sa}-patch", f"--serviceaccount={namespace}:{sa}",
            "-n", namespace)
    cm = stream([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace},
                   "data": {"a": "b"}}])
    denied = kubectl("apply", "--server-side", "--field-manager=probe", f"--as={user}", "-f", "-", input=cm,
                     check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    kubectl("create", "role", f"{sa}-create", "--verb=create", "--resource=configmaps", "-n", namespace)
    kubectl("create", "rolebinding", f"{sa}-create", f"--role={sa}-create", f"--serviceaccount={namespace}:{sa}",
            "-n", namespace)
    kubectl("apply", "--server-side", "--field-manager=probe", f"--as={user}", "-f", "-", input=cm)
