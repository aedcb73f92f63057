"""Image builds for every kind (SPEC §1 "The spec is the user's", §2, §6): from git, or from an
uploaded ``.tar.gz``.

``spec.image.name`` alone → ``ImageProvided`` and ``status.image`` is that name. With a build
source (``git`` or ``upload``) the controller never writes the spec: a build Job (kaniko) pushes
``{registry}/{cluster}-{kind}-{namespace}-{name}:{tag}`` — tag = the upload checksum, or the full
commit SHA the git clone step resolved the branch/tag to — and reports the pushed digest in its
termination message. The controller reads it from the build Pod's terminated container and
records ``status.image = repo@sha256:<digest>`` with what produced it in ``status.build``
(source fingerprint, commit or checksum, rebuild request). Workloads always run that digest.

A build runs when ``status.build`` does not describe the current source and rebuild request: a
new source, the annotation ``substratus.ai/rebuild`` set to a new value, or no image recorded
yet — unless ``{bucket-url}/{hash}/build.json`` (written after every successful build) records
an image for the current source and rebuild request: an object restored into a fresh cluster
adopts that image instead of building again. While one runs, ``ImageState.current`` is False and the previous image (if any) is still
reported, so a Server keeps serving it until the new digest is known; the same digest again
renders the same workload, so nothing restarts.

Uploads: publish a signed URL for the current ``requestID`` in ``status.upload``; a new
requestID or an expiring URL gets a fresh one; the build starts only once the object exists in
storage with the declared md5. The bucket cannot notify us, so while awaiting an upload the
object is re-checked every few seconds (a storage read, never an API write).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from substratus import naming
from substratus.api import AnyKind, BuildStatus, Reason, UploadStatus, format_time, parse_time, to_dict
from substratus.api.conditions import BUILT, get_condition
from substratus.cloud.base import Mount
from substratus.controllers import render
from substratus.controllers.apply import Action
from substratus.controllers.jobs import job_state
from substratus.controllers.render import BuildImages
from substratus.controllers.status import StatusUpdate
from substratus.runtime.indexer import OWNER_UID_INDEX
from substratus.runtime.reconcile import Request, Result
from substratus.runtime.resource import JOBS, PODS

log = logging.getLogger(__name__)

UPLOAD_POLL_SECONDS = 5.0
URL_REFRESH_MARGIN = dt.timedelta(minutes=5)
WORKSPACE = "/workspace"
SOURCE_DIR = f"{WORKSPACE}/src"
COMMIT_FILE = f"{WORKSPACE}/commit"
BUILD_CONTEXT_DIR = "/build"
# Kubernetes' default terminationMessagePath: what a container writes there becomes
# status.containerStatuses[].state.terminated.message (at most 4096 bytes).
TERMINATION_LOG = "/dev/termination-log"
CLONE_CONTAINER = "clone"
BUILD_CONTAINER = "build"
BUILD_ROLE = "build"
SOURCE_ANNOTATION = "substratus.ai/build-source"
RESTORED_NOTE = "restored from the bucket record"
# How long a succeeded build Job may go without a visible Pod before we stop waiting for its digest.
POD_GRACE = dt.timedelta(seconds=60)
POD_POLL_SECONDS = 2.0

DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
COMMIT_RE = re.compile(r"^([a-f0-9]{40}|[a-f0-9]{64})$")

# The clone step (alpine/git has a POSIX sh): clone the branch/tag (or the default branch),
# resolve it to the full commit SHA — the image tag — and report it twice: in a file the build
# container reads, and as this container's termination message for the controller.
CLONE_SCRIPT = f"""set -eu
url=$1 ref=$2 dir=$3
if [ -n "$ref" ]; then
  git clone --depth 1 --branch "$ref" -- "$url" "$dir"
else
  git clone --depth 1 -- "$url" "$dir"
fi
commit=$(git -C "$dir" rev-parse HEAD)
printf '%s' "$commit" > {COMMIT_FILE}
printf '%s' "$commit" > {TERMINATION_LOG}
echo "resolved ${{ref:-the default branch}} to $commit"
"""
# The build step of a git build: the tag is only known once the clone ran, so the kaniko
# executor is started by the debug image's busybox shell with the commit appended as tag.
KANIKO_GIT_SCRIPT = f'exec /kaniko/executor "$@" "--destination=$IMAGE_REPO:$(cat {COMMIT_FILE})"'


@attrs.frozen
class ImageState:
    """The image a workload may run and when to look again.

    ``image``: the current image when ``current``; during a (re)build, the previously built one
    (or None), which long-running workloads keep running until the new digest is known.
    """

    image: str | None
    current: bool = True
    result: Result = attrs.field(factory=Result)


@attrs.frozen
class BuildOutput:
    """What a finished build Pod reported: the pushed digest and the resolved commit (git)."""

    digest: str | None
    commit: str | None
    detail: str = ""


def _parse_expiry(value: str | None) -> dt.datetime | None:
    """``status.upload.expiresAt`` as a time; None (→ issue a new URL) if absent or garbled."""
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def source_fingerprint(obj: AnyKind) -> str:
    """16 hex of sha256 over the build source (git url/branch/tag/path, or upload checksum);
    ``requestID`` only asks for a new URL, so it is not part of it."""
    img = obj.spec.image
    if img.git is not None:
        body: dict[str, Any] = {"git": {"url": img.git.url, "branch": img.git.branch, "tag": img.git.tag,
                                        "path": img.git.path}}
    else:
        assert img.upload is not None
        body = {"upload": {"checksum": img.upload.checksum}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def rebuild_request(obj: AnyKind) -> str | None:
    """The value of ``substratus.ai/rebuild`` (None when absent)."""
    return obj.metadata.annotations.get(naming.REBUILD_ANNOTATION) or None


def legacy_tag(obj: AnyKind) -> str:
    """The tag versions before SPEC §1 "The spec is the user's" pushed (and wrote into
    ``spec.image.name``): checksum, else git tag, else branch, else ``latest``."""
    img = obj.spec.image
    if img.upload is not None:
        return img.upload.checksum
    assert img.git is not None
    return img.git.tag or img.git.branch or "latest"


def adopt_legacy_image(obj: AnyKind, registry: str, cluster: str) -> str | None:
    """Read an object written by an older controller (SPEC §1 migration, docs/operations.md).

    Older versions wrote the built image into ``spec.image.name`` next to ``git``/``upload``.
    A name in this operator's own repository for the object (``image_repo(...):tag``) is such a
    past build, not the user's: it is dropped from the in-memory spec (so the object is not
    ``InvalidSpec``) and, the first time — while ``status.build`` is unset — adopted into
    ``status.image``/``status.build`` if its tag is what that version would have built from the
    current source. Returns the adopted image, if any. The stored spec is never changed.
    """
    img = obj.spec.image
    if not img.name or (img.git is None and img.upload is None):
        return None
    repo = naming.image_repo(registry, cluster, obj.KIND, obj.metadata.namespace or "", obj.metadata.name)
    if not img.name.startswith(repo + ":"):
        return None  # the user's own name beside a source: InvalidSpec, reported by validate()
    legacy = img.name
    img.name = None
    if obj.status.build is not None:
        return None  # adopted before (or built since): status is authoritative
    expected = naming.image_name(registry, cluster, obj.KIND, obj.metadata.namespace or "", obj.metadata.name,
                                 legacy_tag(obj))
    if legacy != expected:
        return None  # built from an earlier source: the current one is built normally
    obj.status.image = legacy
    obj.status.build = BuildStatus(source=source_fingerprint(obj), rebuild=rebuild_request(obj),
                                   checksum=img.upload.checksum if img.upload is not None else None)
    log.info("adopted image written to spec by an older version", extra={"image": legacy})
    return legacy


def build_job(obj: AnyKind, *, name: str, repo: str, images: BuildImages, cloud: Any,
              status_url: str, service_account: str | None, source: str,
              rebuild: str | None) -> dict[str, Any]:
    """The kaniko Job: clone-then-build for git, build-from-tarball for uploads (pure).

    kaniko writes the pushed digest (``sha256:<64 hex>``) to the termination-message path
    (``--digest-file``); a git build's clone step writes the resolved commit to its own.
    ``source`` and ``rebuild`` are annotations, so a new source or rebuild request renders a
    different Job (the outdated one is replaced).
    """
    img = obj.spec.image
    flags = [f"--digest-file={TERMINATION_LOG}", "--cache=false"]
    if images.insecure_registry:
        flags += ["--insecure", "--skip-tls-verify"]
    spec: dict[str, Any] = {"restartPolicy": "Never", "volumes": [], "containers": []}
    kaniko: dict[str, Any] = {"name": BUILD_CONTAINER, "image": images.kaniko}
    annotations: dict[str, str] = {}
    if img.git is not None:
        ref = img.git.tag or img.git.branch or ""
        workspace = [{"name": "workspace", "mountPath": WORKSPACE}]
        spec["volumes"].append({"name": "workspace", "emptyDir": {}})
        spec["initContainers"] = [{
            "name": CLONE_CONTAINER, "image": images.git,
            "command": ["sh", "-c", CLONE_SCRIPT, CLONE_CONTAINER, img.git.url, ref, SOURCE_DIR],
            "volumeMounts": workspace}]
        sub = (img.git.path or "").strip("/")
        context = f"--context=dir://{SOURCE_DIR}/{sub}".rstrip("/")
        kaniko["command"] = ["/busybox/sh", "-c", KANIKO_GIT_SCRIPT, BUILD_CONTAINER]
        kaniko["args"] = [context, *flags]
        kaniko["env"] = [{"name": "IMAGE_REPO", "value": repo}]
        kaniko["volumeMounts"] = workspace
        spec["containers"].append(kaniko)
    else:
        assert img.upload is not None
        kaniko["args"] = [f"--context=tar://{BUILD_CONTEXT_DIR}/{img.upload.checksum}.tar.gz",
                          f"--destination={repo}:{img.upload.checksum}", *flags]
        spec["containers"].append(kaniko)
        spec, annotations = cloud.apply_mounts(
            spec, BUILD_CONTAINER, [Mount("build", f"{status_url}/build", BUILD_CONTEXT_DIR, True)])
    if not spec["volumes"]:
        del spec["volumes"]
    if service_account:
        spec["serviceAccountName"] = service_account
    labels = {**naming.child_labels(obj.KIND, obj.metadata.name), "substratus.ai/role": BUILD_ROLE}
    template_meta: dict[str, Any] = {"labels": labels}
    if annotations:
        template_meta["annotations"] = annotations
    job_annotations = {"substratus.ai/image": repo, SOURCE_ANNOTATION: source}
    if rebuild:
        job_annotations[naming.REBUILD_ANNOTATION] = rebuild
    return render.stamp_hash({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": render.child_meta(obj, name, labels={"substratus.ai/role": BUILD_ROLE},
                                      annotations=job_annotations),
        "spec": {"backoffLimit": 1, "template": {"metadata": template_meta, "spec": spec}},
    })


def _terminated(statuses: Iterable[dict[str, Any]], container: str) -> dict[str, Any] | None:
    for cs in statuses:
        if cs.get("name") == container:
            term = (cs.get("state") or {}).get("terminated")
            return term if isinstance(term, dict) else None
    return None


def build_output(pod: dict[str, Any]) -> BuildOutput:
    """Digest and commit from a build Pod's terminated containers (pure).

    kaniko's ``--digest-file`` writes ``sha256:<64 hex>``; ``--image-name-with-digest-file``
    would write ``repo:tag@sha256:...`` — either way the digest is the one ``sha256:`` in it.
    """
    status = pod.get("status") or {}
    build = _terminated(status.get("containerStatuses") or [], BUILD_CONTAINER)
    if build is None:
        return BuildOutput(None, None, f"container {BUILD_CONTAINER!r} has not terminated")
    message = str(build.get("message") or "").strip()
    found = DIGEST_RE.findall(message)
    digest = found[-1] if build.get("exitCode") == 0 and found else None
    clone = _terminated(status.get("initContainerStatuses") or [], CLONE_CONTAINER)
    commit_msg = str((clone or {}).get("message") or "").strip()
    commit = commit_msg if COMMIT_RE.match(commit_msg) else None
    detail = "" if digest else (f"container {BUILD_CONTAINER!r} exited {build.get('exitCode')} with "
                                f"termination message {message[:200]!r}, not a sha256 digest")
    return BuildOutput(digest, commit, detail)


def build_pods_of(kind: str) -> Callable[[dict[str, Any]], Iterable[Request]]:
    """Map a build Pod to its parent of ``kind`` (by the labels the build Job's template sets):
    the Pod's termination message — the pushed digest — can arrive after the Job's status."""
    label = f"substratus.ai/{kind.lower()}"

    def mapper(pod: dict[str, Any]) -> Iterable[Request]:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get("substratus.ai/role") != BUILD_ROLE or not labels.get(label):
            return ()
        return [Request(meta.get("namespace"), labels[label])]
    return mapper


class Builder:
    def __init__(self, reconciler: Any) -> None:
        # The kind's reconciler: its context, child naming and service accounts.
        self.r = reconciler

    @property
    def ctx(self) -> Any:
        return self.r.ctx

    def repo(self, obj: AnyKind) -> str:
        return naming.image_repo(self.ctx.registry, self.ctx.cluster_name, obj.KIND,
                                 obj.metadata.namespace or "", obj.metadata.name)

    def _is_current(self, obj: AnyKind) -> bool:
        b = obj.status.build
        return bool(obj.status.image and b is not None and b.source == source_fingerprint(obj)
                    and b.rebuild == rebuild_request(obj))

    async def resolve(self, obj: AnyKind, raw: dict[str, Any], status_url: str, update: StatusUpdate) -> ImageState:
        """Set ``Built`` and ``status.image``; say which image the workload may run."""
        img = obj.spec.image
        if img.upload is None:
            obj.status.upload = None  # nothing to upload (any more): no stale URL for clients to use
        if img.git is None and img.upload is None:
            obj.status.image, obj.status.build = img.name, None
            update.set(BUILT, True, Reason.IMAGE_PROVIDED, f"using image {img.name}")
            return ImageState(img.name)
        current = self._is_current(obj)
        restored = not current and obj.status.image is None and await self._adopt_record(obj, status_url)
        current = current or restored
        if img.upload is not None:
            waiting = await self._sync_upload(obj, status_url, update, built=current)
            if waiting is not None:
                return waiting
        if current:
            message = f"built {obj.status.image}{_produced_by(obj)}"
            restored_message = f"{message}; {RESTORED_NOTE} {naming.build_record_url(status_url)}, not building"
            prev = get_condition(update.conditions, BUILT)
            if restored or (prev is not None and prev.message == restored_message):
                message = restored_message  # kept on later passes: the Job-less origin stays visible
            update.set(BUILT, True, Reason.BUILD_SUCCEEDED, message)
            return ImageState(obj.status.image)
        return await self._build(obj, status_url, update)

    async def restored(self, obj: AnyKind, status_url: str, update: StatusUpdate, marker: dict[str, Any]) -> None:
        """Complete artifacts (``completed.json``): nothing is built (SPEC §3). ``status.image``
        is the image the marker says produced them; upload URLs are still published, because
        clients wait for their requestID (and then find the checksum stored)."""
        img = obj.spec.image
        if img.git is None and img.upload is None:
            await self.resolve(obj, {}, status_url, update)
            return
        if img.upload is None:
            obj.status.upload = None
        else:
            await self._sync_upload(obj, status_url, update, built=True)
        image = marker.get("image") if isinstance(marker.get("image"), str) else None
        if image and image != obj.status.image:
            obj.status.image = image
            recorded = marker.get("build")
            obj.status.build = (BuildStatus(source=str(recorded.get("source") or ""),
                                            commit=recorded.get("commit"), checksum=recorded.get("checksum"),
                                            rebuild=recorded.get("rebuild"), job=recorded.get("job"))
                                if isinstance(recorded, dict) else None)
        update.set(BUILT, True, Reason.BUILD_SUCCEEDED,
                   f"not building: the artifacts are complete and {naming.completed_marker_url(status_url)} "
                   f"records the image that produced them ({obj.status.image or 'unknown'}{_produced_by(obj)})")

    async def _adopt_record(self, obj: AnyKind, status_url: str) -> bool:
        """Adopt ``build.json``'s image into ``status.image``/``status.build`` when it was built from
        the current source and rebuild request (SPEC §6: no image recorded in status, e.g. after
        delete + re-apply or in a new cluster on the same bucket). True when adopted.

        Not adopted while this object's own build Job for the current source exists (its outcome
        is authoritative). A missing or garbled record means build; storage errors propagate (retry).
        """
        source, rebuild = source_fingerprint(obj), rebuild_request(obj)
        url = naming.build_record_url(status_url)
        try:
            record = json.loads(await self.ctx.cloud.read(url))
        except FileNotFoundError:
            return False
        except ValueError:
            log.warning("build record is not JSON; building", extra={"url": url})
            return False
        image = record.get("image") if isinstance(record, dict) else None
        build = record.get("build") if isinstance(record, dict) else None
        if not (isinstance(image, str) and DIGEST_RE.search(image) and isinstance(build, dict)
                and build.get("source") == source and (build.get("rebuild") or None) == rebuild):
            return False
        job = self.ctx.cache.get(JOBS, self.r.child_name(obj, naming.BUILD), obj.metadata.namespace or "")
        meta = (job or {}).get("metadata") or {}
        annotations = meta.get("annotations") or {}
        ours = any(r.get("uid") == obj.metadata.uid for r in meta.get("ownerReferences") or [])
        if (ours and not meta.get("deletionTimestamp") and annotations.get(SOURCE_ANNOTATION) == source
                and (annotations.get(naming.REBUILD_ANNOTATION) or None) == rebuild):
            return False
        obj.status.image = image
        obj.status.build = BuildStatus(source=source, commit=build.get("commit"), checksum=build.get("checksum"),
                                       rebuild=rebuild, job=build.get("job"))
        log.info("adopted image from build record", extra={"url": url, "image": image})
        return True

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
            log.info("upload url issued", extra={"requestID": upload.request_id, "expiresAt": current.expires_at})
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
        return ImageState(obj.status.image, current=False,
                          result=Result(requeue_after=min(UPLOAD_POLL_SECONDS, refresh_in)))

    async def _build(self, obj: AnyKind, status_url: str, update: StatusUpdate) -> ImageState:
        ns = obj.metadata.namespace or ""
        name = self.r.child_name(obj, naming.BUILD)
        repo = self.repo(obj)
        source, rebuild = source_fingerprint(obj), rebuild_request(obj)
        previous = obj.status.image
        waiting = ImageState(previous, current=False)
        sa = await self.r.service_account(ns)
        desired = build_job(obj, name=name, repo=repo, images=self.ctx.build_images, cloud=self.ctx.cloud,
                            status_url=status_url, service_account=sa, source=source, rebuild=rebuild)
        what = _source_text(obj)
        job, action = await self.ctx.applier.ensure(JOBS, desired, immutable=True)
        if action == Action.DELETED:
            # An outdated build Job (another source or rebuild request) is going away — never
            # read its outcome as this build's; its delete event brings us back to create the new one.
            update.set(BUILT, False, Reason.BUILDING, f"replacing build Job {name} to build {what}")
            return waiting
        state, message = job_state(job)
        problem = self.r.pod_problem(obj, "build", job) if job is not None and state != "succeeded" else None
        if state == "failed":
            clone = " (and `-c clone` for the git checkout)" if obj.spec.image.git is not None else ""
            detail = f"{message}; {problem}" if problem else message
            update.set(BUILT, False, Reason.BUILD_FAILED,
                       f"build Job {name} failed ({detail}); see `kubectl logs job/{name} -c build`{clone}; "
                       f"a new source, or the annotation {naming.REBUILD_ANNOTATION} set to a new value, "
                       "builds again")
            log.info("build failed", extra={"job": name, "error": message})
            return waiting
        if problem is not None:
            update.set(BUILT, False, Reason.POD_FAILING,
                       f"build Job {name} cannot run: {problem}; see `kubectl describe pod {problem.pod}`")
            return waiting
        if state != "succeeded":
            update.set(BUILT, False, Reason.BUILDING, f"building {what} in Job {name}")
            return waiting
        assert job is not None
        output = self._output(job)
        if output is None or output.digest is None:
            return self._no_digest(obj, job, name, output, update, waiting)
        image = f"{repo}@{output.digest}"
        upload = obj.spec.image.upload
        obj.status.image = image
        build = BuildStatus(source=source, commit=output.commit, rebuild=rebuild, job=name,
                            checksum=upload.checksum if upload is not None else None)
        # Before status: a restore (no status) finds the image here instead of building again.
        record = {"image": image, "build": to_dict(build), "kind": obj.KIND,
                  "object": f"{ns}/{obj.metadata.name}"}
        await self.ctx.cloud.write(naming.build_record_url(status_url),
                                   (json.dumps(record, indent=2) + "\n").encode())
        obj.status.image, obj.status.build = image, build
        update.set(BUILT, True, Reason.BUILD_SUCCEEDED, f"built {image}{_produced_by(obj)}")
        log.info("build succeeded", extra={"job": name, "image": image, "commit": output.commit,
                                           "unchanged": image == previous})
        return ImageState(image)

    def _output(self, job: dict[str, Any]) -> BuildOutput | None:
        """What the succeeded Job's Pod reported, or None if no Pod of it is in the cache."""
        meta = job.get("metadata") or {}
        uid = meta.get("uid")
        best: BuildOutput | None = None
        # By the owner index: a scan of the namespace's Pods would cost O(Pods) per build.
        for pod in self.ctx.cache.by_index(PODS, OWNER_UID_INDEX, uid) if uid else ():
            out = build_output(pod)
            if out.digest:
                return out
            best = best or out
        return best

    def _no_digest(self, obj: AnyKind, job: dict[str, Any], name: str, output: BuildOutput | None,
                   update: StatusUpdate, waiting: ImageState) -> ImageState:
        """A succeeded build Job whose digest we cannot read (yet)."""
        if output is not None and output.detail and "has not terminated" not in output.detail:
            # A Pod that finished without a digest: the executor is not writing --digest-file.
            update.set(BUILT, False, Reason.BUILD_FAILED,
                       f"build Job {name} succeeded but reported no image digest: {output.detail}; the "
                       f"build container must be a kaniko executor (debug variant) that honours "
                       f"--digest-file={TERMINATION_LOG} (--kaniko-image)")
            return waiting
        completed = ((job.get("status") or {}).get("completionTime")) or ""
        try:
            age = dt.datetime.now(dt.UTC) - parse_time(completed)
        except ValueError:
            age = dt.timedelta(0)
        if age > POD_GRACE:
            update.set(BUILT, False, Reason.BUILD_FAILED,
                       f"build Job {name} succeeded but its Pod is gone, so the pushed digest cannot be read; "
                       f"delete the Job (`kubectl delete job {name}`) to build again")
            return waiting
        update.set(BUILT, False, Reason.BUILDING,
                   f"build Job {name} succeeded; reading the pushed digest from its Pod's termination message")
        return attrs.evolve(waiting, result=Result(requeue_after=POD_POLL_SECONDS))


def _source_text(obj: AnyKind) -> str:
    img = obj.spec.image
    if img.upload is not None:
        return f"upload {img.upload.checksum}"
    assert img.git is not None
    ref = img.git.tag or img.git.branch or "the default branch"
    return f"{img.git.url} ({ref})"


def _produced_by(obj: AnyKind) -> str:
    b = obj.status.build
    if b is None:
        return ""
    if b.commit:
        return f" from commit {b.commit}"
    if b.checksum:
        return f" from upload {b.checksum}"
    return ""
