"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection``.

Written here rather than taken from kubernetes-asyncio because its LeaseLock never increments
``leaseTransitions`` and writes naive timestamps. The rules, from client-go:

* a lease is judged valid by *our* clock: the time we last saw its record change plus its
  duration — never by comparing the holder's renewTime with our clock (clocks skew);
* every write carries the resourceVersion we read; a 409 means someone else won this round;
* taking over from another holder sets acquireTime and increments leaseTransitions;
* a leader that cannot renew within ``renew_deadline`` steps down at once;
* a graceful stop releases the lease (empty holder) so a standby takes over without waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from substratus.runtime import metrics
from substratus.runtime.client import ApiError, Client, Conflict, NotFound
from substratus.runtime.resource import LEASES

log = logging.getLogger(__name__)


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(t: dt.datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, always UTC ``Z``."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define
class LeaderElectionConfig:
    name: str
    namespace: str
    identity: str = attrs.field(factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period * 1.2:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period")


class LeaderElector:
    def __init__(self, client: Client, config: LeaderElectionConfig,
                 on_started_leading: Callable[[], Awaitable[None]] | None = None,
                 on_stopped_leading: Callable[[], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._observed_rv: str | None = None
        self._leader = False
        self._gauge = metrics.LEADER_ELECTION_MASTER_STATUS.labels(config.name)
        self._gauge.set(0)
        self.leading = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def observed_holder(self) -> str | None:
        return (self._observed_spec or {}).get("holderIdentity") or None

    def _set_leader(self, value: bool) -> None:
        self._leader = value
        self._gauge.set(1 if value else 0)
        if value:
            self.leading.set()
        else:
            self.leading.clear()

    # --- one round ----------------------------------------------------------------------------

    def _lease_valid(self, now: float) -> bool:
        duration = float((self._observed_spec or {}).get("leaseDurationSeconds") or self.config.lease_duration)
        return self._observed_time + duration > now

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards."""
        cfg = self.config
        now_wall = dt.datetime.now(dt.UTC)
        try:
            lease = await self.client.get(LEASES, cfg.name, cfg.namespace)
        except NotFound:
            spec = {
                "holderIdentity": cfg.identity, "leaseDurationSeconds": int(cfg.lease_duration),
                "acquireTime": micro_time(now_wall), "renewTime": micro_time(now_wall), "leaseTransitions": 0,
            }
            try:
                created = await self.client.create(LEASES, {
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": spec})
            except Conflict:
                return False
            self._observe(created, self._clock())
            return True
        spec = lease.get("spec") or {}
        now = self._clock()
        if spec != self._observed_spec:
            self._observe(lease, now)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != cfg.identity and self._lease_valid(now):
            return False
        new_spec = dict(spec)
        new_spec["leaseDurationSeconds"] = int(cfg.lease_duration)
        new_spec["renewTime"] = micro_time(now_wall)
        new_spec["holderIdentity"] = cfg.identity
        if holder != cfg.identity:
            new_spec["acquireTime"] = micro_time(now_wall)
            # A change of hands, whether the lease expired or was released.
            new_spec["leaseTransitions"] = int(str(spec.get("leaseTransitions") or 0)) + 1
        lease["spec"] = new_spec
        try:
            updated = await self.client.replace(LEASES, lease)
        except Conflict:
            return False
        self._observe(updated, self._clock())
        return True

    def _observe(self, lease: dict, now: float) -> None:
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_rv = (lease.get("metadata") or {}).get("resourceVersion")
        self._observed_time = now

    # --- loops --------------------------------------------------------------------------------

    def _jittered_retry(self) -> float:
        return self.config.retry_period * (1 + 0.2 * random.random())

    async def acquire(self) -> None:
        """Block until we hold the lease."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self._set_leader(True)
                    log.info("acquired lease", extra={"lease": f"{self.config.namespace}/{self.config.name}",
                                                    "identity": self.config.identity})
                    return
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("error acquiring lease",
                            extra={"lease": f"{self.config.namespace}/{self.config.name}", "error": repr(exc)})
            await asyncio.sleep(self._jittered_retry())

    async def renew_until_lost(self) -> None:
        """Renew every retry period; return (no longer leader) when a renew deadline passes."""
        cfg = self.config
        while True:
            deadline = self._clock() + cfg.renew_deadline
            renewed = False
            while self._clock() < deadline:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands
                    # as the attempt completes, and a stopped elector would renew on forever.
                    async with asyncio.timeout(max(deadline - self._clock(), 0.1)):
                        renewed = await self.try_acquire_or_renew()
                    if renewed:
                        break
                except (ApiError, OSError, TimeoutError) as exc:
                    log.warning("error renewing lease", extra={"lease": f"{cfg.namespace}/{cfg.name}", "error": repr(exc)})
                await asyncio.sleep(min(cfg.retry_period, max(deadline - self._clock(), 0)))
            if not renewed:
                self._set_leader(False)
                log.error("lost lease: renew deadline exceeded",
                          extra={"lease": f"{cfg.namespace}/{cfg.name}", "identity": cfg.identity})
                return
            await asyncio.sleep(cfg.retry_period)

    async def run(self) -> None:
        """Acquire, call on_started_leading, renew; on loss call on_stopped_leading and return."""
        started = False
        try:
            await self.acquire()
            started = True
            if self._on_started is not None:
                await self._on_started()
            await self.renew_until_lost()
        finally:
            # Stop the work first, then hand the lease over: no write after release.
            if started and self._on_stopped is not None:
                await asyncio.shield(self._on_stopped())
            if self._leader and self.config.release_on_cancel:
                await asyncio.shield(self.release())
            self._set_leader(False)

    async def release(self) -> bool:
        """Give the lease up so a standby need not wait for it to expire."""
        cfg = self.config
        if not self._leader:
            return False
        try:
            lease = await self.client.get(LEASES, cfg.name, cfg.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != cfg.identity:
                return False
            now = micro_time(dt.datetime.now(dt.UTC))
            lease["spec"] = {"holderIdentity": None, "leaseDurationSeconds": 1, "acquireTime": now,
                             "renewTime": now, "leaseTransitions": spec.get("leaseTransitions", 0)}
            await self.client.replace(LEASES, lease)
            log.info("released lease", extra={"lease": f"{cfg.namespace}/{cfg.name}", "identity": cfg.identity})
            return True
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("could not release lease", extra={"lease": f"{cfg.namespace}/{cfg.name}", "error": repr(exc)})
            return False
        finally:
            self._set_leader(False)
