"""Leader election on a real Lease: one leader at a time, takeover, transitions, release."""

from __future__ import annotations

import asyncio

import pytest

from substratus.runtime import metrics
from substratus.runtime.client import Client
from substratus.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from substratus.runtime.resource import LEASES
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane

FAST = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}


def elector(client: Client, namespace: str, identity: str, **kw) -> LeaderElector:
    return LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace,
                                                      identity=identity, **{**FAST, **kw}))


async def lease(client: Client, namespace: str) -> dict:
    return (await client.get(LEASES, "test-lease", namespace))["spec"]


async def test_exactly_one_leads_and_release_hands_over(client: Client, namespace: str) -> None:
    a, b = elector(client, namespace, "a"), elector(client, namespace, "b")
    ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
    try:
        await eventually(lambda: a.is_leader or b.is_leader)
        for _ in range(10):  # a few renew periods: never two leaders
            assert a.is_leader != b.is_leader
            await asyncio.sleep(0.2)
        leader, standby, lt = (a, b, ta) if a.is_leader else (b, a, tb)
        spec = await lease(client, namespace)
        assert spec["holderIdentity"] == leader.config.identity
        assert spec["leaseTransitions"] == 0
        assert spec["renewTime"].endswith("Z") and "." in spec["renewTime"]
        assert metrics.REGISTRY.get_sample_value("leader_election_master_status", {"name": "test-lease"}) == 1

        lt.cancel()  # graceful stop: releases the lease
        await asyncio.gather(lt, return_exceptions=True)
        assert not leader.is_leader
        # The standby takes over well before the old lease would have expired on its own.
        await eventually(lambda: standby.is_leader, timeout=FAST["retry_period"] * 4)
        spec = await lease(client, namespace)
        assert spec["holderIdentity"] == standby.config.identity
        assert spec["leaseTransitions"] == 1
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)


async def test_standby_takes_over_when_renewals_stop(client: Client, namespace: str) -> None:
    a = elector(client, namespace, "a", release_on_cancel=False)  # a crash: no release
    ta = asyncio.create_task(a.run())
    await eventually(lambda: a.is_leader)
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    assert (await lease(client, namespace))["holderIdentity"] == "a"

    b = elector(client, namespace, "b")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tb = asyncio.create_task(b.run())
    try:
        await eventually(lambda: b.is_leader, timeout=15)
        waited = loop.time() - t0
        # b must respect a's lease for its full duration as b observed it, then take over.
        assert waited >= FAST["lease_duration"] - 0.1
        spec = await lease(client, namespace)
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    finally:
        tb.cancel()
        await asyncio.gather(tb, return_exceptions=True)


async def test_leader_steps_down_when_it_cannot_renew(client: Client, namespace: str) -> None:
    stopped = asyncio.Event()

    async def on_stop() -> None:
        stopped.set()

    a = LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace, identity="a", **FAST),
                      on_stopped_leading=on_stop)
    ta = asyncio.create_task(a.run())
    try:
        await eventually(lambda: a.is_leader)
        # Someone else takes the lease by force (as if our renewals had been lost).
        spec_obj = await client.get(LEASES, "test-lease", namespace)
        spec_obj["spec"]["holderIdentity"] = "usurper"
        await client.replace(LEASES, spec_obj)
        await asyncio.wait_for(stopped.wait(), FAST["renew_deadline"] + FAST["lease_duration"] + 5)
        assert not a.is_leader
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)


async def test_a_stop_that_lands_as_a_renew_completes_is_not_lost(client: Client, namespace: str) -> None:
    """SIGTERM arriving just as a renew answers must still stop the elector and release the lease.

    (Python 3.11's ``asyncio.wait_for`` returns the inner result and drops such a cancel; an
    elector built on it renews forever and the operator never exits.)
    """
    a = elector(client, namespace, "a")
    ta = asyncio.create_task(a.run())
    try:
        await eventually(lambda: a.is_leader)
        renew = a.try_acquire_or_renew

        async def renew_then_get_stopped() -> bool:
            held = await renew()
            ta.cancel()  # the stop lands in the same loop iteration as the renew's answer
            return held

        a.try_acquire_or_renew = renew_then_get_stopped  # type: ignore[method-assign]
        done, _ = await asyncio.wait({ta}, timeout=FAST["renew_deadline"] + 5)
        assert done, "the elector swallowed the stop and kept renewing"
        assert ta.cancelled()
        assert not a.is_leader
        assert not (await lease(client, namespace)).get("holderIdentity"), "a graceful stop releases the lease"
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)
