from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from substratus.api import (
    GPU,
    GitSource,
    Image,
    Server,
    ServerSpec,
    UploadSource,
    from_dict,
    parse_duration,
    secret_ref,
    validate,
)
from substratus.api.kinds import AnyKind

NOTEBOOK: dict[str, Any] = {
    "apiVersion": "substratus.ai/v1",
    "kind": "Notebook",
    "metadata": {"name": "nb", "namespace": "default"},
    "spec": {
        "image": {
            "git": {"url": "https://github.com/substratusai/model-trainer-huggingface", "branch": "main"}
        },
        "model": {"name": "falcon-7b"},
        "dataset": {"name": "squad", "namespace": "data"},
        "params": {"epochs": 1, "lr": 0.1, "name": "x", "flag": True},
        "env": {"LOG_LEVEL": "debug", "HF_TOKEN": "${{ secrets.hf.token }}", "my.var-x": "1"},
        "command": ["train.sh"],
        "resources": {"cpu": 4, "memory": 16, "disk": 20, "gpu": {"type": "nvidia-l4", "count": 1}},
        "idleTimeout": "1h30m",
    },
}
MODEL: dict[str, Any] = {
    "apiVersion": "substratus.ai/v1",
    "kind": "Model",
    "metadata": {"name": "m"},
    "spec": {"image": {"name": "img"}, "baseModel": {"name": "base"}, "trainingDataset": {"name": "data"}},
}


def obj(base: dict[str, Any], mutate: Callable[[dict[str, Any]], Any] = lambda o: None) -> AnyKind:
    src = copy.deepcopy(base)
    mutate(src)
    return from_dict(src)


def test_example_objects_are_valid(example: dict[str, Any]) -> None:
    assert validate(from_dict(example)) == []


def test_valid_fixtures() -> None:
    assert validate(obj(NOTEBOOK)) == []
    assert validate(obj(MODEL)) == []


def _spec(o: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = o["spec"]
    return spec


CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], Any], str]] = [
    ("name too long", NOTEBOOK, lambda o: o["metadata"].update(name="a" * 51), "metadata.name: "),
    ("name not dns-1035", NOTEBOOK, lambda o: o["metadata"].update(name="1-nb"), "metadata.name: "),
    ("name uppercase", NOTEBOOK, lambda o: o["metadata"].update(name="Nb"), "metadata.name: "),
    (
        "image empty",
        NOTEBOOK,
        lambda o: _spec(o).update(image={}),
        "spec.image: one of image.git, image.upload or image.name must be set",
    ),
    (
        "git and upload",
        NOTEBOOK,
        lambda o: _spec(o)["image"].update(upload={"checksum": "0" * 32}),
        "spec.image: image.git and image.upload are mutually exclusive",
    ),
    (
        "branch and tag",
        NOTEBOOK,
        lambda o: _spec(o)["image"]["git"].update(tag="v1"),
        "spec.image.git: git.branch and git.tag are mutually exclusive",
    ),
    (
        "git url empty",
        NOTEBOOK,
        lambda o: _spec(o)["image"]["git"].update(url=""),
        "spec.image.git.url: must not be empty",
    ),
    (
        "bad checksum",
        NOTEBOOK,
        lambda o: _spec(o).update(image={"upload": {"checksum": "ABC"}}),
        "spec.image.upload.checksum: 'ABC' is not an MD5",
    ),
    (
        "uppercase checksum",
        NOTEBOOK,
        lambda o: _spec(o).update(image={"upload": {"checksum": "A" * 32}}),
        "spec.image.upload.checksum: ",
    ),
    (
        "gpu type",
        NOTEBOOK,
        lambda o: _spec(o)["resources"]["gpu"].update(type="tpu-v4"),
        "spec.resources.gpu.type: 'tpu-v4' is not supported",
    ),
    (
        "gpu count 0",
        NOTEBOOK,
        lambda o: _spec(o)["resources"]["gpu"].update(count=0),
        "spec.resources.gpu.count: 0 must be an integer from 1 to 16",
    ),
    (
        "gpu count huge",
        NOTEBOOK,
        lambda o: _spec(o)["resources"]["gpu"].update(count=17),
        "spec.resources.gpu.count: ",
    ),
    (
        "cpu 0",
        NOTEBOOK,
        lambda o: _spec(o)["resources"].update(cpu=0),
        "spec.resources.cpu: 0 must be an integer from 1 to 1024",
    ),
    ("cpu huge", NOTEBOOK, lambda o: _spec(o)["resources"].update(cpu=1025), "spec.resources.cpu: "),
    (
        "memory 0",
        NOTEBOOK,
        lambda o: _spec(o)["resources"].update(memory=0),
        "spec.resources.memory: 0 must be an integer from 1 to 65536 (GB)",
    ),
    (
        "memory huge",
        NOTEBOOK,
        lambda o: _spec(o)["resources"].update(memory=65537),
        "spec.resources.memory: ",
    ),
    ("disk negative", NOTEBOOK, lambda o: _spec(o)["resources"].update(disk=-1), "spec.resources.disk: "),
    (
        "env name",
        NOTEBOOK,
        lambda o: _spec(o)["env"].update({"1BAD": "x"}),
        "spec.env.1BAD: '1BAD' is not a valid environment variable name",
    ),
    ("env name space", NOTEBOOK, lambda o: _spec(o)["env"].update({"A B": "x"}), "spec.env.A B: "),
    (
        "bad secret ref",
        NOTEBOOK,
        lambda o: _spec(o)["env"].update(TOKEN="${{ secrets.hf }}"),
        "spec.env.TOKEN: '${{ secrets.hf }}' is not a valid secret reference",
    ),
    (
        "param env collision",
        NOTEBOOK,
        lambda o: _spec(o)["params"].update({"e-pochs": 1, "e_pochs": 2}),
        "spec.params.e_pochs: maps to the same environment variable PARAM_E_POCHS",
    ),
    (
        "empty param key",
        NOTEBOOK,
        lambda o: _spec(o)["params"].update({"": 1}),
        "spec.params: keys must not be empty",
    ),
    (
        "idle timeout",
        NOTEBOOK,
        lambda o: _spec(o).update(idleTimeout="2 hours"),
        "spec.idleTimeout: '2 hours' is not a duration",
    ),
    ("idle timeout days", NOTEBOOK, lambda o: _spec(o).update(idleTimeout="1d"), "spec.idleTimeout: "),
    (
        "idle timeout zero",
        NOTEBOOK,
        lambda o: _spec(o).update(idleTimeout="0s"),
        "spec.idleTimeout: '0s' must be longer than zero",
    ),
    ("model ref name", NOTEBOOK, lambda o: _spec(o).update(model={"name": "Bad_Name"}), "spec.model.name: "),
    (
        "dataset ref namespace",
        NOTEBOOK,
        lambda o: _spec(o).update(dataset={"name": "d", "namespace": "Bad_NS"}),
        "spec.dataset.namespace: 'Bad_NS' is not a valid namespace name",
    ),
    (
        "baseModel ref",
        MODEL,
        lambda o: _spec(o).update(baseModel={"name": "x" * 51}),
        "spec.baseModel.name: ",
    ),
    (
        "trainingDataset ref",
        MODEL,
        lambda o: _spec(o).update(trainingDataset={"name": ""}),
        "spec.trainingDataset.name: name must not be empty",
    ),
]


@pytest.mark.parametrize(("base", "mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_cases_name_the_field(
    base: dict[str, Any], mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    errors = validate(obj(base, mutate))
    assert any(e.startswith(message) for e in errors), errors
    assert len(errors) == 1, errors


def test_objects_built_in_python_with_bad_params() -> None:
    nb = obj(NOTEBOOK)
    nb.spec.params["nested"] = {"a": 1}  # type: ignore[dict-item]
    nb.spec.params["lst"] = [1]  # type: ignore[dict-item]
    errors = validate(nb)
    assert errors == [
        "spec.params.nested: must be a string, integer, number or boolean, not an object (each param becomes one environment variable)",
        "spec.params.lst: must be a string, integer, number or boolean, not a list (each param becomes one environment variable)",
    ]


def test_server_requires_model() -> None:
    s = Server(spec=ServerSpec(image=Image(name="x"), model=None))  # type: ignore[arg-type]
    s.metadata.name = "s"
    assert validate(s) == ["spec.model: required: the Model to serve"]


def test_image_name_with_build_source_is_invalid() -> None:
    # SPEC §1: the spec is the user's, so exactly one of git / upload / name (the built image is in status).
    nb = obj(NOTEBOOK)
    nb.spec.image = Image(upload=UploadSource(checksum="0" * 32), name="registry/x:y")
    (err,) = validate(nb)
    assert err.startswith("spec.image.name:") and "spec.image.upload" in err and "status.image" in err
    nb.spec.image = Image(git=GitSource(url="https://x", tag="v1"), name="registry/x:y")
    (err,) = validate(nb)
    assert err.startswith("spec.image.name:") and "spec.image.git" in err
    nb.spec.image = Image(git=GitSource(url="https://x", tag="v1"))
    assert validate(nb) == []


def test_python_built_wrong_scalar_types() -> None:
    nb = obj(NOTEBOOK)
    nb.spec.resources.cpu = True
    assert nb.spec.resources.gpu is not None
    nb.spec.resources.gpu = GPU(type="nvidia-l4", count="2")  # type: ignore[arg-type]
    errors = validate(nb)
    assert [e.split(":")[0] for e in errors] == ["spec.resources.cpu", "spec.resources.gpu.count"]


def test_all_gpu_types_accepted() -> None:
    from substratus.api import GPU_TYPES

    assert GPU_TYPES == (
        "nvidia-tesla-t4",
        "nvidia-l4",
        "nvidia-tesla-a100",
        "nvidia-a100-80gb",
        "nvidia-h100-80gb",
    )
    for t in GPU_TYPES:
        assert validate(obj(NOTEBOOK, lambda o, t=t: _spec(o)["resources"]["gpu"].update(type=t))) == []


def test_parse_duration() -> None:
    assert parse_duration("2h").total_seconds() == 7200
    assert parse_duration("30m").total_seconds() == 1800
    assert parse_duration("1h30m15s").total_seconds() == 5415
    for bad in ("", "2", "h", "1.5h", "-1h", "2d", "1h 30m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_secret_ref() -> None:
    assert secret_ref("${{ secrets.hf.token }}") == ("hf", "token")
    assert secret_ref("${{secrets.my-secret.HF_TOKEN.v2}}") == ("my-secret", "HF_TOKEN.v2")
    assert secret_ref("plain") is None
    assert secret_ref("${{ secrets.hf }}") is None
    assert secret_ref("x ${{ secrets.hf.token }}") is None
