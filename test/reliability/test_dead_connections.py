"""Scenario 7: every open connection of the operator freezes mid-watch — no byte, no FIN.

A hung API server or load balancer, or a path that black-holes packets, leaves TCP connections
open and silent; TCP keepalive cannot tell when the peer's kernel still answers. SPEC §7: every
watch notices a dead connection within 60 s (client-go does, with HTTP/2 pings), not only when its
own timeout ends. Unfixed, the informers noticed after 354-588 s (their read timeout was the
watch's 300-600 s timeout plus 30 s) and a Dataset created meanwhile became ready after 441 s.

The proxy freezes every connection the operator has open (watches and idle keep-alive ones); new
connections get through. Asserted: every frozen watch is replaced by a new one within the bound,
and a Dataset created just after the freeze is ready within it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from reliability_helpers import dataset, wait_ready

from substratus.controllers.resources import DATASETS
from substratus.runtime.client import Client, ClientOptions
from substratus.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from substratus.testing.wait import eventually

BOUND = 60.0
"""SPEC §7: a dead watch connection is noticed within 60 s."""


async def _every_informer_watching(proxy, op) -> set[str]:
    """The paths the operator's informers watch, once each has a watch open through ``proxy``."""
    paths = {inf.resource.path(inf.namespace) for inf in op.manager.cache.informers}
    await eventually(lambda: paths <= {r.path for r in proxy.records if r.watch and r.status == 200},
                     timeout=30, message="every informer watching")
    return paths


async def _replaced_after(proxy, paths: set[str], t0: float, message: str) -> dict[str, float]:
    """Seconds after ``t0`` each watched path's watch was opened again (by resource name), once
    every one has been: each watch has its own deadline (its server timeout + slack)."""
    await eventually(lambda: paths <= {r.path for r in proxy.records if r.watch and r.started > t0},
                     timeout=max(1.0, BOUND + 5 - (time.monotonic() - t0)), message=message)
    rewatch: dict[str, float] = defaultdict(lambda: float("inf"))
    for r in proxy.records:
        if r.watch and r.started > t0 and r.path in paths:
            rewatch[r.path] = min(rewatch[r.path], r.started - t0)
    return {p.rsplit("/", 1)[-1]: round(rewatch[p], 1) for p in sorted(paths)}


async def test_frozen_connections_are_noticed_and_work_created_meanwhile_converges(
        start_operator, make_proxy, sim, admin, namespace, tmp_path) -> None:
    proxy = await make_proxy("op")
    options = ClientOptions()  # the shipped watch idle timeout
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"),
                              client_options=options)
    paths = await _every_informer_watching(proxy, op)
    frozen = proxy.freeze()
    t_freeze = proxy.frozen_at
    assert t_freeze is not None
    assert frozen >= len(paths), f"froze {frozen} connections for {len(paths)} watches"
    await admin.create(DATASETS, dataset("created-while-frozen", namespace))

    await wait_ready(admin, DATASETS, namespace, ["created-while-frozen"], timeout=BOUND + 60)
    ready_s = time.monotonic() - t_freeze

    noticed = await _replaced_after(proxy, paths, t_freeze, "every frozen watch replaced")
    late = {k: v for k, v in noticed.items() if v > BOUND}
    assert not late, f"watches replaced later than {BOUND}s after the freeze: {late}"
    assert ready_s <= BOUND, f"the Dataset created while frozen was ready {ready_s:.1f}s after the freeze"
    print(f"\nRELIABILITY dead connections: froze {frozen} connections; watch idle timeout "
          f"{options.watch_idle_timeout:.0f}s; watches replaced after (s) {noticed}; max "
          f"{max(noticed.values()):.1f}s; Dataset created while frozen ready after {ready_s:.1f}s")


async def test_watches_that_trickle_bytes_but_carry_nothing_are_noticed(
        start_operator, make_proxy, sim, admin, namespace, tmp_path) -> None:
    """A dead watch that still shows bytes: the proxy turns every open watch into a trickle of one
    space every 5 s — no event, not the end of the watch the server closed. A read-idle timeout
    alone never fires on it (every byte restarts it); the watch's own deadline must. Unfixed, the
    informers never replaced these watches and the Dataset never became ready."""
    proxy = await make_proxy("op")
    options = ClientOptions()  # the shipped watch idle timeout
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"),
                              client_options=options)
    paths = await _every_informer_watching(proxy, op)
    trickling = proxy.trickle(interval=5.0)
    t0 = proxy.trickled_at
    assert t0 is not None
    assert trickling >= len(paths), f"{trickling} watches trickle for {len(paths)} informers"
    await admin.create(DATASETS, dataset("created-while-trickling", namespace))

    await wait_ready(admin, DATASETS, namespace, ["created-while-trickling"], timeout=BOUND + 20)
    ready_s = time.monotonic() - t0

    noticed = await _replaced_after(proxy, paths, t0, "every trickling watch replaced")
    late = {k: v for k, v in noticed.items() if v > BOUND}
    assert not late, f"trickling watches replaced later than {BOUND}s: {late}"
    assert ready_s <= BOUND, f"the Dataset created meanwhile was ready {ready_s:.1f}s after the trickle began"
    print(f"\nRELIABILITY trickling watches: {trickling} watches trickled a byte every 5 s; watches "
          f"replaced after (s) {noticed}; max {max(noticed.values()):.1f}s; Dataset ready after {ready_s:.1f}s")


async def test_a_leader_whose_connections_freeze_keeps_its_lease(
        start_operator, make_proxy, sim, admin, namespace, tmp_path) -> None:
    """Every connection of a leading operator freezes (watches, the controllers' idle pooled ones,
    the elector's own); new connections work: the API server is fine. A renewal that waits on a
    frozen connection until the renew deadline loses the lease for nothing (the process exits,
    a standby waits out the lease). Unfixed, leadership was lost 4.5-4.9 s after the freeze."""
    proxy = await make_proxy("op")
    lease = {"leader_election_lease_duration": 8.0, "leader_election_renew_deadline": 5.0,
             "leader_election_retry_period": 1.0}
    op = await start_operator(kubeconfig_path=proxy.write_kubeconfig(tmp_path / "kubeconfig"),
                              leader_elect=True, leader_election_namespace=namespace,
                              leader_election_id="frozen-leader", **lease)
    elector = op.manager.elector
    assert elector is not None
    await eventually(lambda: elector.is_leader, timeout=30, message="leading")
    # Warm the controllers' pool with idle keep-alive connections, as a busy operator has.
    await admin.create(DATASETS, dataset("before-freeze", namespace))
    await wait_ready(admin, DATASETS, namespace, ["before-freeze"], timeout=60)
    frozen = proxy.freeze()
    t0 = time.monotonic()
    watch_for = 3 * lease["leader_election_renew_deadline"]
    while time.monotonic() - t0 < watch_for:
        assert elector.is_leader and not op.task.done(), (
            f"leadership lost {time.monotonic() - t0:.1f}s after {frozen} connections froze")
        await asyncio.sleep(0.1)
    renewals = [r for r in proxy.select(method="PUT", path="/leases/frozen-leader", ok=True) if r.started > t0]
    assert renewals, "no renewal got through after the freeze"
    print(f"\nRELIABILITY frozen leader: {frozen} connections frozen; still leading after {watch_for:.0f}s "
          f"(renew deadline {lease['leader_election_renew_deadline']:.0f}s); first renewal after the freeze "
          f"{renewals[0].started - t0:.1f}s; {len(renewals)} renewals")


async def test_a_standby_whose_connections_freeze_still_takes_over(
        client, make_proxy, namespace, tmp_path) -> None:
    """The standby's connections freeze, then the leader dies without releasing: the standby must
    take over about a lease after the leader's last renewal, not after an acquire attempt stuck on
    a frozen connection waits out the client's 30 s request timeout."""
    cfg = {"lease_duration": 8.0, "renew_deadline": 5.0, "retry_period": 1.0}
    leader = LeaderElector(client.with_own_connections(), LeaderElectionConfig(
        name="frozen-standby", namespace=namespace, identity="leader", release_on_cancel=False, **cfg))
    proxy = await make_proxy("standby")
    via_proxy = await Client.from_kubeconfig(str(proxy.write_kubeconfig(tmp_path / "kubeconfig")))
    standby = LeaderElector(via_proxy, LeaderElectionConfig(
        name="frozen-standby", namespace=namespace, identity="standby", **cfg))
    tl = asyncio.create_task(leader.run())
    ts: asyncio.Task[None] | None = None
    try:
        await eventually(lambda: leader.is_leader, timeout=30, message="leading")
        ts = asyncio.create_task(standby.run())
        await eventually(lambda: proxy.select(path="/leases/frozen-standby", ok=True), timeout=30,
                         message="the standby polling the lease")
        await asyncio.sleep(1.5)
        frozen = proxy.freeze()
        tl.cancel()  # the leader dies: no more renewals, no release
        await asyncio.gather(tl, return_exceptions=True)
        t_dead = time.monotonic()
        await eventually(lambda: standby.is_leader, timeout=45, message="the standby leading")
        took = time.monotonic() - t_dead
        bound = cfg["lease_duration"] + 2 * 1.2 * cfg["retry_period"] + cfg["renew_deadline"] / 3 + 4
        assert took <= bound, f"takeover {took:.1f}s after the leader died, bound {bound:.1f}s"
        print(f"\nRELIABILITY frozen standby: {frozen} connections frozen; takeover {took:.1f}s after the "
              f"leader died (lease {cfg['lease_duration']:.0f}s)")
    finally:
        for t in (tl, ts):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        await leader.client.close()
        await via_proxy.close()


async def test_the_simulators_frozen_watches_are_replaced_too(make_proxy, admin, namespace, tmp_path) -> None:
    """The cluster simulator stands in for the kubelet and controller-manager; its watches used a
    300 s server timeout and no read-idle timeout, so a frozen connection stalled every Job and
    Pod of a test for minutes. It now uses the informers' dead-watch protection
    (``runtime.client.watch_timeouts``): a frozen watch is dropped after the idle timeout and
    re-listed, and a Job created meanwhile completes. (A short idle timeout keeps this quick;
    the default is the operator's.)"""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config

    from substratus.runtime.resource import JOBS
    from substratus.testing.simulator import ClusterSimulator

    assert ClusterSimulator.__attrs_attrs__.watch_idle_timeout.default == ClientOptions().watch_idle_timeout
    proxy = await make_proxy("sim")
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(proxy.write_kubeconfig(tmp_path / "kubeconfig")),
                                      client_configuration=cfg, persist_config=False)
    idle = 6.0
    async with k8s.ApiClient(configuration=cfg) as api:
        sim = ClusterSimulator(api, namespace=namespace, job_delay=0.1, gc_interval=0, watch_idle_timeout=idle)
        await sim.start()
        try:
            watches = {"jobs", "deployments", "pods"}
            await eventually(lambda: watches <= {r.path.rsplit("/", 1)[-1] for r in proxy.records if r.watch},
                             timeout=30, message="the simulator watching")
            assert proxy.freeze() >= len(watches)
            t_freeze = proxy.frozen_at
            assert t_freeze is not None
            await admin.create(JOBS, {"metadata": {"name": "while-frozen", "namespace": namespace}, "spec": {
                "template": {"spec": {"restartPolicy": "Never",
                                      "containers": [{"name": "c", "image": "busybox"}]}}}})

            async def complete() -> bool:
                job = await admin.get(JOBS, "while-frozen", namespace)
                return any(c.get("type") == "Complete" and c.get("status") == "True"
                           for c in (job.get("status") or {}).get("conditions") or [])

            await eventually(complete, timeout=idle * 2 + 20, message="the Job completed by the simulator")
            took = time.monotonic() - t_freeze
            assert took <= idle * 2 + 20, took
            print(f"\nRELIABILITY simulator dead watch: idle timeout {idle:.0f}s; Job created while frozen "
                  f"complete after {took:.1f}s")
        finally:
            await sim.stop()
