"""Cluster simulator: stands in for the kubelet and kube-controller-manager (tests and dev mode only).

The local control plane (:class:`substratus.testing.controlplane.ControlPlane`) is a real
kube-apiserver + etcd, but no node can run here and kube-apiserver 1.20 runs no controllers: no
scheduler, no kubelet, no Job or Deployment controller and no garbage collector. Without help a Job
would never complete and a Pod would never become Ready. :class:`ClusterSimulator` watches Jobs,
Deployments and Pods through the real API and writes the statuses those components would write —
through the real ``/status`` subresources, so the operator under test sees genuine watch events and
resourceVersions — and garbage-collects dependents whose owners are gone.

Outcomes are chosen per object: the annotation ``simulator.substratus.ai/outcome: succeed|fail|hold``
wins, else the ``*_outcome`` callback, else ``succeed``. ``hold`` leaves the object running/pending
until the annotation (or callback answer) changes.

Like the real controllers, the Job controller creates a Pod per Job and the Deployment controller
a ReplicaSet per pod template with ``replicas`` Pods; the kubelet plays every Pod (those and
the ones others create). A Pod can be made to fail the way real ones do — its annotation
``simulator.substratus.ai/pod-fault`` or the ``pod_fault`` callback names one of
:data:`POD_FAULTS` — and, as a real kubelet, a container whose env references a Secret or
ConfigMap (key) that does not exist waits in ``CreateContainerConfigError`` until it does. The
statuses are kubelet-shaped: ``PodScheduled=False/Unschedulable``, ``state.waiting`` with
``ImagePullBackOff``/``CreateContainerConfigError``/``CrashLoopBackOff`` and ``lastState``,
``terminated`` ``OOMKilled`` with exit code 137 (``Failed`` with ``restartPolicy: Never``, a
crash loop otherwise). A Job whose Pod cannot start stays active (its outcome waits for the Pod);
a Job whose Pod failed fails; a Deployment is available only with its Pods ready.

Build Jobs (a container running kaniko with ``--digest-file`` or ``--image-name-with-digest-file``
pointed at its termination-message path) get the Pod the Job controller would create, finished
the way the kubelet reports it: each container ``terminated`` with the message it wrote — the
pushed digest (``sha256:<64 hex>``, as kaniko writes it) for kaniko, the resolved commit for a
clone step that writes ``git rev-parse HEAD`` there — before the Job is marked complete. The
digest defaults to a hash of the Pod spec (a reproducible build: same source, same digest);
the annotations ``simulator.substratus.ai/digest`` / ``.../commit`` on the Job override it.

Status shapes follow the server's version (read from ``/version`` at start), because what the
API server accepts changed: from 1.31 the Job controller writes ``SuccessCriteriaMet`` before
``Complete`` and ``FailureTarget`` before ``Failed`` (terminal conditions wait until every Pod is
terminal), and current servers reject a terminal condition without its forerunner
(``validateJobStatus`` in ``pkg/apis/batch/validation``). :func:`job_running_status` and
:func:`job_finish_patches` are the pure shapes, tested against the real server.

Never point this at a production cluster: it fakes status on every Job, Deployment and Pod it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiohttp
import attrs
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from substratus.runtime.client import ClientOptions, watch_timeouts
from substratus.testing.controlplane import KubeVersion

logger = logging.getLogger(__name__)

Outcome = Literal["succeed", "fail", "hold"]
OutcomePolicy = Callable[[dict[str, Any]], Outcome]
"""Called with the object as the API returns it (a camelCase dict); returns what should happen."""

OUTCOME_ANNOTATION = "simulator.substratus.ai/outcome"
DIGEST_ANNOTATION = "simulator.substratus.ai/digest"
COMMIT_ANNOTATION = "simulator.substratus.ai/commit"
_DIGEST_FLAGS = ("--digest-file=", "--image-name-with-digest-file=")
_TERMINATION_LOG = "/dev/termination-log"
_OUTCOMES = ("succeed", "fail", "hold")

FAULT_ANNOTATION = "simulator.substratus.ai/pod-fault"
POD_FAULTS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "Unschedulable",
              "CrashLoopBackOff", "OOMKilled")
"""What the kubelet (or scheduler) can be told to play for a Pod's first container."""
FaultPolicy = Callable[[dict[str, Any]], str | None]
"""Called with a Pod; returns one of :data:`POD_FAULTS`, or None for a healthy Pod."""
_WAITING_OK = ("ContainerCreating", "PodInitializing")
_MERGE = "application/merge-patch+json"


@attrs.frozen
class GCResource:
    """A namespaced built-in resource the garbage collector scans for orphans."""

    api_prefix: str  # "/api/v1" or "/apis/batch/v1"
    plural: str


DEFAULT_GC_RESOURCES: tuple[GCResource, ...] = (
    GCResource("/apis/batch/v1", "jobs"),
    GCResource("/apis/apps/v1", "deployments"),
    GCResource("/apis/apps/v1", "replicasets"),
    GCResource("/api/v1", "services"),
    GCResource("/api/v1", "pods"),
    GCResource("/api/v1", "configmaps"),
    GCResource("/api/v1", "serviceaccounts"),
    GCResource("/api/v1", "secrets"),
)


def expand_env_value(value: str, env: dict[str, str]) -> str:
    """The value a container sees for an env var whose spec says ``value``, as the kubelet
    expands it: ``$(NAME)`` becomes an earlier variable's value (left as is if undefined),
    ``$$`` becomes ``$``, any other ``$`` stays. A port of Kubernetes'
    ``third_party/forked/golang/expansion.Expand`` (what ``kubelet`` applies to ``env``,
    ``command`` and ``args``), for tests that check what a process would really get."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(value):
        if value[cursor] == "$" and cursor + 1 < len(value):
            out.append(value[checkpoint:cursor])
            rest = value[cursor + 1:]
            if rest[0] == "$":
                read, advance = "$", 1
            elif rest[0] == "(":
                end = rest.find(")", 1)
                if end == -1:
                    read, advance = "$(", 1
                else:
                    name = rest[1:end]
                    read, advance = env.get(name, f"$({name})"), end + 1
            else:
                read, advance = "$" + rest[0], 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + value[checkpoint:]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's literal env (``valueFrom`` entries are left out) as its process sees it,
    each value expanded against the ones before it, as the kubelet does."""
    seen: dict[str, str] = {}
    for e in container.get("env") or []:
        if "valueFrom" in e:
            continue
        seen[e["name"]] = expand_env_value(e.get("value") or "", seen)
    return seen


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _ref(obj: dict[str, Any]) -> str:
    m = _meta(obj)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def _condition_true(obj: dict[str, Any], ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _args(c: dict[str, Any]) -> list[str]:
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


def _is_build(job: dict[str, Any]) -> bool:
    """A Job with a kaniko container that reports its digest through a file."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return any(a.startswith(_DIGEST_FLAGS) for c in spec.get("containers") or [] for a in _args(c))


def _termination_message(job: dict[str, Any], c: dict[str, Any]) -> str | None:
    """What a container of a build Pod writes to its termination-message path, if anything."""
    path = c.get("terminationMessagePath") or _TERMINATION_LOG
    args = _args(c)
    annotations = _meta(job).get("annotations") or {}
    # The Pod spec only: the API server labels each Job's template with its own controller-uid.
    pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    if any(a in (f"--digest-file={path}", f"--image-name-with-digest-file={path}") for a in args):
        digest = annotations.get(DIGEST_ANNOTATION) or "sha256:" + hashlib.sha256(
            json.dumps(pod_spec, sort_keys=True).encode()).hexdigest()
        if f"--digest-file={path}" in args:
            return str(digest)
        dest = next((a.split("=", 1)[1] for a in args if a.startswith("--destination=")), "")
        return f"{dest}@{digest}"
    script = " ".join(args)
    if "rev-parse HEAD" in script and path in script:
        return str(annotations.get(COMMIT_ANNOTATION) or hashlib.sha1(  # a fake commit id
            " ".join(args).encode(), usedforsecurity=False).hexdigest())
    return None


# Job status fields and conditions by the first release whose Job controller writes them (its
# feature on by default). Sources: the Job API reference and pkg/controller/job per release.
JOB_READY_SINCE = KubeVersion(1, 24)
"""``status.ready`` (JobReadyPods, beta and on by default in 1.24)."""
JOB_UNCOUNTED_SINCE = KubeVersion(1, 26)
"""``status.uncountedTerminatedPods`` (JobTrackingWithFinalizers, GA in 1.26)."""
JOB_TERMINATING_SINCE = KubeVersion(1, 29)
"""``status.terminating`` (JobPodReplacementPolicy, beta and on by default in 1.29)."""
JOB_INTERIM_CONDITIONS_SINCE = KubeVersion(1, 31)
"""``SuccessCriteriaMet`` before ``Complete`` and ``FailureTarget`` before ``Failed``, each written
once the Pods are done and the terminal one a sync later; current servers reject ``Complete``
without ``SuccessCriteriaMet`` and ``Failed`` without ``FailureTarget``."""
POD_HOST_IPS_SINCE = KubeVersion(1, 28)
"""Pod ``status.hostIPs`` (its first entry must equal ``hostIP``)."""
OLDEST = KubeVersion(1, 20)


def job_running_status(version: KubeVersion, start_time: str) -> dict[str, Any]:
    """The status the Job controller writes when it creates the Job's one Pod (pure)."""
    status: dict[str, Any] = {"startTime": start_time, "active": 1}
    if version >= JOB_READY_SINCE:
        status["ready"] = 0
    if version >= JOB_TERMINATING_SINCE:
        status["terminating"] = 0
    if version >= JOB_UNCOUNTED_SINCE:
        status["uncountedTerminatedPods"] = {}
    return status


def job_finish_patches(version: KubeVersion, job: dict[str, Any], succeed: bool, now: str) -> list[dict[str, Any]]:
    """The ``/status`` merge patches, in order, that finish ``job`` as the Job controller of
    ``version`` would (pure). Every patch is valid on its own for that version's validation:

    - counters never decrease; ``active`` is dropped (0) and ``ready``/``terminating`` are 0 once
      finished; ``startTime`` is kept, ``completionTime`` (>= startTime) only with ``Complete``;
    - from :data:`JOB_INTERIM_CONDITIONS_SINCE`: first ``SuccessCriteriaMet`` (or ``FailureTarget``)
      alone, then the same plus ``Complete`` (or ``Failed``), with the controller's reasons.
    """
    spec, status = job.get("spec") or {}, job.get("status") or {}
    old = status.get("conditions") or []
    start = status.get("startTime") or now
    counters: dict[str, Any] = {"startTime": start, "active": None}
    if version >= JOB_READY_SINCE:
        counters["ready"] = 0
    if version >= JOB_TERMINATING_SINCE:
        counters["terminating"] = 0
    if succeed:
        counters["succeeded"] = spec.get("completions") or 1
        reason = "CompletionsReached" if version >= JOB_INTERIM_CONDITIONS_SINCE else None
        message = "Reached expected number of succeeded pods" if reason else None
        interim, terminal = "SuccessCriteriaMet", "Complete"
        final_extra: dict[str, Any] = {"completionTime": max(now, start)}
    else:
        counters["failed"] = int(6 if spec.get("backoffLimit") is None else spec["backoffLimit"]) + 1
        reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        interim, terminal = "FailureTarget", "Failed"
        final_extra = {}
    if version < JOB_INTERIM_CONDITIONS_SINCE:
        return [{**counters, **final_extra, "conditions": [_cond(old, terminal, "True", reason, message, probe=True)]}]
    first = _cond(old, interim, "True", reason, message, probe=True)
    return [
        {**counters, "conditions": [first]},
        {**counters, **final_extra, "conditions": [first, _cond([first], terminal, "True", reason, message,
                                                                  probe=True)]},
    ]


def _cond(old: list[dict[str, Any]], ctype: str, status: str, reason: str | None = None,
          message: str | None = None, *, probe: bool = False, update: bool = False) -> dict[str, Any]:
    """A condition keeping its lastTransitionTime when its status did not change (like the real ones)."""
    now = _now()
    prev = next((c for c in old if c.get("type") == ctype), None)
    c: dict[str, Any] = {"type": ctype, "status": status}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    if probe:
        c["lastProbeTime"] = now
    if update:
        c["lastUpdateTime"] = now
    c["lastTransitionTime"] = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else now
    return c


@attrs.define
class _Rollout:
    """What the simulated Deployment controller found and did in one sync."""

    rs_name: str
    new: int
    """Pods of the current template's ReplicaSet (``updatedReplicas``)."""
    new_ready: int
    old: int
    """Pods of older templates still running (counted in ``replicas``)."""
    old_ready: int
    deadline_exceeded: bool


def _rolling_limits(d: dict[str, Any], replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) of a RollingUpdate Deployment: integers or percentages of the
    replicas (surge rounded up, unavailable down; defaults 25 %); never both 0 (the API server
    refuses that)."""
    ru = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}

    def value(v: Any, round_up: bool) -> int:
        if v is None:
            v = "25%"
        if isinstance(v, str) and v.endswith("%"):
            exact = replicas * int(v[:-1]) / 100
            return int(-(-exact // 1)) if round_up else int(exact // 1)
        return int(v)

    surge, unavailable = value(ru.get("maxSurge"), True), value(ru.get("maxUnavailable"), False)
    return (surge, 1) if surge == 0 and unavailable == 0 else (surge, unavailable)


@attrs.define(eq=False)
class ClusterSimulator:
    """Fakes kubelet / kube-controller-manager status updates against a real API server.

    Use ``await sim.start()`` / ``await sim.stop()`` or ``async with ClusterSimulator(api):``.
    """

    api: ApiClient
    namespace: str | None = None
    """Only act in this namespace (default: all namespaces)."""
    job_delay: float = 0.5
    """Seconds between first seeing a Job and finishing it (it is ``active`` meanwhile)."""
    deployment_delay: float = 0.2
    pod_delay: float = 0.2
    job_outcome: OutcomePolicy | None = None
    deployment_outcome: OutcomePolicy | None = None
    pod_outcome: OutcomePolicy | None = None
    pod_fault: FaultPolicy | None = None
    """Which Pods fail, and how (see :data:`POD_FAULTS`); the Pod's fault annotation wins."""
    pod_retry: float = 0.5
    """Seconds between the kubelet's attempts to start a Pod that cannot start (it retries forever)."""
    gc_interval: float = 1.0
    """Seconds between garbage-collection passes; 0 disables the GC loop (``gc_once`` still works)."""
    gc_resources: tuple[GCResource, ...] = DEFAULT_GC_RESOURCES
    watch_timeout: int | None = None
    """Server-side ``timeoutSeconds`` of each watch request (capped to the idle window); None:
    drawn inside it, as the operator's informers do. The simulator re-watches from the last
    resourceVersion."""
    watch_idle_timeout: float = ClientOptions().watch_idle_timeout
    """Seconds a watch may stay silent before it is dropped as dead and replaced: the operator's
    own dead-watch protection (``substratus.runtime.client.watch_timeouts``), so a simulated
    kubelet does not hang on a frozen connection any longer than an informer would."""

    _tasks: set[asyncio.Task[Any]] = attrs.field(init=False, factory=set)
    _pending: dict[tuple[str, str], asyncio.Task[Any]] = attrs.field(init=False, factory=dict)
    _synced: dict[str, asyncio.Event] = attrs.field(init=False, factory=dict)
    _discovery: dict[str, dict[str, tuple[str, bool]]] = attrs.field(init=False, factory=dict)
    _finalizing_owners: dict[str, tuple[str, str]] = attrs.field(init=False, factory=dict)
    _running: bool = attrs.field(init=False, default=False)
    _seen_pods: dict[str, dict[str, Any]] = attrs.field(init=False, factory=dict)
    _progress: dict[str, tuple[tuple[Any, ...], float]] = attrs.field(init=False, factory=dict)
    """Per Deployment uid: the rollout's last counts and since when (loop time), for its deadline."""
    """Each Pod's latest state from the pod watch, by path (dropped when it is deleted)."""
    server_version: KubeVersion = attrs.field(init=False, default=OLDEST)
    """The API server's version (``/version``), read by :meth:`start`; it selects status shapes."""

    # ----------------------------------------------------------------------------------- public
    async def start(self, sync_timeout: float = 30.0) -> ClusterSimulator:
        """Start the watch loops (and the GC loop) and wait until each has listed once."""
        if self._running:
            return self
        self.server_version = KubeVersion.parse(str((await self._request("GET", "/version")).get("gitVersion")))
        self._running = True
        informers: list[tuple[str, str, Callable[[dict[str, Any]], Awaitable[None]]]] = [
            ("jobs", self._path("/apis/batch/v1", "jobs"), self._on_job),
            ("deployments", self._path("/apis/apps/v1", "deployments"), self._on_deployment),
            ("pods", self._path("/api/v1", "pods"), self._on_pod),
        ]
        for name, path, handler in informers:
            self._synced[name] = asyncio.Event()
            self._spawn(self._informer(name, path, handler), name=f"simulator-{name}")
        if self.gc_interval > 0:
            self._spawn(self._gc_loop(), name="simulator-gc")
        try:
            async with asyncio.timeout(sync_timeout):
                await asyncio.gather(*(e.wait() for e in self._synced.values()))
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"cluster simulator did not list Jobs/Deployments/Pods within {sync_timeout}s") from None
        logger.info("cluster simulator started", extra={"watchNamespace": self.namespace or "*", "server": self.server_version})
        return self

    async def stop(self) -> None:
        """Cancel every loop and pending status update; idempotent."""
        self._running = False
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._pending.clear()
        logger.info("cluster simulator stopped")

    async def __aenter__(self) -> ClusterSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def gc_once(self) -> int:
        """One garbage-collection pass (what kube-controller-manager's GC would do); returns deletions.

        A dependent is deleted when *all* its owners are gone (404 or a different uid), as in
        Kubernetes. Owners being deleted with ``propagationPolicy: Foreground`` get their dependents
        deleted and then their ``foregroundDeletion`` finalizer removed; with ``Orphan`` the owner
        reference is dropped from dependents and the ``orphan`` finalizer removed. Owners whose kind
        can't be resolved through discovery are left alone (like the real GC).
        """
        owners: dict[Any, Any] = {}
        referenced: set[str] = set()
        deleted = 0
        for res in self.gc_resources:
            try:
                items = (await self._request("GET", self._path(res.api_prefix, res.plural))).get("items") or []
            except ApiException as e:
                logger.warning("gc: list failed", extra={"resource": res.plural, "status": e.status})
                continue
            for obj in items:
                meta = _meta(obj)
                refs = meta.get("ownerReferences") or []
                if not refs:
                    continue
                referenced.update(r.get("uid", "") for r in refs)
                if meta.get("deletionTimestamp"):
                    continue
                ns = meta.get("namespace", "")
                states = [await self._owner_state(r, ns, owners) for r in refs]
                if any(s in ("present", "unknown") for s in states):
                    continue
                if all(s in ("absent", "foreground") for s in states):
                    if await self._delete(f"{self._item_path(res, ns)}/{meta['name']}"):
                        deleted += 1
                        logger.info("gc: deleted dependent", extra={"resource": res.plural, "object": f"{ns}/{meta['name']}"})
                    continue
                # Some owners orphan their dependents: drop those references and keep the object.
                keep = [r for r, s in zip(refs, states, strict=True) if s != "orphan"]
                with contextlib.suppress(ApiException):
                    await self._request(
                        "PATCH", f"{self._item_path(res, ns)}/{meta['name']}",
                        body={"metadata": {"ownerReferences": keep or None,
                                           "resourceVersion": meta.get("resourceVersion")}},
                        content_type=_MERGE,
                    )
                    logger.info("gc: orphaned dependent", extra={"resource": res.plural, "object": f"{ns}/{meta['name']}"})
        # Owners waiting for their dependents: once none refers to them any more, let them go.
        for uid, (path, finalizer) in list(self._finalizing_owners.items()):
            if uid in referenced:
                continue
            await self._remove_finalizer(path, uid, finalizer)
            del self._finalizing_owners[uid]
        return deleted

    # -------------------------------------------------------------------------------- informers
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _schedule(self, kind: str, obj: dict[str, Any], path: str, delay: float,
                  act: Callable[[dict[str, Any], str], Awaitable[None]]) -> None:
        """Run ``act`` on a fresh copy of ``obj`` (at ``path``) after ``delay`` unless one is pending."""
        uid = _meta(obj).get("uid", "")
        key = (kind, uid)
        if key in self._pending:
            return

        async def run() -> None:
            try:
                await asyncio.sleep(delay)
                try:
                    fresh = await self._request("GET", path)
                except ApiException as e:
                    if e.status == 404:
                        return
                    raise
                if _meta(fresh).get("uid") != uid:
                    return
                await act(fresh, path)
            except asyncio.CancelledError:
                raise
            except ApiException as e:
                if e.status != 404:
                    logger.warning("simulator: update failed",
                                   extra={"object": f"{kind} {_ref(obj)}", "status": e.status, "reason": e.reason})
            except Exception:
                logger.exception("simulator: update failed", extra={"object": f"{kind} {_ref(obj)}"})
            finally:
                self._pending.pop(key, None)

        self._pending[key] = self._spawn(run(), name=f"simulator-{kind}-{_ref(obj)}")

    async def _informer(self, name: str, path: str, handler: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """List + watch forever; on 410 Gone or any error re-list (with backoff on errors)."""
        backoff = 0.2
        while self._running:
            try:
                listed = await self._request("GET", path)
                rv = _meta(listed).get("resourceVersion", "")
                for obj in listed.get("items") or []:
                    await self._dispatch(handler, obj)
                self._synced[name].set()
                backoff = 0.2
                while self._running:
                    rv, gone = await self._watch(path, rv, handler)
                    if gone:
                        logger.info("simulator: watch expired, re-listing", extra={"resource": name})
                        break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.warning("simulator: watch failed, re-listing",
                               extra={"resource": name, "error": f"{type(e).__name__}: {e}", "backoff": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _watch(self, path: str, rv: str,
                     handler: Callable[[dict[str, Any]], Awaitable[None]]) -> tuple[str, bool]:
        """One watch request; returns the last resourceVersion and whether it expired (410)."""
        timeout_seconds, client_timeout = watch_timeouts(self.watch_idle_timeout, 10.0, self.watch_timeout)
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if rv:
            query.append(("resourceVersion", rv))
        resp = await self.api.call_api(
            path, "GET", query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=client_timeout,
        )
        try:
            if resp.status != 200:
                body = await resp.text()
                if resp.status == 410:
                    return rv, True
                raise ApiException(status=resp.status, reason=body[:500])
            while True:
                line = await resp.content.readline()
                if not line:
                    return rv, False
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return rv, True
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                rv = _meta(obj).get("resourceVersion", rv)
                if etype in ("ADDED", "MODIFIED"):
                    await self._dispatch(handler, obj)
                elif etype == "DELETED":
                    m = _meta(obj)
                    self._seen_pods.pop(f"/api/v1/namespaces/{m.get('namespace')}/pods/{m.get('name')}", None)
                    uid = m.get("uid", "")
                    for key in [k for k in self._pending if k[1] == uid]:
                        self._pending.pop(key).cancel()
        finally:
            resp.release()

    async def _dispatch(self, handler: Callable[[dict[str, Any]], Awaitable[None]], obj: dict[str, Any]) -> None:
        try:
            await handler(obj)
        except ApiException as e:
            if e.status != 404:
                logger.warning("simulator: handler failed", extra={"object": _ref(obj), "status": e.status, "reason": e.reason})
        except Exception:
            logger.exception("simulator: handler failed", extra={"object": _ref(obj)})

    def _outcome(self, obj: dict[str, Any], policy: OutcomePolicy | None) -> Outcome:
        ann = (_meta(obj).get("annotations") or {}).get(OUTCOME_ANNOTATION)
        if ann in _OUTCOMES:
            return ann  # type: ignore[return-value]
        if ann is not None:
            logger.warning("simulator: ignoring an invalid outcome annotation",
                           extra={"annotation": OUTCOME_ANNOTATION, "value": ann, "object": _ref(obj)})
        if policy is not None:
            out = policy(obj)
            if out in _OUTCOMES:
                return out
            logger.warning("simulator: policy returned an invalid outcome", extra={"outcome": out, "object": _ref(obj)})
        return "succeed"

    # -------------------------------------------------------------------------------------- Jobs
    async def _on_job(self, job: dict[str, Any]) -> None:
        meta = _meta(job)
        if meta.get("deletionTimestamp") or _condition_true(job, "Complete") or _condition_true(job, "Failed"):
            return
        path = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}"
        status = job.get("status") or {}
        if not status.get("startTime"):
            # What the Job controller does first: create the Pod, then count it active.
            await self._create_job_pod(job)
            await self._patch_status(path, {"status": job_running_status(self.server_version, _now())})
        if self._outcome(job, self.job_outcome) == "hold":
            return
        self._schedule("job", job, path, self.job_delay, self._finish_job)

    @staticmethod
    def _job_pod_name(job: dict[str, Any]) -> str:
        meta = _meta(job)
        return f"{meta['name']}-{hashlib.sha256(meta.get('uid', '').encode()).hexdigest()[:5]}"

    async def _create_job_pod(self, job: dict[str, Any]) -> None:
        meta, spec = _meta(job), job.get("spec") or {}
        template = spec.get("template") or {}
        labels = {**(_meta(template).get("labels") or {}), "controller-uid": meta.get("uid", ""),
                  "job-name": meta["name"]}
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta.get("uid"),
                 "controller": True, "blockOwnerDeletion": True}
        await self._create_pod(meta["namespace"], self._job_pod_name(job), template, labels, owner)

    async def _create_pod(self, ns: str, name: str, template: dict[str, Any], labels: dict[str, str],
                          owner: dict[str, Any]) -> None:
        tmeta = _meta(template)
        pod_meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner]}
        if tmeta.get("annotations"):
            pod_meta["annotations"] = tmeta["annotations"]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}
        try:
            await self._request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
            logger.info("simulator: created pod", extra={"object": f"{ns}/{name}",
                                                          "owner": f"{owner['kind']}/{owner['name']}"})
        except ApiException as e:
            if e.status != 409:
                raise

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def _finish_job(self, job: dict[str, Any], path: str) -> None:
        # The Job's outcome waits for its Pod: one that cannot start keeps the Job active (the
        # kubelet keeps retrying), one that failed (OOMKilled, a crash with restartPolicy Never)
        # fails the Job. A Job without a Pod (created before this simulator ran) just finishes.
        ns = _meta(job)["namespace"]
        pod_path = f"/api/v1/namespaces/{ns}/pods/{self._job_pod_name(job)}"
        while True:
            if _condition_true(job, "Complete") or _condition_true(job, "Failed") or \
                    _meta(job).get("deletionTimestamp"):
                return
            # What the pod watch last delivered (the Job controller's informer), else the server's.
            pod = self._seen_pods.get(pod_path) or await self._get_or_none(pod_path)
            phase = ((pod or {}).get("status") or {}).get("phase")
            if pod is None or phase in ("Failed", "Succeeded") or (phase == "Running" and _condition_true(pod, "Ready")):
                break
            await asyncio.sleep(self.pod_retry)
            fresh = await self._get_or_none(path)
            if fresh is None or _meta(fresh).get("uid") != _meta(job).get("uid"):
                return
            job = fresh
        outcome = self._outcome(job, self.job_outcome)
        # Once the controller has declared the outcome (the interim condition), it sticks; a Pod
        # that failed fails the Job whatever was asked.
        if _condition_true(job, "SuccessCriteriaMet"):
            outcome = "succeed"
        elif _condition_true(job, "FailureTarget") or phase == "Failed":
            outcome = "fail"
        if outcome == "hold":
            return
        if pod is not None and phase == "Running":
            # The containers end (exit 0, or 1 for a failing Job) before the Job controller sees
            # it — a build's with the termination messages its steps write (digest, commit).
            await self._end_pod(job, pod, pod_path, succeeded=outcome == "succeed")
        elif pod is None and _is_build(job):
            # A build Job from before this simulator ran: its Pod, finished, as the kubelet reports it.
            await self._finished_build_pod(job, outcome)
        for patch in job_finish_patches(self.server_version, job, outcome == "succeed", _now()):
            await self._patch_status(path, {"status": patch})
        logger.info("simulator: job finished", extra={"object": _ref(job), "outcome": outcome})

    async def _finished_build_pod(self, job: dict[str, Any], outcome: Outcome) -> None:
        """Create the build Job's Pod as the Job controller would, then finish it as a kubelet
        would: every container terminated, with its termination message."""
        meta = _meta(job)
        ns, template = meta["namespace"], (job.get("spec") or {}).get("template") or {}
        uid = meta.get("uid", "")
        pod_spec = dict(template.get("spec") or {}, nodeName="simulated-node")
        name = f"{meta['name']}-{hashlib.sha256(uid.encode()).hexdigest()[:5]}"
        labels = {**((template.get("metadata") or {}).get("labels") or {}),
                  "controller-uid": uid, "job-name": meta["name"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "annotations": (template.get("metadata") or {}).get("annotations") or {},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
               "spec": pod_spec}
        pods = f"/api/v1/namespaces/{ns}/pods"
        try:
            await self._request("POST", pods, body=pod)
        except ApiException as e:
            if e.status != 409:
                raise
        now = _now()
        ok = outcome == "succeed"

        def terminated(c: dict[str, Any], exit_code: int) -> dict[str, Any]:
            term: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                    "startedAt": now, "finishedAt": now,
                                    "containerID": f"simulator://{uid}/{c['name']}"}
            message = _termination_message(job, c) if exit_code == 0 else None
            if message:
                term["message"] = message
            return {"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                    "imageID": "", "containerID": term["containerID"], "state": {"terminated": term}}

        status = {
            "phase": "Succeeded" if ok else "Failed",
            "conditions": [_cond([], "Initialized", "True"), _cond([], "PodScheduled", "True"),
                           _cond([], "Ready", "False", "PodCompleted" if ok else "ContainersNotReady"),
                           _cond([], "ContainersReady", "False", "PodCompleted" if ok else "ContainersNotReady")],
            "initContainerStatuses": [terminated(c, 0) for c in pod_spec.get("initContainers") or []],
            "containerStatuses": [terminated(c, 0 if ok else 1) for c in pod_spec.get("containers") or []],
            "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            **({"hostIPs": [{"ip": "127.0.0.1"}]} if self.server_version >= POD_HOST_IPS_SINCE else {}),
            "startTime": now, "qosClass": "BestEffort",
        }
        await self._patch_status(f"{pods}/{name}", {"status": status})
        logger.info("simulator: build pod finished", extra={"object": f"{ns}/{name}", "outcome": outcome})

    # ------------------------------------------------------------------------------- Deployments
    def _deployment_status(self, d: dict[str, Any], outcome: Outcome, rollout: _Rollout | None = None
                           ) -> dict[str, Any]:
        """The status kube-controller-manager's Deployment controller writes (``calculateStatus``
        and the Progressing/Available conditions of ``pkg/controller/deployment``): counts over
        every ReplicaSet's Pods (``replicas``), the current template's (``updatedReplicas``),
        ``Available`` from ``replicas - maxUnavailable``, and ``Progressing`` True while the
        rollout moves (``ReplicaSetUpdated``), True/``NewReplicaSetAvailable`` once complete,
        False/``ProgressDeadlineExceeded`` after ``spec.progressDeadlineSeconds`` without
        progress. Outcome ``hold`` keeps the Pods unready; ``fail`` also exceeds the deadline."""
        meta, spec, status = _meta(d), d.get("spec") or {}, d.get("status") or {}
        replicas = spec.get("replicas")
        replicas = 1 if replicas is None else int(replicas)
        r = rollout or _Rollout(f"{meta['name']}-{self._template_hash(d)}", replicas, replicas, 0, 0, False)
        new_ready = r.new_ready if outcome == "succeed" else 0
        old_ready = r.old_ready if outcome == "succeed" else 0
        total, available = r.new + r.old, new_ready + old_ready
        _, max_unavailable = _rolling_limits(d, replicas)
        old = status.get("conditions") or []
        rs = f'ReplicaSet "{r.rs_name}"'
        complete = r.new >= replicas and r.old == 0 and new_ready >= replicas
        if complete:
            progressing = _cond(old, "Progressing", "True", "NewReplicaSetAvailable", f"{rs} has successfully progressed.",
                                update=True)
        elif outcome == "fail" or r.deadline_exceeded:
            progressing = _cond(old, "Progressing", "False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.",
                                update=True)
        else:
            progressing = _cond(old, "Progressing", "True", "ReplicaSetUpdated", f"{rs} is progressing.", update=True)
        if available >= replicas - max_unavailable:
            avail = _cond(old, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                          update=True)
        else:
            avail = _cond(old, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", update=True)
        return {
            "observedGeneration": meta.get("generation"),
            "replicas": total,
            "updatedReplicas": r.new,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
            "conditions": [avail, progressing],
        }

    @staticmethod
    def _deployment_matches(status: dict[str, Any], want: dict[str, Any]) -> bool:
        def key(s: dict[str, Any]) -> tuple[Any, ...]:
            return (
                s.get("observedGeneration"),
                *(int(s.get(f) or 0) for f in ("replicas", "updatedReplicas", "readyReplicas",
                                               "availableReplicas", "unavailableReplicas")),
                sorted((c.get("type"), c.get("status"), c.get("reason")) for c in s.get("conditions") or []),
            )

        return key(status) == key(want)

    @staticmethod
    def _template_hash(d: dict[str, Any]) -> str:
        template = (d.get("spec") or {}).get("template") or {}
        return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]

    async def _sync_replica_set(self, d: dict[str, Any]) -> _Rollout:
        """The Deployment controller's part: a ReplicaSet for the current template, and its
        strategy. ``Recreate``: older templates' Pods go, then the new ones come. ``RollingUpdate``
        (the default): the new ReplicaSet grows by at most ``maxSurge`` above the wanted count,
        and an older template's Pod goes only while ``maxUnavailable`` allows — with one
        replica and the 25 % defaults, the old Pod serves until the new one is ready, however
        long that takes (a new image that cannot be pulled: forever)."""
        meta, spec = _meta(d), d.get("spec") or {}
        ns, h = meta["namespace"], self._template_hash(d)
        replicas = 1 if spec.get("replicas") is None else int(spec["replicas"])
        template = spec.get("template") or {}
        labels = {**(_meta(template).get("labels") or {}), "pod-template-hash": h}
        rs_name = f"{meta['name']}-{h}"
        rs_path = f"/apis/apps/v1/namespaces/{ns}/replicasets/{rs_name}"
        rs = await self._get_or_none(rs_path)
        if rs is None or _meta(rs).get("deletionTimestamp"):
            selector = dict((spec.get("selector") or {}).get("matchLabels") or {}) | {"pod-template-hash": h}
            body = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                "name": rs_name, "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                     "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]},
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                         "template": {**template, "metadata": {**_meta(template), "labels": labels}}}}
            try:
                rs = await self._request("POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", body=body)
            except ApiException as e:
                if e.status != 409:
                    raise
                rs = await self._request("GET", rs_path)
        rs_uid = _meta(rs).get("uid", "")
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": rs_uid,
                 "controller": True, "blockOwnerDeletion": True}
        wanted = sorted(f"{rs_name}-{hashlib.sha256(f'{rs_uid}/{i}'.encode()).hexdigest()[:5]}"
                        for i in range(replicas))
        owned = {_meta(r).get("uid") for r in (await self._request(
            "GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")).get("items") or []
            if any(o.get("uid") == meta.get("uid") for o in _meta(r).get("ownerReferences") or [])}
        pods = (await self._request("GET", f"/api/v1/namespaces/{ns}/pods")).get("items") or []
        new: dict[str, bool] = {}
        old: list[tuple[str, bool]] = []
        for pod in pods:
            pmeta = _meta(pod)
            rs_uids = {r.get("uid") for r in pmeta.get("ownerReferences") or [] if r.get("kind") == "ReplicaSet"}
            if not rs_uids & (owned | {rs_uid}) or pmeta.get("deletionTimestamp"):
                continue
            ready = _condition_true(pod, "Ready")
            if rs_uid in rs_uids and pmeta["name"] in wanted:
                new[pmeta["name"]] = ready
            else:  # an older template's, or scaled down
                old.append((pmeta["name"], ready))
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            keep_old: list[tuple[str, bool]] = []
            new_target = replicas
        else:
            max_surge, max_unavailable = _rolling_limits(d, replicas)
            new_ready = sum(new.values())
            # Not-ready old Pods go first; ready ones only as far as availability allows.
            old.sort(key=lambda o: not o[1])
            allowed = max(replicas - max_unavailable - new_ready, 0)
            keep_old = [o for o in old if o[1]][:allowed]
            new_target = min(replicas, replicas + max_surge - len(keep_old))
        for name, _ in old:
            if (name, _) not in keep_old:
                await self._delete(f"/api/v1/namespaces/{ns}/pods/{name}")
        for name in wanted[:new_target]:
            if name not in new:
                await self._create_pod(ns, name, template, labels, owner)
                new[name] = False
        rollout = _Rollout(rs_name, len(new), sum(new.values()), len(keep_old), sum(r for _, r in keep_old), False)
        rollout.deadline_exceeded = self._past_deadline(d, rollout)
        return rollout

    def _past_deadline(self, d: dict[str, Any], r: _Rollout) -> bool:
        """No progress (a change in the rollout's counts) for ``spec.progressDeadlineSeconds``
        (the API server defaults it to 600); wakes the Deployment up when the deadline comes."""
        meta, spec = _meta(d), d.get("spec") or {}
        replicas = 1 if spec.get("replicas") is None else int(spec["replicas"])
        uid = meta.get("uid", "")
        if r.new >= replicas and r.old == 0 and r.new_ready >= replicas:
            self._progress.pop(uid, None)
            return False
        state = (meta.get("generation"), r.rs_name, r.new, r.new_ready, r.old, r.old_ready)
        now = asyncio.get_running_loop().time()
        seen = self._progress.get(uid)
        if seen is None or seen[0] != state:
            seen = self._progress[uid] = (state, now)
        deadline = float(spec.get("progressDeadlineSeconds") or 600)
        remaining = seen[1] + deadline - now
        if remaining > 0:
            path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"
            # One wake-up per progress state (a wake-up already running cannot re-arm its own key).
            self._schedule(f"deployment-deadline@{seen[1]}", d, path, remaining + 0.05, self._update_deployment)
            return False
        return True

    async def _on_deployment(self, d: dict[str, Any]) -> None:
        meta = _meta(d)
        if meta.get("deletionTimestamp"):
            return
        path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"
        rollout = await self._sync_replica_set(d)
        want = self._deployment_status(d, self._outcome(d, self.deployment_outcome), rollout)
        if not self._deployment_matches(d.get("status") or {}, want):
            self._schedule("deployment", d, path, self.deployment_delay, self._update_deployment)

    async def _update_deployment(self, d: dict[str, Any], path: str) -> None:
        outcome = self._outcome(d, self.deployment_outcome)
        want = self._deployment_status(d, outcome, await self._sync_replica_set(d))
        if self._deployment_matches(d.get("status") or {}, want):
            return
        await self._patch_status(path, {"status": want})
        logger.info("simulator: deployment updated",
                    extra={"object": _ref(d), "outcome": outcome, "generation": want["observedGeneration"]})

    # -------------------------------------------------------------------------------------- Pods
    async def _on_pod(self, pod: dict[str, Any]) -> None:
        meta, spec = _meta(pod), pod.get("spec") or {}
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self._seen_pods[path] = pod
        if meta.get("deletionTimestamp"):
            # Bound pods wait for their kubelet to confirm deletion; be that kubelet.
            if spec.get("nodeName"):
                await self._delete(path, grace_period=0)
            return
        phase = (pod.get("status") or {}).get("phase")
        outcome = self._outcome(pod, self.pod_outcome)
        if outcome == "hold" or phase in ("Succeeded", "Failed"):
            return
        if outcome == "succeed" and phase == "Running" and _condition_true(pod, "Ready") \
                and self._fault_name(pod) is None:
            return
        self._schedule("pod", pod, path, self.pod_delay, self._run_pod)

    def _fault_name(self, pod: dict[str, Any]) -> str | None:
        ann = (_meta(pod).get("annotations") or {}).get(FAULT_ANNOTATION)
        name = ann if ann is not None else (self.pod_fault(pod) if self.pod_fault is not None else None)
        if name is not None and name not in POD_FAULTS:
            logger.warning("simulator: ignoring unknown pod fault", extra={"fault": name, "object": _ref(pod)})
            return None
        return name

    async def _missing_reference(self, pod: dict[str, Any], container: dict[str, Any]) -> str | None:
        """The kubelet's check before creating a container: every Secret/ConfigMap (key) its env
        names must exist, unless marked optional. The message is the kubelet's."""
        ns = _meta(pod)["namespace"]
        refs: list[tuple[str, str, str | None, bool]] = []
        for env in container.get("env") or []:
            src = env.get("valueFrom") or {}
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = src.get(field)
                if ref:
                    refs.append((kind, ref.get("name", ""), ref.get("key"), bool(ref.get("optional"))))
        for env_from in container.get("envFrom") or []:
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                ref = env_from.get(field)
                if ref:
                    refs.append((kind, ref.get("name", ""), None, bool(ref.get("optional"))))
        for kind, name, key, optional in refs:
            if optional:
                continue
            plural = "secrets" if kind == "Secret" else "configmaps"
            obj = await self._get_or_none(f"/api/v1/namespaces/{ns}/{plural}/{name}")
            if obj is None:
                return f'{kind.lower()} "{name}" not found'
            if key is not None and key not in (obj.get("data") or {}) and key not in (obj.get("binaryData") or {}):
                return f"couldn't find key {key} in {kind} {ns}/{name}"
        return None

    async def _kubelet_status(self, pod: dict[str, Any], outcome: Outcome) -> tuple[dict[str, Any], bool]:
        """The status a kubelet (and scheduler) would report now, and whether it keeps retrying."""
        meta, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
        now, uid = _now(), meta.get("uid", "")
        old = status.get("conditions") or []
        containers = spec.get("containers") or []
        base = {"qosClass": status.get("qosClass") or "BestEffort"}
        fault = self._fault_name(pod) if outcome == "succeed" else None
        if fault == "Unschedulable":
            wants_gpu = any("nvidia.com/gpu" in ((c.get("resources") or {}).get("limits") or {}) for c in containers)
            message = f"0/1 nodes are available: 1 Insufficient {'nvidia.com/gpu' if wants_gpu else 'cpu'}."
            return {**base, "phase": "Pending", "conditions": [
                _cond(old, "PodScheduled", "False", "Unschedulable", message, probe=True)]}, True
        never = spec.get("restartPolicy") == "Never"
        waiting: dict[str, tuple[str, str]] = {}
        last: dict[str, dict[str, Any]] = {}
        failed: dict[str, dict[str, Any]] = {}
        for i, c in enumerate(containers):
            cid = f"simulator://{uid}/{c['name']}"
            if outcome == "fail":
                failed[c["name"]] = {"exitCode": 1, "reason": "Error", "containerID": cid}
                continue
            missing = await self._missing_reference(pod, c)
            if missing is not None:
                waiting[c["name"]] = ("CreateContainerConfigError", missing)
                continue
            if i > 0 or fault is None:
                continue  # a named fault is played by the first container
            image = c.get("image", "")
            if fault == "ImagePullBackOff":
                waiting[c["name"]] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            elif fault == "ErrImagePull":
                waiting[c["name"]] = ("ErrImagePull", f'rpc error: code = NotFound desc = failed to pull and unpack '
                                                      f'image "{image}": not found')
            elif fault == "CreateContainerConfigError":
                waiting[c["name"]] = ("CreateContainerConfigError", 'secret "simulated" not found')
            elif fault in ("CrashLoopBackOff", "OOMKilled"):
                term = {"exitCode": 137, "reason": "OOMKilled"} if fault == "OOMKilled" else \
                    {"exitCode": 1, "reason": "Error"}
                term |= {"startedAt": now, "finishedAt": now, "containerID": cid}
                if never:
                    failed[c["name"]] = term
                else:
                    last[c["name"]] = term
                    waiting[c["name"]] = ("CrashLoopBackOff", f"back-off 10s restarting failed container={c['name']} "
                                                              f"pod={meta['name']}_{meta['namespace']}({uid})")
        statuses = []
        for c in containers:
            name = c["name"]
            cs: dict[str, Any] = {"name": name, "ready": False, "started": False, "restartCount": 0,
                                  "image": c.get("image", ""), "imageID": ""}
            if name in failed:
                cs["state"] = {"terminated": {"startedAt": now, "finishedAt": now, **failed[name]}}
                cs["containerID"] = failed[name]["containerID"]
            elif name in waiting:
                reason, message = waiting[name]
                cs["state"] = {"waiting": {"reason": reason, "message": message}}
                if name in last:
                    cs["lastState"] = {"terminated": last[name]}
                    cs["restartCount"] = 1
                    cs["containerID"] = last[name]["containerID"]
            else:
                cs |= {"ready": True, "started": True, "state": {"running": {"startedAt": now}},
                       "containerID": f"simulator://{uid}/{name}"}
            statuses.append(cs)
        init = [{"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""), "imageID": "",
                 "containerID": f"simulator://{uid}/{c['name']}",
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                                          "containerID": f"simulator://{uid}/{c['name']}"}}}
                for c in spec.get("initContainers") or []]
        ok = not failed and not waiting
        phase = "Failed" if failed else ("Running" if ok or last else "Pending")
        unready = [c["name"] for c in statuses if not c["ready"]]
        not_ready = f"containers with unready status: [{' '.join(unready)}]"
        patch = {
            **base,
            "phase": phase,
            "conditions": [
                _cond(old, "Initialized", "True"),
                _cond(old, "Ready", "True" if ok else "False", None if ok else "ContainersNotReady",
                      None if ok else not_ready),
                _cond(old, "ContainersReady", "True" if ok else "False", None if ok else "ContainersNotReady",
                      None if ok else not_ready),
                _cond(old, "PodScheduled", "True"),
            ],
            "containerStatuses": statuses,
            "hostIP": "127.0.0.1",
            **({"hostIPs": [{"ip": "127.0.0.1"}]} if self.server_version >= POD_HOST_IPS_SINCE else {}),
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": status.get("startTime") or now,
        }
        if init:
            patch["initContainerStatuses"] = init
        return patch, bool(waiting) and not failed

    @staticmethod
    def _pod_matches(status: dict[str, Any], want: dict[str, Any]) -> bool:
        """Same state, ignoring timestamps (a kubelet reports only changes)."""
        def key(s: dict[str, Any]) -> tuple[Any, ...]:
            def cstate(c: dict[str, Any]) -> tuple[Any, ...]:
                state = c.get("state") or {}
                kind = next(iter(state), None)
                detail = state.get(kind) or {} if kind else {}
                return (c.get("name"), c.get("ready"), c.get("restartCount"), kind, detail.get("reason"),
                        detail.get("message"), detail.get("exitCode"))

            return (s.get("phase"),
                    sorted((c.get("type"), c.get("status"), c.get("reason") or "") for c in s.get("conditions") or []),
                    [cstate(c) for c in s.get("containerStatuses") or []])

        return key(status) == key(want)

    async def _run_pod(self, pod: dict[str, Any], path: str) -> None:
        """Be the Pod's kubelet: report its state; while it cannot start, retry every ``pod_retry``
        seconds (a Secret created meanwhile, or a fault lifted, lets it start)."""
        uid = _meta(pod).get("uid")
        while True:
            outcome = self._outcome(pod, self.pod_outcome)
            status = pod.get("status") or {}
            if outcome == "hold" or status.get("phase") in ("Succeeded", "Failed") or _meta(pod).get("deletionTimestamp"):
                return
            want, retry = await self._kubelet_status(pod, outcome)
            if not self._pod_matches(status, want):
                if want.get("containerStatuses") is None:
                    want["containerStatuses"] = None  # an unscheduled Pod has none
                await self._patch_status(path, {"status": want})
                logger.info("simulator: pod updated",
                            extra={"object": _ref(pod), "outcome": outcome, "phase": want["phase"]})
                await self._poke_deployment(pod)
            if not retry:
                return
            await asyncio.sleep(self.pod_retry)
            fresh = await self._get_or_none(path)
            if fresh is None or _meta(fresh).get("uid") != uid:
                return
            pod = fresh

    async def _end_pod(self, job: dict[str, Any], pod: dict[str, Any], path: str, *, succeeded: bool) -> None:
        """A Job's containers exit: the Pod ends Succeeded (exit 0) or Failed (exit 1), each
        container ``terminated`` with the message it wrote to its termination-message path (a
        build's digest and commit, see :func:`_termination_message`)."""
        status, spec = pod.get("status") or {}, pod.get("spec") or {}
        now, uid = _now(), _meta(pod).get("uid", "")

        def ended(cs: dict[str, Any], c: dict[str, Any], exit_code: int) -> dict[str, Any]:
            cid = cs.get("containerID") or f"simulator://{uid}/{cs.get('name')}"
            state = cs.get("state") or {}
            if "terminated" in state and exit_code == 0:
                term = dict(state["terminated"])  # an init step that already completed
            else:
                term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": (state.get("running") or {}).get("startedAt") or now,
                        "finishedAt": now, "containerID": cid}
            message = _termination_message(job, c) if exit_code == 0 else None
            if message:
                term["message"] = message
            return {**cs, "ready": False, "started": False, "state": {"terminated": term}}

        specs = {c["name"]: c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}
        old = status.get("conditions") or []
        reason = "PodCompleted" if succeeded else "ContainersNotReady"
        patch: dict[str, Any] = {
            "phase": "Succeeded" if succeeded else "Failed",
            "conditions": [_cond(old, "Initialized", "True", "PodCompleted" if succeeded else None),
                           _cond(old, "Ready", "False", reason), _cond(old, "ContainersReady", "False", reason),
                           _cond(old, "PodScheduled", "True")],
            "containerStatuses": [ended(cs, specs.get(cs.get("name"), {}), 0 if succeeded else 1)
                                  for cs in status.get("containerStatuses") or []]}
        if status.get("initContainerStatuses"):
            patch["initContainerStatuses"] = [ended(cs, specs.get(cs.get("name"), {}), 0)
                                              for cs in status["initContainerStatuses"]]
        await self._patch_status(path, {"status": patch})

    async def _poke_deployment(self, pod: dict[str, Any]) -> None:
        """A Pod of a ReplicaSet changed: its Deployment's availability may have (what the
        Deployment controller learns from its ReplicaSet informer)."""
        ns = _meta(pod)["namespace"]
        for ref in _meta(pod).get("ownerReferences") or []:
            if ref.get("kind") != "ReplicaSet":
                continue
            rs = await self._get_or_none(f"/apis/apps/v1/namespaces/{ns}/replicasets/{ref.get('name')}")
            for owner in _meta(rs or {}).get("ownerReferences") or []:
                if owner.get("kind") == "Deployment":
                    d = await self._get_or_none(f"/apis/apps/v1/namespaces/{ns}/deployments/{owner.get('name')}")
                    if d is not None:
                        await self._on_deployment(d)

    # ---------------------------------------------------------------------------------------- GC
    async def _gc_loop(self) -> None:
        while self._running:
            try:
                await self.gc_once()
            except asyncio.CancelledError:
                raise
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as e:
                logger.warning("simulator: gc pass failed", extra={"error": f"{type(e).__name__}: {e}"})
            except Exception:
                logger.exception("simulator: gc pass failed")
            await asyncio.sleep(self.gc_interval)

    async def _resolve(self, api_version: str, kind: str) -> tuple[str, bool] | None:
        """(plural, namespaced) for a kind through API discovery, re-fetched once on a miss."""
        for refresh in (False, True):
            if refresh or api_version not in self._discovery:
                prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
                try:
                    doc = await self._request("GET", prefix)
                except ApiException as e:
                    if e.status == 404:
                        return None
                    raise
                self._discovery[api_version] = {
                    r["kind"]: (r["name"], bool(r.get("namespaced")))
                    for r in doc.get("resources") or [] if "/" not in r["name"]
                }
            found = self._discovery[api_version].get(kind)
            if found:
                return found
        return None

    async def _owner_state(self, ref: dict[str, Any], ns: str, cache: dict[Any, Any]) -> str:
        """``present`` | ``absent`` | ``foreground`` | ``orphan`` | ``unknown`` (can't tell: keep)."""
        key = (ref.get("apiVersion", ""), ref.get("kind", ""), ns, ref.get("name", ""))
        if key not in cache:
            # One LIST per owner kind and namespace per pass, not a GET per dependent: hundreds of
            # Jobs and their Pods would otherwise cost hundreds of requests every pass.
            coll_key = ("list", key[0], key[1], ns)
            if coll_key not in cache:
                try:
                    resolved = await self._resolve(key[0], key[1])
                except ApiException:
                    resolved = None
                if resolved is None:
                    cache[coll_key] = None
                else:
                    plural, namespaced = resolved
                    prefix = "/api/v1" if key[0] == "v1" else f"/apis/{key[0]}"
                    list_path = f"{prefix}{f'/namespaces/{ns}' if namespaced else ''}/{plural}"
                    try:
                        items = (await self._request("GET", list_path)).get("items") or []
                        cache[coll_key] = ({_meta(i).get("name"): i for i in items}, list_path)
                    except ApiException:
                        cache[coll_key] = None
            coll = cache[coll_key]
            cache[key] = None if coll is None else (coll[0].get(key[3], {}), f"{coll[1]}/{key[3]}")
        if cache[key] is None:
            return "unknown"
        owner, path = cache[key]
        meta = _meta(owner)
        if not owner or meta.get("uid") != ref.get("uid"):
            return "absent"
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            for fin, state in (("foregroundDeletion", "foreground"), ("orphan", "orphan")):
                if fin in finalizers:
                    self._finalizing_owners[meta["uid"]] = (path, fin)
                    return state
        return "present"

    async def _remove_finalizer(self, path: str, uid: str, finalizer: str) -> None:
        try:
            owner = await self._request("GET", path)
        except ApiException:
            return
        meta = _meta(owner)
        if meta.get("uid") != uid or finalizer not in (meta.get("finalizers") or []):
            return
        rest = [f for f in meta["finalizers"] if f != finalizer]
        with contextlib.suppress(ApiException):
            await self._request("PATCH", path, body={"metadata": {"finalizers": rest or None,
                                                                  "resourceVersion": meta["resourceVersion"]}},
                                content_type=_MERGE)
            logger.info("gc: removed finalizer", extra={"finalizer": finalizer, "owner": path})

    # ----------------------------------------------------------------------------------- HTTP
    def _path(self, prefix: str, plural: str) -> str:
        return f"{prefix}/namespaces/{self.namespace}/{plural}" if self.namespace else f"{prefix}/{plural}"

    @staticmethod
    def _item_path(res: GCResource, ns: str) -> str:
        return f"{res.api_prefix}/namespaces/{ns}/{res.plural}"

    async def _request(self, method: str, path: str, body: Any = None, content_type: str | None = None,
                       query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """A raw API call returning the JSON body as a dict (raises ApiException on errors)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        result = await self.api.call_api(
            path, method, query_params=query or [], header_params=headers, body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True, _request_timeout=30,
        )
        return result if isinstance(result, dict) else {}

    async def _patch_status(self, path: str, body: dict[str, Any]) -> None:
        await self._request("PATCH", f"{path}/status", body=body, content_type=_MERGE)

    async def _delete(self, path: str, grace_period: int | None = None) -> bool:
        opts: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if grace_period is not None:
            opts["gracePeriodSeconds"] = grace_period
        try:
            await self._request("DELETE", path, body=opts)
            return True
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise
