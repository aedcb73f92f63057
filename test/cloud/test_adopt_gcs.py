"""`substratus adopt` against a real GCS emulator over HTTP: upstream's layout in a gs:// bucket
is recognised and completed in place (SPEC §3, §9)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid

from substratus import naming
from substratus.cli import ExitCode
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


def test_adopt_with_an_unreachable_bucket_is_one_line_and_quick(tmp_path) -> None:
    """Storage that cannot be reached at all (nothing listens): gcsfs retried for ~35 s and its
    logger printed a traceback per request before adopt's own line. The command prints that one
    line (exit 1), gcsfs' details stay at debug level, and it gives up after a few tries."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBSTRATUS_") and k != "KUBECONFIG"}
    env |= {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "substratus", "adopt", "model/falcon", "-n", "default",
                           "--cloud", "gcp", "--cluster-name", "old", "--bucket-url", "gs://unreachable"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == ExitCode.ERROR, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("substratus: error: cannot read gs://unreachable/") and "Cannot connect" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
