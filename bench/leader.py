"""Leader takeover: two real operator processes, the leader is killed, how long until the standby works.

Both run ``python -m substratus run --leader-elect`` in one namespace (the Lease lives there too).
Once the standby is ready (caches synced) and has watched the lease for a few retry periods, the
leader gets SIGKILL (crash: the lease must expire) or SIGTERM (graceful: drain and release). A
Dataset is created right after the signal; "first reconcile" is the moment a watch sees its Job.
The standby's ``leader_election_master_status`` gauge is polled too, for when it took the lease.
Rounds alternate, each new leader facing a fresh standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import ChildObserver, OperatorProc, child_names, create_namespace, dataset
from substratus.config import OperatorConfig
from substratus.controllers.resources import DATASETS
from substratus.runtime.client import Client
from substratus.runtime.resource import JOBS

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}


async def _wait_leader(proc: OperatorProc, timeout: float) -> float | None:
    """Seconds until ``proc`` reports itself leader (polled every 50 ms), None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await proc.is_leader():
            return time.monotonic() - start
        if not proc.alive:
            return None
        await asyncio.sleep(0.05)
    return None


async def run(client: Client, kubeconfig: str, workdir: Path, *, rounds: int = 2,
              log: Any = print) -> dict[str, Any]:
    cfg = OperatorConfig()  # the timings `substratus run` uses when no --leader-election-* flag is given
    ns = await create_namespace(client, "bench-leader")
    observer = ChildObserver(client, ns, resources=(JOBS,))
    await observer.start()
    sequence = ["SIGKILL", "SIGTERM"] * rounds
    results: list[dict[str, Any]] = []
    procs: list[OperatorProc] = []
    try:
        leader = OperatorProc("leader-0", kubeconfig, ns, workdir, leader_elect=True)
        procs.append(leader)
        await leader.wait_ready()
        if await _wait_leader(leader, 60) is None:
            raise RuntimeError(f"the first operator never took the lease; log {leader.log_path}")
        for i, sig_name in enumerate(sequence, start=1):
            standby = OperatorProc(f"leader-{i}", kubeconfig, ns, workdir, leader_elect=True)
            procs.append(standby)
            await standby.wait_ready()
            # The standby has seen the lease renewed a few times: a steady state, not a race at start.
            await asyncio.sleep(2.5 * cfg.leader_election_retry_period)
            if await standby.is_leader():
                raise RuntimeError("the standby took the lease while the leader was healthy")
            name = f"takeover-{i}"
            job = child_names(name)[1]
            observer.expect(JOBS, [job])
            acquired = asyncio.create_task(_wait_leader(standby, 60))
            t0 = time.monotonic()
            leader.send(SIGNALS[sig_name])
            await client.create(DATASETS, dataset(name, ns))
            created = time.monotonic() - t0
            ok = await observer.wait_complete(60)
            acquired_s = await acquired
            code = await leader.wait(40)
            first = observer.seen[JOBS][job] - t0 if ok else None
            results.append({"round": i, "signal": sig_name, "lease_acquired_seconds": _r(acquired_s),
                            "first_reconcile_seconds": _r(first), "create_seconds": _r(created),
                            "old_leader_exit_code": code})
            log(f"  {sig_name}: lease taken after {_r(acquired_s)} s, first Job after {_r(first)} s, "
                f"old leader exited {code}")
            leader = standby
    finally:
        await observer.stop()
        for p in procs:
            with contextlib.suppress(Exception):
                await p.stop(timeout=20)
    return {"namespace": ns, "lease_duration": float(cfg.leader_election_lease_duration),
            "renew_deadline": float(cfg.leader_election_renew_deadline),
            "retry_period": float(cfg.leader_election_retry_period), "rounds": results}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
