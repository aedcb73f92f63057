"""An unstructured Kubernetes REST client on kubernetes-asyncio's transport.

Why not the generated ``*Api`` classes: the runtime needs one code path for core kinds and
custom resources, raw JSON for the cache (no model objects to rebuild on every event), and
control over three things the generated client gets wrong by default:

* timeouts — kubernetes-asyncio sends none, so a half-open connection hangs a watch forever;
  here every request has a total timeout and every watch a read-idle timeout (SPEC §7: a dead
  watch connection is noticed within 60 s);
* fencing — with leader election, every write first passes the elector's check, so no write
  leaves a replica that does not hold the Lease (SPEC §7);
* patch content types — a dict body goes out as JSON-patch unless told otherwise;
* metrics — ``rest_client_requests_total{code,method,host}`` like client-go.

Every successful create/replace/patch/apply answer is also handed to ``ownwrites.note_write``, so
a controller knows the versions its own reconciles wrote (runtime/ownwrites.py).

The ``ApiClient`` is always built explicitly (kubeconfig or in-cluster), never the global default.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import copy
import datetime
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import attrs
import orjson
import yarl
from aiohttp.abc import AbstractStreamWriter
from aiohttp.connector import Connection
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from substratus.runtime import metrics
from substratus.runtime.ownwrites import note_write
from substratus.runtime.resource import Resource

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

FIELD_MANAGER = "substratus"

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Watch lines carry whole objects; etcd's default request limit is 1.5 MiB, leave headroom.
_MAX_WATCH_LINE = 16 * 1024 * 1024


class ApiError(Exception):
    """A non-2xx answer from the API server, with its ``Status`` reason and message."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason or message else str(status))
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, data: bytes, headers: Mapping[str, str] | None = None) -> ApiError:
        body: Any = None
        reason, message = "", ""
        try:
            body = json.loads(data) if data else None
        except ValueError:
            message = data[:500].decode("utf-8", "replace")
        if isinstance(body, dict):
            reason = body.get("reason") or ""
            message = body.get("message") or message
        retry_after = None
        if headers is not None and headers.get("Retry-After"):
            try:
                retry_after = float(headers["Retry-After"])
            except ValueError:
                retry_after = None
        return error_class(status, reason)(status, reason, message, body, retry_after)


class NotLeader(Exception):
    """A write refused before it was sent: this replica does not hold leadership (SPEC §7 fencing).

    Raised by the client's write fence (see ``Client.write_fence``); nothing reached the API server.
    """


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a resourceVersion precondition failed (someone else wrote first)."""


class AlreadyExists(Conflict):
    pass


class Gone(ApiError):
    """410: the requested resourceVersion was compacted away; the caller must relist."""


class Invalid(ApiError):
    """422: the object failed validation (schema or admission); retrying will not help."""


class Forbidden(ApiError):
    pass


class TooManyRequests(ApiError):
    pass


class ServerError(ApiError):
    pass


def error_class(status: int, reason: str = "") -> type[ApiError]:
    if status == 404:
        return NotFound
    if status == 409:
        return AlreadyExists if reason == "AlreadyExists" else Conflict
    if status == 410:
        return Gone
    if status == 422:
        return Invalid
    if status == 403:
        return Forbidden
    if status == 429:
        return TooManyRequests
    if status >= 500:
        return ServerError
    return ApiError


_WRITE_FENCE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "substratus_write_fence", default=None)
"""The fence of the write being sent by this task (set by ``Client._send``)."""


class _FencedRequest(aiohttp.ClientRequest):
    """aiohttp's request, checking the sender's write fence at the last moments before bytes leave.

    ``Client._send`` checks the fence before the request is built, but a request can then wait
    (for a new connection, or one event-loop turn for its body task); a process paused (SIGSTOP)
    in that wait would send the write on waking. So the fence is checked again once the
    connection is ready (``send``) and when the first byte is about to be written
    (``write_bytes``: aiohttp buffers the headers until the body goes), with no await between
    the check and the write.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        fence = _WRITE_FENCE.get()
        if fence is not None:
            fence()
        return await super().send(conn)

    async def write_bytes(self, writer: AbstractStreamWriter, conn: Connection, *args: Any, **kwargs: Any) -> None:
        fence = _WRITE_FENCE.get()
        if fence is not None:
            try:
                fence()
            except NotLeader as exc:
                # Nothing was written (headers included): fail the response with the refusal.
                if conn.protocol is not None:
                    conn.protocol.set_exception(exc)
                return
        await super().write_bytes(writer, conn, *args, **kwargs)


def _use_fenced_requests(api: k8s_client.ApiClient) -> None:
    """Re-create kubernetes-asyncio's aiohttp session (same connector, same settings) so its
    requests are ``_FencedRequest``s. Idempotent per ApiClient."""
    rest = api.rest_client
    if getattr(rest, "substratus_fenced_requests", False):
        return
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # hands the connector over without closing it
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=old.trust_env, request_class=_FencedRequest,
        read_bufsize=2**21)  # as kubernetes-asyncio: watch lines carry whole objects
    setattr(rest, "substratus_fenced_requests", True)  # noqa: B010 - not an attribute of its class


@attrs.frozen
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict


@attrs.define
class ClientOptions:
    request_timeout: float = 30.0
    """Total seconds for any non-watch request."""
    connect_timeout: float = 10.0
    max_retries: int = 5
    """Retries for answers carrying Retry-After (429, some 5xx), as client-go does."""
    max_retry_after: float = 10.0
    field_manager: str = FIELD_MANAGER
    watch_idle_timeout: float = 45.0
    """Seconds a watch connection may stay silent before it is declared dead and dropped.

    SPEC §7 wants a dead watch noticed within 60 s; client-go gets that from HTTP/2 pings, which
    aiohttp (HTTP/1.1) lacks, and TCP keepalive cannot see a peer whose kernel still answers (a
    hung API server or proxy). So the server is asked to end every watch after 50-80 % of this
    (``timeoutSeconds``): a healthy watch, however quiet, always shows a byte — its clean end —
    within the window, and one that does not is dead. kube-apiserver's bookmarks cannot serve
    as the heartbeat: 1.20.2 sent none on a quiet 150 s watch (measured, watch cache on), later
    versions send one about once a minute (too rarely for a 60 s bound), none without the watch
    cache."""


class Client:
    """Typed-by-Resource, unstructured-by-object REST client."""

    def __init__(self, api: k8s_client.ApiClient, options: ClientOptions | None = None) -> None:
        self.api = api
        self.options = options or ClientOptions()
        self._host = urlsplit(api.configuration.host).netloc or api.configuration.host
        self._counters: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._timeout: tuple[tuple[float, float], aiohttp.ClientTimeout] | None = None
        # The server's URL, once: the host as kubernetes-asyncio joins it (a path prefix kept,
        # a trailing slash dropped), in yarl's encoded form so requests need not re-quote it.
        self._base_url = str(yarl.URL(api.configuration.host or "")).rstrip("/")
        self.write_fence: Callable[[], None] | None = None
        """Called before every write (POST/PUT/PATCH/DELETE) is sent; raises ``NotLeader`` to
        refuse it (SPEC §7 fencing; see ``fenced``)."""
        _resolve_env_once(api)
        _use_fenced_requests(api)

    def fenced(self, check: Callable[[], None] | None) -> Client:
        """A view of this client (same connections and metrics) whose writes first call ``check``.

        ``None`` gives an unfenced view. The manager hands its controllers a view fenced by the
        leader elector, which itself writes the Lease through the unfenced client.
        """
        other = copy.copy(self)
        other.write_fence = check
        return other

    def with_own_connections(self) -> Client:
        """A client for the same server, credentials and options over a connection pool of its
        own (close it when done). The leader elector uses one: a renewal must not wait behind, or
        be handed, a pooled connection the controllers left dead (a frozen proxy or load balancer
        keeps it open and silent), which would cost the whole renew deadline and the lease."""
        other = Client(k8s_client.ApiClient(configuration=self.api.configuration), self.options)
        other.write_fence = self.write_fence
        return other

    # --- construction -------------------------------------------------------------------------

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None, context: str | None = None,
                              options: ClientOptions | None = None) -> Client:
        cfg = k8s_client.Configuration()
        await k8s_config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                          persist_config=False)
        return cls(k8s_client.ApiClient(configuration=cfg), options)

    @classmethod
    def in_cluster(cls, options: ClientOptions | None = None) -> Client:
        cfg = k8s_client.Configuration()
        k8s_config.load_incluster_config(client_configuration=cfg)
        return cls(k8s_client.ApiClient(configuration=cfg), options)

    @classmethod
    async def auto(cls, kubeconfig: str | None = None, options: ClientOptions | None = None) -> Client:
        """Kubeconfig when one is given or found, else the in-cluster service account."""
        if kubeconfig or _default_kubeconfig_exists():
            return await cls.from_kubeconfig(kubeconfig, options=options)
        return cls.in_cluster(options)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def host(self) -> str:
        return str(self._host)

    # --- transport ----------------------------------------------------------------------------

    def _count(self, code: int | str, method: str) -> None:
        key = (str(code), method)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metrics.REST_CLIENT_REQUESTS.labels(str(code), method, self._host)
        child.inc()

    async def _send(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                    body: Any = None, content_type: str = "application/json",
                    timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientResponse:
        """Send one request on the ApiClient's aiohttp session and return the unread response.

        kubernetes-asyncio's ``ApiClient.call_api`` is not used: for every request it walks the
        body (``sanitize_for_serialization``), the headers and the query through its model
        sanitiser, re-encodes the body with ``json.dumps`` and has aiohttp re-parse and re-quote
        the URL, which made it the largest share of the operator's CPU in a convergence profile
        (docs/operations.md#performance). What it does that matters is kept, here: the same
        session (connector: CA, client certificate, ``tls-server-name``; the resolved proxy), its
        default headers (User-Agent) and cookie, and the bearer token taken from the
        Configuration for every request through ``auth_settings()``, so a rotating token (the
        in-cluster token file's ``refresh_api_key_hook``) applies to the next request. (A kubeconfig
        exec plugin's token is read once: kubernetes-asyncio installs no refresh hook for it.) Bodies are encoded by ``dumps``; a ``bytes`` body is sent as
        is. Raises ``NotLeader`` (write fence), ``TimeoutError`` and ``aiohttp.ClientError``.
        """
        # A paused replica woken past its renew deadline must not send anything: the fence is
        # checked here, and again by _FencedRequest right before the bytes leave.
        fence = self.write_fence if method in WRITE_METHODS else None
        if fence is not None:
            fence()
        api = self.api
        headers = {**api.default_headers, "Content-Type": content_type, "Accept": "application/json"}
        if api.cookie:
            headers["Cookie"] = api.cookie
        params = [(k, _query_value(v)) for k, v in query.items() if v is not None] if query else []
        for auth in (await api.configuration.auth_settings()).values():
            # The shapes kubernetes-asyncio's ApiClient._apply_auth_params accepts.
            if auth["in"] == "header":
                headers[auth["key"]] = auth["value"]
            elif auth["in"] == "query":
                params.append((auth["key"], auth["value"]))
            elif auth["in"] == "cookie":
                headers["Cookie"] = auth["value"]
        url = self._base_url + path
        if params:
            url += "?" + _urlencode(params)
        data = (body if isinstance(body, bytes) else dumps(body)) if body is not None else None
        rest = api.rest_client
        kwargs: dict[str, Any] = {}
        if rest.proxy:
            kwargs["proxy"] = rest.proxy
            if rest.proxy_headers:
                kwargs["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            kwargs["server_hostname"] = rest.server_hostname
        if timeout is None:
            timeout = self._request_timeout()
        started = time.monotonic()
        token = _WRITE_FENCE.set(fence)
        try:
            # Every part of the URL is already percent-encoded (Resource.path quotes names,
            # urlencode the query): yarl need not parse and re-quote it.
            resp = await rest.pool_manager.request(method, yarl.URL(url, encoded=True), headers=headers,
                                                   data=data, timeout=timeout, **kwargs)
        except (TimeoutError, aiohttp.ClientError):
            self._count("<error>", method)
            raise
        finally:
            _WRITE_FENCE.reset(token)
            self._observe(method, time.monotonic() - started)
        self._count(resp.status, method)
        return resp

    def _request_timeout(self) -> aiohttp.ClientTimeout:
        """The total/connect timeout of a non-watch request, rebuilt only when the options change."""
        key = (self.options.request_timeout, self.options.connect_timeout)
        cached = self._timeout
        if cached is None or cached[0] != key:
            cached = self._timeout = (key, aiohttp.ClientTimeout(total=key[0], connect=key[1]))
        return cached[1]

    def _observe(self, method: str, seconds: float) -> None:
        child = self._durations.get(method)
        if child is None:
            child = self._durations[method] = metrics.REST_CLIENT_REQUEST_DURATION.labels(method, self._host)
        child.observe(seconds)

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Any:
        """One request, JSON in and out; raises ApiError subclasses on non-2xx.

        Answers with Retry-After (429 from API priority and fairness, 5xx during a rollout) are
        retried a bounded number of times, like client-go; everything else is the caller's call.
        """
        attempt = 0
        while True:
            resp = await self._send(method, path, query=query, body=body, content_type=content_type)
            try:
                data = await resp.read()
            finally:
                resp.release()
            if 200 <= resp.status < 300:
                return loads(data) if data else None
            err = ApiError.from_response(resp.status, data, resp.headers)
            if err.retry_after is not None and attempt < self.options.max_retries and (
                    resp.status == 429 or resp.status >= 500):
                attempt += 1
                delay = min(max(err.retry_after, 0.1), self.options.max_retry_after)
                log.debug("retrying after Retry-After",
                          extra={"method": method, "path": path, "status": resp.status, "delay": delay})
                await asyncio.sleep(delay)
                continue
            raise err

    # --- verbs --------------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None,
                  subresource: str | None = None) -> dict:
        return await self.request("GET", res.path(namespace, name, subresource))

    async def get_or_none(self, res: Resource, name: str, namespace: str | None = None) -> dict | None:
        try:
            return await self.get(res, name, namespace)
        except NotFound:
            return None

    async def list(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict:
        """One page of a LIST; see ``list_all`` for the paginated whole."""
        return await self.request("GET", res.path(namespace), query={
            "labelSelector": label_selector, "fieldSelector": field_selector, "limit": limit,
            "continue": continue_, "resourceVersion": resource_version,
        })

    async def list_all(self, res: Resource, namespace: str | None = None, *, label_selector: str | None = None,
                       field_selector: str | None = None, page_size: int = 500,
                       transform: Callable[[dict], dict] | None = None) -> tuple[builtins.list[dict], str]:
        """All items of a paginated LIST and the resourceVersion to watch from.

        Every page after the first is served from the same etcd snapshot (the continue token
        pins it), so the returned resourceVersion is consistent with every item. ``transform``
        is applied to each item as its page arrives, so what it drops (e.g. ``managedFields``)
        is freed page by page instead of the whole list being held first.
        """
        items: builtins.list[dict] = []
        token: str | None = None
        while True:
            page = await self.list(res, namespace, label_selector=label_selector, field_selector=field_selector,
                                   limit=page_size, continue_=token)
            kind = res.kind
            for item in page.get("items") or []:
                # LIST items carry no apiVersion/kind; the cache and handlers want them.
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", kind)
                items.append(transform(item) if transform is not None else item)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, meta.get("resourceVersion", "")

    async def create(self, res: Resource, obj: dict, namespace: str | None = None) -> dict:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        written = await self.request("POST", res.path(ns), body=_with_type(res, obj))
        note_write(res, written)
        return written

    async def replace(self, res: Resource, obj: dict, subresource: str | None = None) -> dict:
        meta = obj["metadata"]
        written = await self.request("PUT", res.path(meta.get("namespace"), meta["name"], subresource),
                                     body=_with_type(res, obj))
        note_write(res, written)
        return written

    async def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None, *,
                    content_type: str = MERGE_PATCH, subresource: str | None = None) -> dict:
        """PATCH with an explicit content type (merge-patch by default, never an accidental JSON-patch)."""
        written = await self.request("PATCH", res.path(namespace, name, subresource), body=patch,
                                     content_type=content_type)
        note_write(res, written)
        return written

    async def patch_status(self, res: Resource, name: str, patch: dict, namespace: str | None = None) -> dict:
        return await self.patch(res, name, patch, namespace, subresource="status")

    async def apply(self, res: Resource, obj: dict, *, force: bool = True, subresource: str | None = None,
                    field_manager: str | None = None) -> dict:
        """Server-side apply: the server merges our fields and owns the result's conflicts."""
        meta = obj["metadata"]
        written = await self.request(
            "PATCH", res.path(meta.get("namespace"), meta["name"], subresource),
            query={"fieldManager": field_manager or self.options.field_manager, "force": "true" if force else None},
            body=_with_type(res, obj), content_type=APPLY_PATCH)
        note_write(res, written)
        return written

    async def delete(self, res: Resource, name: str, namespace: str | None = None, *,
                     propagation_policy: str | None = "Background", uid: str | None = None,
                     resource_version: str | None = None) -> dict | None:
        """DELETE; returns None if already gone. ``uid``/``resource_version`` become preconditions."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if pre:
            body["preconditions"] = pre
        try:
            return await self.request("DELETE", res.path(namespace, name), body=body)
        except NotFound:
            return None

    async def watch(self, res: Resource, namespace: str | None = None, *, resource_version: str,
                    timeout_seconds: int | None = None, allow_bookmarks: bool = True,
                    label_selector: str | None = None, field_selector: str | None = None,
                    ) -> AsyncIterator[WatchEvent]:
        """Stream watch events until the server closes the watch or the connection goes silent.

        An ``ERROR`` event is raised as the matching ApiError (410 → ``Gone``). A connection that
        carries no byte for ``options.watch_idle_timeout`` seconds, or is still open
        ``watch_deadline_slack`` seconds after the server should have ended it (bytes trickling
        in, but never a whole event or the end), is dropped with a ``TimeoutError``
        (``aiohttp.ServerTimeoutError`` for the former): the caller re-watches from its last
        resourceVersion. ``timeout_seconds`` (the server-side end of the watch) is drawn inside
        the idle window when not given and capped to it when larger, so only a dead connection is
        ever silent that long (see ``ClientOptions.watch_idle_timeout``).
        """
        timeout_seconds, timeout = watch_timeouts(self.options.watch_idle_timeout, self.options.connect_timeout,
                                                  timeout_seconds)
        query = {
            "watch": "true", "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
            "labelSelector": label_selector, "fieldSelector": field_selector,
        }
        resp = await self._send("GET", res.path(namespace), query=query, timeout=timeout)
        try:
            if not 200 <= resp.status < 300:
                raise ApiError.from_response(resp.status, await resp.read(), resp.headers)
            while True:
                line = await resp.content.readline(max_line_length=_MAX_WATCH_LINE)
                if not line:
                    return
                line = line.strip()
                if not line:
                    continue
                event = loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    code = int(obj.get("code") or 500)
                    raise error_class(code, obj.get("reason", ""))(code, obj.get("reason", ""),
                                                                    obj.get("message", ""), obj)
                yield WatchEvent(etype, obj)
        finally:
            resp.release()
            resp.close()


def watch_timeouts(idle_timeout: float, connect_timeout: float, timeout_seconds: int | None = None
                   ) -> tuple[int, aiohttp.ClientTimeout]:
    """A watch request's server-side ``timeoutSeconds`` and its client-side timeouts, so a dead
    connection is dropped within ``idle_timeout`` seconds (SPEC §7; see
    ``ClientOptions.watch_idle_timeout``). ``timeout_seconds`` None: drawn inside the idle window
    (spread, so watches do not all end together); larger than the window: capped to it.

    The client side: no byte for ``idle_timeout`` (read-idle), and a deadline for the whole
    watch — the server ends it after ``timeoutSeconds``, so one still open a fifth of the idle
    window later is dead even if bytes trickle in (every byte restarts the read-idle timer; a
    stuck intermediary or a server stuck mid-write). Every watch of ours uses this: the
    informers' (``Client.watch``) and the cluster simulator's."""
    lo, hi = watch_timeout_range(idle_timeout)
    timeout_seconds = random.randint(lo, hi) if timeout_seconds is None else min(timeout_seconds, hi)
    return timeout_seconds, aiohttp.ClientTimeout(total=timeout_seconds + watch_deadline_slack(idle_timeout),
                                                  connect=connect_timeout, sock_connect=connect_timeout,
                                                  sock_read=idle_timeout)


def watch_timeout_range(idle_timeout: float) -> tuple[int, int]:
    """The server-side ``timeoutSeconds`` range for watches dropped after ``idle_timeout`` s of silence.

    50-80 % of the idle window: the server's clean end always comes first on a healthy
    connection, with a fifth of the window as slack for a late server or a busy event loop.
    """
    return max(1, int(idle_timeout * 0.5)), max(1, int(idle_timeout * 0.8))


def watch_deadline_slack(idle_timeout: float) -> float:
    """Seconds a watch may stay open past its server-side ``timeoutSeconds`` before it is dropped
    as dead, whatever bytes it carries: what ``watch_timeout_range`` leaves of the idle window
    (a fifth), so a watch never outlives ``idle_timeout`` (SPEC §7: dead within 60 s)."""
    return max(1.0, idle_timeout - watch_timeout_range(idle_timeout)[1])


def _resolve_env_once(api: k8s_client.ApiClient) -> None:
    """Read the proxy environment once, instead of on every request.

    kubernetes-asyncio opens its aiohttp session with ``trust_env=True``, and aiohttp then looks
    up ``~/.netrc`` and the ``*_PROXY`` variables for every request, each on a worker thread: two
    thread hand-offs per request, the largest single cost per object in a convergence profile
    (docs/benchmarks.md). The proxy for the API server (``HTTPS_PROXY``/``NO_PROXY``, unless the
    kubeconfig names one) is resolved here once, as client-go does when it builds its transport;
    netrc credentials are not a way to authenticate to an API server, so they are not read.
    """
    rest = getattr(api, "rest_client", None)
    session = getattr(rest, "pool_manager", None)
    if rest is None or not isinstance(session, aiohttp.ClientSession) or not session.trust_env:
        return
    if not getattr(rest, "proxy", None):
        with contextlib.suppress(LookupError, ValueError):
            proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(api.configuration.host or ""))
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {**(getattr(rest, "proxy_headers", None) or {}),
                                      "Proxy-Authorization": auth.encode()}
    session._trust_env = False  # one of ClientSession's declared attributes; no public setter


def loads(data: bytes) -> Any:
    """Decode a JSON response body or watch line: orjson (several times faster than ``json``
    on Kubernetes objects), falling back to ``json`` for what orjson refuses and ``json`` takes
    (a number beyond a double's range). Integers beyond 64 bits come back as floats, as the API
    server itself stores them (it decodes unstructured JSON numbers to int64 or float64).

    Raises ValueError (``json.JSONDecodeError``) if neither can decode it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(body: Any) -> bytes:
    """Encode a request body as JSON bytes: orjson (several times faster than ``json`` on
    Kubernetes objects; UTF-8 out, where ``json`` escapes non-ASCII — the same JSON to the API
    server), falling back to ``json`` for what orjson refuses and ``json`` takes (integers beyond
    64 bits, non-string keys, nesting deeper than 254). Values neither encodes natively
    (kubernetes-asyncio models, dates) become what ``ApiClient.sanitize_for_serialization`` made
    of them when requests went through ``call_api`` (``_sanitize``).

    Raises TypeError or ValueError if neither can encode it."""
    try:
        return orjson.dumps(body, default=_sanitize)
    except orjson.JSONEncodeError:
        return json.dumps(body, default=_sanitize).encode()


def _sanitize(obj: Any) -> Any:
    """What ``ApiClient.sanitize_for_serialization`` made of a value JSON cannot encode: a date as
    ISO 8601, a generated model as the dict of its set attributes under their wire names (the
    encoder calls this again for what that dict holds).

    Raises TypeError for anything else (as json.dumps would)."""
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    openapi_types, attribute_map = getattr(obj, "openapi_types", None), getattr(obj, "attribute_map", None)
    if isinstance(openapi_types, dict) and isinstance(attribute_map, dict):
        return {attribute_map[attr]: value for attr in openapi_types
                if (value := getattr(obj, attr)) is not None}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _default_kubeconfig_exists() -> bool:
    return bool(os.environ.get("KUBECONFIG")) or os.path.exists(os.path.expanduser("~/.kube/config"))


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def _urlencode(params: builtins.list[tuple[str, str]]) -> str:
    """``urllib.parse.urlencode(params)``, byte for byte, at a fraction of its cost for the plain
    names and values nearly every request carries (resourceVersions, field managers, limits)."""
    return "&".join(f"{k if _UNRESERVED(k) else quote_plus(k)}={v if _UNRESERVED(v) else quote_plus(v)}"
                    for k, v in params)


def _with_type(res: Resource, obj: dict) -> dict:
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {"apiVersion": res.api_version, "kind": res.kind, **obj}


def jittered(base: float, factor: float = 0.2) -> float:
    """``base`` spread by ±factor so many clients don't act in lockstep."""
    return base * (1 + factor * (2 * random.random() - 1))
