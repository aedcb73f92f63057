"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection``.

Written here rather than taken from kubernetes-asyncio because its LeaseLock never increments
``leaseTransitions`` and writes naive timestamps. The rules, from client-go:

* a lease is judged valid by *our* clock: the time we last saw its record change plus its
  duration — never by comparing the holder's renewTime with our clock (clocks skew);
* every write carries the resourceVersion we read; a 409 means someone else won this round;
* taking over from another holder sets acquireTime and increments leaseTransitions;
* a Lease deleted while another holder's lease still runs is waited out as if it were there
  (client-go creates it at once, and the old holder acts on until its next renewal);
* a graceful stop releases the lease (empty holder) so a standby takes over without waiting.

And fencing, which client-go leaves to the caller (SPEC §7): the leader acts only while its last
successful renewal is younger than ``renew_deadline`` by its own clock, measured from the moment
that renewal's write was *sent*. A standby can take over no earlier than ``lease_duration`` after
it saw that write, which was later still, so the old leader has stopped first
(``renew_deadline < lease_duration``). ``check_write`` is the client's write fence: after a pause
(SIGSTOP, a stalled VM) past the deadline, the first write attempted on waking is refused and
leadership ends, whatever task runs first. Seeing another holder ends leadership at once too.
The clock is CLOCK_BOOTTIME where there is one: monotonic, and unlike CLOCK_MONOTONIC it keeps
counting while the machine is suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from substratus.runtime.client import ApiError, Client, Conflict, NotFound, NotLeader
from substratus.runtime.resource import LEASES

log = logging.getLogger(__name__)


_CLOCK_ID: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def fencing_clock() -> float:
    """Seconds on a monotonic clock that also counts suspended time (Linux CLOCK_BOOTTIME)."""
    return time.monotonic() if _CLOCK_ID is None else time.clock_gettime(_CLOCK_ID)


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
                 clock: Callable[[], float] = fencing_clock) -> None:
        """``client`` must be unfenced (``Client.without_fence``): the elector writes the Lease
        before it leads. ``clock`` gives seconds; tests pass one they can move."""
        self.client = client
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._observed_rv: str | None = None
        self._leader = False
        self._renewed_at: float | None = None
        """``clock()`` just before the write that last acquired or renewed the Lease was sent."""
        self._stepped_down = asyncio.Event()
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
            self._stepped_down.clear()
            self.leading.set()
        else:
            self.leading.clear()

    # --- fencing (SPEC §7) --------------------------------------------------------------------

    def _remaining(self) -> float:
        """Seconds of leadership left on our own clock (≤ 0: the renew deadline has passed)."""
        if self._renewed_at is None:
            return 0.0
        return self._renewed_at + self.config.renew_deadline - self._clock()

    def _step_down(self, reason: str) -> None:
        if not self._leader:
            return
        self._set_leader(False)
        self._stepped_down.set()
        log.error("lost lease", extra={"lease": f"{self.config.namespace}/{self.config.name}",
                                       "identity": self.config.identity, "reason": reason,
                                       "holder": self.observed_holder})

    def holds_lease(self) -> bool:
        """True while we lead and our last renewal is younger than the renew deadline.

        Finding the deadline passed (e.g. on waking from a pause) ends leadership there and then.
        """
        if not self._leader:
            return False
        if self._remaining() > 0:
            return True
        self._step_down("renew deadline passed since the last successful renewal")
        return False

    def check_write(self) -> None:
        """The client's write fence: raise ``NotLeader`` unless ``holds_lease()``."""
        if not self.holds_lease():
            raise NotLeader(f"not the leader of lease {self.config.namespace}/{self.config.name}")

    # --- one round ----------------------------------------------------------------------------

    def _lease_valid(self, now: float) -> bool:
        duration = float((self._observed_spec or {}).get("leaseDurationSeconds") or self.config.lease_duration)
        return self._observed_time + duration > now

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards.

        Seeing another holder while we lead ends our leadership at once, whatever the deadline.
        """
        cfg = self.config
        now_wall = dt.datetime.now(dt.UTC)
        try:
            lease = await self.client.get(LEASES, cfg.name, cfg.namespace)
        except NotFound:
            last_holder = self.observed_holder
            if not self._leader and last_holder and last_holder != cfg.identity and self._lease_valid(self._clock()):
                # Deleted while another replica's lease still runs by our clock: that replica
                # acts until its next renewal (which re-creates it), so wait as if it were there.
                return False
            spec = {
                "holderIdentity": cfg.identity, "leaseDurationSeconds": int(cfg.lease_duration),
                "acquireTime": micro_time(now_wall), "renewTime": micro_time(now_wall), "leaseTransitions": 0,
            }
            if self._leader and not self.holds_lease():
                return False  # woke past the deadline: a late renewal must not revive us
            sent = self._clock()
            try:
                created = await self.client.create(LEASES, {
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": spec})
            except Conflict:
                return False
            self._observe(created, self._clock())
            self._renewed_at = sent
            return True
        spec = lease.get("spec") or {}
        now = self._clock()
        if spec != self._observed_spec:
            self._observe(lease, now)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != cfg.identity:
            if self._leader:
                # Someone else holds it now: our lease expired in their eyes. Stop before any write.
                self._step_down("another replica holds the lease")
                return False
            if self._lease_valid(now):
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
        if self._leader and not self.holds_lease():
            return False  # woke past the deadline (e.g. paused between the GET and here)
        sent = self._clock()
        try:
            updated = await self.client.replace(LEASES, lease)
        except Conflict:
            return False
        self._observe(updated, self._clock())
        self._renewed_at = sent
        return True

    def _observe(self, lease: dict, now: float) -> None:
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_rv = (lease.get("metadata") or {}).get("resourceVersion")
        self._observed_time = now

    # --- loops --------------------------------------------------------------------------------

    def _jittered_retry(self) -> float:
        return self.config.retry_period * (1 + 0.2 * random.random())

    async def acquire(self) -> None:
        """Block until we hold the lease. Each attempt may take what a renew attempt may (a
        third of the renew deadline, at least the retry period): one stuck on a dead connection
        would otherwise delay a takeover by the client's whole request timeout."""
        while True:
            try:
                async with asyncio.timeout(self._attempt_limit()):
                    acquired = await self.try_acquire_or_renew()
                if acquired:
                    self._set_leader(True)
                    log.info("acquired lease", extra={"lease": f"{self.config.namespace}/{self.config.name}",
                                                      "identity": self.config.identity})
                    return
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("error acquiring lease", extra={
                    "lease": f"{self.config.namespace}/{self.config.name}", "error": repr(exc)})
            await asyncio.sleep(self._jittered_retry())

    def _attempt_timeout(self) -> float:
        """Seconds one renew attempt (a GET and a PUT of a small object) may take: a third of the
        renew deadline (at least the retry period), never past the deadline itself. One attempt
        stuck on a dead connection (frozen, no FIN) must leave time for more on fresh ones, or
        an unreachable-for-a-moment path costs the lease although the API server is fine."""
        return max(min(self._remaining(), self._attempt_limit()), 0.0)

    def _attempt_limit(self) -> float:
        """A third of the renew deadline, at least the retry period: what one acquire or renew
        attempt may take."""
        return max(self.config.retry_period, self.config.renew_deadline / 3)

    async def renew_until_lost(self) -> None:
        """Renew every retry period; return once no longer the leader. Each attempt may take a
        third of the renew deadline (``_attempt_timeout``); one cut short is retried at once.

        Leadership ends when the renew deadline passes since the last *successful* renewal (not
        since the current round began: a round that starts late, after a pause, starts with the
        time already spent), when another holder is seen, or when the write fence finds the
        deadline passed first.
        """
        cfg = self.config
        timed_out = False
        while True:
            # After an attempt cut by its timeout (already ≥ a retry period long; its connection
            # is closed) the next one goes at once, on a fresh connection.
            wait = 0.0 if timed_out else min(cfg.retry_period, max(self._remaining(), 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stepped_down.wait()
            if not self.holds_lease():
                return
            timed_out = False
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands
                # as the attempt completes, and a stopped elector would renew on forever.
                async with asyncio.timeout(self._attempt_timeout()) as attempt:
                    await self.try_acquire_or_renew()
            except (ApiError, OSError, TimeoutError) as exc:
                timed_out = attempt.expired()
                log.warning("error renewing lease", extra={
                    "lease": f"{cfg.namespace}/{cfg.name}", "error": repr(exc)})

    async def run(self) -> None:
        """Acquire, call on_started_leading, renew; on loss call on_stopped_leading and return.

        On a graceful stop (cancel) the lease is still renewed while on_stopped_leading drains
        the work, as controller-runtime does, so draining writes are not fenced; then released.
        """
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
                keep = asyncio.create_task(self.renew_until_lost()) if self.holds_lease() else None
                try:
                    await asyncio.shield(self._on_stopped())
                finally:
                    if keep is not None:
                        keep.cancel()
                        await asyncio.gather(keep, return_exceptions=True)
            if self.holds_lease() and self.config.release_on_cancel:
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
            log.warning("could not release lease", extra={"lease": f"{cfg.namespace}/{cfg.name}",
                                                          "error": repr(exc)})
            return False
        finally:
            self._set_leader(False)
