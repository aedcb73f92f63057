"""The generated CRDs against the real kube-apiserver 1.20 our tests use.

Checks what no local validator can: the server accepts the CRDs as structural, applies the same
defaults as from_dict, rejects non-scalar params without CEL, and accepts the statuses we write.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from substratus.api import KINDS, Reason, from_dict, make_condition, set_condition, to_dict, with_ready
from substratus.api.crd import generate_crds
from substratus.install import crd_established

pytestmark = pytest.mark.controlplane

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml"))
NS = "default"


class Api:
    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self.ctx = cp.ssl_context()

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             accept: str = "application/json") -> tuple[int, dict[str, Any]]:  # fmt: skip
        req = urllib.request.Request(
            self.cp.server_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.cp.token}",
                "Content-Type": content_type,
                "Accept": accept,
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    from substratus.testing.controlplane import ControlPlane, ControlPlaneNotInstalled

    cp = ControlPlane()
    try:
        cp.start()
    except ControlPlaneNotInstalled as e:
        pytest.skip(str(e))
    try:
        a = Api(cp)
        for crd in generate_crds().values():
            status, out = a.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            assert status == 201, out
        deadline = time.monotonic() + 30
        pending = {cls.crd_name() for cls in KINDS.values()}
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                _, out = a.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                if crd_established(out):
                    pending.discard(name)
            time.sleep(0.1)
        assert not pending, f"CRDs not established: {pending}"
        # discovery of the new group can lag behind Established
        while time.monotonic() < deadline and a.call("GET", "/apis/substratus.ai/v1")[0] != 200:
            time.sleep(0.1)
        yield a
    finally:
        cp.stop()


def _path(kind: str, name: str = "") -> str:
    base = f"/apis/substratus.ai/v1/namespaces/{NS}/{KINDS[kind].PLURAL}"
    return f"{base}/{name}" if name else base


def test_discovery_has_categories_and_short_names(api: Api) -> None:
    status, out = api.call("GET", "/apis/substratus.ai/v1")
    assert status == 200
    res = {r["name"]: r for r in out["resources"]}
    for cls in KINDS.values():
        assert res[cls.PLURAL]["categories"] == ["ai", "substratus"]
        assert res[cls.PLURAL].get("shortNames", []) == list(cls.SHORT_NAMES)
        assert res[cls.PLURAL]["namespaced"] is True
        assert f"{cls.PLURAL}/status" in res


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted_and_defaulted_like_from_dict(api: Api, path: Path) -> None:
    example = yaml.safe_load(path.read_text())
    name = f"ex-{path.stem}"[:50]
    body = {**example, "metadata": {"name": name}}
    status, out = api.call("POST", _path(example["kind"]), body)
    assert status == 201, out
    assert out["spec"] == to_dict(from_dict(body))["spec"]
    api.call("DELETE", _path(example["kind"], name))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"params": {"nested": {"a": 1}}}, "spec.params.nested"),
        ({"params": {"list": [1, 2]}}, "spec.params.list"),
        ({"image": {"upload": {"checksum": "not-md5"}}}, "spec.image.upload.checksum"),
        ({"resources": {"gpu": {"type": "tpu"}}}, "spec.resources.gpu.type"),
        ({"resources": {"cpu": 0}}, "spec.resources.cpu"),
        ({"idleTimeout": "2 hours"}, "spec.idleTimeout"),
    ],
)
def test_schema_rejections(api: Api, spec: dict[str, Any], fragment: str) -> None:
    body = {"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": "bad"},
            "spec": {"image": {"name": "x"}, **spec}}  # fmt: skip
    status, out = api.call("POST", _path("Notebook"), body)
    assert status == 422, out
    assert fragment in out["message"]


def test_scalar_params_are_stored_as_is(api: Api) -> None:
    params = {"s": "x", "i": 7, "f": 0.5, "b": False, "big": 10**12}
    body = {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "params"},
            "spec": {"image": {"name": "x"}, "params": params}}  # fmt: skip
    status, out = api.call("POST", _path("Model"), body)
    assert status == 201, out
    assert out["spec"]["params"] == params
    m = from_dict(out)
    assert m.spec.params == params


def test_status_written_by_to_dict_is_accepted(api: Api) -> None:
    body = {"apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "status"},
            "spec": {"image": {"git": {"url": "https://github.com/substratusai/model-loader-huggingface"}}}}  # fmt: skip
    status, out = api.call("POST", _path("Model"), body)
    assert status == 201, out
    m = from_dict(out)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    gen = m.metadata.generation
    # An empty message on purpose: the 1.20.2 server rejects "" in string fields; to_dict omits it.
    m.status.conditions = set_condition(
        [], make_condition("Built", False, Reason.BUILDING, "", gen), now
    ).conditions
    m.status.conditions = set_condition(
        m.status.conditions,
        make_condition("Complete", False, Reason.WAITING_FOR_DEPENDENCY, "waiting for the build", gen),
        now,
    ).conditions
    m.status.conditions = with_ready(m.status.conditions, "Complete", now, gen).conditions
    m.status.url = "gs://bucket/f94a0d128bcbd9c1b824e9e5572baf86"
    m.status.files = ["config.json", "pytorch_model.bin"]
    m.status.disk_size = "27Gi"
    status, out = api.call("PUT", _path("Model", "status") + "/status", to_dict(m))
    assert status == 200, out
    assert from_dict(out).status == m.status

    status, table = api.call("GET", _path("Model"), accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert status == 200
    cols = [c["name"] for c in table["columnDefinitions"]]
    assert cols == ["Name", "Ready", "Status", "Build", "URL", "Age"]
    row = next(r["cells"] for r in table["rows"] if r["cells"][0] == "status")
    # STATUS is the Ready condition's reason: the first condition holding the Model back (Built).
    assert row[1:5] == [
        False,
        "Building",
        "Building",
        "gs://bucket/f94a0d128bcbd9c1b824e9e5572baf86",
    ]
