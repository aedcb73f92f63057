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
