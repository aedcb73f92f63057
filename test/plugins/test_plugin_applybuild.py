"""``kubectl applybuild`` against the real local API server with the operator in-process: the
tarball reaches the controller's upload endpoint, the (simulated) build Job runs, Built=True."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from plugin_helpers import CLUSTER, REGISTRY, condition, context_dir, manifest

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS
from substratus.plugins import ExitCode, PluginError, applybuild
from substratus.plugins.tarball import build_tarball
from substratus.plugins.upload import check_crd, put_file
from substratus.rerun import rerun
from substratus.runtime.resource import JOBS, Resource
from substratus.testing.wait import eventually


def opts(kubeconfig: Path, file: Path, directory: Path, timeout: float = 60) -> applybuild.Options:
    return applybuild.Options(filename=str(file), directory=str(directory), kubeconfig=str(kubeconfig),
                              timeout=timeout, progress=False)


async def test_applybuild_dataset_end_to_end(operator: Any, namespace: str, kubeconfig: Path, tmp_path: Path) -> None:
    ctx = context_dir(tmp_path / "ctx")
    expected_md5 = build_tarball(ctx, tmp_path / "expected.tar.gz").md5
    file = manifest(tmp_path / "dataset.yaml", "Dataset", "squad", namespace, params={"limit": 5})
    out = io.StringIO()

    assert await applybuild.run(opts(kubeconfig, file, ctx), out=out) == ExitCode.OK

    repo = f"{REGISTRY}/{CLUSTER}-dataset-{namespace}-squad"
    obj = await operator.client.get(DATASETS, "squad", namespace)
    image = obj["status"]["image"]
    assert image.startswith(f"{repo}@sha256:"), "pinned by digest"
    assert out.getvalue().strip() == f"dataset/squad built {image}"
    assert obj["spec"]["image"]["upload"]["checksum"] == expected_md5
    assert "git" not in obj["spec"]["image"] and "name" not in obj["spec"]["image"]
    assert obj["spec"]["params"] == {"limit": 5}
    built = condition(obj, "Built")
    assert built and built["status"] == "True" and built["reason"] == "BuildSucceeded"
    # The PUT reached the controller's endpoint: the bucket holds exactly our tarball.
    url = naming.storage_url(operator.cloud.bucket_url, naming.storage_hash(CLUSTER, namespace, "datasets", "squad"))
    assert await operator.cloud.md5(naming.upload_object_url(url, expected_md5)) == expected_md5
    assert obj["status"]["upload"]["storedChecksum"] == expected_md5
    job = await operator.client.get(JOBS, "squad-dataset-bld", namespace)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--context=tar:///build/{expected_md5}.tar.gz" in args and f"--destination={repo}:{expected_md5}" in args

    # Unchanged directory, new invocation: fresh requestID, nothing uploaded, nothing rebuilt.
    out2 = io.StringIO()
    (ctx / "more.log").write_text("ignored by .dockerignore")
    assert await applybuild.run(opts(kubeconfig, file, ctx), out=out2) == ExitCode.OK
    assert out2.getvalue().strip() == f"dataset/squad built {image}"
    again = await operator.client.get(DATASETS, "squad", namespace)
    assert again["spec"]["image"]["upload"]["requestID"] != obj["spec"]["image"]["upload"]["requestID"]
    assert (await operator.client.get(JOBS, "squad-dataset-bld", namespace))["metadata"]["uid"] == job["metadata"]["uid"]

    # A code change on a complete Dataset: uploaded, but a complete object is never rebuilt or
    # rerun silently (SPEC §3) — the command says so and how, instead of waiting forever.
    async def complete() -> bool:
        c = condition(await operator.client.get(DATASETS, "squad", namespace), "Complete")
        return bool(c and c["status"] == "True")

    await eventually(complete, timeout=30)
    (ctx / "train.py").write_text("print('v2')\n")
    with pytest.raises(PluginError) as err:
        await applybuild.run(opts(kubeconfig, file, ctx), out=io.StringIO())
    assert err.value.code == ExitCode.USAGE and "substratus rerun dataset/squad" in err.value.message
    assert (await operator.client.get(JOBS, "squad-dataset-bld", namespace))["metadata"]["uid"] == job["metadata"]["uid"]

    # After `substratus rerun`: the new context is built and the Job runs again.
    await rerun(operator.client, "Dataset", "squad", namespace, cloud=operator.cloud)
    assert await applybuild.run(opts(kubeconfig, file, ctx), out=io.StringIO()) == ExitCode.OK
    v2 = await operator.client.get(DATASETS, "squad", namespace)
    assert v2["status"]["image"] != image and v2["status"]["image"].startswith(f"{repo}@sha256:")

    # --rebuild: the same directory is built again (the annotation substratus.ai/rebuild).
    await rerun(operator.client, "Dataset", "squad", namespace, cloud=operator.cloud)
    uid = (await operator.client.get(JOBS, "squad-dataset-bld", namespace))["metadata"]["uid"]
    rebuild_opts = opts(kubeconfig, file, ctx)
    rebuild_opts.rebuild = True
    assert await applybuild.run(rebuild_opts, out=io.StringIO()) == ExitCode.OK
    v3 = await operator.client.get(DATASETS, "squad", namespace)
    assert v3["metadata"]["annotations"][naming.REBUILD_ANNOTATION] == v3["status"]["build"]["rebuild"]
    assert (await operator.client.get(JOBS, "squad-dataset-bld", namespace))["metadata"]["uid"] != uid


async def test_applybuild_replaces_git_source_of_existing_model(operator: Any, namespace: str, kubeconfig: Path,
                                                                tmp_path: Path) -> None:
    await operator.client.create(MODELS, {
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "opt", "namespace": namespace},
        "spec": {"image": {"git": {"url": "https://github.com/substratusai/model-loader-huggingface"}},
                 "params": {"name": "facebook/opt-125m", "old": 1}}})
    file = manifest(tmp_path / "model.yaml", "Model", "opt", namespace, params={"name": "facebook/opt-125m"})
    assert await applybuild.run(opts(kubeconfig, file, context_dir(tmp_path / "ctx")), out=io.StringIO()) == 0
    obj = await operator.client.get(MODELS, "opt", namespace)
    assert "git" not in obj["spec"]["image"] and obj["spec"]["image"]["upload"]
    assert obj["spec"]["params"] == {"name": "facebook/opt-125m"}  # like kubectl apply: removed keys go


async def test_build_failure_exits_6_with_the_condition_message(operator: Any, namespace: str, kubeconfig: Path,
                                                                tmp_path: Path) -> None:
    file = manifest(tmp_path / "d.yaml", "Dataset", "broken-data", namespace)
    with pytest.raises(PluginError) as e:
        await applybuild.run(opts(kubeconfig, file, context_dir(tmp_path / "ctx")), out=io.StringIO())
    assert e.value.code == ExitCode.BUILD_FAILED == 6
    assert "broken-data-dataset-bld failed" in e.value.message
    # No kubelet, so no Pod logs: said so rather than printing nothing.
    assert "no build log available" in e.value.details


async def test_no_operator_times_out_with_exit_7(client: Any, namespace: str, kubeconfig: Path, tmp_path: Path,
                                                 crds_installed: dict[str, Any], fast_polls: None) -> None:
    if not crds_installed:
        from substratus.install import install_crds

        crds_installed["names"] = await install_crds(client)
    file = manifest(tmp_path / "d.yaml", "Dataset", "orphan", namespace)
    with pytest.raises(PluginError) as e:
        await applybuild.run(opts(kubeconfig, file, context_dir(tmp_path / "ctx"), timeout=1.0), out=io.StringIO())
    assert e.value.code == ExitCode.TIMEOUT == 7
    assert "upload URL" in e.value.message and "is the operator running?" in e.value.message


async def test_upload_rejected_exits_5_with_the_servers_message(operator: Any, namespace: str,
                                                                tmp_path: Path) -> None:
    body = tmp_path / "ctx.tar.gz"
    body.write_bytes(b"not what was signed")
    signed = await operator.cloud.signed_upload_url(f"{operator.cloud.bucket_url}/x/build/a.tar.gz", 60, md5="0" * 32)
    with pytest.raises(PluginError) as e:
        await put_file(signed.url, body, "0" * 32, body.stat().st_size, progress=False)
    assert e.value.code == ExitCode.UPLOAD_REJECTED == 5
    assert "HTTP 400" in e.value.message and "does not match the expected" in e.value.message


async def test_missing_crds_exit_4(client: Any) -> None:
    for res in (Resource("substratus.ai", "v1", "gizmos", "Gizmo"), Resource("nothing.example", "v1", "xs", "X")):
        with pytest.raises(PluginError) as e:
            await check_crd(client, res)
        assert e.value.code == ExitCode.NO_CRDS == 4


# --- exit codes of the console script, no cluster needed --------------------------------------------


def test_wrong_kind_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "cm.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert applybuild.main(["-f", str(file), str(tmp_path)]) == 2
    assert "kind 'ConfigMap' is not supported" in capsys.readouterr().err


def test_invalid_spec_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = manifest(tmp_path / "m.yaml", "Model", "m", "default", resources={"cpu": "two"})
    assert applybuild.main(["-f", str(file), str(tmp_path)]) == 2
    assert "spec.resources.cpu" in capsys.readouterr().err


def test_no_cluster_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = manifest(tmp_path / "d.yaml", "Dataset", "d", "default")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    assert applybuild.main(["-f", str(file), str(tmp_path), "--kubeconfig", str(kubeconfig)]) == 3
    assert "cannot connect to the Kubernetes API server" in capsys.readouterr().err
    assert applybuild.main(["-f", str(file), str(tmp_path), "--kubeconfig", str(tmp_path / "missing")]) == 3
