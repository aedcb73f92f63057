"""The local cloud: file storage, hostPath rendering, and the signed upload endpoint over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from substratus.cloud import (
    UPLOAD_CONTENT_TYPE,
    Cloud,
    Mount,
    ObjectInfo,
    build_cloud,
)
from substratus.cloud.local import TMP_PREFIX, LocalCloud, UploadServer, upload_signature
from substratus.config import OperatorConfig

KEY = "test-signing-key"
HASH = "f94a0d128bcbd9c1b824e9e5572baf86"


def make_cloud(root: Path, **kwargs: object) -> LocalCloud:
    return LocalCloud(f"file://{root}", signing_key=KEY, upload_base_url="http://uploads.test", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def cloud(tmp_path: Path) -> LocalCloud:
    return make_cloud(tmp_path / "bucket")


# ---- storage ----------------------------------------------------------------------------------

async def test_round_trip(cloud: LocalCloud) -> None:
    url = cloud.object_url(HASH, "completed.json")
    assert url == f"file://{cloud.root}/{HASH}/completed.json"
    assert not await cloud.exists(url)
    await cloud.write(url, b'{"job": "x"}')
    assert await cloud.exists(url)
    assert await cloud.read(url) == b'{"job": "x"}'
    await cloud.write(url, b"{}")  # replace
    assert await cloud.read(url) == b"{}"
    # no temp files left behind by the atomic write
    assert sorted(os.listdir(cloud.root / HASH)) == ["completed.json"]


async def test_read_missing_raises(cloud: LocalCloud) -> None:
    with pytest.raises(FileNotFoundError):
        await cloud.read(cloud.object_url(HASH, "nope.json"))


async def test_list_size_md5(cloud: LocalCloud) -> None:
    base = cloud.object_url(HASH, "model")
    files = {"config.json": b"{}", "b/weights-2.bin": b"x" * 300, "a.bin": b"y" * 10,
             "b/weights-1.bin": b"z" * 7}
    for name, data in files.items():
        await cloud.write(f"{base}/{name}", data)
    await cloud.write(cloud.object_url(HASH, "model2", "other.bin"), b"sibling, not listed")
    # an in-flight temp file is invisible
    (cloud.root / HASH / "model" / f"{TMP_PREFIX}partial").write_bytes(b"....")

    listed = await cloud.list(base)
    assert listed == [ObjectInfo("a.bin", 10), ObjectInfo("b/weights-1.bin", 7),
                      ObjectInfo("b/weights-2.bin", 300), ObjectInfo("config.json", 2)]
    assert await cloud.list(base, limit=2) == listed[:2]
    assert await cloud.list(base + "/") == listed
    assert await cloud.total_size(base) == 319
    assert await cloud.list(cloud.object_url(HASH, "missing")) == []
    assert await cloud.total_size(cloud.object_url(HASH, "missing")) == 0

    assert await cloud.md5(f"{base}/b/weights-2.bin") == hashlib.md5(b"x" * 300).hexdigest()
    assert await cloud.md5(f"{base}/nope") is None
    assert await cloud.md5(base) is None  # a directory is not an object

    assert await cloud.exists(base)  # a prefix with objects
    (cloud.root / "empty-dir").mkdir()
    assert not await cloud.exists(cloud.object_url("empty-dir"))


async def test_md5_streams_large_file(cloud: LocalCloud) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    url = cloud.object_url(HASH, "build", "big.tar.gz")
    await cloud.write(url, data)
    assert await cloud.md5(url) == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("bad", [
    "file:///etc/passwd",
    "gs://bucket/x",
    "{root}/../escape",
    "{root}/a/./b",
    "{root}/a//b",
])
async def test_urls_outside_bucket_rejected(cloud: LocalCloud, bad: str) -> None:
    url = bad.format(root=cloud.bucket_url)
    with pytest.raises(ValueError):
        await cloud.read(url)
    with pytest.raises(ValueError):
        await cloud.write(url, b"x")


def test_bucket_url_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalCloud("gs://bucket", signing_key=KEY, upload_base_url="http://x")
    with pytest.raises(ValueError):
        LocalCloud("file://relative/path", signing_key=KEY, upload_base_url="http://x")
    assert make_cloud(tmp_path / "b").bucket_url == f"file://{tmp_path}/b"
    assert LocalCloud(f"file://{tmp_path}/b/", signing_key=KEY,
                      upload_base_url="http://x").bucket_url == f"file://{tmp_path}/b"


# ---- pod rendering ----------------------------------------------------------------------------

POD: dict[str, Any] = {"containers": [{"name": "main", "image": "img"}, {"name": "side", "image": "s"}],
       "volumes": [{"name": "params", "configMap": {"name": "x-model-params"}}]}


def test_apply_mounts_hostpath(cloud: LocalCloud) -> None:
    mounts = [Mount("model", cloud.object_url("base", "model"), "/content/model", True),
              Mount("output", cloud.object_url(HASH, "model"), "/content/output", False)]
    original = {**POD, "containers": [dict(c) for c in POD["containers"]]}
    spec, annotations = cloud.apply_mounts(POD, "main", mounts)
    assert POD == original  # input untouched
    assert annotations == {}
    assert spec["volumes"] == [
        {"name": "params", "configMap": {"name": "x-model-params"}},
        {"name": "model", "hostPath": {"path": f"{cloud.root}/base/model", "type": "DirectoryOrCreate"}},
        {"name": "output", "hostPath": {"path": f"{cloud.root}/{HASH}/model", "type": "DirectoryOrCreate"}},
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "model", "mountPath": "/content/model", "readOnly": True},
        {"name": "output", "mountPath": "/content/output", "readOnly": False},
    ]
    assert "volumeMounts" not in spec["containers"][1]


def test_apply_mounts_host_root_and_errors(tmp_path: Path) -> None:
    cloud = make_cloud(tmp_path / "bucket", host_root="/mnt/artifacts")
    spec, _ = cloud.apply_mounts(POD, "main", [Mount("data", cloud.object_url(HASH, "data"), "/content/data", True)])
    assert spec["volumes"][-1] == {"name": "data", "hostPath": {"path": f"/mnt/artifacts/{HASH}/data",
                                                               "type": "DirectoryOrCreate"}}
    with pytest.raises(ValueError, match="no container"):
        cloud.apply_mounts(POD, "missing", [])
    with pytest.raises(ValueError, match="already exists"):
        cloud.apply_mounts(POD, "main", [Mount("params", cloud.object_url("x"), "/content/x", True)])
    with pytest.raises(ValueError):
        cloud.apply_mounts(POD, "main", [Mount("data", "file:///elsewhere/data", "/content/data", True)])


def test_apply_gpu(cloud: LocalCloud) -> None:
    assert cloud.apply_gpu(POD, "main", None, 0) == POD
    pod: dict[str, Any] = {"containers": [{"name": "main", "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}}]}
    spec = cloud.apply_gpu(pod, "main", "nvidia-l4", 2)
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2"}  # untouched
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "2", "nvidia.com/gpu": "2"},
                                                  "requests": {"cpu": "2", "nvidia.com/gpu": "2"}}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in spec
    # idempotent toleration
    assert cloud.apply_gpu(spec, "main", "anything", 1)["tolerations"] == spec["tolerations"]
    with pytest.raises(ValueError):
        cloud.apply_gpu(pod, "main", "nvidia-l4", 0)


def test_no_service_account(cloud: LocalCloud) -> None:
    assert cloud.workload_service_account("team-a") is None


# ---- factory ----------------------------------------------------------------------------------

def test_build_cloud_local(tmp_path: Path) -> None:
    cfg = OperatorConfig(cloud="local", bucket_url=f"file://{tmp_path}", upload_signing_key="k",
                         upload_base_url="https://up.example.com/", upload_bind_address=":9999")
    cloud = build_cloud(cfg)
    assert isinstance(cloud, LocalCloud) and isinstance(cloud, Cloud)
    assert cloud.name == "local"
    assert cloud.bucket_url == f"file://{tmp_path}"
    assert cloud.upload_base_url == "https://up.example.com"
    assert cloud.signing_key == b"k"
    dflt = build_cloud(OperatorConfig(cloud="local", bucket_url=f"file://{tmp_path}", upload_bind_address=":9999"))
    assert isinstance(dflt, LocalCloud)
    assert dflt.upload_base_url == "http://127.0.0.1:9999"
    assert len(dflt.signing_key) == 64  # random per process


def test_importing_cloud_does_not_import_gcsfs() -> None:
    code = ("import sys, substratus.cloud as c; from substratus.config import OperatorConfig; "
            "c.build_cloud(OperatorConfig(bucket_url='file:///tmp/x')); "
            "assert 'gcsfs' not in sys.modules, 'gcsfs imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- upload endpoint over real HTTP -----------------------------------------------------------

MAX = 64 * 1024


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[LocalCloud, UploadServer]]:
    cloud = make_cloud(tmp_path / "bucket", max_upload_size=MAX)
    server = cloud.upload_server()
    port = await server.start("127.0.0.1", 0)
    cloud.upload_base_url = f"http://127.0.0.1:{port}"
    try:
        yield cloud, server
    finally:
        await server.stop()


def tmp_leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


async def put(url: str | yarl.URL, body: object, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.put(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_upload_good(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    body = os.urandom(40 * 1024)
    md5 = hashlib.md5(body).hexdigest()
    url = cloud.object_url(HASH, "build", f"{md5}.tar.gz")
    signed = await cloud.signed_upload_url(url, 600, md5=md5)
    assert signed.method == "PUT"
    assert signed.url.startswith(f"{cloud.upload_base_url}/uploads/{HASH}/build/{md5}.tar.gz?")
    assert signed.headers == {"Content-Type": UPLOAD_CONTENT_TYPE,
                              "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    assert signed.expires_at.tzinfo is not None
    assert abs(signed.expires_at.timestamp() - (time.time() + 600)) < 5

    status, text = await put(signed.url, body, signed.headers)
    assert status == 200, text
    assert await cloud.exists(url)
    assert await cloud.md5(url) == md5
    assert await cloud.read(url) == body
    assert tmp_leftovers(cloud.root) == []


async def test_upload_streamed_without_md5_binding(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    chunks = [os.urandom(10_000) for _ in range(5)]

    async def gen() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    url = cloud.object_url(HASH, "build", "streamed.tar.gz")
    signed = await cloud.signed_upload_url(url, 60)
    assert "md5=" not in signed.url and "Content-MD5" not in signed.headers
    status, text = await put(signed.url, gen(), signed.headers)
    assert status == 200, text
    assert await cloud.md5(url) == hashlib.md5(b"".join(chunks)).hexdigest()


async def test_upload_wrong_signature(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    body = b"context"
    md5 = hashlib.md5(body).hexdigest()
    url = cloud.object_url(HASH, "build", f"{md5}.tar.gz")
    signed = await cloud.signed_upload_url(url, 600, md5=md5)
    u = yarl.URL(signed.url)
    bad_sig = u.update_query(sig=("0" if u.query["sig"][0] != "0" else "1") + u.query["sig"][1:])
    other_key = make_cloud(cloud.root, max_upload_size=MAX)
    other_key.signing_key = b"another key"
    other_key.upload_base_url = cloud.upload_base_url
    foreign = await other_key.signed_upload_url(url, 600, md5=md5)
    cases = [
        bad_sig,
        u.with_query({k: v for k, v in u.query.items() if k != "sig"}),  # missing signature
        u.update_query(expires=str(int(u.query["expires"]) + 3600)),  # extended expiry
        u.update_query(md5="0" * 32),  # different checksum
        u.with_path(f"/uploads/{HASH}/build/other.tar.gz"),  # a different object
        yarl.URL(foreign.url),
    ]
    for case in cases:
        status, text = await put(case, body, {"Content-Type": UPLOAD_CONTENT_TYPE})
        assert status == 403, (case, text)
    assert not await cloud.exists(url)
    assert not await cloud.exists(cloud.object_url(HASH, "build", "other.tar.gz"))


async def test_upload_expired(served: tuple[LocalCloud, UploadServer], tmp_path: Path) -> None:
    cloud, _ = served
    past = make_cloud(cloud.root, clock=lambda: time.time() - 7200)
    past.upload_base_url = cloud.upload_base_url
    url = cloud.object_url(HASH, "build", "late.tar.gz")
    signed = await past.signed_upload_url(url, 3600)
    status, text = await put(signed.url, b"late", signed.headers)
    assert status == 403
    assert "expired" in text
    assert not await cloud.exists(url)


async def test_upload_wrong_content_type(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    url = cloud.object_url(HASH, "build", "ct.tar.gz")
    signed = await cloud.signed_upload_url(url, 60)
    status, text = await put(signed.url, b"x", {"Content-Type": "application/gzip"})
    assert status == 403, text
    assert not await cloud.exists(url)


async def test_upload_md5_mismatch(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    expected = hashlib.md5(b"the declared context").hexdigest()
    url = cloud.object_url(HASH, "build", f"{expected}.tar.gz")
    signed = await cloud.signed_upload_url(url, 600, md5=expected)
    status, text = await put(signed.url, b"something else entirely", signed.headers)
    assert status == 400
    assert "md5" in text
    assert not await cloud.exists(url)
    assert tmp_leftovers(cloud.root) == []
    # A Content-MD5 that disagrees with the bound checksum is rejected before reading the body.
    wrong_header = {**signed.headers, "Content-MD5": base64.b64encode(b"\0" * 16).decode()}
    status, _ = await put(signed.url, b"the declared context", wrong_header)
    assert status == 400
    assert not await cloud.exists(url)


@pytest.mark.parametrize("raw", ["%2E%2E/escape.bin", "a/%2E%2E/%2E%2E/escape.bin", "a/..%2F..%2Fescape.bin",
                                 "%2Fescape.bin", "a/./b.bin"])
async def test_upload_path_escape(served: tuple[LocalCloud, UploadServer], raw: str) -> None:
    cloud, _ = served
    decoded = yarl.URL.build(path="/" + raw, encoded=True).path[1:]
    # Even a correctly signed URL for such a path is refused.
    expires = int(time.time()) + 600
    sig = upload_signature(KEY.encode(), decoded, expires, None)
    url = yarl.URL(f"{cloud.upload_base_url}/uploads/{raw}?expires={expires}&sig={sig}", encoded=True)
    status, text = await put(url, b"evil", {"Content-Type": UPLOAD_CONTENT_TYPE})
    assert status == 400, text
    assert not (cloud.root.parent / "escape.bin").exists()
    assert not (cloud.root / "escape.bin").exists()


async def test_upload_too_large(served: tuple[LocalCloud, UploadServer]) -> None:
    cloud, _ = served
    url = cloud.object_url(HASH, "build", "big.tar.gz")
    signed = await cloud.signed_upload_url(url, 600)
    # Declared size over the limit: refused up front.
    status, text = await put(signed.url, b"x" * (MAX + 1), signed.headers)
    assert status == 413, text
    assert not await cloud.exists(url)

    # Chunked (no Content-Length): refused once the stream passes the limit.
    async def gen() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * (MAX // 2)

    status, text = await put(signed.url, gen(), signed.headers)
    assert status == 413, text
    assert not await cloud.exists(url)
    assert tmp_leftovers(cloud.root) == []


async def test_signed_url_validation(cloud: LocalCloud) -> None:
    url = cloud.object_url(HASH, "build", "x.tar.gz")
    with pytest.raises(ValueError):
        await cloud.signed_upload_url(url, 0)
    with pytest.raises(ValueError):
        await cloud.signed_upload_url(url, 60, md5="not-hex")
    with pytest.raises(ValueError):
        await cloud.signed_upload_url("file:///elsewhere/x", 60)


async def test_move_keeps_content_and_never_replaces(cloud: LocalCloud) -> None:
    """``substratus rerun`` moves completed.json aside: the content lands first, nothing is lost."""
    src, dst = cloud.object_url("h", "completed.json"), cloud.object_url("h", "history", "completed-1.json")
    await cloud.write(src, b'{"generation": 1}')
    await cloud.move(src, dst)
    assert await cloud.read(dst) == b'{"generation": 1}' and not await cloud.exists(src)
    await cloud.write(src, b"{}")
    with pytest.raises(FileExistsError):
        await cloud.move(src, dst)
    assert await cloud.read(dst) == b'{"generation": 1}' and await cloud.exists(src)
    with pytest.raises(FileNotFoundError):
        await cloud.move(cloud.object_url("h", "missing.json"), cloud.object_url("h", "history", "x.json"))
