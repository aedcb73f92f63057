"""Image builds for every kind (SPEC §6): from git, or from an uploaded ``.tar.gz``.

``spec.image.name`` set by the user alone → ``ImageProvided``. Otherwise the image to run is
``{registry}/{cluster}-{kind}-{namespace}-{name}:{tag}`` with tag = upload checksum or git
tag/branch; once a build Job (kaniko) has pushed it, the controller writes it into
``spec.image.name`` (seed 000) — and a new checksum or ref no longer matches that name, which
is what triggers a rebuild.

Uploads: publish a signed URL for the current ``requestID`` in ``status.upload``; a new
requestID or an expiring URL gets a fresh one; the build starts only once the object exists in
storage with the declared md5. The bucket cannot notify us, so while awaiting an upload the
object is re-checked every few seconds (a storage read, never an API write).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import attrs

from substratus import naming
from substratus.api import AnyKind, Reason, UploadStatus, format_time, parse_time
from substratus.api.conditions import BUILT
from substratus.cloud.base import Mount
from substratus.controllers import render
from substratus.controllers.apply import Action
from substratus.controllers.jobs import job_state
from substratus.controllers.render import BuildImages
from substratus.controllers.status import StatusUpdate
from substratus.runtime.reconcile import Result
from substratus.runtime.resource import JOBS

log = logging.getLogger(__name__)

UPLOAD_POLL_SECONDS = 5.0
URL_REFRESH_MARGIN = dt.timedelta(minutes=5)
WORKSPACE = "/workspace"
BUILD_CONTEXT_DIR = "/build"


@attrs.frozen
class ImageState:
    """The image the workload may run (None: not yet) and when to look again."""

    image: str | None
    result: Result = attrs.field(factory=Result)


def _parse_expiry(value: str | None) -> dt.datetime | None:
    """``status.upload.expiresAt`` as a time; None (→ issue a new URL) if absent or garbled."""
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def image_tag(obj: AnyKind) -> str:
    """The tag of the image to build: upload checksum, else git tag or branch, else ``latest``."""
    img = obj.spec.image
    if img.upload is not None:
        return img.upload.checksum
    assert img.git is not None
    return img.git.tag or img.git.branch or "latest"


def build_job(obj: AnyKind, *, name: str, destination: str, images: BuildImages, cloud: Any,
              status_url: str, service_account: str | None) -> dict[str, Any]:
    """The kaniko Job: clone-then-build for git, build-from-tarball for uploads (pure)."""
    img = obj.spec.image
    args = [f"--destination={destination}", "--cache=false"]
    if images.insecure_registry:
        args += ["--insecure", "--skip-tls-verify"]
    spec: dict[str, Any] = {"restartPolicy": "Never", "volumes": [], "containers": []}
    kaniko: dict[str, Any] = {"name": "build", "image": images.kaniko, "volumeMounts": []}
    annotations: dict[str, str] = {}
    if img.git is not None:
        ref = img.git.tag or img.git.branch
        clone = ["git", "clone", "--depth", "1", *(["--branch", ref] if ref else []), img.git.url, WORKSPACE]
        spec["volumes"].append({"name": "workspace", "emptyDir": {}})
        spec["initContainers"] = [{"name": "clone", "image": images.git, "command": clone,
                                   "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}]}]
        kaniko["volumeMounts"].append({"name": "workspace", "mountPath": WORKSPACE})
        sub = (img.git.path or "").strip("/")
        args.insert(0, f"--context=dir://{WORKSPACE}/{sub}".rstrip("/"))
        kaniko["args"] = args
        spec["containers"].append(kaniko)
    else:
        assert img.upload is not None
        args.insert(0, f"--context=tar://{BUILD_CONTEXT_DIR}/{img.upload.checksum}.tar.gz")
        kaniko["args"] = args
        if not kaniko["volumeMounts"]:
            del kaniko["volumeMounts"]
        spec["containers"].append(kaniko)
        spec, annotations = cloud.apply_mounts(
            spec, "build", [Mount("build", f"{status_url}/build", BUILD_CONTEXT_DIR, True)])
    if not spec["volumes"]:
        del spec["volumes"]
    if service_account:
        spec["serviceAccountName"] = service_account
    labels = {**naming.child_labels(obj.KIND, obj.metadata.name), "substratus.ai/role": "build"}
    template_meta: dict[str, Any] = {"labels": labels}
    if annotations:
        template_meta["annotations"] = annotations
    return render.stamp_hash({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": render.child_meta(obj, name, labels={"substratus.ai/role": "build"},
                                      annotations={"substratus.ai/image": destination}),
        "spec": {"backoffLimit": 1, "template": {"metadata": template_meta, "spec": spec}},
    })


class Builder:
    def __init__(self, reconciler: Any) -> None:
        # The kind's reconciler: its context, child naming and service accounts.
        self.r = reconciler

    @property
    def ctx(self) -> Any:
        return self.r.ctx

    def expected_image(self, obj: AnyKind) -> str:
        return naming.image_name(self.ctx.registry, self.ctx.cluster_name, obj.KIND,
                                 obj.metadata.namespace or "", obj.metadata.name, image_tag(obj))

    async def resolve(self, obj: AnyKind, raw: dict[str, Any], status_url: str, update: StatusUpdate) -> ImageState:
        """Set ``Built`` and say which image the workload may run (None until a build is done)."""
        img = obj.spec.image
        if img.upload is None:
            obj.status.upload = None  # nothing to upload (any more): no stale URL for clients to use
        if img.git is None and img.upload is None:
            update.set(BUILT, True, Reason.IMAGE_PROVIDED, f"using image {img.name}")
            return ImageState(img.name)
        expected = self.expected_image(obj)
        built = img.name == expected
        if img.upload is not None:
            waiting = await self._sync_upload(obj, status_url, update, built=built)
            if waiting is not None:
                return waiting
        if built:
            update.set(BUILT, True, Reason.BUILD_SUCCEEDED, f"built {expected}")
            return ImageState(expected)
        return await self._build(obj, status_url, expected, update)

    async def _sync_upload(self, obj: AnyKind, status_url: str, update: StatusUpdate, *,
                           built: bool) -> ImageState | None:
        """Publish ``status.upload``; None once the declared upload is in storage (or built).

        A URL is issued for every requestID, even after the build: clients (``kubectl
        notebook``) wait for their requestID and then read ``storedChecksum`` to skip an upload.
        A URL is bound to one checksum's object and md5, so a new checksum needs a new URL too.
        Expiring URLs are only renewed while an upload is still needed.
        """
        upload = obj.spec.image.upload
        assert upload is not None
        cloud = self.ctx.cloud
        object_url = naming.upload_object_url(status_url, upload.checksum)
        current = obj.status.upload or UploadStatus()
        if built and current.stored_checksum == upload.checksum:
            stored: str | None = current.stored_checksum  # verified before the build; no storage read
        else:
            stored = await cloud.md5(object_url)
        needed = not built and stored != upload.checksum
        now = dt.datetime.now(dt.UTC)
        ttl = self.ctx.upload_url_ttl
        # A short TTL must not make every pass re-sign (each new URL is a status write → event → pass).
        margin = min(URL_REFRESH_MARGIN, dt.timedelta(seconds=ttl / 2))
        expires = _parse_expiry(current.expires_at)
        if (current.url is None or current.request_id != upload.request_id
                or upload.checksum not in current.url  # issued for an earlier checksum
                or (needed and (expires is None or expires - now < margin))):
            signed = await cloud.signed_upload_url(object_url, ttl, md5=upload.checksum)
            current = UploadStatus(url=signed.url, request_id=upload.request_id,
                                   expires_at=format_time(signed.expires_at))
            expires = signed.expires_at
            log.info("upload url issued object=%s/%s request_id=%s expires_at=%s", obj.metadata.namespace,
                     obj.metadata.name, upload.request_id, current.expires_at)
        obj.status.upload = attrs.evolve(current, stored_checksum=stored)
        if built:
            return None
        if stored == upload.checksum:
            update.set(BUILT, False, Reason.UPLOAD_VERIFIED, f"upload verified (md5 {stored})")
            return None
        if stored is not None:
            # Only reachable by writing storage directly: signed URLs reject a mismatching body.
            update.set(BUILT, False, Reason.BUILD_FAILED,
                       f"the stored upload has md5 {stored} but spec.image.upload.checksum is {upload.checksum}; "
                       "upload the matching .tar.gz to status.upload.url (change requestID for a fresh URL)")
        else:
            update.set(BUILT, False, Reason.AWAITING_UPLOAD,
                       f"PUT the build context (.tar.gz, md5 {upload.checksum}) to status.upload.url "
                       f"before {current.expires_at}")
        assert expires is not None
        refresh_in = max((expires - now - margin).total_seconds(), 1.0)
        return ImageState(None, Result(requeue_after=min(UPLOAD_POLL_SECONDS, refresh_in)))

    async def _build(self, obj: AnyKind, status_url: str, expected: str, update: StatusUpdate) -> ImageState:
        ns = obj.metadata.namespace or ""
        name = self.r.child_name(obj, naming.BUILD)
        sa = await self.r.service_account(ns)
        desired = build_job(obj, name=name, destination=expected, images=self.ctx.build_images,
                            cloud=self.ctx.cloud, status_url=status_url, service_account=sa)
        job, action = await self.ctx.applier.ensure(JOBS, desired, immutable=True)
        if action == Action.DELETED:
            # An outdated build Job (another checksum or ref) is going away — never read its
            # outcome as this build's; its delete event brings us back to create the new one.
            update.set(BUILT, False, Reason.BUILDING, f"replacing build Job {name} to build {expected}")
            return ImageState(None)
        state, message = job_state(job)
        problem = self.r.pod_problem(obj, "build", job) if job is not None and state != "succeeded" else None
        if state == "succeeded":
            # Record the image in the spec (seed 000). That bumps the generation, and the
            # resulting event starts the workload — so the workload Job is stamped with the
            # generation that names the built image, and nothing is started from this pass.
            await self.ctx.client.patch(self.r.resource, obj.metadata.name, {"spec": {"image": {"name": expected}}},
                                        ns)
            update.set(BUILT, True, Reason.BUILD_SUCCEEDED, f"built {expected}")
            log.info("build succeeded job=%s image=%s", name, expected)
            return ImageState(None)
        if state == "failed":
            clone = " (and `-c clone` for the git checkout)" if obj.spec.image.git is not None else ""
            detail = f"{message}; {problem}" if problem else message
            update.set(BUILT, False, Reason.BUILD_FAILED,
                       f"build Job {name} failed ({detail}); see `kubectl logs job/{name} -c build`{clone}; "
                       "a new checksum, branch or tag rebuilds (or delete the Job to retry)")
            log.info("build failed job=%s image=%s message=%r", name, expected, message)
            return ImageState(None)
        if problem is not None:
            update.set(BUILT, False, Reason.POD_FAILING,
                       f"build Job {name} cannot run: {problem}; see `kubectl describe pod {problem.pod}`")
            return ImageState(None)
        update.set(BUILT, False, Reason.BUILDING, f"building {expected} in Job {name}")
        return ImageState(None)
