"""`substratus adopt` against a real GCS emulator over HTTP: upstream's layout in a gs:// bucket
is recognised and completed in place (SPEC §3, §9)."""

from __future__ import annotations

import io
import json
import uuid

from substratus import naming
from substratus.cloud.gcp import GcpCloud
from substratus.migrate import adopt_at

EMULATOR_BUCKET = "substratus-test"  # created by the gcs_emulator fixture (conftest.py)


async def test_adopt_in_a_gcs_bucket(gcs_emulator: str) -> None:
    cloud = GcpCloud(f"gs://{EMULATOR_BUCKET}", project="test", endpoint_url=gcs_emulator, token="anon")
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    url = naming.storage_url(cloud.bucket_url, naming.storage_hash(cluster, "team-a", "datasets", "squad"))
    try:
        out, err = io.StringIO(), io.StringIO()
        assert await adopt_at(cloud, "Dataset", "team-a", "squad", url, None, out, err) == 1
        assert not await cloud.exists(f"{url}/completed.json")
        await cloud.write(f"{url}/artifacts/train.jsonl", b'{"q": 1}\n' * 10, "application/octet-stream")
        await cloud.write(f"{url}/artifacts/sub/dev.jsonl", b"{}\n", "application/octet-stream")
        assert await adopt_at(cloud, "Dataset", "team-a", "squad", url, None, out, err) == 0, err.getvalue()
        assert "adopted 2 files (93 bytes)" in out.getvalue()
        marker = json.loads(await cloud.read(f"{url}/completed.json"))
        assert marker["artifacts"] == "artifacts" and marker["kind"] == "Dataset" and "generation" not in marker
        assert sorted(o.name for o in await cloud.list(f"{url}/artifacts")) == ["sub/dev.jsonl", "train.jsonl"]
    finally:
        await cloud.close()


async def test_adopt_with_a_bucket_that_does_not_exist_is_an_error_not_a_traceback(gcs_emulator: str) -> None:
    """A mistyped --bucket-url (or a bucket the credentials cannot read): one error line, exit 1,
    nothing written."""
    cloud = GcpCloud("gs://no-such-bucket-t19", project="test", endpoint_url=gcs_emulator, token="anon")
    url = naming.storage_url(cloud.bucket_url, naming.storage_hash("c", "default", "models", "falcon"))
    try:
        out, err = io.StringIO(), io.StringIO()
        assert await adopt_at(cloud, "Model", "default", "falcon", url, None, out, err) == 1
        assert err.getvalue().startswith(f"substratus: error: cannot read {url}/: "), err.getvalue()
        assert "nothing written" in err.getvalue() and out.getvalue() == ""
    finally:
        await cloud.close()
