"""Leader election on a real Lease: one leader at a time, takeover, transitions, release, and
fencing (SPEC §7): no write leaves a replica whose last renewal is older than the renew deadline
by its own clock, or that has seen another holder. The fencing tests move the elector's clock by
hand (as a pause would), so they do not depend on how fast this machine is."""

from __future__ import annotations

import asyncio
import socket

import pytest
from kubernetes_asyncio import client as k8s_client

from substratus.runtime import metrics
from substratus.runtime.client import Client, NotLeader
from substratus.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from substratus.runtime.resource import CONFIGMAPS, LEASES
from substratus.testing.wait import eventually

pytestmark = pytest.mark.controlplane

FAST = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}


def elector(client: Client, namespace: str, identity: str, **kw) -> LeaderElector:
    return LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace,
                                                      identity=identity, **{**FAST, **kw}))


async def lease(client: Client, namespace: str) -> dict:
    return (await client.get(LEASES, "test-lease", namespace))["spec"]


class HandClock:
    """The elector's clock, moved only by the test: seconds pass for it exactly when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fenced(client: Client, el: LeaderElector) -> Client:
    """What the manager gives its controllers: the shared client behind the elector's fence."""
    return client.fenced(el.check_write)


def configmap(name: str, namespace: str) -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"k": "v"}}


async def unreachable_client() -> Client:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Client(k8s_client.ApiClient(k8s_client.Configuration(host=f"http://127.0.0.1:{port}")))


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


async def test_leader_steps_down_at_once_when_another_holds_the_lease(client: Client, namespace: str) -> None:
    stopped = asyncio.Event()

    async def on_stop() -> None:
        stopped.set()

    clock = HandClock()  # never moves: the renew deadline cannot be what ends leadership here
    a = LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace, identity="a", **FAST),
                      on_stopped_leading=on_stop, clock=clock)
    writer = fenced(client, a)
    ta = asyncio.create_task(a.run())
    try:
        await eventually(lambda: a.is_leader)
        # Someone else takes the lease by force (as if our renewals had been lost).
        spec_obj = await client.get(LEASES, "test-lease", namespace)
        spec_obj["spec"]["holderIdentity"] = "usurper"
        await client.replace(LEASES, spec_obj)
        # The next renew round sees it (one jittered retry period, plus a busy machine's slack).
        await asyncio.wait_for(stopped.wait(), FAST["retry_period"] * 1.2 + 5)
        assert not a.is_leader
        with pytest.raises(NotLeader):
            await writer.create(CONFIGMAPS, configmap("after-usurped", namespace))
        assert await client.get_or_none(CONFIGMAPS, "after-usurped", namespace) is None
        assert (await lease(client, namespace))["holderIdentity"] == "usurper", "the usurper's lease stands"
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)


async def test_no_write_leaves_a_leader_woken_past_its_renew_deadline(client: Client, namespace: str) -> None:
    """A pause (SIGSTOP, a stalled VM) is time passing on the elector's clock with nothing run:
    the first write attempted on waking is refused before it is sent, and leadership ends."""
    stopped = asyncio.Event()

    async def on_stop() -> None:
        stopped.set()

    clock = HandClock()
    a = LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace, identity="a", **FAST),
                      on_stopped_leading=on_stop, clock=clock)
    writer = fenced(client, a)
    with pytest.raises(NotLeader):
        await writer.create(CONFIGMAPS, configmap("before-leading", namespace))
    ta = asyncio.create_task(a.run())
    try:
        await eventually(lambda: a.is_leader)
        await writer.create(CONFIGMAPS, configmap("leading", namespace))
        # Every renewal so far happened at clock 1000; leadership lasts until 1000 + renew_deadline.
        clock.now += FAST["renew_deadline"] - 0.01
        await writer.create(CONFIGMAPS, configmap("just-inside", namespace))
        # The rest of the pause. No await between waking and the write: no task runs first.
        clock.now += 0.01
        with pytest.raises(NotLeader):
            await writer.create(CONFIGMAPS, configmap("after-waking", namespace))
        assert not a.is_leader, "leadership ends at the refused write, not at the next renew round"
        await asyncio.wait_for(stopped.wait(), 5)
        assert await client.get_or_none(CONFIGMAPS, "after-waking", namespace) is None
        assert await client.get_or_none(CONFIGMAPS, "just-inside", namespace) is not None
        await asyncio.gather(ta, return_exceptions=True)
        # Nothing revived it: no renewal and no release was written after the deadline.
        assert (await lease(client, namespace))["holderIdentity"] == "a"
        assert not a.is_leader
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)


async def test_the_renew_deadline_counts_from_the_last_successful_renewal(client: Client, namespace: str) -> None:
    """Failing renew rounds do not extend leadership (each round used to start a fresh deadline)."""
    clock = HandClock()
    a = LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace, identity="a", **FAST),
                      clock=clock)
    writer = fenced(client, a)
    ta = asyncio.create_task(a.run())
    cut_off = await unreachable_client()
    try:
        await eventually(lambda: a.is_leader)
        a.client = cut_off  # from now on every renewal fails (connection refused)
        await asyncio.sleep(FAST["retry_period"] * 1.2 * 3)  # several failed rounds
        clock.now += FAST["renew_deadline"] / 2
        await asyncio.sleep(FAST["retry_period"] * 1.2 * 2)  # more failed rounds, later on the clock
        assert a.is_leader
        clock.now += FAST["renew_deadline"] / 2 - 0.01
        await writer.create(CONFIGMAPS, configmap("still-leading", namespace))
        clock.now += 0.01
        with pytest.raises(NotLeader):
            await writer.create(CONFIGMAPS, configmap("deadline-passed", namespace))
        assert await client.get_or_none(CONFIGMAPS, "deadline-passed", namespace) is None
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)
        await cut_off.close()


async def test_a_graceful_stop_keeps_renewing_while_work_drains(client: Client, namespace: str) -> None:
    """Draining takes longer than the renew deadline: its writes still go out (the lease is kept
    renewed meanwhile, as controller-runtime does), then the lease is released."""
    drained: list[str] = []

    async def on_stop() -> None:
        await asyncio.sleep(FAST["renew_deadline"] * 1.5)
        await writer.create(CONFIGMAPS, configmap("drained", namespace))
        drained.append("drained")

    a = LeaderElector(client, LeaderElectionConfig(name="test-lease", namespace=namespace, identity="a", **FAST),
                      on_stopped_leading=on_stop)
    writer = fenced(client, a)
    ta = asyncio.create_task(a.run())
    await eventually(lambda: a.is_leader)
    ta.cancel()
    results = await asyncio.gather(ta, return_exceptions=True)
    assert drained == ["drained"], results
    assert not a.is_leader
    assert not (await lease(client, namespace)).get("holderIdentity"), "released after the drain"


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


@pytest.mark.parametrize("refused_at", [2, 3], ids=["connection-ready", "first-byte"])
async def test_the_fence_is_checked_again_right_before_the_bytes_leave(client: Client, namespace: str,
                                                                       refused_at: int) -> None:
    """A write that passed the first check can still wait (a new connection, a loop turn for its
    body); a pause there ends past the deadline. The fence is asked again when the connection is
    ready and when the first byte is about to leave: refused there, nothing reaches the server."""
    calls: list[int] = []

    def fence() -> None:
        calls.append(1)
        if len(calls) >= refused_at:
            raise NotLeader("deadline passed while the request waited")

    writer = client.fenced(fence)
    with pytest.raises(NotLeader):
        await writer.create(CONFIGMAPS, configmap(f"refused-at-{refused_at}", namespace))
    assert len(calls) == refused_at
    assert await client.get_or_none(CONFIGMAPS, f"refused-at-{refused_at}", namespace) is None
    calls.clear()
    refused_at = 99  # the same client still writes once the fence allows it
    await writer.create(CONFIGMAPS, configmap("allowed", namespace))
    assert len(calls) == 3, "checked before building the request, on the connection, at the first byte"


async def test_a_deleted_lease_is_not_taken_while_the_leader_may_still_act(client: Client, namespace: str) -> None:
    """The Lease is deleted while ``a`` leads (``kubectl delete lease``, a namespace clean-up). A
    standby that saw ``a`` holding it must not create it and lead at once: ``a`` still acts
    until its next renewal (fenced only by its own deadline), so both would write. The standby
    waits as if the lease were still there; ``a`` re-creates it on its next round and goes on."""
    a, b = elector(client, namespace, "a"), elector(client, namespace, "b")
    ta = asyncio.create_task(a.run())
    try:
        await eventually(lambda: a.is_leader)
        assert not await b.try_acquire_or_renew(), "b must not take a lease a holds"
        await client.delete(LEASES, "test-lease", namespace)
        # One attempt by the standby right after the delete, before a's next renewal.
        assert not await b.try_acquire_or_renew(), "b took the deleted lease while a still leads"
        assert a.is_leader
        await eventually(lambda: client.get_or_none(LEASES, "test-lease", namespace), timeout=5)
        assert (await lease(client, namespace))["holderIdentity"] == "a"
        assert a.is_leader
    finally:
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)
