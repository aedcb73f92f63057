"""SPEC §7 fencing covers the bucket too: a leader paused mid-reconcile, between reading the bucket
and writing ``completed.json``, must not write it on waking past its renew deadline.

The pause is the whole event loop blocked (``time.sleep`` in the storage read, as a SIGSTOP
would stop the process): nothing runs in it, so the elector cannot notice first, and on waking
the reconcile goes straight on to its write. The API writes of the same reconcile were already
fenced; before storage writes were, the marker was written on waking (a deposed leader acting).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from reliability_helpers import dataset, metric

from substratus.cloud.local import LocalCloud
from substratus.controllers.resources import DATASETS
from substratus.operator import build_manager
from substratus.runtime.client import Client
from substratus.runtime.manager import EXIT_LOST_LEASE
from substratus.testing.operator import local_test_config
from substratus.testing.wait import eventually

LEASE = {"leader_election_lease_duration": 3.0, "leader_election_renew_deadline": 2.0,
         "leader_election_retry_period": 0.5}


class PausingCloud(LocalCloud):
    """The local cloud, whose process "pauses" once, right after it finds no completion marker."""

    pause_seconds = 0.0
    paused_at: float | None = None
    refused: list[str]

    async def exists(self, url: str) -> bool:
        found = await super().exists(url)
        if url.endswith("/completed.json") and not found and self.paused_at is None:
            self.paused_at = time.monotonic()
            time.sleep(self.pause_seconds)  # noqa: ASYNC251 - blocking on purpose: the process is paused
        return found


async def test_a_leader_woken_past_its_deadline_writes_nothing_to_the_bucket(
        client: Client, crds, sim, namespace: str, tmp_path: Path) -> None:
    cfg = local_test_config(tmp_path, namespace, leader_elect=True, leader_election_namespace=namespace,
                            leader_election_id="fenced-storage", **LEASE)
    cloud = PausingCloud(cfg.bucket_url, signing_key=cfg.upload_signing_key, upload_base_url=cfg.upload_base_url)
    cloud.pause_seconds = cfg.leader_election_renew_deadline + 0.5
    mgr = build_manager(client, cloud, cfg)
    errors_before = metric("controller_runtime_reconcile_errors_total", controller="dataset")
    task = asyncio.create_task(mgr.run(handle_signals=False))
    try:
        await eventually(lambda: mgr.elector is not None and mgr.elector.is_leader, timeout=30)
        await client.create(DATASETS, dataset("d", namespace))
        # The Job succeeds (simulator), the reconcile finds no marker, the process pauses, wakes
        # past its deadline and loses the lease: run() ends with the lost-lease exit code.
        assert await asyncio.wait_for(task, 60) == EXIT_LOST_LEASE
    finally:
        mgr.stop()
        await asyncio.gather(task, return_exceptions=True)
        await cloud.close()
    assert cloud.paused_at is not None, "the reconcile never reached the completion marker"
    markers = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "bucket").rglob("completed.json"))
    assert markers == [], f"a leader woken past its renew deadline wrote {markers}"
    # The refused write (NotLeader) ended the reconcile, but it is no error of the Dataset's: a
    # deposed replica's refusals must not count as failed reconciles (alerts fire on those).
    errors = metric("controller_runtime_reconcile_errors_total", controller="dataset") - errors_before
    assert errors == 0, f"{errors:.0f} reconcile errors counted for a write refused by the leadership fence"
    print(f"\nRELIABILITY fenced storage: paused {cloud.pause_seconds:.1f}s mid-reconcile (renew deadline "
          f"{cfg.leader_election_renew_deadline:.0f}s); completion markers written on waking: {len(markers)}")
