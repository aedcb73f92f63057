"""A faulting, recording HTTP proxy in front of the real kube-apiserver (tests only).

The operator under test gets a kubeconfig pointing at ``http://127.0.0.1:{port}``; the proxy
forwards every request over TLS to the real API server with the admin token, and on the way

* injects faults by rule (:class:`Fault`): a status (409 / 429 with ``Retry-After`` / 500 / …)
  answered *instead of* forwarding, or *after* forwarding (the write happened, the client is
  told it failed — the nastiest case for duplicates), or an ``ERROR`` event inside a watch;
* partitions the client from the API server (:meth:`FaultProxy.partition`): open watches are
  cut and every request is dropped without an answer until :meth:`FaultProxy.heal`;
* freezes every open connection (:meth:`FaultProxy.freeze`): from then on not one byte more and
  no FIN on them, either way — a hung peer or a black-holed path — while new connections work;
* turns every open watch into a trickle (:meth:`FaultProxy.trickle`): one space every few seconds
  and nothing else — no event, not the end of the watch — so bytes keep arriving on a watch that
  is dead all the same (a stuck intermediary, a server stuck mid-write);
* records every request (:class:`Record`: times, method, path, status, whether it was injected
  or a watch, and for ``capture``-matching paths the JSON bodies) — one proxy per operator
  process gives an exact per-process audit of who wrote what, when.

Watches are streamed line by line, so the operator sees real watch semantics through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import yaml
from aiohttp import web

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}
_HOP_HEADERS = {"content-type", "accept", "user-agent"}


def status_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """A ``metav1.Status`` failure, as the API server sends it."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or _REASONS.get(code, ""), "code": code}


def is_watch(request: web.BaseRequest) -> bool:
    return request.method == "GET" and request.query.get("watch") in ("true", "1")


@attrs.define
class Fault:
    """One injection rule. A request matching ``methods``/``path``/``watch`` counts towards
    ``every``; each ``every``-th match is faulted (until ``limit`` injections)."""

    status: int
    methods: frozenset[str] | None = None
    """None: any method."""
    path: str | None = None
    """Regex searched in the request path; None: any path."""
    watch: bool | None = None
    """True: only watch requests; False: only non-watch; None: both."""
    retry_after: float | None = None
    reason: str | None = None
    message: str | None = None
    every: int = 1
    limit: int | None = None
    after_forward: bool = False
    """Forward the request first, then answer the fault: the change is committed, the client
    is told it failed (non-watch requests only)."""
    as_watch_event: bool = False
    """For watches: answer 200 and send one ``ERROR`` event with ``status`` (e.g. 410) instead."""

    matched: int = attrs.field(default=0, init=False)
    injected: int = attrs.field(default=0, init=False)

    def applies(self, method: str, path: str, watch: bool) -> bool:
        if self.limit is not None and self.injected >= self.limit:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if self.watch is not None and self.watch != watch:
            return False
        if self.after_forward and watch:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        self.matched += 1
        if self.matched % max(1, self.every):
            return False
        self.injected += 1
        return True

    def response(self) -> web.Response:
        message = self.message or f"injected by faultproxy: {self.status}"
        headers = {"Retry-After": _fmt_seconds(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(status_body(self.status, message, self.reason), status=self.status,
                                 headers=headers)


def _fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else str(s)


@attrs.define
class Record:
    started: float
    """``time.monotonic()`` when the request arrived."""
    method: str
    path: str
    query: str
    watch: bool
    finished: float = 0.0
    """When the answer's headers went out (for watches: when the stream started)."""
    status: int = 0
    """0: dropped (partition, client gone, upstream unreachable)."""
    injected: int | None = None
    """The injected status, if this request was faulted."""
    committed: bool = False
    """The request reached the API server (true for after-forward faults too)."""
    upstream: int = 0
    """The API server's own status when the request was forwarded (0: not forwarded)."""
    body_md5: str = ""
    """md5 of the request body: a client's retry of the same request has the same one."""
    request_json: Any = None
    response_json: Any = None

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.injected is None


class FaultProxy:
    """``async with FaultProxy(server_url, token, ca_path) as proxy:`` → ``proxy.url``."""

    def __init__(self, upstream: str, token: str, ca_path: str | Path, *, name: str = "proxy",
                 capture: str | None = None, request_timeout: float = 60.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.ca_path = Path(ca_path)
        self.name = name
        self.capture = re.compile(capture) if capture else None
        self.request_timeout = request_timeout
        self.faults: list[Fault] = []
        self.impersonate: str | None = None
        """Forward as this user (``Impersonate-User``; the API server adds a ServiceAccount's groups)."""
        self.records: list[Record] = []
        self.port: int | None = None
        self._partitioned = False
        self._streams: set[web.StreamResponse] = set()
        self._stream_tasks: set[asyncio.Task[Any]] = set()
        self._transports: dict[int, asyncio.Transport] = {}
        self._frozen: dict[int, asyncio.Transport] = {}
        """Keyed by ``id``; holding the transport keeps its id from being reused."""
        self.frozen_at: float | None = None
        """``time.monotonic()`` of the last :meth:`freeze`."""
        self.trickled_at: float | None = None
        """``time.monotonic()`` of the last :meth:`trickle`."""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FaultProxy:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
                                              auto_decompress=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("faultproxy %s listening on %s -> %s", self.name, self.url, self.upstream)
        return self

    async def stop(self) -> None:
        self.cut_watches()
        for t in list(self._stream_tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for clients of this proxy (the proxy adds the real credentials)."""
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": self.name, "cluster": {"server": self.url}}],
            "users": [{"name": self.name, "user": {"token": "via-faultproxy"}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": self.name}}],
            "current-context": self.name,
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    # --- control ------------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> list[Fault]:
        self.faults.extend(faults)
        return list(faults)

    def clear(self) -> None:
        self.faults.clear()

    @contextlib.contextmanager
    def faulting(self, *faults: Fault, cut_watches: bool = True) -> Iterator[list[Fault]]:
        """Inject ``faults`` for the block; open watches are cut first so they come back through them."""
        added = self.inject(*faults)
        if cut_watches:
            self.cut_watches()
        try:
            yield added
        finally:
            for f in added:
                with contextlib.suppress(ValueError):
                    self.faults.remove(f)

    def partition(self) -> None:
        """Cut the client off: open watches end abruptly, new requests get no answer."""
        self._partitioned = True
        self.cut_watches()

    def heal(self) -> None:
        self._partitioned = False

    @property
    def partitioned(self) -> bool:
        return self._partitioned

    def freeze(self) -> int:
        """Freeze every open client connection: it stays open, and carries nothing more either
        way — no answer, no watch event, not even the end of a watch the server closed. Idle
        keep-alive connections freeze too. Connections opened later are served normally.
        Returns how many connections were frozen."""
        for key, transport in list(self._transports.items()):
            if transport.is_closing():
                del self._transports[key]
                continue
            self._frozen[key] = transport
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.pause_reading()
        self.frozen_at = time.monotonic()
        return len(self._frozen)

    def trickle(self, interval: float = 5.0) -> int:
        """Turn every open watch into a trickle: from now on it carries one space every
        ``interval`` seconds and nothing else — no event, no end of the watch, no FIN. A read-idle
        timeout longer than ``interval`` never fires on it. Watches opened later are served
        normally. Returns how many watches now trickle."""
        n = 0
        for resp in list(self._streams):
            if getattr(resp, "_faultproxy_trickle", False):
                continue
            resp._faultproxy_trickle = True  # type: ignore[attr-defined]
            task = asyncio.create_task(self._dribble(resp, interval))
            self._stream_tasks.add(task)
            task.add_done_callback(self._stream_tasks.discard)
            n += 1
        self.trickled_at = time.monotonic()
        return n

    @staticmethod
    async def _dribble(resp: web.StreamResponse, interval: float) -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while True:
                await asyncio.sleep(interval)
                await resp.write(b" ")

    def _is_frozen(self, request: web.BaseRequest) -> bool:
        return request.transport is not None and id(request.transport) in self._frozen

    async def _hang(self, request: web.BaseRequest) -> web.StreamResponse:
        """A frozen connection: answer nothing, ever; the connection is aborted at ``stop``."""
        task = asyncio.current_task()
        if task is not None:
            self._stream_tasks.add(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if request.transport is not None:
                request.transport.abort()
            raise
        raise AssertionError("unreachable")

    def cut_watches(self) -> int:
        """Abort every open watch stream (the client sees the connection drop)."""
        n = 0
        for resp in list(self._streams):
            task = getattr(resp, "_faultproxy_task", None)
            if task is not None:
                task.cancel()
                n += 1
        return n

    # --- reading the record -------------------------------------------------------------------

    def injected_counts(self) -> Counter[tuple[int, bool]]:
        """(status, was a watch) → how many faults were injected."""
        return Counter((r.injected, r.watch) for r in self.records if r.injected is not None)

    def writes(self, path: str | None = None) -> list[Record]:
        return [r for r in self.records if r.is_write and (path is None or re.search(path, r.path))]

    def select(self, *, method: str | None = None, path: str | None = None,
               ok: bool | None = None) -> list[Record]:
        out: Iterable[Record] = self.records
        if method is not None:
            out = (r for r in out if r.method == method)
        if path is not None:
            out = (r for r in out if re.search(path, r.path))
        if ok is not None:
            out = (r for r in out if r.ok == ok)
        return list(out)

    # --- the handler --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            self._transports[id(request.transport)] = request.transport  # type: ignore[assignment]
        if self._is_frozen(request):
            return await self._hang(request)
        watch = is_watch(request)
        rec = Record(time.monotonic(), request.method, request.path, request.query_string, watch)
        self.records.append(rec)
        body = await request.read() if request.can_read_body else None
        rec.body_md5 = hashlib.md5(body or b"", usedforsecurity=False).hexdigest()
        if self.capture is not None and self.capture.search(request.path) and body:
            with contextlib.suppress(ValueError):
                rec.request_json = json.loads(body)
        if self._partitioned:
            return self._drop(request, rec)
        fault = next((f for f in self.faults if f.applies(request.method, request.path, watch)), None)
        if fault is not None and not fault.after_forward:
            rec.injected = fault.status
            if watch and fault.as_watch_event:
                return await self._watch_error(request, rec, fault)
            rec.status, rec.finished = fault.status, time.monotonic()
            return fault.response()
        try:
            if watch:
                return await self._stream(request, rec, body)
            resp = await self._forward(request, rec, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("faultproxy %s: upstream failed %s %s: %r", self.name, request.method, request.path, exc)
            rec.finished = time.monotonic()
            return web.json_response(status_body(503, f"faultproxy: upstream unreachable: {exc!r}"), status=503)
        if self._is_frozen(request):
            return await self._hang(request)
        if fault is not None:  # after_forward: committed, but tell the client it failed
            rec.injected = fault.status
            rec.status = fault.status
            return fault.response()
        return resp

    def _drop(self, request: web.Request, rec: Record) -> web.StreamResponse:
        rec.finished = time.monotonic()
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a closed transport quietly

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _HOP_HEADERS}
        headers["Authorization"] = f"Bearer {self.token}"
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
        return headers

    async def _forward(self, request: web.Request, rec: Record, body: bytes | None) -> web.Response:
        assert self._session is not None
        async with self._session.request(
                request.method, self.upstream + request.rel_url.path_qs, data=body,
                headers=self._upstream_headers(request),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as up:
            data = await up.read()
            rec.committed = True
            rec.upstream = rec.status = up.status
            rec.finished = time.monotonic()
            if self.capture is not None and self.capture.search(request.path) and data:
                with contextlib.suppress(ValueError):
                    rec.response_json = json.loads(data)
            headers = {k: v for k, v in up.headers.items() if k.lower() in ("content-type", "retry-after")}
            return web.Response(body=data, status=up.status, headers=headers)

    async def _stream(self, request: web.Request, rec: Record, body: bytes | None) -> web.StreamResponse:
        assert self._session is not None
        task = asyncio.current_task()
        async with self._session.request(
                request.method, self.upstream + request.rel_url.path_qs, data=body,
                headers=self._upstream_headers(request),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as up:
            rec.committed = True
            rec.upstream = rec.status = up.status
            rec.finished = time.monotonic()
            if up.status != 200:
                data = await up.read()
                return web.Response(body=data, status=up.status, content_type="application/json")
            resp = web.StreamResponse(status=200, headers={"Content-Type": up.headers.get(
                "Content-Type", "application/json")})
            resp._faultproxy_task = task  # type: ignore[attr-defined]
            self._streams.add(resp)
            try:
                await resp.prepare(request)
                async for line in up.content:
                    if self._is_frozen(request):
                        break
                    if getattr(resp, "_faultproxy_trickle", False):
                        continue  # events are lost; only the trickle reaches the client
                    await resp.write(line)
                if self._is_frozen(request) or getattr(resp, "_faultproxy_trickle", False):
                    # Frozen mid-watch: events and the server's end of the watch are lost.
                    up.close()
                    return await self._hang(request)
            except asyncio.CancelledError:
                # Cut on purpose (cut_watches / partition): abort the client's connection.
                if request.transport is not None:
                    request.transport.abort()
                raise
            finally:
                self._streams.discard(resp)
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await resp.write_eof()
            return resp

    async def _watch_error(self, request: web.Request, rec: Record, fault: Fault) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        event = {"type": "ERROR", "object": status_body(fault.status, fault.message or "injected watch error",
                                                          fault.reason)}
        await resp.write(json.dumps(event).encode() + b"\n")
        await resp.write_eof()
        rec.status, rec.finished = 200, time.monotonic()
        return resp
