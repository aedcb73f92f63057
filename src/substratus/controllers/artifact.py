"""Dataset and Model: run a container once to put artifacts in the bucket (SPEC §1-§4).

The bucket is the source of truth: ``{status.url}/completed.json`` existing means complete,
whatever the cluster remembers — so re-applying an object into a new cluster restores it
without running anything, and nothing here ever deletes bucket data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any, ClassVar

from substratus import naming
from substratus.api import COMPLETE, AnyKind, Model, Reason, format_time, from_dict, to_dict
from substratus.api.base import ArtifactStatus
from substratus.cloud.base import CloudError, Mount
from substratus.controllers import render
from substratus.controllers.base import InvalidSpec, KindReconciler
from substratus.controllers.build import Builder
from substratus.controllers.dependencies import (
    dependency_mounts,
    forbidden_references,
    ref_key,
    unready_dependencies,
)
from substratus.controllers.jobs import job_state
from substratus.controllers.resources import DATASETS, MODELS
from substratus.controllers.status import StatusUpdate
from substratus.runtime.events import NORMAL
from substratus.runtime.reconcile import Result
from substratus.runtime.resource import CONFIGMAPS, JOBS

log = logging.getLogger(__name__)

MAX_CYCLE_DEPTH = 64
SPEC_CHANGED_AFTER_COMPLETION = "SpecChangedAfterCompletion"
"""Event reason: the spec changed after the artifacts were completed (SPEC §3)."""


def workload_spec_hash(obj: AnyKind) -> str:
    """16 hex of sha256 over what shapes the artifacts: the whole spec except the upload's
    ``requestID`` (which only asks for a fresh upload URL). Recorded in ``completed.json``."""
    spec = to_dict(obj.spec)
    upload = (spec.get("image") or {}).get("upload")
    if isinstance(upload, dict):
        upload.pop("requestID", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def outdated_message(obj: AnyKind, marker: dict[str, Any]) -> str | None:
    """What to tell the user when the spec changed after completion (SPEC §3), or None.

    Compared by the recorded spec hash, not generations: a re-applied object starts at
    generation 1 whatever generation produced its artifacts. A marker without a hash (older
    versions) cannot tell, and says nothing.
    """
    recorded = marker.get("specHash")
    if not isinstance(recorded, str) or recorded == workload_spec_hash(obj):
        return None
    generation = marker.get("generation")
    produced = f"generation {generation}" if generation is not None else "an earlier spec"
    where = f" of {marker['object']}" if isinstance(marker.get("object"), str) else ""
    return (f"they were produced by {produced}{where} (completed.json) and the spec has changed since "
            f"(now generation {obj.metadata.generation}); finished artifacts are never redone silently: "
            f"to produce new ones create an object with a new name, or run "
            f"`substratus rerun {obj.KIND.lower()}/{obj.metadata.name}`")


def human_size(n: int) -> str:
    """Binary units like ``27Gi`` (seed 000's diskSize), rounded up so nothing looks empty."""
    units = ["", "Ki", "Mi", "Gi", "Ti", "Pi"]
    i = 0
    value = float(n)
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    if i == 0:
        return str(n)
    return f"{int(value) if value.is_integer() else int(value) + 1}{units[i]}"


class ArtifactReconciler(KindReconciler):
    ready_condition: ClassVar[str] = COMPLETE
    artifact_dir: ClassVar[str]

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.builder = Builder(self)

    async def sync(self, obj: AnyKind, raw: dict[str, Any], update: StatusUpdate) -> Result:
        ns = obj.metadata.namespace or ""
        url = self.storage_url(obj)
        obj.status.url = url
        cloud = self.ctx.cloud
        job_name = self.child_name(obj)

        # The bucket decides completion before anything runs — no build Job, no workload Job.
        marker = await self._read_marker(url)
        if marker is not None:
            await self.builder.restored(obj, url, update, marker)
            previous = next((c for c in obj.status.conditions if c.type == COMPLETE), None)
            ran_here = (previous is not None and previous.reason == Reason.JOB_SUCCEEDED) \
                or self._own_job_succeeded(obj, job_name)
            reason = Reason.JOB_SUCCEEDED if ran_here else Reason.FOUND_IN_STORAGE
            artifacts = await self._stored_artifacts_url(obj, url, marker)
            message = f"artifacts at {artifacts}"
            outdated = outdated_message(obj, marker)
            if outdated:
                message = f"{message}; {outdated}"
            update.set(COMPLETE, True, reason, message)
            if outdated and (previous is None or previous.message != message):
                self.ctx.recorder.event(raw, NORMAL, SPEC_CHANGED_AFTER_COMPLETION, message)
                log.info("spec changed after completion", extra={"generation": obj.metadata.generation,
                                                                 "marker_generation": marker.get("generation")})
            await self._describe_artifacts(obj, artifacts)
            return Result()

        image = await self.builder.resolve(obj, raw, url, update)
        if image.image is None or not image.current:
            update.set(COMPLETE, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for the image to be built")
            return image.result

        denied = forbidden_references(self.ctx.cache, obj)
        if denied:
            # Mount nothing: a Job already running with the mounts (the annotation was removed)
            # is stopped; a new spec or the annotation brings it back.
            await self.ctx.applier.delete(JOBS, job_name, ns)
            update.set(COMPLETE, False, Reason.REFERENCE_NOT_PERMITTED, "; ".join(denied))
            return image.result

        waiting = unready_dependencies(self.ctx.cache, obj, "to be complete")
        if waiting:
            update.set(COMPLETE, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for " + "; ".join(waiting))
            return Result()

        mounts = self.mounts(obj, url)
        sa = await self.service_account(ns)
        desired = render.job(obj, name=job_name, image=image.image, mounts=mounts, cloud=cloud,
                             options=self.ctx.render, role_label="workload", service_account=sa,
                             run=obj.metadata.annotations.get(naming.RERUN_ANNOTATION))
        # Independent writes, in flight together: the Job's Pod waits for the ConfigMap it mounts.
        _, (job, _) = await self.ctx.applier.ensure_all(
            (CONFIGMAPS, render.params_configmap(obj), False), (JOBS, desired, True))
        state, message = job_state(job)
        problem = self.pod_problem(obj, render.WORKLOAD_ROLE, job) if job is not None and state != "succeeded" \
            else None
        if state == "succeeded":
            if await self._write_completed(obj, url, job_name, image.image, job):
                # completed.json now exists, so the next pass would take the stored-artifacts
                # branch above (and word Built differently): take it now, so that this pass's
                # status is the final one. Nothing wakes us for our own status write's echo
                # (runtime/ownwrites.py), so a pass must reach its fixed point by itself.
                return await self.sync(obj, raw, update)
            artifacts = await self._stored_artifacts_url(obj, url)
            update.set(COMPLETE, True, Reason.JOB_SUCCEEDED, f"artifacts at {artifacts}")
            await self._describe_artifacts(obj, artifacts)
        elif state == "failed":
            detail = f"{message}; {problem}" if problem else message
            update.set(COMPLETE, False, Reason.JOB_FAILED,
                       f"Job {job_name} failed ({detail}); see `kubectl logs job/{job_name}`; "
                       "change the spec to retry")
        elif problem is not None:
            update.set(COMPLETE, False, Reason.POD_FAILING,
                       f"Job {job_name} cannot run: {problem}; see `kubectl describe pod {problem.pod}`")
        else:
            update.set(COMPLETE, False, Reason.JOB_RUNNING, f"Job {job_name} is running")
        return Result()

    async def _read_marker(self, url: str) -> dict[str, Any] | None:
        """``completed.json`` as a dict; None if absent. An unreadable or garbled marker still
        means complete (it exists, and the bucket is the source of truth) — as ``{}``."""
        marker_url = naming.completed_marker_url(url)
        try:
            data = await self.ctx.cloud.read(marker_url)
        except FileNotFoundError:
            return None
        try:
            body = json.loads(data)
        except ValueError:
            log.warning("completion marker is not JSON", extra={"url": marker_url})
            return {}
        return body if isinstance(body, dict) else {}

    # --- pieces -------------------------------------------------------------------------------

    def mounts(self, obj: AnyKind, url: str) -> list[Mount]:
        return [render.output_mount(naming.artifacts_url(url, obj.KIND))]

    def _own_job_succeeded(self, obj: AnyKind, job_name: str) -> bool:
        """This object's own workload Job (owned by its uid) succeeded: the marker is ours, even
        if the status write that said ``JobSucceeded`` was lost (e.g. the API server went away
        between writing the marker and patching the status)."""
        job = self.ctx.cache.get(JOBS, job_name, obj.metadata.namespace or "")
        if job is None or job_state(job)[0] != "succeeded":
            return False
        refs = (job.get("metadata") or {}).get("ownerReferences") or []
        return any(r.get("controller") and r.get("uid") == obj.metadata.uid for r in refs)

    async def _write_completed(self, obj: AnyKind, url: str, job_name: str, image: str,
                               job: dict[str, Any] | None) -> bool:
        """Write ``completed.json`` unless it exists; True if this call wrote it."""
        marker = naming.completed_marker_url(url)
        if await self.ctx.cloud.exists(marker):
            return False
        completion = ((job or {}).get("status") or {}).get("completionTime") or format_time(dt.datetime.now(dt.UTC))
        body: dict[str, Any] = {"job": job_name, "image": image, "generation": obj.metadata.generation,
                                "specHash": workload_spec_hash(obj), "completionTime": completion,
                                "kind": obj.KIND, "object": f"{obj.metadata.namespace}/{obj.metadata.name}"}
        if obj.status.build is not None:
            body["build"] = to_dict(obj.status.build)
        await self.ctx.cloud.write(marker, (json.dumps(body, indent=2) + "\n").encode())
        log.info("wrote completion marker", extra={"url": marker})
        return True

    async def _stored_artifacts_url(self, obj: AnyKind, url: str, marker: dict[str, Any] | None = None) -> str:
        """Where the completed artifacts are, recorded in ``status.artifactsURL`` for dependents:
        ``{url}/model`` or ``{url}/data``, unless ``completed.json`` names another directory
        under ``url`` (``artifacts`` for the original Substratus' layout, adopted in place by
        ``substratus adopt``; SPEC §9). An unreadable marker means the default."""
        artifacts = naming.artifacts_url(url, obj.KIND)
        if marker is None:
            try:
                marker = json.loads(await self.ctx.cloud.read(naming.completed_marker_url(url)))
            except (OSError, ValueError, CloudError) as exc:
                log.warning("unreadable completion marker", extra={"url": url, "error": str(exc)})
                marker = None
        sub = marker.get("artifacts") if isinstance(marker, dict) else None
        if isinstance(sub, str) and naming.is_plain_segment(sub):
            artifacts = f"{url.rstrip('/')}/{sub}"
        assert isinstance(obj.status, ArtifactStatus)
        obj.status.artifacts_url = artifacts
        return artifacts

    async def _describe_artifacts(self, obj: AnyKind, artifacts: str) -> None:
        """Hook for kinds that report what they stored at ``artifacts`` (Model's files and diskSize)."""


class DatasetReconciler(ArtifactReconciler):
    resource = DATASETS


class ModelReconciler(ArtifactReconciler):
    resource = MODELS

    async def sync(self, obj: AnyKind, raw: dict[str, Any], update: StatusUpdate) -> Result:
        self._check_cycle(obj)
        return await super().sync(obj, raw, update)

    def mounts(self, obj: AnyKind, url: str) -> list[Mount]:
        return super().mounts(obj, url) + dependency_mounts(self.ctx.cache, obj, render.CONTENT_DIR)

    def _check_cycle(self, obj: AnyKind) -> None:
        """baseModel chains must end: a Model that (transitively) trains on itself never could."""
        assert isinstance(obj, Model)
        seen = {ref_key("Model", obj.metadata.namespace or "", obj.metadata.name)}
        current: Model | None = obj
        depth = 0
        while current is not None and current.spec.base_model is not None and depth < MAX_CYCLE_DEPTH:
            ns, name = current.spec.base_model.resolve(current.metadata.namespace or "")
            key = ref_key("Model", ns, name)
            if key in seen:
                raise InvalidSpec(f"spec.baseModel: reference cycle through Model {ns}/{name}; "
                                  "a Model cannot (transitively) train on itself")
            seen.add(key)
            raw = self.ctx.cache.get(MODELS, name, ns)
            if raw is None:
                return
            try:
                nxt = from_dict(raw)
            except ValueError:
                return
            current = nxt if isinstance(nxt, Model) else None
            depth += 1

    async def _describe_artifacts(self, obj: AnyKind, artifacts: str) -> None:
        assert isinstance(obj, Model)
        if obj.status.disk_size is not None and obj.status.files:
            return
        listing = await self.ctx.cloud.list(artifacts)
        obj.status.files = [o.name for o in listing[:100]]
        obj.status.disk_size = human_size(sum(o.size for o in listing))
