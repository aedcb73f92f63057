"""The upload pieces that need no cluster: headers derived from signed URLs, progress, logs,
namespace and manifest handling."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from substratus.cloud.gcp import GcpCloud
from substratus.cloud.local import LocalCloud
from substratus.plugins import ExitCode, PluginError
from substratus.plugins.upload import (
    Progress,
    build_logs,
    default_namespace,
    load_manifest,
    new_request_id,
    upload_headers,
)

MD5 = hashlib.md5(b"build context").hexdigest()


def _gcp_signing_cloud() -> GcpCloud:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": pem,
        "client_email": "signer@p.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"})
    return GcpCloud("gs://bkt", project="p", token="anon", signing_credentials=creds)


async def test_headers_from_a_gcs_v4_url_are_exactly_the_signed_ones() -> None:
    signed = await _gcp_signing_cloud().signed_upload_url("gs://bkt/h/build/x.tar.gz", 600, md5=MD5)
    assert upload_headers(signed.url, MD5) == signed.headers  # what the controller's cloud requires
    assert "Content-MD5" in signed.headers


async def test_headers_for_the_local_cloud_url(tmp_path: Path) -> None:
    cloud = LocalCloud(f"file://{tmp_path}", signing_key="k", upload_base_url="http://up.test:8082")
    signed = await cloud.signed_upload_url(f"file://{tmp_path}/h/build/x.tar.gz", 600, md5=MD5)
    # The md5 is bound in the URL itself; Content-Type is the one header it checks.
    assert f"md5={MD5}" in signed.url
    assert upload_headers(signed.url, MD5) == {"Content-Type": "application/octet-stream"}


def test_a_url_signing_headers_we_cannot_send_is_refused() -> None:
    url = "https://storage.googleapis.com/b/o?X-Goog-SignedHeaders=content-type%3Bhost%3Bx-goog-meta-owner&X-Goog-Signature=ab"
    with pytest.raises(PluginError) as e:
        upload_headers(url, MD5)
    assert e.value.code == ExitCode.UPLOAD_REJECTED and "x-goog-meta-owner" in e.value.message


def test_request_ids_are_fresh() -> None:
    assert len({new_request_id() for _ in range(100)}) == 100


def test_progress_without_a_terminal_prints_quarters() -> None:
    out = io.StringIO()
    bar = Progress(4000, "uploading", out)
    for _ in range(40):
        bar.update(100)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("uploading: 2%") and lines[-1] == "uploading: 100% of 3.9 KiB" and len(lines) == 5


async def test_build_logs_command_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECTL", raising=False)
    seen: list[list[str]] = []

    async def ok(cmd: list[str]) -> tuple[int, str]:
        seen.append(cmd)
        return 0, "step 1\nerror: COPY failed\n"

    async def no_pods(cmd: list[str]) -> tuple[int, str]:
        return 1, "error: timed out waiting for the condition"

    assert await build_logs("squad", "Dataset", "ns", "/kc", runner=ok) == "step 1\nerror: COPY failed"
    assert seen[0] == ["kubectl", "logs", "job/squad-dataset-bld", "-c", "build", "--tail=30",
                       "--pod-running-timeout=3s", "-n", "ns", "--kubeconfig=/kc"]
    assert await build_logs("squad", "Dataset", "ns", None, runner=no_pods) is None


def test_default_namespace_follows_the_kubeconfig_context(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\ncurrent-context: a\n"
                  "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {token: t}}]\n"
                  "contexts: [{name: a, context: {cluster: c, user: u, namespace: team-a}},"
                  " {name: b, context: {cluster: c, user: u}}]\n")
    assert default_namespace(str(kc)) == "team-a"
    assert default_namespace(str(kc), "b") == "default"


def test_manifests_must_hold_one_object(tmp_path: Path) -> None:
    two = tmp_path / "two.yaml"
    two.write_text("kind: Model\n---\nkind: Dataset\n")
    for path in (str(two), str(tmp_path / "missing.yaml")):
        with pytest.raises(PluginError) as e:
            load_manifest(path)
        assert e.value.code == ExitCode.USAGE
