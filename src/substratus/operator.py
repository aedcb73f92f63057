"""Assemble the operator: client, cloud, manager, and one controller per kind."""

from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio.config import ConfigException

from substratus import logs
from substratus.api.crd import crd_apply_command
from substratus.cli import ExitCode
from substratus.cloud import build_cloud
from substratus.cloud.base import Cloud
from substratus.config import OperatorConfig
from substratus.controllers import metrics as domain_metrics
from substratus.controllers.artifact import DatasetReconciler, ModelReconciler
from substratus.controllers.base import Context
from substratus.controllers.build import build_pods_of
from substratus.controllers.dependencies import DEPENDS_ON_INDEX, dependents_of, depends_on_index
from substratus.controllers.notebook import NotebookReconciler
from substratus.controllers.pods import (
    POD_PARENT_INDEX,
    pod_parent_index,
    pod_problem_changed,
    pod_status_changed,
    pod_transform,
    pods_to_parent,
)
from substratus.controllers.render import BuildImages, RenderOptions
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS, SERVERS
from substratus.controllers.server import ServerReconciler
from substratus.naming import MANAGED_BY, MANAGED_BY_LABEL
from substratus.runtime.client import ApiError, Client, NotFound
from substratus.runtime.controller import Controller
from substratus.runtime.informer import Transform, keep_only
from substratus.runtime.manager import Manager, ManagerOptions
from substratus.runtime.resource import CONFIGMAPS, CRDS, DEPLOYMENTS, JOBS, PODS, SECRETS, SERVICES, Resource

log = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def manager_options(cfg: OperatorConfig) -> ManagerOptions:
    return ManagerOptions(
        namespace=cfg.namespace or None,
        metrics_addr=cfg.metrics_bind_address,
        metrics_secure=cfg.metrics_secure,
        metrics_cert_dir=cfg.metrics_cert_dir,
        health_addr=cfg.health_probe_bind_address,
        leader_election=cfg.leader_elect,
        leader_election_id=cfg.leader_election_id,
        leader_election_namespace=cfg.leader_election_namespace,
        lease_duration=cfg.leader_election_lease_duration,
        renew_deadline=cfg.leader_election_renew_deadline,
        retry_period=cfg.leader_election_retry_period,
        # Children are all labelled: cache only ours, not every ConfigMap/Pod/Secret in the cluster.
        label_selectors={r: MANAGED_SELECTOR for r in (CONFIGMAPS, JOBS, PODS, SERVICES, DEPLOYMENTS, SECRETS)},
        transforms=dict(CACHE_TRANSFORMS),
    )


CACHE_TRANSFORMS: dict[Resource, Transform | None] = {
    # Created by us, immutable: a changed spec shows in the hash annotation (metadata), and the
    # reconcilers read only their status (Job conditions and completionTime; Pod phase,
    # conditions and container states). The Pod template is most of either object.
    JOBS: keep_only("status"),
    # Pods change most often: only the status fields pod_problem/readiness read, and the labels
    # and owners that map a Pod to its parent (controllers/pods.py).
    PODS: pod_transform,
}
"""What the cache keeps per kind beyond ``strip_bulk`` (docs/operations.md, "What the cache keeps").
Other kinds keep every field but ``managedFields`` and kubectl's last-applied annotation: the
reconcilers read the spec of the custom resources, and compare ConfigMaps, Secrets, Services
and Deployments field by field to notice drift."""


def build_manager(client: Client, cloud: Cloud, cfg: OperatorConfig) -> Manager:
    """Everything wired, nothing started: tests drive the returned manager directly."""
    mgr = Manager(client, manager_options(cfg))
    # Storage writes (completed.json) are fenced like API writes (SPEC §7). The upload endpoint
    # writes through its own server, unfenced: it stores what a user sends with a signed URL,
    # on whichever replica the upload Service picks, and is not an act of the leader.
    cloud.write_fence = mgr.write_fence
    ctx = Context(
        client=mgr.client, cache=mgr.cache, recorder=mgr.recorder, cloud=cloud,
        cluster_name=cfg.cluster_name, registry=cfg.registry,
        render=RenderOptions(runtime_class=cfg.runtime_class),
        build_images=BuildImages(kaniko=cfg.kaniko_image, git=cfg.git_image, insecure_registry=cfg.cloud == "local"),
        upload_url_ttl=cfg.upload_url_ttl,
    )
    workers = cfg.max_concurrent_reconciles
    for dependent in (MODELS, SERVERS, NOTEBOOKS):
        mgr.cache.add_index(dependent, DEPENDS_ON_INDEX, depends_on_index)
    # Every workload and build Pod (a Job's, a ReplicaSet's, a Notebook's) wakes its parent by
    # its parent label: why it cannot run reaches the parent's status without polling.
    mgr.cache.add_index(PODS, POD_PARENT_INDEX, pod_parent_index)

    mgr.add_controller(
        Controller("dataset", DatasetReconciler(ctx), mgr.cache, max_concurrent_reconciles=workers)
        .for_(DATASETS).owns(JOBS).owns(CONFIGMAPS)
        .watches(PODS, pods_to_parent(DATASETS.kind, problems_only=True), pod_problem_changed)
        .watches(PODS, build_pods_of(DATASETS.kind)))
    mgr.add_controller(
        Controller("model", ModelReconciler(ctx), mgr.cache, max_concurrent_reconciles=workers)
        .for_(MODELS).owns(JOBS).owns(CONFIGMAPS)
        .watches(PODS, pods_to_parent(MODELS.kind, problems_only=True), pod_problem_changed)
        .watches(PODS, build_pods_of(MODELS.kind))
        .watches(MODELS, dependents_of(mgr.cache, MODELS))
        .watches(DATASETS, dependents_of(mgr.cache, MODELS)))
    mgr.add_controller(
        Controller("server", ServerReconciler(ctx), mgr.cache, max_concurrent_reconciles=workers)
        .for_(SERVERS).owns(DEPLOYMENTS).owns(SERVICES).owns(CONFIGMAPS).owns(JOBS)
        .watches(PODS, pods_to_parent(SERVERS.kind, problems_only=True), pod_problem_changed)
        .watches(PODS, build_pods_of(SERVERS.kind))
        .watches(MODELS, dependents_of(mgr.cache, SERVERS)))
    mgr.add_controller(
        Controller("notebook", NotebookReconciler(ctx), mgr.cache, max_concurrent_reconciles=workers)
        .for_(NOTEBOOKS).owns(CONFIGMAPS).owns(SECRETS).owns(JOBS)
        .watches(PODS, pods_to_parent(NOTEBOOKS.kind), pod_status_changed)
        .watches(PODS, build_pods_of(NOTEBOOKS.kind))
        .watches(MODELS, dependents_of(mgr.cache, NOTEBOOKS))
        .watches(DATASETS, dependents_of(mgr.cache, NOTEBOOKS)))

    # Every replica counts from its own informers' events, so a standby reports the same numbers
    # (the dashboard takes the max over replicas) and the counts survive a leader change. Counted
    # per event, published per interval: never a listing of the whole cache (docs/operations.md).
    counters = [domain_metrics.ObjectCounts(res.kind) for res in (DATASETS, MODELS, SERVERS, NOTEBOOKS)]
    for res, counter in zip((DATASETS, MODELS, SERVERS, NOTEBOOKS), counters, strict=True):
        mgr.cache.informer(res).add_handler(counter)

    async def count_objects() -> None:
        await mgr.cache.wait_for_sync()
        while True:
            for counter in counters:
                counter.publish()
            await asyncio.sleep(cfg.object_count_interval)

    mgr.add_runnable(count_objects)

    upload_server = getattr(cloud, "upload_server", None)
    if callable(upload_server) and cfg.upload_bind_address not in ("", "0"):
        import socket

        from aiohttp import web

        server = upload_server()
        host, _, port = cfg.upload_bind_address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        # Port 0 (any free port, e.g. tests): bind now, before any reconcile can sign a URL,
        # and point the cloud's URLs (when their base says ":0") at the port actually bound.
        sock = socket.create_server((host, 0)) if int(port) == 0 else None
        if sock is not None:
            bound = int(sock.getsockname()[1])
            use_port = getattr(cloud, "use_upload_port", None)
            if callable(use_port):
                use_port(bound)
            log.info("upload endpoint bound", extra={"host": host, "port": bound,
                                                     "baseURL": getattr(cloud, "upload_base_url", "")})

        async def serve_uploads() -> None:
            if sock is None:
                await server.start(host, int(port))
                try:
                    await asyncio.Event().wait()
                finally:
                    await server.stop()
                return
            runner = web.AppRunner(server.app(), access_log=None)
            await runner.setup()
            try:
                await web.SockSite(runner, sock).start()
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()
                sock.close()

        mgr.add_runnable(serve_uploads)
    return mgr


async def check_crds(client: Client) -> list[str]:
    """Names of our CRDs missing from the cluster (a clear error beats informers retrying forever)."""
    missing = []
    for res in (MODELS, DATASETS, SERVERS, NOTEBOOKS):
        try:
            await client.get(CRDS, f"{res.plural}.{res.group}")
        except NotFound:
            missing.append(f"{res.plural}.{res.group}")
    return missing


async def run_operator(cfg: OperatorConfig) -> int:
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        client = await Client.auto(cfg.kubeconfig or None)
    except (ConfigException, OSError, ValueError) as exc:  # no kubeconfig and not in a Pod, or a broken file
        log.error("no usable Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a Pod",
                  extra={"error": str(exc)})
        return ExitCode.NO_CLUSTER
    cloud = build_cloud(cfg)
    try:
        try:
            missing = await check_crds(client)
        except (ApiError, OSError) as exc:
            log.error("cannot reach the Kubernetes API server", extra={"server": client.host, "error": repr(exc)})
            return ExitCode.NO_CLUSTER
        if missing:
            log.error("CRDs not installed; install them (or `make run`, which does it)",
                      extra={"crds": missing, "command": crd_apply_command(None)})
            return ExitCode.NO_CRDS
        mgr = build_manager(client, cloud, cfg)
        log.info("starting operator", extra={"cluster": cfg.cluster_name, "cloud": cfg.cloud, "bucket": cloud.bucket_url,
                                             "watchNamespace": cfg.namespace or "<all>"})
        return await mgr.run()
    finally:
        await cloud.close()
        await client.close()
