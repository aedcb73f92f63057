from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from substratus.api import KINDS, from_dict, to_dict
from substratus.api.crd import HEADER, crd_filename, generate_crds, render, write_crds
from substratus.api.openapi_validate import apply_defaults, check_structural, validate_openapi
from substratus.api.schema import PRESERVE, VALIDATIONS
from substratus.api.validate import GIT_RULES, IMAGE_RULES, NAME_RULES

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crd"
CRDS = generate_crds()


def schema_of(kind: str) -> dict[str, Any]:
    crd = CRDS[crd_filename(KINDS[kind])]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(s: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, s
    for k, v in s.get("properties", {}).items():
        yield from walk(v, f"{path}.{k}")
    if isinstance(s.get("additionalProperties"), dict):
        yield from walk(s["additionalProperties"], f"{path}.*")
    if "items" in s:
        yield from walk(s["items"], f"{path}[]")


def test_checked_in_crds_match_the_generator() -> None:
    """Drift test: run `make manifests` (python -m substratus.api.crd) after changing the API."""
    on_disk = {p.name for p in CRD_DIR.glob("substratus.ai_*.yaml")}
    assert on_disk == set(CRDS)
    for filename, crd in CRDS.items():
        text = (CRD_DIR / filename).read_text()
        assert text == render(crd), f"{filename} is stale: regenerate with `python -m substratus.api.crd`"
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == crd


def test_generation_is_deterministic(tmp_path: Path) -> None:
    write_crds(tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        n: render(c) for n, c in generate_crds().items()
    }


def test_module_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "crd"
    subprocess.run([sys.executable, "-m", "substratus.api.crd", str(out)], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(CRDS)
    assert (out / "substratus.ai_models.yaml").read_text() == (
        CRD_DIR / "substratus.ai_models.yaml"
    ).read_text()


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_shape(kind: str) -> None:
    cls = KINDS[kind]
    crd = CRDS[f"substratus.ai_{cls.PLURAL}.yaml"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{cls.PLURAL}.substratus.ai"
    spec = crd["spec"]
    assert spec["group"] == "substratus.ai" and spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["ai", "substratus"]
    assert spec["names"].get("shortNames", []) == list(cls.SHORT_NAMES)
    assert spec["names"]["singular"] == kind.lower() and spec["names"]["kind"] == kind
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Status", "Build", "URL", "Age"]
    assert columns["Ready"]["jsonPath"] == ".status.ready"
    # STATUS: the Ready condition's reason, i.e. what holds the object back (SPEC §1).
    assert columns["Status"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["URL"]["jsonPath"] == ".status.url"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    assert columns["Build"]["priority"] == 1


def test_short_names() -> None:
    assert CRDS["substratus.ai_datasets.yaml"]["spec"]["names"]["shortNames"] == ["data"]
    assert CRDS["substratus.ai_notebooks.yaml"]["spec"]["names"]["shortNames"] == ["nb"]
    assert "shortNames" not in CRDS["substratus.ai_models.yaml"]["spec"]["names"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural(kind: str) -> None:
    assert check_structural(schema_of(kind)) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_preserve_unknown_fields_only_under_params(kind: str) -> None:
    paths = [p for p, s in walk(schema_of(kind)) if s.get(PRESERVE)]
    assert paths == [".spec.params.*"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        p for p, s in walk(schema_of(kind))
        if p and not p.endswith(("*", "[]", ".metadata")) and not s.get("description")
    ]  # fmt: skip
    assert missing == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_metadata_is_plain_object_and_name_rules_are_cel(kind: str) -> None:
    s = schema_of(kind)
    assert s["properties"]["metadata"] == {"type": "object"}
    assert s[VALIDATIONS] == [{"rule": r, "message": m} for r, m in NAME_RULES]
    assert s[VALIDATIONS][0]["rule"] == "self.metadata.name.size() <= 50"
    image = s["properties"]["spec"]["properties"]["image"]
    assert image[VALIDATIONS] == [{"rule": r, "message": m} for r, m in IMAGE_RULES]
    assert image["properties"]["git"][VALIDATIONS] == [{"rule": r, "message": m} for r, m in GIT_RULES]


def test_image_cel_rules_say_exactly_one_source() -> None:
    # SPEC §1: the spec is the user's; a built image is in status.image, never in image.name.
    # test_api_cel.py evaluates these rules against the controller's verdicts.
    rules = [r for r, _ in IMAGE_RULES]
    assert rules == [
        "has(self.git) || has(self.upload) || has(self.name)",
        "!(has(self.git) && has(self.upload))",
        "!has(self.name) || !(has(self.git) || has(self.upload))",
    ]


def test_cel_can_be_left_out() -> None:
    for crd in generate_crds(cel=False).values():
        assert VALIDATIONS not in yaml.safe_dump(crd)


def test_defaults() -> None:
    spec = schema_of("Notebook")["properties"]["spec"]["properties"]
    resources = spec["resources"]
    assert resources["default"] == {}
    assert {k: resources["properties"][k]["default"] for k in ("cpu", "memory", "disk")} == {
        "cpu": 2,
        "memory": 10,
        "disk": 10,
    }
    assert resources["properties"]["gpu"]["properties"]["count"]["default"] == 1
    assert spec["suspend"]["default"] is False
    assert resources["properties"]["gpu"]["properties"]["type"]["enum"] == [
        "nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-h100-80gb",
    ]  # fmt: skip
    assert spec["image"]["properties"]["upload"]["properties"]["checksum"]["pattern"] == "^[a-f0-9]{32}$"
    assert (resources["properties"]["cpu"]["minimum"], resources["properties"]["cpu"]["maximum"]) == (1, 1024)


def test_required_fields() -> None:
    # spec.image is required by CEL and the controller: see test_migrate_convert.py (SPEC §9).
    assert schema_of("Server")["properties"]["spec"]["required"] == ["model"]
    for kind in ("Model", "Dataset", "Notebook"):
        assert "required" not in schema_of(kind)["properties"]["spec"]
        assert schema_of(kind)["required"] == ["spec"]


def test_every_example_validates_against_its_schema(example: dict[str, Any]) -> None:
    schema = schema_of(example["kind"])
    assert validate_openapi(example, schema) == []
    # the API server's view after defaulting, and ours after a round trip, agree
    assert validate_openapi(apply_defaults(example, schema), schema) == []
    assert validate_openapi(to_dict(from_dict(example)), schema) == []


def test_server_defaults_equal_python_defaults(example: dict[str, Any]) -> None:
    """What the API server stores after defaulting is what from_dict → to_dict produces."""
    defaulted = apply_defaults(example, schema_of(example["kind"]))
    ours = to_dict(from_dict(example))
    ours.pop("status")
    assert defaulted == ours


def test_full_status_validates() -> None:
    src = {
        "apiVersion": "substratus.ai/v1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {"image": {"git": {"url": "https://x"}, "name": "r/x:y"}},
        "status": {
            "ready": True,
            "conditions": [
                {
                    "type": "Built",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                    "reason": "BuildSucceeded",
                    "message": "ok",
                },
                {
                    "type": "Complete",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                    "reason": "JobSucceeded",
                    "message": "ok",
                },
            ],
            "url": "gs://b/h",
            "upload": {
                "url": "https://u",
                "requestID": "1",
                "expiresAt": "2024-01-01T00:00:00Z",
                "storedChecksum": "0" * 32,
            },
            "files": ["config.json"],
            "diskSize": "1Gi",
        },
    }
    assert validate_openapi(to_dict(from_dict(src)), schema_of("Model")) == []
    too_many = copy.deepcopy(src)
    too_many["status"]["files"] = ["f"] * 101
    assert validate_openapi(too_many, schema_of("Model")) == ["status.files: should have at most 100 items"]


BASE = {
    "apiVersion": "substratus.ai/v1",
    "kind": "Notebook",
    "metadata": {"name": "nb"},
    "spec": {"image": {"name": "x"}},
}


@pytest.mark.parametrize(
    ("spec_update", "error"),
    [
        ({"params": {"a": {"b": 1}}}, "spec.params.a: should have at most 0 properties"),
        ({"params": {"a": {}}}, "spec.params.a: should have at least 1 properties"),
        ({"params": {"a": [1]}}, "spec.params.a: should have at most 0 items"),
        ({"params": {"a": []}}, "spec.params.a: should have at least 1 items"),
        (
            {"image": {"upload": {"checksum": "xyz"}}},
            "spec.image.upload.checksum: 'xyz' does not match ^[a-f0-9]{32}$",
        ),
        ({"resources": {"cpu": 0}}, "spec.resources.cpu: 0 is less than the minimum 1"),
        ({"resources": {"memory": 70000}}, "spec.resources.memory: 70000 is greater than the maximum 65536"),
        ({"resources": {"gpu": {"type": "tpu"}}}, "spec.resources.gpu.type: 'tpu' is not one of"),
        ({"resources": {"cpu": "2"}}, "spec.resources.cpu: expected integer, got string"),
        ({"idleTimeout": "2 hours"}, "spec.idleTimeout: '2 hours' does not match"),
        ({"suspend": "yes"}, "spec.suspend: expected boolean, got string"),
        ({"model": {}}, "spec.model.name: required field missing"),
        ({"typo": 1}, "spec.typo: unknown field"),
    ],
)
def test_schema_rejects(spec_update: dict[str, Any], error: str) -> None:
    obj = copy.deepcopy(BASE)
    obj["spec"].update(spec_update)
    errors = validate_openapi(obj, schema_of("Notebook"))
    assert any(e.startswith(error) for e in errors), errors


def test_schema_accepts_scalar_params() -> None:
    obj = copy.deepcopy(BASE)
    obj["spec"]["params"] = {"s": "x", "i": 1, "f": 1.5, "b": False}
    assert validate_openapi(obj, schema_of("Notebook")) == []


def test_server_without_model_rejected() -> None:
    obj = {**copy.deepcopy(BASE), "kind": "Server"}
    assert validate_openapi(obj, schema_of("Server")) == ["spec.model: required field missing"]
