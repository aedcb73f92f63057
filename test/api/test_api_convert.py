from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import attrs
import pytest

from substratus.api import (
    KINDS,
    Condition,
    Dataset,
    DatasetSpec,
    Image,
    Model,
    ModelSpec,
    Notebook,
    ObjectMeta,
    ObjectRef,
    Server,
    StructureError,
    UploadSource,
    from_dict,
    spec_errors,
    structure,
    to_dict,
)
from substratus.api.convert import wire_name_table
from substratus.api.fields import json_name
from substratus.api.model import ModelStatus

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml"))

# What from_dict → to_dict adds to an object that omitted them.
ADDED_DEFAULTS = {"cpu": 2, "memory": 10, "disk": 10}


def _without_added_defaults(out: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(out)
    assert out.pop("status") == {"ready": False}
    spec, ospec = out["spec"], original["spec"]
    for key, value in ADDED_DEFAULTS.items():
        if key not in ospec.get("resources", {}):
            assert spec["resources"].pop(key) == value
    if not spec["resources"] and "resources" not in ospec:
        del spec["resources"]
    if out["kind"] == "Notebook" and "suspend" not in ospec:
        assert spec.pop("suspend") is False
    gpu = spec.get("resources", {}).get("gpu")
    if gpu is not None and "count" not in ospec["resources"]["gpu"]:
        assert gpu.pop("count") == 1
    return out


def test_examples_exist() -> None:
    kinds = {p.name for p in EXAMPLES}
    assert {
        "base-model.yaml",
        "dataset.yaml",
        "finetuned-model.yaml",
        "server.yaml",
        "notebook.yaml",
    } <= kinds
    assert {"model.yaml", "notebook-upload.yaml"} <= kinds


def test_example_round_trip(example: dict[str, Any]) -> None:
    obj = from_dict(example)
    assert type(obj) is KINDS[example["kind"]]
    out = to_dict(obj)
    assert _without_added_defaults(out, example) == example
    # and it is a fixed point
    assert to_dict(from_dict(out)) == out


def test_omitted_optionals_stay_omitted() -> None:
    src = {
        "apiVersion": "substratus.ai/v1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {"image": {"git": {"url": "https://github.com/o/r"}}},
    }
    out = to_dict(from_dict(src))
    spec = out["spec"]
    assert spec["image"] == {"git": {"url": "https://github.com/o/r"}}
    for key in ("command", "params", "env", "baseModel", "trainingDataset"):
        assert key not in spec
    assert "gpu" not in spec["resources"]
    assert out["status"] == {"ready": False}
    assert out["metadata"] == {"name": "m"}


def test_empty_strings_are_omitted_for_optional_fields() -> None:
    # kube-apiserver 1.20.2 (our test server) rejects "" in string fields of custom resources.
    m = Model(metadata=ObjectMeta(name="m"), spec=ModelSpec(image=Image(name="")))
    m.status.conditions.append(Condition(type="Built", status="True", reason="ImageProvided"))
    m.status.url = ""
    out = to_dict(m)
    assert out["spec"]["image"] == {}
    assert out["status"]["conditions"] == [
        {"type": "Built", "status": "True", "observedGeneration": 0, "reason": "ImageProvided"}
    ]
    assert "url" not in out["status"]


def test_camel_case_names() -> None:
    src = {
        "apiVersion": "substratus.ai/v1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {
            "image": {"upload": {"checksum": "0" * 32, "requestID": "r1"}},
            "baseModel": {"name": "base", "namespace": "other"},
            "trainingDataset": {"name": "data"},
        },
        "status": {
            "ready": True,
            "conditions": [
                {
                    "type": "Complete",
                    "status": "True",
                    "observedGeneration": 3,
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                    "reason": "JobSucceeded",
                    "message": "done",
                }
            ],
            "url": "gs://b/h",
            "upload": {
                "url": "https://u",
                "requestID": "r1",
                "expiresAt": "2024-01-01T01:00:00Z",
                "storedChecksum": "0" * 32,
            },
            "files": ["config.json"],
            "diskSize": "27Gi",
        },
    }
    m = from_dict(src)
    assert isinstance(m, Model)
    assert m.spec.image.upload is not None and m.spec.image.upload.request_id == "r1"
    assert m.spec.base_model == ObjectRef(name="base", namespace="other")
    assert m.spec.training_dataset == ObjectRef(name="data")
    assert m.status.disk_size == "27Gi"
    assert m.status.upload is not None and m.status.upload.stored_checksum == "0" * 32
    assert m.status.conditions[0].observed_generation == 3
    out = to_dict(m)
    assert out["status"] == src["status"]
    assert out["spec"]["image"] == src["spec"]["image"]
    assert out["spec"]["baseModel"] == src["spec"]["baseModel"]


def test_output_key_order_follows_declaration() -> None:
    out = to_dict(from_dict(EXAMPLE_NOTEBOOK))
    assert list(out) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert list(out["spec"]) == ["image", "params", "resources", "model", "suspend", "idleTimeout"]


EXAMPLE_NOTEBOOK = {
    "apiVersion": "substratus.ai/v1",
    "kind": "Notebook",
    "metadata": {"name": "nb"},
    "spec": {"idleTimeout": "30m", "model": {"name": "m"}, "params": {"a": 1}, "image": {"name": "img"}},
}


def test_unknown_fields_are_ignored() -> None:
    src = copy.deepcopy(EXAMPLE_NOTEBOOK)
    src["spec"]["futureField"] = {"x": 1}
    src["spec"]["image"]["futureSource"] = {"oci": "x"}
    src["status"] = {
        "ready": True,
        "token": "abc",
        "conditions": [{"type": "Serving", "status": "True", "newKey": 1}],
    }
    src["extraTopLevel"] = 1
    nb = from_dict(src)
    assert isinstance(nb, Notebook)
    out = to_dict(nb)
    assert "futureField" not in out["spec"]
    assert "token" not in out["status"]
    assert out["status"]["conditions"][0]["type"] == "Serving"


def test_metadata_keeps_everything() -> None:
    meta = {
        "name": "m",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2024-01-01T00:00:00Z",
        "deletionTimestamp": "2024-01-02T00:00:00Z",
        "labels": {"a": "b"},
        "annotations": {"c": "d"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "1"}],
        "finalizers": ["f"],
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        "generateName": "m-",
        "selfLink": "/x",
    }
    src = {**EXAMPLE_NOTEBOOK, "metadata": meta}
    nb = from_dict(src)
    assert nb.metadata.name == "m" and nb.metadata.namespace == "ns" and nb.metadata.generation == 3
    assert nb.metadata.resource_version == "42"
    assert nb.metadata.deletion_timestamp == "2024-01-02T00:00:00Z"
    assert nb.metadata.extra == {
        "managedFields": meta["managedFields"],
        "generateName": "m-",
        "selfLink": "/x",
    }
    assert to_dict(nb)["metadata"] == meta


def test_defaults_fill_in() -> None:
    d = from_dict(
        {
            "apiVersion": "substratus.ai/v1",
            "kind": "Dataset",
            "metadata": {"name": "d"},
            "spec": {"image": {"name": "i"}},
        }
    )
    assert isinstance(d, Dataset)
    assert (d.spec.resources.cpu, d.spec.resources.memory, d.spec.resources.disk) == (2, 10, 10)
    assert d.spec.params == {} and d.spec.env == {} and d.spec.command == []
    assert d.status.ready is False and d.status.conditions == []


def test_params_keep_scalar_types() -> None:
    src = copy.deepcopy(EXAMPLE_NOTEBOOK)
    src["spec"]["params"] = {"s": "x", "i": 1, "f": 0.5, "b": True, "big": 10**12}
    nb = from_dict(src)
    assert nb.spec.params == src["spec"]["params"]
    assert isinstance(nb.spec.params["b"], bool) and isinstance(nb.spec.params["i"], int)
    assert to_dict(nb)["spec"]["params"] == src["spec"]["params"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda o: o["spec"]["resources"].update(cpu="2"),
            "spec.resources.cpu: expected integer, got string",
        ),
        (
            lambda o: o["spec"]["resources"].update(cpu=2.5),
            "spec.resources.cpu: expected integer, got number",
        ),
        (
            lambda o: o["spec"]["resources"].update(cpu=True),
            "spec.resources.cpu: expected integer, got boolean",
        ),
        (lambda o: o["spec"].update(suspend="false"), "spec.suspend: expected boolean, got string"),
        (
            lambda o: o["spec"]["params"].update(nested={"a": 1}),
            "spec.params.nested: must be a string, integer, number or boolean, got object",
        ),
        (
            lambda o: o["spec"]["params"].update(lst=[1]),
            "spec.params.lst: must be a string, integer, number or boolean, got array",
        ),
        (
            lambda o: o["spec"]["params"].update(nul=None),
            "spec.params.nul: must be a string, integer, number or boolean, got null",
        ),
        (lambda o: o["spec"].update(command=["a", 1]), "spec.command[1]: expected string, got integer"),
        (lambda o: o["spec"].update(env={"A": 1}), "spec.env.A: expected string, got integer"),
        (
            lambda o: o["spec"]["image"].update(upload={"requestID": "x"}),
            "spec.image.upload.checksum: required field missing",
        ),
        (
            lambda o: o["spec"]["image"].update(upload={"checksum": "0" * 32, "requestID": 5}),
            "spec.image.upload.requestID: expected string, got integer",
        ),
        (lambda o: o["spec"].update(model={"namespace": "x"}), "spec.model.name: required field missing"),
        (lambda o: o["spec"].update(resources=[1]), "spec.resources: expected object, got array"),
        (lambda o: o["spec"].pop("image"), "spec.image: required field missing"),
        (lambda o: o["metadata"].update(name=5), "metadata.name: expected string, got integer"),
        (lambda o: o["metadata"].update(labels=["x"]), "metadata.labels: expected object, got array"),
        (
            lambda o: o.update(
                status={"conditions": [{"type": "A", "status": "True", "observedGeneration": "1"}]}
            ),
            "status.conditions[0].observedGeneration: expected integer, got string",
        ),
        (
            lambda o: o.update(status={"upload": {"expiresAt": 5}}),
            "status.upload.expiresAt: expected string, got integer",
        ),
    ],
)
def test_wrong_types_name_the_field(mutate: Any, message: str) -> None:
    src = copy.deepcopy(EXAMPLE_NOTEBOOK)
    src["spec"]["resources"] = {"cpu": 2}
    mutate(src)
    with pytest.raises(StructureError) as info:
        from_dict(src)
    assert message in info.value.errors, info.value.errors
    assert isinstance(info.value, ValueError)
    assert spec_errors(info.value) == info.value.errors


def test_all_errors_are_reported_at_once() -> None:
    src = copy.deepcopy(EXAMPLE_NOTEBOOK)
    src["spec"]["resources"] = {"cpu": "x", "memory": "y"}
    src["spec"]["suspend"] = 1
    with pytest.raises(StructureError) as info:
        from_dict(src)
    assert sorted(info.value.errors) == [
        "spec.resources.cpu: expected integer, got string",
        "spec.resources.memory: expected integer, got string",
        "spec.suspend: expected boolean, got integer",
    ]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"kind": "Foo"}, "kind: unknown kind 'Foo'; expected one of Model, Dataset, Server, Notebook"),
        ({}, "kind: unknown kind None; expected one of Model, Dataset, Server, Notebook"),
        (
            {"kind": "Model", "apiVersion": "substratus.ai/v2", "spec": {}},
            "apiVersion: expected 'substratus.ai/v1', got 'substratus.ai/v2'",
        ),
        ({"kind": "Model", "apiVersion": "substratus.ai/v1"}, "spec: required field missing"),
        (
            {"kind": "Server", "metadata": {"name": "s"}, "spec": {"image": {"name": "x"}}},
            "spec.model: required field missing",
        ),
    ],
)
def test_from_dict_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(StructureError) as info:
        from_dict(obj)
    assert message in info.value.errors


def test_spec_errors_on_raw_cattrs_exception() -> None:
    from substratus.api.convert import converter

    with pytest.raises(Exception) as info:
        converter.structure({"cpu": "x"}, type(ModelSpec(image=Image()).resources))
    assert spec_errors(info.value) == ["cpu: expected integer, got string"]


def test_structure_and_to_dict_of_parts() -> None:
    status = structure({"ready": True, "files": ["a"], "diskSize": "1Gi"}, ModelStatus)
    assert status == ModelStatus(ready=True, files=["a"], disk_size="1Gi")
    assert to_dict(status) == {"ready": True, "files": ["a"], "diskSize": "1Gi"}
    assert to_dict(UploadSource(checksum="0" * 32, request_id="x")) == {
        "checksum": "0" * 32,
        "requestID": "x",
    }


def test_kind_constants() -> None:
    assert [(k.KIND, k.PLURAL, k.SHORT_NAMES, k.workload_suffix) for k in KINDS.values()] == [
        ("Model", "models", (), "model"),
        ("Dataset", "datasets", ("data",), "dataset"),
        ("Server", "servers", (), "server"),
        ("Notebook", "notebooks", ("nb",), "notebook"),
    ]
    assert Server(spec=EXAMPLE_SERVER_SPEC).kind == "Server"
    assert Dataset(spec=DatasetSpec(image=Image(name="x"))).api_version == "substratus.ai/v1"


EXAMPLE_SERVER_SPEC = structure(
    {"image": {"name": "x"}, "model": {"name": "m"}},
    type(
        from_dict(
            {
                "kind": "Server",
                "metadata": {"name": "s"},
                "spec": {"image": {"name": "x"}, "model": {"name": "m"}},
            }
        ).spec
    ),
)


def test_wire_names_are_consistent_across_classes() -> None:
    # spec_errors maps Python attribute names to JSON names with one table: a name must map the
    # same way everywhere.
    seen: dict[str, set[str]] = {}
    for cls in _all_api_classes():
        for a in attrs.fields(cls):
            seen.setdefault(a.name, set()).add(json_name(a))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
    table = wire_name_table()
    assert table["request_id"] == "requestID"
    assert table["base_model"] == "baseModel"
    assert table["last_transition_time"] == "lastTransitionTime"
    assert table["idle_timeout"] == "idleTimeout"


def _all_api_classes() -> list[type]:
    import typing

    out: list[type] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and attrs.has(tp) and tp is not ObjectMeta:
            if tp in out:
                return
            out.append(tp)
            for a in attrs.fields(tp):
                visit(typing.get_type_hints(tp)[a.name])
        for arg in typing.get_args(tp):
            visit(arg)

    for cls in KINDS.values():
        visit(cls)
    return out
