"""Scenario 6: delete and re-apply complete Models → restored from the bucket (GitOps).

The bucket is the source of truth: a Model whose ``completed.json`` exists is complete without
running anything. Deleting the objects (their Jobs and ConfigMaps are garbage-collected) and
applying the same manifests again must give ``FoundInStorage`` with the same URL, files and
size, without a single Job created, and without one bucket object deleted or changed — even for
a trained Model re-applied before (and without) its Dataset.
"""

from __future__ import annotations

import time

from reliability_helpers import ChildAudit, condition, dataset, model, snapshot, wait_ready

from substratus import naming
from substratus.controllers.resources import DATASETS, MODELS
from substratus.runtime.resource import CONFIGMAPS, JOBS
from substratus.testing.wait import eventually

CLUSTER = "test-cluster"


async def test_delete_and_reapply_restores_from_storage(start_operator, sim, admin, namespace) -> None:
    ns = namespace
    op = await start_operator(workers=2)
    # What the import container would have written to /content/output.
    url = f"{op.cloud.bucket_url}/{naming.storage_hash(CLUSTER, ns, 'models', 'falcon')}"
    await op.cloud.write(f"{url}/model/config.json", b'{"layers": 2}')
    await op.cloud.write(f"{url}/model/weights/part-0.bin", b"w" * 5000)
    manifests = [
        (MODELS, model("falcon", ns, params={"name": "tiiuae/falcon-7b"})),
        (DATASETS, dataset("squad", ns)),
        (MODELS, model("falcon-tuned", ns, baseModel={"name": "falcon"}, trainingDataset={"name": "squad"})),
    ]
    for res, obj in manifests:
        await admin.create(res, obj)
    first = await wait_ready(admin, MODELS, ns, ["falcon", "falcon-tuned"], timeout=60)
    assert first["falcon"]["status"]["files"] == ["config.json", "weights/part-0.bin"]
    before = snapshot(op.bucket)
    assert sum(p.endswith("completed.json") for p in before) == 3

    # Delete everything; wait until the children are garbage-collected.
    for res, obj in manifests:
        await admin.delete(res, obj["metadata"]["name"], ns)

    async def children_gone() -> bool:
        return not (await admin.list(JOBS, ns))["items"] and not [
            c for c in (await admin.list(CONFIGMAPS, ns))["items"] if c["metadata"]["name"].endswith("-params")]

    await eventually(children_gone, timeout=30)

    # Re-apply — the trained Model first and without its Dataset: the bucket alone decides.
    jobs = await ChildAudit(admin, JOBS, ns).start()
    t0 = time.monotonic()
    await admin.create(MODELS, manifests[2][1])
    await admin.create(MODELS, manifests[0][1])
    again = await wait_ready(admin, MODELS, ns, ["falcon", "falcon-tuned"], timeout=30)
    restored_s = time.monotonic() - t0
    for name, obj in again.items():
        c = condition(obj, "Complete")
        assert c["reason"] == "FoundInStorage", (name, c)
        assert obj["status"]["url"] == first[name]["status"]["url"]
        assert obj["status"].get("files") == first[name]["status"].get("files")
        assert obj["status"].get("diskSize") == first[name]["status"].get("diskSize")
    await admin.create(DATASETS, manifests[1][1])
    await wait_ready(admin, DATASETS, ns, ["squad"], timeout=30)
    assert condition(await admin.get(DATASETS, "squad", ns), "Complete")["reason"] == "FoundInStorage"

    await eventually(op.queues_idle, timeout=10)
    assert jobs.uids == {}, f"no Job may run again, saw {dict(jobs.uids)}"
    after = snapshot(op.bucket)
    assert after == before, {"removed": sorted(set(before) - set(after)), "added": sorted(set(after) - set(before)),
                             "changed": sorted(k for k in before if k in after and before[k] != after[k])}
    await jobs.stop()
    print(f"\nRELIABILITY restore: 3 objects restored in {restored_s:.1f}s, 0 Jobs, "
          f"{len(after)} bucket objects unchanged")
