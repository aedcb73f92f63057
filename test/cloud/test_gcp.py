"""The gcp cloud against a real GCS emulator over HTTP; V4 signatures verified with the public key."""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported

import base64
import datetime as dt
import hashlib
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.oauth2 import service_account

from substratus.cloud import UPLOAD_CONTENT_TYPE, Mount, ObjectInfo, build_cloud
from substratus.cloud.gcp import GPU_TYPES, GcpCloud
from substratus.config import OperatorConfig

EMULATOR_BUCKET = "substratus-test"  # created by the gcs_emulator fixture (conftest.py)
FIXED_NOW = dt.datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
HASH = "f94a0d128bcbd9c1b824e9e5572baf86"


@pytest.fixture
async def cloud(gcs_emulator: str) -> AsyncIterator[GcpCloud]:
    c = GcpCloud(f"gs://{EMULATOR_BUCKET}", project="test", endpoint_url=gcs_emulator, token="anon")
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def prefix() -> str:
    """A fresh directory per test: the emulator is shared by the session."""
    return uuid.uuid4().hex


# ---- storage against the emulator -------------------------------------------------------------

async def test_round_trip(cloud: GcpCloud, prefix: str) -> None:
    url = cloud.object_url(prefix, "completed.json")
    assert url == f"gs://{EMULATOR_BUCKET}/{prefix}/completed.json"
    assert not await cloud.exists(url)
    await cloud.write(url, b'{"job": "x"}')
    assert await cloud.exists(url)
    assert await cloud.read(url) == b'{"job": "x"}'
    await cloud.write(url, b"{}")
    assert await cloud.read(url) == b"{}"
    with pytest.raises(FileNotFoundError):
        await cloud.read(cloud.object_url(prefix, "missing.json"))


async def test_move_keeps_content_and_never_replaces(cloud: GcpCloud, prefix: str) -> None:
    src, dst = cloud.object_url(prefix, "completed.json"), cloud.object_url(prefix, "history", "completed-1.json")
    await cloud.write(src, b'{"generation": 1}')
    await cloud.move(src, dst)
    assert await cloud.read(dst) == b'{"generation": 1}' and not await cloud.exists(src)
    await cloud.write(src, b"{}")
    with pytest.raises(FileExistsError):
        await cloud.move(src, dst)
    assert await cloud.read(dst) == b'{"generation": 1}' and await cloud.exists(src)


async def test_list_size_md5(cloud: GcpCloud, prefix: str) -> None:
    base = cloud.object_url(prefix, "model")
    files = {"config.json": b"{}", "b/weights-2.bin": b"x" * 300, "a.bin": b"y" * 10,
             "b/weights-1.bin": b"z" * 7}
    for name, data in files.items():
        await cloud.write(f"{base}/{name}", data, content_type="application/octet-stream")
    await cloud.write(cloud.object_url(prefix, "model2", "other.bin"), b"sibling, not listed")

    listed = await cloud.list(base)
    assert listed == [ObjectInfo("a.bin", 10), ObjectInfo("b/weights-1.bin", 7),
                      ObjectInfo("b/weights-2.bin", 300), ObjectInfo("config.json", 2)]
    assert await cloud.list(base, limit=3) == listed[:3]
    assert await cloud.list(base + "/") == listed
    assert await cloud.total_size(base) == 319
    assert await cloud.list(cloud.object_url(prefix, "missing")) == []
    assert await cloud.exists(base)  # a prefix with objects
    assert not await cloud.exists(cloud.object_url(prefix, "missing"))

    assert await cloud.md5(f"{base}/b/weights-2.bin") == hashlib.md5(b"x" * 300).hexdigest()
    assert await cloud.md5(f"{base}/nope") is None
    assert await cloud.md5(base) is None


async def test_urls_outside_bucket_rejected(cloud: GcpCloud) -> None:
    for bad in ("gs://other-bucket/x", f"gs://{EMULATOR_BUCKET}/a/../b", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            await cloud.read(bad)


def test_bucket_url_validation() -> None:
    with pytest.raises(ValueError):
        GcpCloud("file:///x")
    with pytest.raises(ValueError):
        GcpCloud("gs://")
    assert GcpCloud("gs://bkt/").bucket_url == "gs://bkt"


# ---- V4 signed URLs ---------------------------------------------------------------------------

def reconstruct_string_to_sign(url: str, headers: dict[str, str]) -> tuple[str, str]:
    """Independently rebuild the V4 string-to-sign from a signed URL and the headers a client sends.

    Returns ``(string_to_sign, hex signature)``. Follows cloud.google.com/storage/docs/authentication
    (canonical-requests, signatures) without using the implementation under test.
    """
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    signature = dict(pairs)["X-Goog-Signature"]
    query = "&".join(sorted(f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                            for k, v in pairs if k != "X-Goog-Signature"))
    all_headers = {k.lower(): v.strip() for k, v in headers.items()} | {"host": parts.netloc}
    signed_names = dict(pairs)["X-Goog-SignedHeaders"].split(";")
    canonical_headers = "".join(f"{n}:{all_headers[n]}\n" for n in signed_names)
    canonical_request = "\n".join(["PUT", parts.path, query, canonical_headers, ";".join(signed_names),
                                   "UNSIGNED-PAYLOAD"])
    q = dict(pairs)
    scope = q["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(["GOOG4-RSA-SHA256", q["X-Goog-Date"], scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    return string_to_sign, signature


def verify(public_key: rsa.RSAPublicKey, string_to_sign: str, signature_hex: str) -> None:
    public_key.verify(bytes.fromhex(signature_hex), string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture
def signing_cloud(gcs_emulator: str, service_account_info: dict[str, Any]) -> GcpCloud:
    creds = service_account.Credentials.from_service_account_info(service_account_info)
    return GcpCloud(f"gs://{EMULATOR_BUCKET}", project="test", endpoint_url=gcs_emulator, token="anon",
                    signing_credentials=creds, clock=lambda: FIXED_NOW)


async def test_signed_url_shape_and_signature(signing_cloud: GcpCloud, rsa_key: rsa.RSAPrivateKey,
                                              service_account_info: dict[str, Any]) -> None:
    md5 = hashlib.md5(b"build context").hexdigest()
    url = signing_cloud.object_url(HASH, "build", f"{md5}.tar.gz")
    signed = await signing_cloud.signed_upload_url(url, 900, md5=md5)

    assert signed.method == "PUT"
    assert signed.expires_at == dt.datetime(2026, 3, 1, 12, 45, 45, tzinfo=dt.UTC)
    assert signed.headers == {"Content-Type": UPLOAD_CONTENT_TYPE,
                              "Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode()}
    parts = urllib.parse.urlsplit(signed.url)
    assert f"{parts.scheme}://{parts.netloc}" == signing_cloud.signing_endpoint
    assert parts.path == f"/{EMULATOR_BUCKET}/{HASH}/build/{md5}.tar.gz"
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert q["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert q["X-Goog-Expires"] == "900"
    assert q["X-Goog-Date"] == "20260301T123045Z"
    assert q["X-Goog-Credential"] == f"{service_account_info['client_email']}/20260301/auto/storage/goog4_request"
    assert q["X-Goog-SignedHeaders"] == "content-md5;content-type;host"

    string_to_sign, signature = reconstruct_string_to_sign(signed.url, signed.headers)
    verify(rsa_key.public_key(), string_to_sign, signature)

    # The signature really binds the headers: another content type or checksum does not verify.
    for tampered in ({**signed.headers, "Content-Type": "application/gzip"},
                     {**signed.headers, "Content-MD5": base64.b64encode(b"\0" * 16).decode()}):
        other, _ = reconstruct_string_to_sign(signed.url, tampered)
        with pytest.raises(InvalidSignature):
            verify(rsa_key.public_key(), other, signature)
    longer = signed.url.replace("X-Goog-Expires=900", "X-Goog-Expires=604800")
    other, _ = reconstruct_string_to_sign(longer, signed.headers)
    with pytest.raises(InvalidSignature):
        verify(rsa_key.public_key(), other, signature)


async def test_signed_url_matches_google_cloud_storage(signing_cloud: GcpCloud,
                                                       service_account_info: dict[str, Any]) -> None:
    """Byte-for-byte the URL google-cloud-storage's reference V4 signer produces (RSA PKCS#1 v1.5
    signatures are deterministic), including for a key that needs percent-encoding."""
    _signing = pytest.importorskip("google.cloud.storage._signing")
    creds = service_account.Credentials.from_service_account_info(service_account_info)
    md5 = hashlib.md5(b"x").hexdigest()
    for key, content_md5 in ((f"{HASH}/build/{md5}.tar.gz", md5), ("dir/with space/ü+~.tar.gz", None)):
        ours = await signing_cloud.signed_upload_url(signing_cloud.object_url(key), 3600, md5=content_md5)
        reference = _signing.generate_signed_url_v4(
            creds, f"/{EMULATOR_BUCKET}/{urllib.parse.quote(key, safe='/~')}", expiration=3600,
            api_access_endpoint=signing_cloud.signing_endpoint, method="PUT",
            content_type=UPLOAD_CONTENT_TYPE, content_md5=ours.headers.get("Content-MD5"),
            _request_timestamp="20260301T123045Z")
        assert ours.url == reference


async def test_signed_url_put_round_trip(signing_cloud: GcpCloud) -> None:
    """PUT through the signed URL into the emulator, exactly as a client would.

    The emulator serves the XML-API PUT path but checks neither the signature nor Content-MD5,
    so this proves the URL addresses the right object; the signature is proven above.
    """
    body = os.urandom(20_000)
    md5 = hashlib.md5(body).hexdigest()
    url = signing_cloud.object_url(uuid.uuid4().hex, "build", f"{md5}.tar.gz")
    signed = await signing_cloud.signed_upload_url(url, 600, md5=md5)
    async with aiohttp.ClientSession() as session, \
            session.put(signed.url, data=body, headers=signed.headers) as resp:
        assert resp.status == 200, await resp.text()
    try:
        assert await signing_cloud.md5(url) == md5
        assert await signing_cloud.read(url) == body
    finally:
        await signing_cloud.close()


async def test_signer_discovered_from_key_file(gcs_emulator: str, service_account_info: dict[str, Any],
                                               rsa_key: rsa.RSAPrivateKey, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without explicit credentials the signer comes from Application Default Credentials."""
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account_info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    cloud = GcpCloud(f"gs://{EMULATOR_BUCKET}", endpoint_url=gcs_emulator, token="anon")
    signed = await cloud.signed_upload_url(cloud.object_url("a", "b.tar.gz"), 60)
    assert f"X-Goog-Credential={urllib.parse.quote(service_account_info['client_email'], safe='~')}" in signed.url
    verify(rsa_key.public_key(), *reconstruct_string_to_sign(signed.url, signed.headers))


async def test_signed_url_validation(signing_cloud: GcpCloud) -> None:
    url = signing_cloud.object_url("a", "b.tar.gz")
    with pytest.raises(ValueError):
        await signing_cloud.signed_upload_url(url, 604801)
    with pytest.raises(ValueError):
        await signing_cloud.signed_upload_url(url, 60, md5="bad")
    with pytest.raises(ValueError):
        await signing_cloud.signed_upload_url(signing_cloud.bucket_url, 60)


# ---- pod rendering (SPEC §5) ------------------------------------------------------------------

POD: dict[str, Any] = {"containers": [{"name": "main", "image": "img", "resources": {"limits": {"cpu": "2"}}}]}


def test_apply_mounts_gcsfuse() -> None:
    cloud = GcpCloud("gs://artifacts")
    mounts = [Mount("data", f"gs://artifacts/{HASH}/data", "/content/data", True),
              Mount("output", f"gs://artifacts/{HASH}/model/", "/content/output", False)]
    spec, annotations = cloud.apply_mounts(POD, "main", mounts)
    assert annotations == {"gke-gcsfuse/volumes": "true"}
    assert spec["volumes"] == [
        {"name": "data", "csi": {"driver": "gcsfuse.csi.storage.gke.io", "readOnly": True,
                                 "volumeAttributes": {"bucketName": "artifacts",
                                                      "mountOptions": f"implicit-dirs,only-dir={HASH}/data"}}},
        {"name": "output", "csi": {"driver": "gcsfuse.csi.storage.gke.io", "readOnly": False,
                                   "volumeAttributes": {"bucketName": "artifacts",
                                                        "mountOptions": f"implicit-dirs,only-dir={HASH}/model"}}},
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/content/data", "readOnly": True},
        {"name": "output", "mountPath": "/content/output", "readOnly": False},
    ]
    assert "volumes" not in POD and "volumeMounts" not in POD["containers"][0]
    assert cloud.apply_mounts(POD, "main", []) == (POD, {})  # nothing to mount: no annotation
    with pytest.raises(ValueError):
        cloud.apply_mounts(POD, "main", [Mount("x", "file:///x", "/content/x", True)])


def test_apply_gpu_gke() -> None:
    cloud = GcpCloud("gs://artifacts")
    assert cloud.apply_gpu(POD, "main", None, 0) == POD
    spec = cloud.apply_gpu(POD, "main", "nvidia-l4", 4)
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "2", "nvidia.com/gpu": "4"}}
    assert POD["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
    assert GPU_TYPES == {"nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb",
                         "nvidia-h100-80gb"}
    for gpu in GPU_TYPES:
        cloud.apply_gpu(POD, "main", gpu, 1)
    with pytest.raises(ValueError, match="unsupported gpu type"):
        cloud.apply_gpu(POD, "main", "nvidia-tesla-k80", 1)


def test_workload_service_account() -> None:
    cloud = GcpCloud("gs://artifacts", service_account="wl@proj.iam.gserviceaccount.com")
    assert cloud.workload_service_account("team-a") == {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "substratus", "namespace": "team-a",
                     "labels": {"app.kubernetes.io/managed-by": "substratus"},
                     "annotations": {"iam.gke.io/gcp-service-account": "wl@proj.iam.gserviceaccount.com"}},
    }


def test_build_cloud_gcp() -> None:
    cloud = build_cloud(OperatorConfig(cloud="gcp", bucket_url="gs://artifacts", gcp_project="p",
                                       gcp_service_account="wl@p.iam.gserviceaccount.com"))
    assert isinstance(cloud, GcpCloud)
    assert (cloud.name, cloud.bucket_url, cloud.project, cloud.service_account) == (
        "gcp", "gs://artifacts", "p", "wl@p.iam.gserviceaccount.com")
