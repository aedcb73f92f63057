"""Notebook: one Pod serving Jupyter on 8888, with the Model and Dataset mounted (SPEC §1, §4).

The Pod's spec is immutable, so a spec change deletes it and the next pass creates the new
one. ``suspend: true`` deletes the Pod and keeps everything else (the params ConfigMap, the
token Secret, the bucket output). Jupyter's token is generated once per Notebook and kept in
the Secret ``{name}-notebook-token`` (key ``token``); the container gets it as
``JUPYTER_TOKEN``, and the controller and ``kubectl notebook`` read it from there. The kubelet
resolves that env var only when the container starts, so the Pod carries a digest of the token
it started with (annotation ``substratus.ai/token-sha256``, part of the Pod's spec hash): a
Secret deleted (a new token is written) or edited rolls the Pod, and the Secret and the running
Jupyter always agree.

``idleTimeout``: while the Pod is Ready, Jupyter's ``/api/status`` (``last_activity``) is read
through the API server's pod proxy; idle for longer than the timeout → ``status.idle`` is
recorded (with the ``substratus.ai/resume`` annotation's value and the generation at that
moment), ``Serving=False/Idle`` (an Event says how to resume), and the next pass deletes the
Pod. The spec is the user's (SPEC §1): the controller never writes ``spec.suspend``, so GitOps
tools see no drift. A different annotation value (``kubectl notebook``, ``kubectl annotate``)
or a spec change (new generation: the user acted) clears ``status.idle`` and starts the Pod.
``spec.suspend: true`` wins over idleness and clears it. That check is legitimately
time-based, so the Notebook is requeued for the moment the timeout would expire; an idle
Notebook makes no request at all. How the status is fetched is the only injectable part
(:class:`JupyterStatusReader`), because tests have no kubelet to proxy to. A check that cannot read the
status (403, Jupyter unreachable) never stops the Notebook; it says so in the ``Serving`` message
and a Warning Event ``IdleCheckFailed``, since ``idleTimeout`` is not enforced meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import logging
import secrets
from typing import Any, Protocol

import aiohttp
import attrs

from substratus import naming
from substratus.api import (
    SERVING,
    AnyKind,
    IdleStatus,
    Notebook,
    Reason,
    format_time,
    parse_duration,
    parse_time,
)
from substratus.cloud.base import Mount
from substratus.controllers import render
from substratus.controllers.apply import Action
from substratus.controllers.base import KindReconciler
from substratus.controllers.build import Builder
from substratus.controllers.dependencies import dependency_mounts, forbidden_references, unready_dependencies
from substratus.controllers.pods import pod_problem
from substratus.controllers.resources import NOTEBOOKS
from substratus.controllers.status import StatusUpdate, now
from substratus.naming import RESUME_ANNOTATION
from substratus.runtime.client import AlreadyExists, ApiError, Client
from substratus.runtime.events import WARNING
from substratus.runtime.reconcile import Result
from substratus.runtime.resource import CONFIGMAPS, PODS, SECRETS

log = logging.getLogger(__name__)

PORT = 8888
PORT_NAME = "notebook"
# Jupyter's version endpoint: unauthenticated (a probe has no token) and not counted as activity.
READINESS_PATH = "/api"
# Used when spec.command is empty. The images a Notebook runs are usually a workload's own
# (``kubectl notebook`` in a trainer repo) whose CMD trains or imports, so the default must
# start Jupyter explicitly. The working directory (/content) is Jupyter's root.
DEFAULT_COMMAND = ["jupyter", "lab", "--ip=0.0.0.0", f"--port={PORT}", "--allow-root", "--no-browser"]
TOKEN_ENV = "JUPYTER_TOKEN"
TOKEN_KEY = "token"
IDLE_CHECK_FAILED = "IdleCheckFailed"
IDLE_NOT_ENFORCED = "idleTimeout is not enforced"
TOKEN_DIGEST_ANNOTATION = "substratus.ai/token-sha256"
IDLE_RETRY_SECONDS = 60.0
STATUS_TIMEOUT_SECONDS = 10.0


def token_secret_name(notebook_name: str) -> str:
    return naming.child_name(notebook_name, Notebook.KIND) + "-token"


def token_digest(token: str) -> str:
    """What the Pod records of the token it started with (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def output_url(url: str) -> str:
    """Where ``/content/output`` of a Notebook is stored: ``{status.url}/output``."""
    return f"{url.rstrip('/')}/output"


# --- Jupyter status: the network boundary --------------------------------------------------------


class JupyterUnreachable(Exception):
    """``/api/status`` could not be read (Pod not reachable, bad token, not Jupyter, ...).

    ``reason`` is short and safe to show in a status or Event (never the token-bearing URL)."""

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason or detail


@attrs.frozen
class JupyterStatus:
    """What Jupyter's ``GET /api/status`` reports."""

    last_activity: dt.datetime
    connections: int = 0
    kernels: int = 0


def parse_jupyter_status(body: Any) -> JupyterStatus:
    """Parse ``/api/status``; JupyterUnreachable if it is not what Jupyter answers."""
    if not isinstance(body, dict) or not isinstance(body.get("last_activity"), str):
        raise JupyterUnreachable(f"unexpected /api/status answer: {str(body)[:200]!r}")
    try:
        last = parse_time(body["last_activity"])
    except ValueError as exc:
        raise JupyterUnreachable(f"unparseable last_activity {body['last_activity']!r}") from exc
    return JupyterStatus(last_activity=last, connections=int(body.get("connections") or 0),
                         kernels=int(body.get("kernels") or 0))


class JupyterStatusReader(Protocol):
    async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
        """The Jupyter status of ``pod``; raises JupyterUnreachable."""
        ...


class PodProxyJupyterStatusReader:
    """Reads ``/api/status`` through the API server's pod proxy (no network path to Pods needed)."""

    def __init__(self, client: Client, timeout: float = STATUS_TIMEOUT_SECONDS) -> None:
        self.client = client
        self.timeout = timeout

    async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}:{PORT}/proxy/api/status"
        try:
            async with asyncio.timeout(self.timeout):
                body = await self.client.request("GET", path, query={"token": token})
        except ApiError as exc:
            why = "the token was rejected" if exc.status in (401, 403) else "Jupyter answered an error"
            raise JupyterUnreachable(f"GET {path}: {exc!r}", f"HTTP {exc.status}: {why}") from exc
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise JupyterUnreachable(f"GET {path}: {exc!r}", type(exc).__name__) from exc
        return parse_jupyter_status(body)


# --- reconciler ---------------------------------------------------------------------------------


def pod_ready(pod: dict[str, Any] | None) -> bool:
    status = (pod or {}).get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _terminal_reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return f"{term.get('reason') or 'terminated'}, exit code {term.get('exitCode')}"
    return status.get("reason") or status.get("message") or "no reason given"


def _sooner(a: Result, b: Result) -> Result:
    """The result that comes back first (a requeue_after of 0 means "not at all")."""
    afters = [r.requeue_after for r in (a, b) if r.requeue_after > 0]
    return Result(requeue=a.requeue or b.requeue, requeue_after=min(afters) if afters else 0.0)


def _decode_token(secret: dict[str, Any] | None) -> str | None:
    value = ((secret or {}).get("data") or {}).get(TOKEN_KEY)
    if not isinstance(value, str):
        return None
    try:
        token = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return token or None


def resume_value(obj: Notebook) -> str:
    """The ``substratus.ai/resume`` annotation's value ("" when absent)."""
    return obj.metadata.annotations.get(RESUME_ANNOTATION) or ""


def idle_resumed(obj: Notebook, idle: IdleStatus) -> bool:
    """True when the user asked for the Pod again since it was stopped for idleness: a new
    ``substratus.ai/resume`` value, or a spec change (a new generation is a user's act; running
    the new spec is what they expect, as after an edit of a running Notebook)."""
    return resume_value(obj) != idle.resume or (obj.metadata.generation or 0) != idle.generation


def idle_message(obj: Notebook, idle: IdleStatus) -> str:
    """The ``Serving=False/Idle`` message: what happened and both ways to resume.

    Built only from ``status.idle`` and the spec, so it is the same on every pass (no rewrite)."""
    ns, name = obj.metadata.namespace or "", obj.metadata.name
    try:
        idle_for = f" ({_human(parse_time(idle.since) - parse_time(idle.last_activity))})"
    except ValueError:
        idle_for = ""
    return (f"no Jupyter activity since {idle.last_activity}{idle_for}, longer than idleTimeout "
            f"{obj.spec.idle_timeout}: the Pod was stopped at {idle.since} (files in /content/output are kept; "
            f"spec unchanged); resume with `kubectl notebook {name} -n {ns}` or "
            f"`kubectl annotate notebook/{name} -n {ns} {RESUME_ANNOTATION}=$(date +%s) --overwrite`")


def _human(d: dt.timedelta) -> str:
    s = int(d.total_seconds())
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


class NotebookReconciler(KindReconciler):
    resource = NOTEBOOKS
    ready_condition = SERVING

    def __init__(self, ctx: Any, status_reader: JupyterStatusReader | None = None) -> None:
        super().__init__(ctx)
        self.builder = Builder(self)
        self.status_reader: JupyterStatusReader = status_reader or PodProxyJupyterStatusReader(ctx.client)

    async def sync(self, obj: AnyKind, raw: dict[str, Any], update: StatusUpdate) -> Result:
        assert isinstance(obj, Notebook)
        ns = obj.metadata.namespace or ""
        url = self.storage_url(obj)
        obj.status.url = url
        pod_name = self.child_name(obj)
        # The image first, even when suspended: Built stays accurate and an upload URL is
        # published, so `kubectl notebook` can upload before resuming.
        image = await self.builder.resolve(obj, raw, url, update)
        if obj.spec.suspend:
            obj.status.idle = None  # the user's suspend supersedes idleness; suspend: false runs it
            await self._suspend(obj, pod_name, update)
            return image.result
        idle = obj.status.idle
        if idle is not None:
            if not idle_resumed(obj, idle):
                # Recorded by an earlier pass (status first, then the Pod: a failed status write
                # never leaves a stopped Pod unexplained). Converged: no request at all.
                await self.ctx.applier.delete(PODS, pod_name, ns)
                update.set(SERVING, False, Reason.IDLE, idle_message(obj, idle))
                return image.result
            log.info("resuming idle notebook", extra={"resume": resume_value(obj),
                                                      "generation": obj.metadata.generation})
            obj.status.idle = None
        if image.image is None or not image.current:
            # A rebuilt Notebook image means new code (`kubectl notebook`): no Ready on the old Pod.
            update.set(SERVING, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for the image to be built")
            return image.result
        denied = forbidden_references(self.ctx.cache, obj)
        if denied:
            # Mount nothing: a Pod running with the mounts (the annotation was removed) stops.
            await self.ctx.applier.delete(PODS, pod_name, ns)
            update.set(SERVING, False, Reason.REFERENCE_NOT_PERMITTED, "; ".join(denied))
            return image.result
        waiting = unready_dependencies(self.ctx.cache, obj, "to be ready", need_url=True)
        if waiting:
            update.set(SERVING, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for " + "; ".join(waiting))
            return image.result

        token = await self._ensure_token(obj)
        sa = await self.service_account(ns)
        await self.ctx.applier.ensure(CONFIGMAPS, render.params_configmap(obj))
        token_env = {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {
            "name": token_secret_name(obj.metadata.name), "key": TOKEN_KEY}}}
        desired = render.pod(
            obj, name=pod_name, image=image.image, mounts=self.mounts(obj, url), cloud=self.ctx.cloud,
            options=self.ctx.render, ports=[render.container_port(PORT_NAME, PORT)],
            readiness_probe=render.http_probe(READINESS_PATH, PORT_NAME), default_command=DEFAULT_COMMAND,
            extra_env=[token_env], service_account=sa)
        # The token is read once, at container start: a new token needs a new Pod.
        annotations = desired["metadata"].setdefault("annotations", {})
        annotations.pop(render.HASH_ANNOTATION, None)
        annotations[TOKEN_DIGEST_ANNOTATION] = token_digest(token)
        render.stamp_hash(desired)
        pod, action = await self.ctx.applier.ensure(PODS, desired, immutable=True)
        if action is Action.DELETED or pod is None:
            update.set(SERVING, False, Reason.DEPLOYING, f"replacing Pod {pod_name} (its spec changed)")
            return image.result
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if phase in ("Failed", "Succeeded"):
            # Evicted, or its node went away: a bare Pod is never restarted by anyone else.
            reason = _terminal_reason(pod)
            await self.ctx.applier.delete(PODS, pod_name, ns)
            update.set(SERVING, False, Reason.DEPLOYING, f"Pod {pod_name} {phase.lower()} ({reason}); recreating it")
            return image.result
        problem = None if pod_ready(pod) else pod_problem([pod])
        if problem is not None:
            update.set(SERVING, False, Reason.POD_FAILING,
                       f"{problem}; see `kubectl describe pod {pod_name}`")
            return image.result
        if not pod_ready(pod):
            update.set(SERVING, False, Reason.DEPLOYING, f"waiting for Pod {pod_name} to be ready (phase {phase})")
            return image.result
        available = (f"Jupyter is ready on port {PORT} of Pod {pod_name}; its token is in Secret "
                     f"{token_secret_name(obj.metadata.name)}")
        if obj.spec.idle_timeout is None:
            update.set(SERVING, True, Reason.AVAILABLE, available)
            return image.result
        idle_check, failure = await self._check_idle(obj, pod_name, token)
        if isinstance(idle_check, IdleStatus):
            obj.status.idle = idle_check
            update.set(SERVING, False, Reason.IDLE, idle_message(obj, idle_check))
            # The status (and its Event) is written at the end of this pass; the requeue brings
            # the next pass, which deletes the Pod (the echo of our own status write does not:
            # runtime/ownwrites.py).
            return _sooner(image.result, Result(requeue=True))
        if failure is None:
            update.set(SERVING, True, Reason.AVAILABLE, available)
        else:
            message = (f"{available}; {IDLE_NOT_ENFORCED}: cannot read Jupyter's /api/status ({failure}); "
                       "retrying")
            previous = next((c for c in obj.status.conditions if c.type == SERVING), None)
            if previous is None or IDLE_NOT_ENFORCED not in previous.message:
                self.ctx.recorder.event(raw, WARNING, IDLE_CHECK_FAILED, message)
            update.set(SERVING, True, Reason.AVAILABLE, message)
        return _sooner(image.result, idle_check)

    # --- pieces -------------------------------------------------------------------------------

    def mounts(self, obj: Notebook, url: str) -> list[Mount]:
        return [render.output_mount(output_url(url)),
                *dependency_mounts(self.ctx.cache, obj, render.CONTENT_DIR)]

    async def _suspend(self, obj: Notebook, pod_name: str, update: StatusUpdate) -> None:
        await self.ctx.applier.delete(PODS, pod_name, obj.metadata.namespace or "")
        update.set(SERVING, False, Reason.SUSPENDED,
                   "spec.suspend is true: the Pod is stopped (files in /content/output are kept); "
                   "set spec.suspend to false to resume")

    async def _ensure_token(self, obj: Notebook) -> str:
        """The Notebook's Jupyter token, created once; never rotated (the running Pod has it)."""
        ns = obj.metadata.namespace or ""
        name = token_secret_name(obj.metadata.name)
        cached = self.ctx.cache.get(SECRETS, name, ns)
        token = _decode_token(cached)
        if token:
            return token
        token = secrets.token_hex(24)
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": render.child_meta(obj, name),
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
        }
        if cached is not None:
            log.warning("token secret has no usable key, writing a new token", extra={"secret": f"{ns}/{name}", "key": TOKEN_KEY})
            await self.ctx.client.apply(SECRETS, secret)
            return token
        try:
            await self.ctx.client.create(SECRETS, secret, ns)
            log.info("created jupyter token", extra={"secret": f"{ns}/{name}"})
        except AlreadyExists:
            # Our cache is behind: keep the token the server has (a Pod may already use it).
            existing = _decode_token(await self.ctx.client.get(SECRETS, name, ns))
            if existing is None:
                raise
            return existing
        return token

    async def _check_idle(self, obj: Notebook, pod_name: str,
                          token: str) -> tuple[Result | IdleStatus, str | None]:
        """(What to record when Jupyter has been idle longer than ``spec.idleTimeout``, else when
        to look again; why Jupyter's status could not be read, or None). Unreadable: never stop
        it (retry within a minute)."""
        assert obj.spec.idle_timeout is not None
        timeout = parse_duration(obj.spec.idle_timeout)
        ns = obj.metadata.namespace or ""
        try:
            status = await self.status_reader.read(ns, pod_name, token)
        except JupyterUnreachable as exc:
            retry = min(IDLE_RETRY_SECONDS, timeout.total_seconds())
            log.warning("cannot read jupyter status, not suspending", extra={"retryIn": retry, "error": str(exc)})
            return Result(requeue_after=retry), exc.reason
        idle_for = now() - status.last_activity
        if idle_for < timeout:
            # Activity moves last_activity forward; look again when this one would expire.
            return Result(requeue_after=(timeout - idle_for).total_seconds() + 1.0), None
        log.info("stopping idle notebook", extra={"lastActivity": format_time(status.last_activity),
                                                "idleTimeout": obj.spec.idle_timeout})
        return IdleStatus(since=format_time(now()), last_activity=format_time(status.last_activity),
                          resume=resume_value(obj), generation=obj.metadata.generation or 0), None
