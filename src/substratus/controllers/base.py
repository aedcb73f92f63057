"""What every kind's reconciler does around its own logic.

Read the object from the cache → parse and validate (a bad spec becomes ``InvalidSpec`` with a
message naming the field, an Event, no children and no requeue) → let the kind compute its
conditions and children → write status only if it changed → one Event per transition.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any, ClassVar

import attrs

from substratus import naming
from substratus.api import (
    AnyKind,
    Condition,
    Reason,
    StructureError,
    from_dict,
    make_condition,
    set_condition,
    spec_errors,
    structure,
    to_dict,
    validate,
    with_ready,
)
from substratus.cloud.base import Cloud
from substratus.config import DEFAULT_GIT_IMAGE, DEFAULT_KANIKO_IMAGE
from substratus.controllers import metrics as domain_metrics
from substratus.controllers.apply import Applier
from substratus.controllers.build import adopt_legacy_image
from substratus.controllers.pods import PodProblem, pod_problem, pods_of
from substratus.controllers.render import BuildImages, RenderOptions
from substratus.controllers.status import StatusUpdate, now, record_transitions, status_dict, write_status
from substratus.runtime.cache import Cache
from substratus.runtime.client import ApiError, Client, NotLeader
from substratus.runtime.events import EventRecorder
from substratus.runtime.reconcile import Request, Result
from substratus.runtime.resource import SERVICEACCOUNTS, Resource

log = logging.getLogger(__name__)


@attrs.define
class Context:
    """What reconcilers share: API access, the cloud, and operator-wide settings."""

    client: Client
    cache: Cache
    recorder: EventRecorder
    cloud: Cloud
    cluster_name: str
    registry: str
    render: RenderOptions = attrs.field(factory=RenderOptions)
    build_images: BuildImages = attrs.field(factory=lambda: BuildImages(DEFAULT_KANIKO_IMAGE, DEFAULT_GIT_IMAGE))
    upload_url_ttl: int = 3600
    ensured_service_accounts: set[str] = attrs.field(factory=set)

    @property
    def applier(self) -> Applier:
        return Applier(self.client, self.cache)


# A pass that fails this many times in a row reports its error in the status (see _report_error).
REPORT_ERROR_AFTER = 3
MAX_ERROR_TEXT = 1000


def error_text(exc: BaseException) -> str:
    """One line for a user: what was being done (the notes added on the way up, e.g. "applying
    Deployment ns/x") and the error (for API errors: code, reason and the server's message)."""
    notes = [n for n in getattr(exc, "__notes__", None) or [] if isinstance(n, str)]
    detail = str(exc)
    if not isinstance(exc, ApiError):
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = ": ".join([*notes, detail])
    # A status message, not a log: an API server's message can be kilobytes (a whole object).
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 1] + "…"


class InvalidSpec(Exception):
    """Raised by a kind's ``sync`` for problems only visible with the cluster's state (e.g. a
    reference cycle); reported like a schema violation."""


class KindReconciler(abc.ABC):
    resource: ClassVar[Resource]
    ready_condition: ClassVar[str]

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Consecutive failed passes per object (namespace, name); cleared by a pass that ends.
        self._failures: dict[tuple[str | None, str], int] = {}

    async def reconcile(self, request: Request) -> Result:
        raw = self.ctx.cache.get(self.resource, request.name, request.namespace)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            self._failures.pop((request.namespace, request.name), None)
            # Gone or going: owner references let the garbage collector remove the children,
            # and bucket data is never deleted.
            return Result()
        try:
            obj = from_dict(raw)
        except StructureError as exc:
            return await self._invalid(raw, None, spec_errors(exc))
        # Objects from versions that wrote spec.image.name after a build (SPEC §1 migration).
        adopt_legacy_image(obj, self.ctx.registry, self.ctx.cluster_name)
        errors = validate(obj)
        if errors:
            return await self._invalid(raw, obj, errors)
        update = StatusUpdate(obj)
        key = (request.namespace, request.name)
        try:
            result = await self.sync(obj, raw, update)
        except InvalidSpec as exc:
            self._failures.pop(key, None)
            return await self._invalid(raw, obj, [str(exc)])
        except (asyncio.CancelledError, NotLeader):
            # NotLeader: this replica's leadership ended and its write fence refused a write
            # (SPEC §7). That is nothing about the object: not one of its failed passes, and no
            # condition to write (the fence would refuse that too); the new leader carries on.
            raise
        except Exception as exc:
            await self._report_error(raw, obj, update, key, exc)
            raise
        self._failures.pop(key, None)
        obj.status.ready = update.finish(self.ready_condition)
        obj.status.conditions = update.conditions
        await self._finish(raw, obj, update)
        return result

    async def _finish(self, raw: dict[str, Any], obj: AnyKind, update: StatusUpdate) -> None:
        new_status = status_dict(obj)
        if await write_status(self.ctx.client, self.resource, raw, new_status, self.ctx.cache):
            domain_metrics.observe_ready(raw, new_status)
        record_transitions(self.ctx.recorder, raw, update.transitions)

    async def _report_error(self, raw: dict[str, Any], obj: AnyKind, update: StatusUpdate,
                            key: tuple[str | None, str], exc: Exception) -> None:
        """Put a pass's error into the status (``ReconcileError`` on the kind's ready condition,
        and the conditions computed before it), so the status and ``substratus explain`` never
        keep an older, wrong reason while every pass fails.

        Only once the object failed :data:`REPORT_ERROR_AFTER` passes in a row: one failed pass
        is usually a transient fault (a 409, a 429, a dropped connection) the backoff retry
        fixes, and reporting it would flap a Ready object. The message is the error alone (no
        counter), so repeated failures write the status once. Writing it may fail too (the API
        server may be what is failing); that is logged, and the caller re-raises the original
        error so the work queue retries with backoff.
        """
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if failures < REPORT_ERROR_AFTER:
            return
        update.set(self.ready_condition, False, Reason.RECONCILE_ERROR,
                   f"{error_text(exc)}; retrying with backoff")
        obj.status.ready = update.finish(self.ready_condition)
        obj.status.conditions = update.conditions
        try:
            await self._finish(raw, obj, update)
        except Exception as write_error:  # best effort: the pass's own error is what gets raised
            log.warning("could not report the reconcile error in the status", extra={"error": repr(write_error)})

    async def _invalid(self, raw: dict[str, Any], obj: AnyKind | None, errors: list[str]) -> Result:
        message = "; ".join(errors)
        if obj is None:
            # Unparseable: patch the condition onto the raw status without touching anything else.
            conds = [structure(c, Condition) for c in (raw.get("status") or {}).get("conditions") or []
                     if isinstance(c, dict) and c.get("type") and c.get("status")]
            generation = (raw.get("metadata") or {}).get("generation") or 0
            res = set_condition(conds, make_condition(self.ready_condition, False, Reason.INVALID_SPEC, message,
                                                      generation), now())
            summarized = with_ready(res.conditions, self.ready_condition, now(), generation)
            new_status = {**(raw.get("status") or {}), "ready": False,
                          "conditions": [to_dict(c) for c in summarized.conditions]}
            await write_status(self.ctx.client, self.resource, raw, new_status, self.ctx.cache)
            if res.transitioned or (res.previous and res.previous.reason != Reason.INVALID_SPEC):
                record_transitions(self.ctx.recorder, raw, [res.current])
            return Result()
        update = StatusUpdate(obj)
        update.set(self.ready_condition, False, Reason.INVALID_SPEC, message)
        obj.status.ready = update.finish(self.ready_condition)
        obj.status.conditions = update.conditions
        await self._finish(raw, obj, update)
        log.info("invalid spec", extra={"error": message})
        return Result()

    @abc.abstractmethod
    async def sync(self, obj: AnyKind, raw: dict[str, Any], update: StatusUpdate) -> Result:
        """Compute conditions into ``update`` and converge children; may mutate ``obj.status``."""

    # --- helpers for kinds --------------------------------------------------------------------

    def child_name(self, obj: AnyKind, role: naming.Role = naming.WORKLOAD) -> str:
        return naming.child_name(obj.metadata.name, obj.KIND, role)

    def pod_problem(self, obj: AnyKind, role: str, owner: dict[str, Any] | None = None) -> PodProblem | None:
        """Why the Pods of ``obj``'s workload or build (``role``) cannot run, from the cache; with
        ``owner`` (a Job), only that Job's Pods count, not those of a replaced one still around."""
        pods = pods_of(self.ctx.cache, obj.KIND, obj.metadata.namespace or "", obj.metadata.name, role)
        if owner is not None:
            uid = (owner.get("metadata") or {}).get("uid")
            pods = [p for p in pods if any(r.get("uid") == uid for r in
                                           (p.get("metadata") or {}).get("ownerReferences") or [])]
        return pod_problem(pods)

    def storage_url(self, obj: AnyKind) -> str:
        h = naming.storage_hash(self.ctx.cluster_name, obj.metadata.namespace or "", obj.PLURAL, obj.metadata.name)
        return naming.storage_url(self.ctx.cloud.bucket_url, h)

    async def service_account(self, namespace: str) -> str | None:
        """Ensure the cloud's workload ServiceAccount exists in ``namespace``; its name."""
        sa = self.ctx.cloud.workload_service_account(namespace)
        if sa is None:
            return None
        name = sa["metadata"]["name"]
        key = f"{namespace}/{name}"
        if key not in self.ctx.ensured_service_accounts:
            await self.ctx.client.apply(SERVICEACCOUNTS, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                **sa, "metadata": {**sa["metadata"], "namespace": namespace}})
            self.ctx.ensured_service_accounts.add(key)
        return str(name)
