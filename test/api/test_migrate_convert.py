"""`substratus convert` and the upstream field names, without a cluster (SPEC §9).

The fixtures in test/upstream/ are manifests in the original Substratus' shapes; together they
cover every row of the mapping table in docs/migrating-from-substratus.md. The same conversions
are applied to the real API server in test_api_upstream.py and run by the operator in
test/controllers/test_upstream.py.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from substratus.api import StructureError, from_dict
from substratus.api.crd import crd_for
from substratus.api.kinds import KINDS
from substratus.api.upstream import upstream_problems
from substratus.migrate import NotConvertible, convert_main, convert_object

UPSTREAM = Path(__file__).resolve().parents[1] / "upstream"


def run_convert(*paths: str, default_gpu_type: str | None = None, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(paths=list(paths), default_gpu_type=default_gpu_type)
    rc = convert_main(args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def by_name(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text)}


def test_every_upstream_shape_converts_to_the_same_meaning() -> None:
    rc, out, err = run_convert(str(UPSTREAM), default_gpu_type="nvidia-l4")
    assert rc == 0, err
    objs = by_name(out)
    spec = {key: obj["spec"] for key, obj in objs.items()}
    assert len(objs) == 12
    # string image → image.name (env and params untouched)
    assert spec["Model", "opt-125m"]["image"] == {"name": "substratusai/model-loader-huggingface"}
    assert spec["Model", "opt-125m"]["env"] == {"HF_TOKEN": "${{ secrets.ai.HUGGING_FACE_HUB_TOKEN }}"}
    # fine-tunes stay fine-tunes: model/dataset → baseModel/trainingDataset; nvidia-a100 renamed
    tune = spec["Model", "opt-125m-squad"]
    assert tune["baseModel"] == {"name": "opt-125m"} and tune["trainingDataset"] == {"name": "squad"}
    assert "model" not in tune and "dataset" not in tune
    assert tune["resources"]["gpu"] == {"type": "nvidia-tesla-a100", "count": 2}
    git_tune = spec["Model", "opt-125m-squad-git"]
    assert git_tune["baseModel"] == {"name": "opt-125m"} and git_tune["trainingDataset"] == {"name": "squad"}
    # build.git → image.git (tag / branch / path kept)
    assert git_tune["image"] == {"git": {"url": "https://github.com/substratusai/images",
                                         "path": "model-trainer-huggingface", "tag": "v0.10.0"}}
    assert spec["Dataset", "k8s-instructions"]["image"]["git"]["branch"] == "main"
    assert "build" not in git_tune
    # build.upload.md5Checksum (upper-case hex allowed upstream) → image.upload.checksum
    assert spec["Model", "opt-125m-upload"]["image"] == {
        "upload": {"checksum": "0cc175b9c0f1b6a831c399e269772661", "requestID": "first"}}
    # modelName → model.name; nvidia-t4 renamed
    assert spec["Server", "opt-125m-squad"]["model"] == {"name": "opt-125m-squad"}
    assert spec["Notebook", "opt-125m-squad"]["model"] == {"name": "opt-125m-squad"}
    assert spec["Server", "opt-125m"]["resources"]["gpu"]["type"] == "nvidia-tesla-t4"
    # Notebook's model/dataset mean the same here: unchanged
    assert spec["Notebook", "opt-125m-dev"]["model"] == {"name": "opt-125m"}
    # omitted GPU type → --default-gpu-type
    assert spec["Server", "llama-cpp-gpu"]["resources"]["gpu"] == {"type": "nvidia-l4", "count": 1}
    # an export: server-set metadata, status and upstream's controller-written image are gone
    exported = objs["Model", "opt-125m-exported"]
    assert exported["metadata"] == {"name": "opt-125m-exported", "namespace": "default"}
    assert "status" not in exported
    assert exported["spec"]["image"] == {"git": {"url": "https://github.com/substratusai/images",
                                                 "path": "model-loader-huggingface", "branch": "main"}}
    # every converted object is what the controller accepts
    for obj in objs.values():
        from_dict(obj)
    # one line per change, naming the source, the object and the field
    lines = err.splitlines()
    assert "models.yaml#2: Model/opt-125m-squad: spec.model → spec.baseModel" in [
        line.split("upstream/")[-1] for line in lines]
    assert any(line.endswith("Model/opt-125m-squad: spec.dataset → spec.trainingDataset") for line in lines)
    assert any(line.endswith("Server/opt-125m: spec.resources.gpu.type: nvidia-t4 → nvidia-tesla-t4")
               for line in lines)
    assert any("exported-list.yaml[0]: Model/default/opt-125m-exported: status: removed" in line for line in lines)
    assert any("spec.image: 'us-central1-docker.pkg.dev" in line and "removed" in line for line in lines)
    # 8 fixtures without spec.resources get upstream's GCP requests written out (cpu 2, memory 4, disk 100)
    assert sum("spec.resources: omitted → cpu 2, memory 4, disk 100" in line for line in lines) == 8
    assert spec["Model", "opt-125m"]["resources"] == {"cpu": 2, "memory": 4, "disk": 100}
    assert len(lines) == 33


def test_omitted_gpu_type_is_refused_and_nothing_is_written() -> None:
    rc, out, err = run_convert(str(UPSTREAM))
    assert rc == 2 and out == ""
    assert "any-gpu.yaml: Server/llama-cpp-gpu: cannot convert: spec.resources.gpu.type: omitted" in err
    assert "--default-gpu-type" in err
    assert "1 of 12 documents cannot be converted; nothing written" in err


def test_stdin_multi_document() -> None:
    rc, out, err = run_convert("-", stdin=(UPSTREAM / "models.yaml").read_text())
    assert rc == 0, err
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == [
        "opt-125m", "opt-125m-squad", "opt-125m-squad-git", "opt-125m-upload"]
    assert err.splitlines()[0] == "<stdin>: Model/opt-125m: spec.image: 'substratusai/model-loader-huggingface' → spec.image.name"


def test_other_documents_pass_through_and_ours_need_no_change() -> None:
    ours = {"apiVersion": "substratus.ai/v1", "kind": "Dataset", "metadata": {"name": "d"},
            "spec": {"image": {"name": "x"}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ai"}, "stringData": {"k": "v"}}
    rc, out, err = run_convert("-", stdin=yaml.safe_dump_all([secret, ours]))
    assert rc == 0 and err == ""
    assert list(yaml.safe_load_all(out)) == [secret, ours]


def _upstream(kind: str = "Model", name: str = "m", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (_upstream(image="x", somethingNew=1), "spec.somethingNew: no equivalent here"),
        (_upstream(image="x", resources={"gpu": {"type": "tpu-v4"}}), "spec.resources.gpu.type: 'tpu-v4'"),
        (_upstream("Dataset", image="x", modelName="m"), "spec.modelName: a Dataset has no model reference"),
        (_upstream(image="x", resources={"gpu": {"type": "nvidia-l4", "count": 0}}),
         "spec.resources.gpu.count: 0 (upstream: no GPU"),
        (_upstream(build={"upload": {"requestID": "r"}}), "spec.build.upload.md5Checksum: missing"),
        (_upstream(build={}), "spec.build: expected exactly one of git or upload"),
        (_upstream(image={"name": "x"}, build={"git": {"url": "u"}}), "keep one image source"),
        (_upstream(image="x", model={"name": "a"}, baseModel={"name": "b"}), "spec.model: spec.baseModel is set too"),
        (_upstream(name="Falcon_7B", image="x"), "metadata.name:"),
        (_upstream("ModelServer", modelName="m"), "kind 'ModelServer' has no equivalent"),
        (_upstream(image="x", params={"a": {"nested": 1}}), "spec.params.a"),
    ],
)
def test_what_cannot_be_converted_is_refused_naming_the_field(obj: dict[str, Any], fragment: str) -> None:
    with pytest.raises(NotConvertible) as exc:
        convert_object(obj)
    assert fragment in str(exc.value)


def test_bad_default_gpu_type() -> None:
    rc, _, err = run_convert("-", default_gpu_type="nvidia-a100")
    assert rc == 2 and "use one of nvidia-tesla-t4" in err


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_upstream(image={"name": "x"}, model={"name": "base"}), "spec.model: use spec.baseModel"),
        (_upstream(image={"name": "x"}, dataset={"name": "d"}), "spec.dataset: use spec.trainingDataset"),
        (_upstream(build={"git": {"url": "u"}}), "spec.build: use spec.image.git or spec.image.upload"),
        (_upstream("Server", build={"upload": {"md5Checksum": "A" * 32}}, model={"name": "m"}),
         "spec.build: use spec.image.git or spec.image.upload"),
        (_upstream("Notebook", image={"name": "x"}, modelName="m"), "spec.modelName: use spec.model.name"),
        (_upstream("Model", image={"name": "x"}, modelName="m"), "spec.modelName: use spec.baseModel.name"),
        (_upstream("Dataset", image={"name": "x"}, modelName="m"), "spec.modelName: not a Dataset field"),
        (_upstream("Server", image="x:1", model={"name": "m"}), "spec.image: a string is the original Substratus' form; "
                                                                "use spec.image.name"),
    ],
)
def test_upstream_names_are_reported_with_their_new_names(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(StructureError) as exc:
        from_dict(obj)
    assert any(e.startswith(message) for e in exc.value.errors), exc.value.errors
    assert "substratus convert" in str(exc.value)
    assert upstream_problems(obj) == exc.value.errors


def test_server_and_notebook_model_references_are_not_upstream_names() -> None:
    assert upstream_problems(_upstream("Server", image={"name": "x"}, model={"name": "m"})) == []
    assert upstream_problems(_upstream("Notebook", image={"name": "x"}, model={"name": "m"},
                                       dataset={"name": "d"})) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_declares_upstream_names_and_rejects_them_with_cel(kind: str) -> None:
    spec = crd_for(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    declared = {"build", "modelName"} | ({"model", "dataset"} if kind == "Model" else set())
    assert declared <= set(spec["properties"])
    assert spec["properties"]["build"]["properties"]["upload"]["properties"]["md5Checksum"]["type"] == "string"
    assert "image" not in spec.get("required", [])
    rules = {r["rule"]: r["message"] for r in spec["x-kubernetes-validations"]}
    assert rules["has(self.image)"].startswith("spec.image: required")
    assert rules["!has(self.build)"].startswith("spec.build: use spec.image.git or spec.image.upload")
    if kind == "Model":
        assert rules["!has(self.model)"].startswith("spec.model: use spec.baseModel")
    no_cel = crd_for(KINDS[kind], cel=False)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "x-kubernetes-validations" not in no_cel and declared <= set(no_cel["properties"])


def test_cli_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "substratus", "convert", str(UPSTREAM / "servers.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [d["spec"]["model"]["name"] for d in yaml.safe_load_all(proc.stdout)] == ["opt-125m", "opt-125m-squad"]
    assert "spec.modelName → spec.model.name" in proc.stderr


def test_hash_is_upstreams() -> None:
    """Upstream's objectHashInput (internal/cloud/common.go): clusters/{c}/namespaces/{ns}/{lower(kind)}s/{name},
    md5 hex — its test vector, hashed the same way as ours (SPEC §3)."""
    import hashlib

    from substratus import naming

    upstream_input = "clusters/my-cluster/namespaces/my-ns/models/my-model"  # upstream's own test vector
    assert naming.storage_hash("my-cluster", "my-ns", "models", "my-model") == hashlib.md5(
        upstream_input.encode(), usedforsecurity=False).hexdigest()
    for cls in KINDS.values():
        assert cls.PLURAL == cls.KIND.lower() + "s"


def test_adopt_command_without_a_cluster(tmp_path: Path) -> None:
    from substratus import naming

    bucket = f"file://{tmp_path}/bucket"
    url = naming.storage_url(bucket, naming.storage_hash("old", "default", "models", "falcon"))
    artifacts = Path(url.removeprefix("file://")) / "artifacts"
    cmd = [sys.executable, "-m", "substratus", "adopt", "model/falcon", "-n", "default",
           "--cluster-name", "old", "--bucket-url", bucket]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no artifacts of the original Substratus" in proc.stderr
    artifacts.mkdir(parents=True)
    (artifacts / "model.bin").write_bytes(b"x" * 10)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "adopted 1 files (10 bytes)" in proc.stdout
    assert (artifacts.parent / "completed.json").exists() and (artifacts / "model.bin").read_bytes() == b"x" * 10


def test_git_branch_and_tag_keeps_the_tag_upstream_built() -> None:
    """Upstream cloned ``--branch TAG`` when both were set (build_reconciler.go) and tagged the
    image with the tag: the conversion keeps what was built instead of refusing."""
    result = convert_object(_upstream(build={"git": {"url": "https://github.com/x/y", "branch": "main", "tag": "v1"}},
                                      resources={}))
    assert result.obj["spec"]["image"] == {"git": {"url": "https://github.com/x/y", "tag": "v1"}}
    assert result.changes[0] == ("spec.build.git.branch: 'main' removed (tag 'v1' is set too; upstream built the "
                                 "tag, here they are exclusive)")
    from_dict(result.obj)


def test_omitted_resources_keep_what_upstream_requested() -> None:
    """Upstream without spec.resources requested cpu 2, memory 4 GB, disk 100 GB on GCP
    (internal/resources/resources.go); here omitted means 2/10/10 — a 40 GB import would run out
    of disk. A written ``resources`` (even empty) got the same CRD defaults in both: unchanged."""
    result = convert_object(_upstream(image="substratusai/model-loader-huggingface"))
    assert result.obj["spec"]["resources"] == {"cpu": 2, "memory": 4, "disk": 100}
    assert any(c.startswith("spec.resources: omitted → cpu 2, memory 4, disk 100") for c in result.changes)
    resources = from_dict(result.obj).spec.resources
    assert (resources.cpu, resources.memory, resources.disk) == (2, 4, 100)
    assert convert_object(_upstream(image="x", resources={})).obj["spec"]["resources"] == {}
    assert convert_object(_upstream(image="x", resources={"cpu": 4})).obj["spec"]["resources"] == {"cpu": 4}
    # idempotent: a manifest already in this product's shape is not upstream's; left alone
    again = convert_object(result.obj)
    assert again.changes == [] and again.obj == result.obj
    ours = _upstream(image={"name": "x"})
    assert convert_object(ours).obj == ours and convert_object(ours).changes == []


def test_gpu_count_zero_is_refused_not_turned_into_a_gpu() -> None:
    with pytest.raises(NotConvertible, match=r"spec.resources.gpu.count: 0 .*remove spec.resources.gpu"):
        convert_object(_upstream(image="x", resources={"gpu": {"type": "nvidia-l4", "count": 0}}))
    omitted = convert_object(_upstream(image="x", resources={"gpu": {"type": "nvidia-l4"}}))
    assert omitted.obj["spec"]["resources"]["gpu"] == {"type": "nvidia-l4", "count": 1}


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_document_that_is_not_an_object_is_refused_not_a_crash(text: str) -> None:
    model = yaml.safe_dump(_upstream(image="x", resources={}))
    rc, out, err = run_convert("-", stdin=model + "---\n" + text)
    assert rc == 2 and out == ""
    assert "<stdin>#2: (not an object): cannot convert: a YAML" in err and "not a Kubernetes object" in err
    assert "1 of 2 documents cannot be converted; nothing written" in err


def test_typed_lists_from_the_api_are_expanded() -> None:
    """``kubectl get models -o yaml`` prints ``kind: List``; the API itself (``kubectl get --raw``,
    client libraries) returns ``kind: ModelList``."""
    doc = {"apiVersion": "substratus.ai/v1", "kind": "ModelList", "metadata": {"resourceVersion": "7"},
           "items": [_upstream(name="a", image="x", resources={}),
                     _upstream("Model", name="b", image="y", model={"name": "a"}, resources={})]}
    rc, out, err = run_convert("-", stdin=yaml.safe_dump(doc))
    assert rc == 0, err
    objs = list(yaml.safe_load_all(out))
    assert [o["metadata"]["name"] for o in objs] == ["a", "b"]
    assert objs[1]["spec"]["baseModel"] == {"name": "a"}
    assert "<stdin>[1]: Model/b: spec.model → spec.baseModel" in err


def test_adopt_notebook_finds_upstream_files_and_says_how_to_bring_them_over(tmp_path: Path) -> None:
    """Upstream persisted a Notebook's /content/artifacts at {hash}/artifacts; here a Notebook's
    output is {hash}/output. adopt lists them and prints the copy command; it writes nothing."""
    from substratus import naming

    bucket = f"file://{tmp_path}/bucket"
    url = naming.storage_url(bucket, naming.storage_hash("old", "default", "notebooks", "dev"))
    cmd = [sys.executable, "-m", "substratus", "adopt", "notebook/dev", "-n", "default",
           "--cluster-name", "old", "--bucket-url", bucket]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no files of the original Substratus" in proc.stdout
    work = Path(url.removeprefix("file://")) / "artifacts"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "step-1.bin").write_bytes(b"y" * 7)
    (work / "analysis.ipynb").write_text("{}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Notebook default/dev: 2 files (9 bytes) of the original Substratus" in proc.stderr
    assert f"are {url}/output/, so they are not visible until copied" in proc.stderr
    copy = proc.stderr.splitlines()[-1].strip()
    assert sorted(p.name for p in work.parent.iterdir()) == ["artifacts"], "nothing written"
    subprocess.run(copy, shell=True, check=True)
    assert (work.parent / "output" / "checkpoints" / "step-1.bin").read_bytes() == b"y" * 7
    assert (work / "analysis.ipynb").exists(), "the originals stay"


def test_a_directory_of_json_manifests_is_converted_like_kubectl_reads_it(tmp_path: Path) -> None:
    """kubectl apply -f DIR reads *.json too; skipping them gave an empty, successful conversion."""
    (tmp_path / "model.json").write_text(json.dumps(_upstream(name="j", image="x", resources={})))
    (tmp_path / "README.md").write_text("not a manifest")
    rc, out, err = run_convert(str(tmp_path))
    assert rc == 0, err
    assert [d["spec"]["image"] for d in yaml.safe_load_all(out)] == [{"name": "x"}]


def test_a_directory_without_manifests_or_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rc, out, err = run_convert(str(tmp_path / "empty"))
    assert rc == 2 and out == "" and "no *.yaml, *.yml, *.json files below it" in err
    (tmp_path / "latin1.yaml").write_bytes(b"\xff\xfe not utf-8")
    rc, out, err = run_convert(str(tmp_path / "latin1.yaml"))
    assert rc == 2 and out == "" and err.startswith("substratus: error: 'utf-8' codec can't decode")


def test_exported_owner_references_and_deletion_marks_are_removed() -> None:
    """An object exported from the old cluster names its owners by uid; applied to a new cluster
    the garbage collector would delete it (the owner uid does not exist there)."""
    exported = _upstream(image="x", resources={})
    exported["metadata"].update({
        "uid": "1", "deletionTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0,
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "0"}]})
    result = convert_object(exported)
    assert result.obj["metadata"] == {"name": "m"}
    assert "metadata.{uid,deletionTimestamp,deletionGracePeriodSeconds}: removed (set by the API server)" \
        in result.changes
    assert any(c.startswith("metadata.ownerReferences: removed") for c in result.changes)


def test_multi_line_params_stay_blocks_and_round_trip() -> None:
    template = "You're a helpful assistant\n## Instruction\n{prompt}\n## Response:\n{completion}\n"
    odd = "trailing space \nand tab\there"
    text = yaml.safe_dump(_upstream(image="x", resources={}, params={"prompt_template": template, "odd": odd}))
    rc, out, err = run_convert("-", stdin=text)
    assert rc == 0, err
    assert "    prompt_template: |\n      You're a helpful assistant\n      ## Instruction\n" in out
    assert yaml.safe_load(out)["spec"]["params"] == {"prompt_template": template, "odd": odd}
