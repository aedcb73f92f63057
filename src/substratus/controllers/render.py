"""Pure rendering of the children every kind owns: params ConfigMap, pod specs, Jobs.

No I/O here: given an object, an image, its mounts and the cloud's (pure) pod helpers, the
same input always renders the same child — which is what lets a reconcile compare a hash
and skip the write.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from substratus import naming
from substratus.api import AnyKind, owner_reference, secret_ref
from substratus.cloud.base import Cloud, Mount
from substratus.controllers.diff import HASH_ANNOTATION, spec_hash

CONTENT_DIR = "/content"
OUTPUT_DIR = f"{CONTENT_DIR}/output"
UPSTREAM_OUTPUT_DIR = f"{CONTENT_DIR}/artifacts"
"""Where images of the original Substratus (Go, v0.10) write their artifacts (SPEC §9)."""
PARAMS_FILE = "params.json"
PARAMS_VOLUME = "params"
GENERATION_ANNOTATION = "substratus.ai/generation"
JOB_BACKOFF_LIMIT = 2


@attrs.frozen
class RenderOptions:
    """Operator-wide settings that shape every workload."""

    runtime_class: str = ""
    # Empty: Kubernetes' default for the reference (IfNotPresent for a digest or a fixed tag,
    # Always for :latest or no tag) — built images are pinned by digest (SPEC §2).
    image_pull_policy: str = ""


@attrs.frozen
class BuildImages:
    """Images of the build Job's containers (flags, because kaniko moved to a fork in 2025)."""

    kaniko: str
    git: str
    insecure_registry: bool = False


def output_mount(url: str) -> Mount:
    """The read-write output volume (storage directory ``url``) at ``/content/output`` and, the
    same volume, at ``/content/artifacts`` — so an upstream loader or trainer stores its
    artifacts where ours do (SPEC §4, §9). Every kind with an output uses this."""
    return Mount("output", url, OUTPUT_DIR, False, also_at=(UPSTREAM_OUTPUT_DIR,))


def kind_label(obj: AnyKind) -> str:
    return obj.KIND.lower()


def child_meta(obj: AnyKind, name: str, *, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """Name, namespace, the controller ownerReference and the labels of SPEC §2."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": obj.metadata.namespace,
        "labels": {**naming.child_labels(obj.KIND, obj.metadata.name), **(labels or {})},
        "ownerReferences": [owner_reference(obj)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def stamp_hash(child: dict[str, Any]) -> dict[str, Any]:
    """Record the digest of the rendered child in an annotation (over everything but itself)."""
    digest = spec_hash(child)
    child["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
    return child


def params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, indent=2) + "\n"


def params_configmap(obj: AnyKind) -> dict[str, Any]:
    name = naming.child_name(obj.metadata.name, obj.KIND, naming.PARAMS)
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_meta(obj, name),
        "data": {PARAMS_FILE: params_json(obj.spec.params)},
    })


def _param_value(value: Any) -> str:
    """A param as its ``PARAM_*`` value, escaped for the kubelet.

    The kubelet expands ``$(VAR)`` in env values and turns ``$$`` into ``$``, so ``pa$$word``
    would reach the container as ``pa$word`` while ``params.json`` says ``pa$$word``. Every
    ``$`` is doubled, which the kubelet turns back into exactly the value (SPEC §1; Kubernetes
    "Define dependent environment variables")."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text.replace("$", "$$")


def env_vars(obj: AnyKind) -> list[dict[str, Any]]:
    """``PARAM_*`` from params, then the user's env; ``${{ secrets.NAME.KEY }}`` becomes a secretKeyRef."""
    out: list[dict[str, Any]] = []
    for key in sorted(obj.spec.params):
        out.append({"name": naming.param_env_name(key), "value": _param_value(obj.spec.params[key])})
    for key in sorted(obj.spec.env):
        value = obj.spec.env[key]
        ref = secret_ref(value)
        if ref is not None:
            out.append({"name": key, "valueFrom": {"secretKeyRef": {"name": ref[0], "key": ref[1]}}})
        else:
            out.append({"name": key, "value": value})
    return out


def container_resources(obj: AnyKind) -> dict[str, Any]:
    r = obj.spec.resources
    requests = {"cpu": str(r.cpu), "memory": f"{r.memory}Gi", "ephemeral-storage": f"{r.disk}Gi"}
    limits = {"memory": f"{r.memory}Gi", "ephemeral-storage": f"{r.disk}Gi"}
    return {"requests": requests, "limits": limits}


def pod_spec(obj: AnyKind, *, image: str, mounts: list[Mount], cloud: Cloud, options: RenderOptions,
             restart_policy: str, container_name: str, ports: list[dict[str, Any]] | None = None,
             readiness_probe: dict[str, Any] | None = None,
             service_account: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The workload pod spec and the pod annotations the cloud's volumes need."""
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "workingDir": CONTENT_DIR,
        "env": env_vars(obj),
        "resources": container_resources(obj),
        "volumeMounts": [{"name": PARAMS_VOLUME, "mountPath": f"{CONTENT_DIR}/{PARAMS_FILE}",
                          "subPath": PARAMS_FILE, "readOnly": True}],
        # Seed 000 "User": root, like Colab, so notebooks and jobs can apt-get.
        "securityContext": {"runAsUser": 0},
    }
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    if obj.spec.command:
        container["command"] = list(obj.spec.command)
    if ports:
        container["ports"] = ports
    if readiness_probe:
        container["readinessProbe"] = readiness_probe
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "containers": [container],
        "volumes": [{"name": PARAMS_VOLUME, "configMap": {
            "name": naming.child_name(obj.metadata.name, obj.KIND, naming.PARAMS)}}],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if options.runtime_class:
        spec["runtimeClassName"] = options.runtime_class
    spec, annotations = cloud.apply_mounts(spec, container_name, mounts)
    gpu = obj.spec.resources.gpu
    if gpu is not None:
        spec = cloud.apply_gpu(spec, container_name, gpu.type, gpu.count)
    return spec, annotations


def job(obj: AnyKind, *, name: str, image: str, mounts: list[Mount], cloud: Cloud, options: RenderOptions,
        role_label: str, service_account: str | None = None, run: str | None = None) -> dict[str, Any]:
    """A run-to-completion workload. The generation is part of the hash: a new spec retries;
    so is ``run`` (``substratus rerun``'s annotation): a new value is a new Job."""
    spec, pod_annotations = pod_spec(obj, image=image, mounts=mounts, cloud=cloud, options=options,
                                     restart_policy="Never", container_name=kind_label(obj),
                                     service_account=service_account)
    labels = {**naming.child_labels(obj.KIND, obj.metadata.name), "substratus.ai/role": role_label}
    template_meta: dict[str, Any] = {"labels": labels}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    return stamp_hash({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_meta(obj, name, labels={"substratus.ai/role": role_label},
                               annotations={GENERATION_ANNOTATION: str(obj.metadata.generation),
                                            **({naming.RERUN_ANNOTATION: run} if run else {})}),
        "spec": {
            "backoffLimit": JOB_BACKOFF_LIMIT,
            "template": {"metadata": template_meta, "spec": spec},
        },
    })


# --- long-running workloads: Server (Deployment + Service) and Notebook (Pod) -----------------

ROLE_LABEL = "substratus.ai/role"
WORKLOAD_ROLE = "workload"


def workload_labels(obj: AnyKind) -> dict[str, str]:
    """Labels of the serving Pods; the role keeps build-Job Pods out of selectors and Services."""
    return {**naming.child_labels(obj.KIND, obj.metadata.name), ROLE_LABEL: WORKLOAD_ROLE}


def container_port(name: str, port: int) -> dict[str, Any]:
    # protocol spelled out: it is the list's merge key for server-side apply (and the server default).
    return {"name": name, "containerPort": port, "protocol": "TCP"}


def http_probe(path: str, port: str | int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"},
            "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3, "successThreshold": 1}


def deployment(obj: AnyKind, *, name: str, image: str, mounts: list[Mount], cloud: Cloud, options: RenderOptions,
               ports: list[dict[str, Any]], readiness_probe: dict[str, Any] | None,
               service_account: str | None = None, replicas: int = 1) -> dict[str, Any]:
    """One replica of the workload container, restarted forever (a Server); ``replicas=0``
    stops it without deleting it."""
    spec, pod_annotations = pod_spec(obj, image=image, mounts=mounts, cloud=cloud, options=options,
                                     restart_policy="Always", container_name=kind_label(obj), ports=ports,
                                     readiness_probe=readiness_probe, service_account=service_account)
    labels = workload_labels(obj)
    template_meta: dict[str, Any] = {"labels": labels}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    return stamp_hash({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_meta(obj, name, labels={ROLE_LABEL: WORKLOAD_ROLE}),
        "spec": {
            "replicas": replicas,
            "strategy": deployment_strategy(obj),
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": template_meta, "spec": spec},
        },
    })


def deployment_strategy(obj: AnyKind) -> dict[str, Any]:
    """``Recreate`` when the workload requests GPUs, else a one-at-a-time rolling update.

    The default RollingUpdate (surge 1, unavailable 0) starts the new Pod before the old one
    stops, so a one-replica GPU Deployment would need a second set of GPUs to roll and would
    stay ``Deploying`` on a cluster that has one (SPEC §4). Both are spelled out whole: with
    server-side apply, a field we stop setting is only removed if we owned it, so switching
    strategy must replace ``rollingUpdate`` ourselves rather than leave the server's default
    (which the API server rejects next to ``Recreate``)."""
    if obj.spec.resources.gpu is not None:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def service(obj: AnyKind, *, name: str, port_name: str, port: int, target_port: int) -> dict[str, Any]:
    """A ClusterIP Service in front of the workload Pods."""
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_meta(obj, name),
        "spec": {
            "type": "ClusterIP",
            "selector": workload_labels(obj),
            "ports": [{"name": port_name, "port": port, "targetPort": target_port, "protocol": "TCP"}],
        },
    })


def pod(obj: AnyKind, *, name: str, image: str, mounts: list[Mount], cloud: Cloud, options: RenderOptions,
        ports: list[dict[str, Any]], readiness_probe: dict[str, Any] | None,
        default_command: list[str] | None = None, extra_env: list[dict[str, Any]] | None = None,
        service_account: str | None = None) -> dict[str, Any]:
    """A bare workload Pod (a Notebook). ``extra_env`` replaces user env vars of the same name;
    ``default_command`` applies only when ``spec.command`` is empty."""
    spec, pod_annotations = pod_spec(obj, image=image, mounts=mounts, cloud=cloud, options=options,
                                     restart_policy="Always", container_name=kind_label(obj), ports=ports,
                                     readiness_probe=readiness_probe, service_account=service_account)
    container = spec["containers"][0]
    if default_command and not obj.spec.command:
        container["command"] = list(default_command)
    if extra_env:
        ours = {e["name"] for e in extra_env}
        container["env"] = [e for e in container["env"] if e["name"] not in ours] + list(extra_env)
    annotations = dict(pod_annotations)
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": child_meta(obj, name, labels={ROLE_LABEL: WORKLOAD_ROLE}, annotations=annotations or None),
        "spec": spec,
    })

