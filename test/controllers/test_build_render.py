"""The kaniko build Job, rendered purely (no cluster): git and upload contexts, clouds, images."""

from __future__ import annotations

from typing import Any

import pytest

from substratus import naming
from substratus.api import from_dict
from substratus.cloud.gcp import GCSFUSE_ANNOTATION, GCSFUSE_DRIVER, GcpCloud
from substratus.cloud.local import LocalCloud
from substratus.config import DEFAULT_GIT_IMAGE, DEFAULT_KANIKO_IMAGE
from substratus.controllers.build import build_job, image_tag
from substratus.controllers.diff import HASH_ANNOTATION
from substratus.controllers.render import BuildImages

CHECKSUM = "0123456789abcdef0123456789abcdef"
IMAGES = BuildImages(kaniko=DEFAULT_KANIKO_IMAGE, git=DEFAULT_GIT_IMAGE)
LOCAL_IMAGES = BuildImages(kaniko=DEFAULT_KANIKO_IMAGE, git=DEFAULT_GIT_IMAGE, insecure_registry=True)
DEST = "registry.test:5000/c1-model-team-a-falcon:main"


def obj(kind: str = "Model", name: str = "falcon", **image: Any) -> Any:
    return from_dict({
        "apiVersion": "substratus.ai/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1", "generation": 3},
        "spec": {"image": image},
    })


@pytest.fixture
def local(tmp_path: Any) -> LocalCloud:
    return LocalCloud(f"file://{tmp_path}/bucket", signing_key="k", upload_base_url="http://up.test")


@pytest.fixture
def gcp() -> GcpCloud:
    return GcpCloud("gs://bkt", service_account="wl@p.iam.gserviceaccount.com")


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _arg(container: dict[str, Any], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} in {container['args']}"
    return values[0]


def test_git_branch_job(local: LocalCloud) -> None:
    m = obj(git={"url": "https://github.com/org/repo", "branch": "main", "path": "sub/dir/"})
    job = build_job(m, name="falcon-model-bld", destination=DEST, images=LOCAL_IMAGES, cloud=local,
                    status_url=f"{local.bucket_url}/h", service_account=None)
    meta = job["metadata"]
    assert meta["name"] == "falcon-model-bld" and meta["namespace"] == "team-a"
    ref = meta["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "Model", "falcon", "uid-1", True, True)
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "substratus", "substratus.ai/model": "falcon",
                              "substratus.ai/role": "build"}
    assert meta["annotations"]["substratus.ai/image"] == DEST and meta["annotations"][HASH_ANNOTATION]
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["template"]["metadata"]["labels"]["substratus.ai/role"] == "build"
    pod = _pod(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"] == [{"name": "workspace", "emptyDir": {}}]
    (clone,) = pod["initContainers"]
    assert clone["image"] == DEFAULT_GIT_IMAGE
    assert clone["command"] == ["git", "clone", "--depth", "1", "--branch", "main",
                                "https://github.com/org/repo", "/workspace"]
    assert clone["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    (kaniko,) = pod["containers"]
    assert kaniko["name"] == "build" and kaniko["image"] == DEFAULT_KANIKO_IMAGE
    assert _arg(kaniko, "--context") == "dir:///workspace/sub/dir"
    assert _arg(kaniko, "--destination") == DEST
    assert {"--insecure", "--skip-tls-verify"} <= set(kaniko["args"])
    assert kaniko["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    assert "serviceAccountName" not in pod


def test_git_tag_default_branch_and_root_context(local: LocalCloud) -> None:
    tagged = build_job(obj(git={"url": "https://g/r", "tag": "v1.2"}), name="falcon-model-bld", destination=DEST,
                       images=IMAGES, cloud=local, status_url="unused", service_account=None)
    assert _pod(tagged)["initContainers"][0]["command"] == ["git", "clone", "--depth", "1", "--branch", "v1.2",
                                                            "https://g/r", "/workspace"]
    assert _arg(_pod(tagged)["containers"][0], "--context") == "dir:///workspace"
    plain = build_job(obj(git={"url": "https://g/r"}), name="falcon-model-bld", destination=DEST,
                      images=IMAGES, cloud=local, status_url="unused", service_account=None)
    assert "--branch" not in _pod(plain)["initContainers"][0]["command"]


def test_upload_job_local_mounts_build_dir_read_only(local: LocalCloud) -> None:
    url = f"{local.bucket_url}/abc123"
    d = obj("Dataset", "squad", upload={"checksum": CHECKSUM, "requestID": "r1"})
    job = build_job(d, name="squad-dataset-bld", destination=DEST, images=LOCAL_IMAGES, cloud=local,
                    status_url=url, service_account=None)
    assert job["metadata"]["labels"]["substratus.ai/dataset"] == "squad"
    pod = _pod(job)
    assert "initContainers" not in pod
    (kaniko,) = pod["containers"]
    assert _arg(kaniko, "--context") == f"tar:///build/{CHECKSUM}.tar.gz"
    assert _arg(kaniko, "--destination") == DEST
    assert kaniko["volumeMounts"] == [{"name": "build", "mountPath": "/build", "readOnly": True}]
    (vol,) = pod["volumes"]
    assert vol["hostPath"]["path"] == f"{local.root}/abc123/build"
    assert "annotations" not in job["spec"]["template"]["metadata"]


def test_upload_job_gcp_uses_gcs_fuse_without_insecure_flags(gcp: GcpCloud) -> None:
    d = obj("Dataset", "squad", upload={"checksum": CHECKSUM})
    job = build_job(d, name="squad-dataset-bld", destination=DEST, images=IMAGES, cloud=gcp,
                    status_url="gs://bkt/abc123", service_account="substratus")
    pod = _pod(job)
    (vol,) = pod["volumes"]
    assert vol["csi"]["driver"] == GCSFUSE_DRIVER and vol["csi"]["readOnly"] is True
    assert vol["csi"]["volumeAttributes"] == {"bucketName": "bkt", "mountOptions": "implicit-dirs,only-dir=abc123/build"}
    assert job["spec"]["template"]["metadata"]["annotations"] == {GCSFUSE_ANNOTATION: "true"}
    assert pod["serviceAccountName"] == "substratus"  # Workload Identity for the FUSE mount
    kaniko = pod["containers"][0]
    assert not {"--insecure", "--skip-tls-verify"} & set(kaniko["args"])


def test_images_are_configurable(local: LocalCloud) -> None:
    images = BuildImages(kaniko="my.registry/kaniko:v9", git="my.registry/git:2")
    job = build_job(obj(git={"url": "https://g/r"}), name="falcon-model-bld", destination=DEST, images=images,
                    cloud=local, status_url="unused", service_account=None)
    assert _pod(job)["containers"][0]["image"] == "my.registry/kaniko:v9"
    assert _pod(job)["initContainers"][0]["image"] == "my.registry/git:2"


def test_job_hash_changes_with_what_is_built(local: LocalCloud) -> None:
    """The build Job is immutable and hash-stamped: another ref or checksum must change the hash."""
    def hash_of(**image: Any) -> str:
        job = build_job(obj(**image), name="falcon-model-bld", destination=DEST, images=IMAGES, cloud=local,
                        status_url=f"{local.bucket_url}/h", service_account=None)
        return str(job["metadata"]["annotations"][HASH_ANNOTATION])

    main = hash_of(git={"url": "https://g/r", "branch": "main"})
    assert main == hash_of(git={"url": "https://g/r", "branch": "main"})
    assert main != hash_of(git={"url": "https://g/r", "branch": "dev"})
    assert hash_of(upload={"checksum": CHECKSUM}) != hash_of(upload={"checksum": "f" * 32})


def test_image_tag_and_expected_name() -> None:
    assert image_tag(obj(upload={"checksum": CHECKSUM})) == CHECKSUM
    assert image_tag(obj(git={"url": "u", "tag": "v1"})) == "v1"
    assert image_tag(obj(git={"url": "u", "branch": "feature/x"})) == "feature/x"
    assert image_tag(obj(git={"url": "u"})) == "latest"
    # A branch with "/" still makes a valid image reference.
    assert naming.image_name("reg:5000", "c1", "Model", "team-a", "falcon", "feature/x") == (
        "reg:5000/c1-model-team-a-falcon:feature-x")
