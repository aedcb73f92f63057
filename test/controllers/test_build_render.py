"""The kaniko build Job, rendered purely (no cluster): git and upload contexts, clouds, images;
reading the build Pod's termination messages; adopting images older versions wrote to spec."""

from __future__ import annotations

from typing import Any

import pytest

from substratus import naming
from substratus.api import from_dict
from substratus.cloud.gcp import GCSFUSE_ANNOTATION, GCSFUSE_DRIVER, GcpCloud
from substratus.cloud.local import LocalCloud
from substratus.config import DEFAULT_GIT_IMAGE, DEFAULT_KANIKO_IMAGE
from substratus.controllers.build import (
    BuildOutput,
    adopt_legacy_image,
    build_job,
    build_output,
    legacy_tag,
    source_fingerprint,
)
from substratus.controllers.diff import HASH_ANNOTATION
from substratus.controllers.render import BuildImages

CHECKSUM = "0123456789abcdef0123456789abcdef"
IMAGES = BuildImages(kaniko=DEFAULT_KANIKO_IMAGE, git=DEFAULT_GIT_IMAGE)
LOCAL_IMAGES = BuildImages(kaniko=DEFAULT_KANIKO_IMAGE, git=DEFAULT_GIT_IMAGE, insecure_registry=True)
REPO = "registry.test:5000/c1-model-team-a-falcon"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def obj(kind: str = "Model", name: str = "falcon", image_name: str | None = None, **image: Any) -> Any:
    return from_dict({
        "apiVersion": "substratus.ai/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1", "generation": 3},
        "spec": {"image": {**image, **({"name": image_name} if image_name else {})}},
    })


@pytest.fixture
def local(tmp_path: Any) -> LocalCloud:
    return LocalCloud(f"file://{tmp_path}/bucket", signing_key="k", upload_base_url="http://up.test")


@pytest.fixture
def gcp() -> GcpCloud:
    return GcpCloud("gs://bkt", service_account="wl@p.iam.gserviceaccount.com")


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _job(o: Any, cloud: Any, images: BuildImages = IMAGES, status_url: str = "unused",
         service_account: str | None = None, rebuild: str | None = None) -> dict[str, Any]:
    return build_job(o, name=f"{o.metadata.name}-{o.KIND.lower()}-bld", repo=REPO, images=images, cloud=cloud,
                     status_url=status_url, service_account=service_account, source=source_fingerprint(o),
                     rebuild=rebuild)


def _arg(container: dict[str, Any], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} in {container['args']}"
    return values[0]


def test_git_branch_job(local: LocalCloud) -> None:
    m = obj(git={"url": "https://github.com/org/repo", "branch": "main", "path": "sub/dir/"})
    job = _job(m, local, LOCAL_IMAGES, status_url=f"{local.bucket_url}/h")
    meta = job["metadata"]
    assert meta["name"] == "falcon-model-bld" and meta["namespace"] == "team-a"
    ref = meta["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "Model", "falcon", "uid-1", True, True)
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "substratus", "substratus.ai/model": "falcon",
                              "substratus.ai/role": "build"}
    assert meta["annotations"]["substratus.ai/image"] == REPO and meta["annotations"][HASH_ANNOTATION]
    assert meta["annotations"]["substratus.ai/build-source"] == source_fingerprint(m)
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["template"]["metadata"]["labels"]["substratus.ai/role"] == "build"
    pod = _pod(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"] == [{"name": "workspace", "emptyDir": {}}]
    (clone,) = pod["initContainers"]
    assert clone["image"] == DEFAULT_GIT_IMAGE
    # The clone step resolves the branch to the full commit and reports it (file + termination message).
    assert clone["command"][:2] == ["sh", "-c"]
    assert clone["command"][3:] == ["clone", "https://github.com/org/repo", "main", "/workspace/src"]
    script = clone["command"][2]
    assert 'git clone --depth 1 --branch "$ref"' in script
    assert 'rev-parse HEAD' in script and "> /dev/termination-log" in script and "> /workspace/commit" in script
    assert clone["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    (kaniko,) = pod["containers"]
    assert kaniko["name"] == "build" and kaniko["image"] == DEFAULT_KANIKO_IMAGE
    # kaniko is tagged with the commit the clone step resolved, and writes the pushed digest
    # where the controller reads it: the termination message.
    assert kaniko["command"][:2] == ["/busybox/sh", "-c"]
    assert '"--destination=$IMAGE_REPO:$(cat /workspace/commit)"' in kaniko["command"][2]
    assert kaniko["command"][2].startswith('exec /kaniko/executor "$@"')
    assert kaniko["env"] == [{"name": "IMAGE_REPO", "value": REPO}]
    assert _arg(kaniko, "--context") == "dir:///workspace/src/sub/dir"
    assert _arg(kaniko, "--digest-file") == "/dev/termination-log"
    assert not any(a.startswith("--destination") for a in kaniko["args"])
    assert {"--insecure", "--skip-tls-verify"} <= set(kaniko["args"])
    assert kaniko["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    assert "serviceAccountName" not in pod


def test_git_tag_default_branch_and_root_context(local: LocalCloud) -> None:
    tagged = _job(obj(git={"url": "https://g/r", "tag": "v1.2"}), local)
    assert _pod(tagged)["initContainers"][0]["command"][3:] == ["clone", "https://g/r", "v1.2", "/workspace/src"]
    assert _arg(_pod(tagged)["containers"][0], "--context") == "dir:///workspace/src"
    plain = _job(obj(git={"url": "https://g/r"}), local)
    assert _pod(plain)["initContainers"][0]["command"][3:] == ["clone", "https://g/r", "", "/workspace/src"]


def test_upload_job_local_mounts_build_dir_read_only(local: LocalCloud) -> None:
    url = f"{local.bucket_url}/abc123"
    d = obj("Dataset", "squad", upload={"checksum": CHECKSUM, "requestID": "r1"})
    job = _job(d, local, LOCAL_IMAGES, status_url=url)
    assert job["metadata"]["labels"]["substratus.ai/dataset"] == "squad"
    pod = _pod(job)
    assert "initContainers" not in pod
    (kaniko,) = pod["containers"]
    assert _arg(kaniko, "--context") == f"tar:///build/{CHECKSUM}.tar.gz"
    assert _arg(kaniko, "--destination") == f"{REPO}:{CHECKSUM}"  # the checksum is the tag
    assert _arg(kaniko, "--digest-file") == "/dev/termination-log"
    assert "command" not in kaniko  # the executor's own entrypoint: the tag is known up front
    assert kaniko["volumeMounts"] == [{"name": "build", "mountPath": "/build", "readOnly": True}]
    (vol,) = pod["volumes"]
    assert vol["hostPath"]["path"] == f"{local.root}/abc123/build"
    assert "annotations" not in job["spec"]["template"]["metadata"]


def test_upload_job_gcp_uses_gcs_fuse_without_insecure_flags(gcp: GcpCloud) -> None:
    d = obj("Dataset", "squad", upload={"checksum": CHECKSUM})
    job = _job(d, gcp, status_url="gs://bkt/abc123", service_account="substratus")
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
    job = _job(obj(git={"url": "https://g/r"}), local, images)
    assert _pod(job)["containers"][0]["image"] == "my.registry/kaniko:v9"
    assert _pod(job)["initContainers"][0]["image"] == "my.registry/git:2"


def test_job_hash_changes_with_what_is_built(local: LocalCloud) -> None:
    """The build Job is immutable and hash-stamped: another ref, checksum or rebuild request must
    change the hash (so the outdated Job is replaced); a new requestID must not."""
    def hash_of(rebuild: str | None = None, **image: Any) -> str:
        job = _job(obj(**image), local, status_url=f"{local.bucket_url}/h", rebuild=rebuild)
        return str(job["metadata"]["annotations"][HASH_ANNOTATION])

    main = hash_of(git={"url": "https://g/r", "branch": "main"})
    assert main == hash_of(git={"url": "https://g/r", "branch": "main"})
    assert main != hash_of(git={"url": "https://g/r", "branch": "dev"})
    assert main != hash_of(rebuild="2", git={"url": "https://g/r", "branch": "main"})
    assert hash_of(upload={"checksum": CHECKSUM}) != hash_of(upload={"checksum": "f" * 32})
    assert hash_of(upload={"checksum": CHECKSUM, "requestID": "a"}) == hash_of(
        upload={"checksum": CHECKSUM, "requestID": "b"})


def _build_pod(message: str, exit_code: int = 0, commit: str | None = COMMIT) -> dict[str, Any]:
    def term(name: str, msg: str | None, code: int) -> dict[str, Any]:
        t: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
        if msg is not None:
            t["message"] = msg
        return {"name": name, "state": {"terminated": t}}

    status: dict[str, Any] = {"containerStatuses": [term("build", message, exit_code)]}
    if commit is not None:
        status["initContainerStatuses"] = [term("clone", commit, 0)]
    return {"status": status}


def test_build_output_reads_termination_messages() -> None:
    assert build_output(_build_pod(DIGEST)) == BuildOutput(DIGEST, COMMIT)
    # --image-name-with-digest-file writes the reference: the digest is taken from it.
    assert build_output(_build_pod(f"{REPO}:{COMMIT}@{DIGEST}\n", commit=None)).digest == DIGEST
    out = build_output(_build_pod("", commit=None))
    assert out.digest is None and "not a sha256 digest" in out.detail
    assert build_output(_build_pod(DIGEST, exit_code=1)).digest is None
    assert build_output(_build_pod(DIGEST, commit="not-a-sha")).commit is None
    running = {"status": {"containerStatuses": [{"name": "build", "state": {"running": {}}}]}}
    assert "has not terminated" in build_output(running).detail


def test_legacy_spec_image_name_is_adopted_once(local: LocalCloud) -> None:
    """SPEC §1 migration: a name older versions wrote next to git is read as a past build."""
    legacy = f"{REPO}:main"
    m = obj(git={"url": "https://g/r", "branch": "main"}, image_name=legacy)
    assert adopt_legacy_image(m, "registry.test:5000", "c1") == legacy
    assert m.spec.image.name is None  # read without it: not InvalidSpec
    assert m.status.image == legacy and m.status.build is not None
    assert m.status.build.source == source_fingerprint(m)
    # Once: with status.build recorded, the name is only dropped.
    again = obj(git={"url": "https://g/r", "branch": "main"}, image_name=legacy)
    again.status.build = m.status.build
    again.status.image = f"{REPO}@{DIGEST}"
    assert adopt_legacy_image(again, "registry.test:5000", "c1") is None
    assert again.spec.image.name is None and again.status.image == f"{REPO}@{DIGEST}"
    # Built from an earlier branch: dropped, not adopted (the current source is built).
    stale = obj(git={"url": "https://g/r", "branch": "dev"}, image_name=legacy)
    assert adopt_legacy_image(stale, "registry.test:5000", "c1") is None
    assert stale.status.image is None and stale.spec.image.name is None
    # A user's own name beside git is left for validate() to reject.
    mine = obj(git={"url": "https://g/r"}, image_name="docker.io/me/img:1")
    assert adopt_legacy_image(mine, "registry.test:5000", "c1") is None
    assert mine.spec.image.name == "docker.io/me/img:1"


def test_legacy_tag_and_image_names() -> None:
    assert legacy_tag(obj(upload={"checksum": CHECKSUM})) == CHECKSUM
    assert legacy_tag(obj(git={"url": "u", "tag": "v1"})) == "v1"
    assert legacy_tag(obj(git={"url": "u", "branch": "feature/x"})) == "feature/x"
    assert legacy_tag(obj(git={"url": "u"})) == "latest"
    # A branch with "/" still makes a valid image reference.
    assert naming.image_name("reg:5000", "c1", "Model", "team-a", "falcon", "feature/x") == (
        "reg:5000/c1-model-team-a-falcon:feature-x")
    assert naming.image_repo("reg:5000", "c1", "Model", "team-a", "falcon") == "reg:5000/c1-model-team-a-falcon"
