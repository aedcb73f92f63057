from __future__ import annotations

import pytest

from substratus import naming
from substratus.naming import (
    InvalidName,
    artifacts_url,
    child_labels,
    child_name,
    completed_marker_url,
    image_name,
    param_env_name,
    storage_hash,
    storage_url,
    upload_object_url,
    validate_parent_name,
)


def test_storage_hash_seed_vector() -> None:
    assert storage_hash("substratus-1", "team-a", "models", "falcon-7b") == "f94a0d128bcbd9c1b824e9e5572baf86"


def test_storage_urls() -> None:
    url = storage_url("gs://abc123-substratus-artifacts", "f94a0d128bcbd9c1b824e9e5572baf86")
    assert url == "gs://abc123-substratus-artifacts/f94a0d128bcbd9c1b824e9e5572baf86"
    assert storage_url("gs://b/", "h") == "gs://b/h"
    assert artifacts_url(url, "Model") == url + "/model"
    assert artifacts_url(url, "dataset") == url + "/data"
    with pytest.raises(ValueError):
        artifacts_url(url, "Server")
    assert (
        upload_object_url("gs://b/h", "11ddbaf3386aea1f2974eee984542152")
        == "gs://b/h/build/11ddbaf3386aea1f2974eee984542152.tar.gz"
    )
    assert completed_marker_url("file:///data/h") == "file:///data/h/completed.json"


@pytest.mark.parametrize(
    ("parent", "kind", "role", "expected"),
    [
        ("facebook-opt-125m", "Model", "build", "facebook-opt-125m-model-bld"),
        ("facebook-opt-125m", "Model", "workload", "facebook-opt-125m-model"),
        ("squad", "Dataset", "build", "squad-dataset-bld"),
        ("squad", "Dataset", "workload", "squad-dataset"),
        ("my-fancy-experiment", "Notebook", "build", "my-fancy-experiment-notebook-bld"),
        ("my-fancy-experiment", "Notebook", "workload", "my-fancy-experiment-notebook"),
        ("facebook-opt-125m-b", "Server", "build", "facebook-opt-125m-b-server-bld"),
        ("facebook-opt-125m-b", "Server", "workload", "facebook-opt-125m-b-server"),
        ("falcon-7b", "model", "params", "falcon-7b-model-params"),
    ],
)
def test_child_names_seed_examples(parent: str, kind: str, role: naming.Role, expected: str) -> None:
    assert child_name(parent, kind, role) == expected


def test_longest_names_fit_63() -> None:
    name = "a" * 50
    assert validate_parent_name(name) is None
    for kind in ("Model", "Dataset", "Server", "Notebook"):
        for role in ("workload", "build", "params"):
            if role == "params":
                continue  # ConfigMaps allow 253
            assert len(child_name(name, kind, role)) <= 63  # type: ignore[arg-type]
    assert len(child_name(name, "Notebook", "build")) == 63


def test_51_chars_rejected() -> None:
    name = "a" * 51
    problem = validate_parent_name(name)
    assert problem is not None and "51" in problem and "50" in problem
    with pytest.raises(InvalidName, match="at most 50"):
        child_name(name, "Model")
    assert issubclass(InvalidName, ValueError)


@pytest.mark.parametrize("bad", ["", "1abc", "Abc", "a_b", "a.b", "abc-", "-abc"])
def test_dns1035(bad: str) -> None:
    assert validate_parent_name(bad) is not None
    with pytest.raises(InvalidName):
        child_name(bad, "Model", "workload")


def test_unknown_role() -> None:
    with pytest.raises(ValueError, match="role"):
        child_name("a", "Model", "other")  # type: ignore[arg-type]


def test_image_name() -> None:
    assert (
        image_name(
            "us-central1-docker.pkg.dev/my-project/my-repo",
            "cluster1",
            "Model",
            "default",
            "falcon-7b",
            "abc123",
        )
        == "us-central1-docker.pkg.dev/my-project/my-repo/cluster1-model-default-falcon-7b:abc123"
    )
    assert (
        image_name("registry.local:5000/", "c", "Notebook", "ns", "nb", "feature/x")
        == "registry.local:5000/c-notebook-ns-nb:feature-x"
    )
    assert image_name("r", "c", "Model", "ns", "m", "x" * 200).endswith(":" + "x" * 128)
    assert image_name("r", "c", "Model", "ns", "m", ".hidden").endswith(":_.hidden")


def test_labels() -> None:
    assert child_labels("Model", "falcon-7b") == {
        "app.kubernetes.io/managed-by": "substratus",
        "substratus.ai/model": "falcon-7b",
    }


@pytest.mark.parametrize(
    ("key", "env"),
    [("abc", "PARAM_ABC"), ("name", "PARAM_NAME"), ("learning_rate", "PARAM_LEARNING_RATE"), ("batch-size", "PARAM_BATCH_SIZE"),
     ("a.b/c d", "PARAM_A_B_C_D"), ("ß", "PARAM__"), ("x9", "PARAM_X9")],
)  # fmt: skip
def test_param_env_name(key: str, env: str) -> None:
    assert param_env_name(key) == env
