"""The manager: one process's shared cache, controllers, leader election and endpoints.

Start-up order, as controller-runtime: endpoints → informers (every replica keeps a warm cache,
so a standby that wins the lease reconciles at once) → wait for sync (``/readyz`` turns 200)
→ leader election → controllers. Shutdown (SIGTERM) runs it backwards: stop taking work,
drain in-flight reconciles, release the lease, stop informers, close endpoints, exit 0.
Losing the lease stops the controllers immediately and makes ``run`` return non-zero, so the
Pod restarts clean rather than carrying on with a stale view of who leads. With leader election
``Manager.client`` — the client to give controllers, like controller-runtime's ``GetClient()`` —
is fenced by the elector (SPEC §7): no write leaves through it unless this process holds the
Lease with a renewal younger than the renew deadline, from before the first election on;
``Manager.write_fence`` is the same check for writers that are not API clients (bucket writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from substratus.runtime import metrics
from substratus.runtime.cache import Cache
from substratus.runtime.client import Client, NotLeader
from substratus.runtime.controller import Controller
from substratus.runtime.events import EventRecorder
from substratus.runtime.informer import Transform
from substratus.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from substratus.runtime.metricsauth import MetricsAuth, server_ssl_context
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LOST_LEASE = 1


def parse_addr(addr: str) -> tuple[str, int] | None:
    """``:8080`` / ``127.0.0.1:8080`` / ``0`` (disabled) → (host, port)."""
    if addr in ("", "0"):
        return None
    host, _, port = addr.rpartition(":")
    return (host or "0.0.0.0", int(port))


@attrs.define
class ManagerOptions:
    namespace: str | None = None
    """Watch one namespace only; None watches all."""
    metrics_addr: str = ":8080"
    metrics_secure: bool = False
    """HTTPS with TokenReview + SubjectAccessReview on /metrics (runtime/metricsauth.py)."""
    metrics_cert_dir: str = ""
    """tls.crt and tls.key for the secure metrics endpoint; empty: a self-signed certificate."""
    health_addr: str = ":8081"
    leader_election: bool = False
    leader_election_id: str = "substratus-leader"
    leader_election_namespace: str = "substratus"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    cache_sync_timeout: float = 120.0
    graceful_shutdown_timeout: float = 30.0
    resync_period: float | None = 10 * 3600.0
    label_selectors: dict[Resource, str] = attrs.field(factory=dict)
    transforms: dict[Resource, Transform | None] = attrs.field(factory=dict)
    """Per-kind cache transforms (see ``Cache.transforms``); other kinds get ``strip_bulk``."""


Runnable = Callable[[], Coroutine[Any, Any, None]]


class Manager:
    def __init__(self, client: Client, options: ManagerOptions | None = None) -> None:
        self.options = options or ManagerOptions()
        self._unfenced = client
        self.client = client.fenced(self._check_write) if self.options.leader_election else client
        """For controllers' writes: with leader election, fenced by the elector."""
        self.cache = Cache(self.client, namespace=self.options.namespace, resync_period=self.options.resync_period,
                           label_selectors=self.options.label_selectors, transforms=self.options.transforms)
        self.recorder = EventRecorder(self.client)
        self.controllers: list[Controller] = []
        self._leader_runnables: list[Runnable] = []
        self._runnables: list[Runnable] = []
        self._runnable_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._lost_lease = False
        self._controllers_running = False
        self._runners: list[web.AppRunner] = []
        self.elector: LeaderElector | None = None
        self.bound_ports: dict[str, int] = {}
        self.ready = asyncio.Event()

    # --- wiring -------------------------------------------------------------------------------

    def add_controller(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def add_runnable(self, fn: Runnable, *, needs_leader: bool = False) -> None:
        """Long-running coroutines started with the manager (e.g. an upload endpoint)."""
        (self._leader_runnables if needs_leader else self._runnables).append(fn)

    def stop(self) -> None:
        """Request a graceful stop (what SIGTERM does)."""
        self._stop.set()

    @property
    def write_fence(self) -> Callable[[], None] | None:
        """The check every write this process makes on the leader's behalf must pass first (raises
        ``NotLeader``), or None without leader election. ``client`` is already behind it; give it
        to any other writer the controllers use (the cloud's storage writes)."""
        return self._check_write if self.options.leader_election else None

    def _check_write(self) -> None:
        if self.elector is None:
            raise NotLeader("leader election has not started")
        self.elector.check_write()

    # --- endpoints ----------------------------------------------------------------------------

    async def _serve(self, name: str, addr: str, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        parsed = parse_addr(addr)
        if parsed is None:
            return
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, parsed[0], parsed[1], ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.bound_ports[name] = sockets[0].getsockname()[1]
        log.info("serving", extra={"endpoint": name, "addr": addr, "port": self.bound_ports.get(name),
                                   "tls": ssl_context is not None})

    def _metrics_app(self) -> web.Application:
        async def handle(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(metrics.REGISTRY),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        middlewares = [MetricsAuth(self.client).middleware()] if self.options.metrics_secure else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", handle)
        return app

    def _health_app(self) -> web.Application:
        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            if self.ready.is_set() and self.cache.synced and not self._stop.is_set():
                return web.Response(text="ok")
            return web.Response(status=503, text="caches not synced" if not self.cache.synced else "not ready")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app

    # --- lifecycle ----------------------------------------------------------------------------

    async def _start_controllers(self) -> None:
        if self._stop.is_set():
            return
        for c in self.controllers:
            await c.start()
        self._runnable_tasks += [asyncio.create_task(fn()) for fn in self._leader_runnables]
        self._controllers_running = True

    async def _stop_controllers(self) -> None:
        if not self._controllers_running:
            return
        self._controllers_running = False
        timeout = self.options.graceful_shutdown_timeout

        async def stop(c: Controller) -> None:
            async with asyncio.timeout(timeout):
                await c.stop(drain=not self._lost_lease)

        results = await asyncio.gather(*(stop(c) for c in self.controllers), return_exceptions=True)
        for c, r in zip(self.controllers, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("controller did not drain in time", extra={"controller": c.name})
                await c.stop(drain=False)

    async def _on_lost(self) -> None:
        if not self._stop.is_set():
            self._lost_lease = True
            self._stop.set()
        await self._stop_controllers()
        if not self._lost_lease:
            # Graceful stop: post the drained reconciles' Events while the lease is still held
            # (after the release the write fence refuses them).
            with contextlib.suppress(TimeoutError):
                await self.recorder.flush(5.0)

    def _install_signals(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        return installed

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code."""
        signals = self._install_signals() if handle_signals else []
        elector_task: asyncio.Task[None] | None = None
        if self.options.leader_election:
            # The elector writes the Lease unfenced; everything else goes through its fence.
            elector_client = self._unfenced.with_own_connections()
            self.elector = LeaderElector(elector_client, LeaderElectionConfig(
                name=self.options.leader_election_id, namespace=self.options.leader_election_namespace,
                lease_duration=self.options.lease_duration, renew_deadline=self.options.renew_deadline,
                retry_period=self.options.retry_period),
                on_started_leading=self._start_controllers, on_stopped_leading=self._on_lost)
        try:
            tls = server_ssl_context(self.options.metrics_cert_dir) if self.options.metrics_secure else None
            await self._serve("metrics", self.options.metrics_addr, self._metrics_app(), tls)
            await self._serve("health", self.options.health_addr, self._health_app())
            self.recorder.start()
            for c in self.controllers:
                for res in c.watched_resources:
                    self.cache.informer(res)
            self.cache.start()
            self._runnable_tasks += [asyncio.create_task(fn()) for fn in self._runnables]
            sync = asyncio.create_task(self.cache.wait_for_sync(self.options.cache_sync_timeout))
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({sync, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not sync.done():
                sync.cancel()
            elif not sync.result():
                log.error("caches did not sync in time", extra={"timeout": self.options.cache_sync_timeout})
                return EXIT_LOST_LEASE
            if not self._stop.is_set():
                self.ready.set()
                log.info("caches synced", extra={"informers": len(self.cache.informers)})
                if self.elector is not None:
                    elector_task = asyncio.create_task(self.elector.run(), name="leader-election")
                else:
                    await self._start_controllers()
                await stop_wait
            stop_wait.cancel()
            log.info("shutting down", extra={"lostLease": self._lost_lease})
            return EXIT_LOST_LEASE if self._lost_lease else EXIT_OK
        finally:
            self._stop.set()
            self.ready.clear()
            if elector_task is not None:
                # Cancelling the elector stops controllers (drain) and then releases the lease.
                elector_task.cancel()
                await asyncio.gather(elector_task, return_exceptions=True)
            if self.elector is not None:
                await self.elector.client.close()
            await self._stop_controllers()
            for t in self._runnable_tasks:
                t.cancel()
            await asyncio.gather(*self._runnable_tasks, return_exceptions=True)
            await self.recorder.stop()
            await self.cache.stop()
            for runner in self._runners:
                await runner.cleanup()
            loop = asyncio.get_running_loop()
            for sig in signals:
                loop.remove_signal_handler(sig)
