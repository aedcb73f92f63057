"""Scenario 20.10b: a tenant explains an object that refers into a namespace it cannot read.

``substratus explain`` runs with the user's own credentials. A tenant whose Server refers to a
Model in another team's namespace (not opted in) must get the answer — ``ReferenceNotPermitted``
and what to ask for — not a 403 for the whole command because the walk reached the other
namespace. The user is impersonated through the proxy, with a Role in its own namespace only.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml
from reliability_helpers import condition, model, server

from substratus import naming
from substratus.controllers.resources import MODELS, SERVERS
from substratus.explain import explain
from substratus.runtime.client import Client, Forbidden
from substratus.runtime.resource import NAMESPACES
from substratus.testing.wait import eventually

USER = "team-user"


def tenant_role(ns: str) -> list[dict[str, Any]]:
    rules = [
        {"apiGroups": ["substratus.ai"], "resources": ["models", "datasets", "servers", "notebooks"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
    ]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant", "namespace": ns},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "tenant", "namespace": ns},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"}},
    ]


async def test_tenant_explains_a_reference_into_a_namespace_it_cannot_read(start_operator, make_proxy, admin,
                                                                          kubectl, namespace, tmp_path) -> None:
    team, owner = namespace, f"t-owner-{uuid.uuid4().hex[:8]}"
    await admin.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": owner}})
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(tenant_role(team)))
        op = await start_operator(namespace="")  # every namespace, as shipped
        url = f"{op.cloud.bucket_url}/{naming.storage_hash('test-cluster', owner, 'models', 'base')}"
        await op.cloud.write(naming.completed_marker_url(url), json.dumps({"job": "elsewhere"}).encode())
        await admin.create(MODELS, model("base", owner))
        await admin.create(SERVERS, server("srv", team, model={"name": "base", "namespace": owner}))

        async def denied() -> bool:
            c = condition(await admin.get(SERVERS, "srv", team), "Serving")
            return bool(c and c["reason"] == "ReferenceNotPermitted")

        await eventually(denied, timeout=30)
        proxy = await make_proxy("tenant")
        proxy.impersonate = USER
        tenant = await Client.from_kubeconfig(str(proxy.write_kubeconfig(tmp_path / "tenant-kubeconfig")))
        try:
            with pytest.raises(Forbidden):  # the premise: the tenant cannot read the owner's namespace
                await tenant.get(MODELS, "base", owner)
            text = await explain(tenant, "server/srv", team)
        finally:
            await tenant.close()
        assert f"Model {owner}/base: cannot be read with your credentials" in text, text
        why = text.splitlines()[-1]
        assert why.startswith(f"why: Server {team}/srv: Serving is ReferenceNotPermitted"), text
        assert "substratus.ai/allowed-namespaces" in why
    finally:
        await admin.delete(NAMESPACES, owner)
