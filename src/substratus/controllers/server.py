"""Server: a Model served over HTTP by a Deployment and a ClusterIP Service (SPEC §1, §4).

The image comes from the Builder (built from git/upload, or given). The Server waits for its
Model to be ready — woken by the depends-on index, never by polling — and then owns a params
ConfigMap, a one-replica Deployment mounting ``{model.status.url}/model`` read-only at
``/content/model``, and a Service on port 8080. The Model's URL is part of the pod template,
so a Model whose URL changes rolls the Deployment. ``Serving=True`` only once the Deployment
controller reports the current generation rolled out and available.
"""

from __future__ import annotations

import logging
from typing import Any

from substratus import naming
from substratus.api import SERVING, AnyKind, Reason, Server
from substratus.cloud.base import Mount
from substratus.controllers import render
from substratus.controllers.base import KindReconciler
from substratus.controllers.build import Builder
from substratus.controllers.dependencies import artifacts_of, dependencies, forbidden_references
from substratus.controllers.resources import SERVERS
from substratus.controllers.status import StatusUpdate
from substratus.runtime.reconcile import Result
from substratus.runtime.resource import CONFIGMAPS, DEPLOYMENTS, SERVICES

log = logging.getLogger(__name__)

PORT = 8080
PORT_NAME = "http"
# GET / on the serving port: the one path every HTTP server answers (basaran's UI, FastAPI
# apps redirect or 404 → only 2xx/3xx count, so images must serve something at /).
READINESS_PATH = "/"
MODEL_MOUNT = f"{render.CONTENT_DIR}/model"


def service_url(name: str, namespace: str) -> str:
    """The in-cluster URL of a Server, its ``status.url`` (SPEC §4)."""
    return f"http://{naming.child_name(name, 'Server')}.{namespace}.svc.cluster.local:{PORT}"


def deployment_state(dep: dict[str, Any] | None) -> tuple[bool, str]:
    """(rolled out and available, message) from what the Deployment controller reported.

    The rule of ``kubectl rollout status`` (and of kstatus, which Flux and Argo CD read): the
    controller has seen the current generation, every wanted replica runs the current template
    (``updatedReplicas``), no replica of an older template is left (``replicas`` counts them
    all) and the updated ones are available. During a RollingUpdate the previous ReplicaSet's
    Pod keeps serving until the new one is available, so "some replica available" is not the
    current spec serving: a new image stuck in ImagePullBackOff behind an old Pod is not rolled
    out, and the message says the previous version still serves. The Deployment's
    ``Progressing=False`` (``ProgressDeadlineExceeded``: no progress for
    ``spec.progressDeadlineSeconds``, default 600) is appended as the controller wrote it.
    """
    if dep is None:
        return False, "waiting for the Deployment to be created"
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    name = meta.get("name", "")
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return False, f"Deployment {name}: rolling out generation {generation}"
    replicas = spec.get("replicas")
    wanted = 1 if replicas is None else int(replicas)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    old = max(total - updated, 0)
    if updated >= wanted and old == 0 and available >= max(wanted, 1):
        return True, ""
    detail = ""
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("status") == "False":
            detail = f"; {c.get('reason', '')}: {c.get('message', '')}"
    if old and available:
        # Old Pods are still there and some replica is available: the previous template serves
        # while the new one is not available (yet, or ever: see the Pod problem, the deadline).
        return False, (f"Deployment {name}: rollout not finished, {updated}/{wanted} replicas updated, "
                       f"{available} available of {total}; the previous version keeps serving "
                       f"({old} old replica{'s' if old != 1 else ''}){detail}")
    return False, (f"Deployment {name}: {available}/{wanted} replicas available, "
                   f"{updated}/{wanted} updated{detail}")


class ServerReconciler(KindReconciler):
    resource = SERVERS
    ready_condition = SERVING

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.builder = Builder(self)

    async def sync(self, obj: AnyKind, raw: dict[str, Any], update: StatusUpdate) -> Result:
        assert isinstance(obj, Server)
        ns = obj.metadata.namespace or ""
        # A Server's status.url is where it serves (SPEC §4), known from its name alone; its
        # storage location only holds upload-build contexts.
        obj.status.url = service_url(obj.metadata.name, ns)
        image = await self.builder.resolve(obj, raw, self.storage_url(obj), update)
        # During a rebuild the previous digest keeps serving; the new one rolls the Deployment.
        if image.image is None:
            update.set(SERVING, False, Reason.WAITING_FOR_DEPENDENCY, "waiting for the image to be built")
            return image.result

        denied = forbidden_references(self.ctx.cache, obj)
        if denied:
            # Mount nothing: a Deployment that runs with the Model mounted (the annotation was
            # removed) is scaled to zero without the mount — the operator never deletes a
            # Deployment (its role has no such verb) — and the annotation brings it back
            # through the Model's event.
            name = self.child_name(obj)
            if image.image is not None and self.ctx.cache.get(DEPLOYMENTS, name, ns) is not None:
                await self.ctx.applier.ensure(DEPLOYMENTS, self._deployment(
                    obj, image.image, [], await self.service_account(ns), replicas=0))
            update.set(SERVING, False, Reason.REFERENCE_NOT_PERMITTED, "; ".join(denied))
            return image.result

        dep = dependencies(obj)[0]
        model = self.ctx.cache.get(dep.resource, dep.name, dep.namespace)
        model_url = ((model or {}).get("status") or {}).get("url")
        if model is None or not (model.get("status") or {}).get("ready") or not model_url:
            # Children are left as they are: the bucket data a running Server reads is never
            # deleted, and the Model's next event (via the depends-on index) brings us back.
            state = "not found" if model is None else "to be ready"
            update.set(SERVING, False, Reason.WAITING_FOR_DEPENDENCY,
                       f"waiting for Model {dep.namespace}/{dep.name} ({state})")
            return image.result

        mounts = [Mount("model", artifacts_of("Model", model) or naming.artifacts_url(model_url, "Model"),
                        MODEL_MOUNT, True)]
        sa = await self.service_account(ns)
        await self.ctx.applier.ensure(CONFIGMAPS, render.params_configmap(obj))
        name = self.child_name(obj)
        deployment, _ = await self.ctx.applier.ensure(DEPLOYMENTS, self._deployment(obj, image.image, mounts, sa))
        await self.ctx.applier.ensure(SERVICES, render.service(obj, name=name, port_name=PORT_NAME, port=PORT,
                                                             target_port=PORT))
        available, message = deployment_state(deployment)
        problem = None if available else self.pod_problem(obj, render.WORKLOAD_ROLE)
        if problem is not None:
            update.set(SERVING, False, Reason.POD_FAILING,
                       f"{message}: {problem}; see `kubectl describe pod {problem.pod}`")
        elif available:
            update.set(SERVING, True, Reason.AVAILABLE,
                       f"serving Model {dep.namespace}/{dep.name} at {service_url(obj.metadata.name, ns)}")
        else:
            update.set(SERVING, False, Reason.DEPLOYING, message)
        return image.result

    def _deployment(self, obj: Server, image: str, mounts: list[Mount], sa: str | None,
                    replicas: int = 1) -> dict[str, Any]:
        return render.deployment(
            obj, name=self.child_name(obj), image=image, mounts=mounts, cloud=self.ctx.cloud,
            options=self.ctx.render, ports=[render.container_port(PORT_NAME, PORT)],
            readiness_probe=render.http_probe(READINESS_PATH, PORT_NAME), service_account=sa, replicas=replicas)
