"""The cloud interface: the only way reconcilers touch storage, volumes, GPUs and upload URLs.

Everything cloud-specific (how a bucket directory becomes a Pod volume, which node label selects a
GPU, how an upload URL is signed) lives behind :class:`Cloud`, so adding a provider means adding
one module and one branch in :func:`substratus.cloud.build_cloud` — never touching a reconciler.

Pod rendering is pure and synchronous (input dicts are never mutated) so reconcilers can build a
desired object in one expression and compare it with what is in the cluster.
"""

from __future__ import annotations

import abc
import builtins
import copy
import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

#: Content type every signed upload URL is bound to. ``application/octet-stream`` rather than
#: ``application/gzip``: it is what HTTP clients (aiohttp, requests, ``curl --data-binary``) send
#: for a binary body by default, and gzip has two registered spellings (``application/gzip`` vs
#: ``application/x-gzip``) that clients disagree on. The client MUST send exactly this value.
UPLOAD_CONTENT_TYPE = "application/octet-stream"

#: Name of the ServiceAccount workloads run as when a cloud needs one (see
#: :meth:`Cloud.workload_service_account`).
WORKLOAD_SERVICE_ACCOUNT_NAME = "substratus"

#: Extended resource and taint key of the NVIDIA device plugin (same on every cloud).
GPU_RESOURCE = "nvidia.com/gpu"

#: Upper bound of a signed URL's lifetime (GCS V4 limit; applied to every cloud for consistency).
MAX_SIGNED_URL_TTL = 7 * 24 * 3600


@attrs.frozen
class Mount:
    """One ``/content`` mount of a workload container: a storage directory at a path."""

    name: str  # volume name, e.g. "model", "data", "output"
    url: str  # storage URL of the directory, e.g. "gs://bkt/<hash>/model"
    mount_path: str  # e.g. "/content/model"
    read_only: bool
    also_at: tuple[str, ...] = ()
    """More paths the same volume is mounted at (e.g. ``/content/artifacts`` for the output, the
    path images of the original Substratus write to; SPEC §9)."""

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.mount_path, *self.also_at)


@attrs.frozen
class ObjectInfo:
    """An object found by :meth:`Cloud.list`."""

    name: str  # path relative to the listed prefix, "/"-separated
    size: int


@attrs.frozen
class SignedURL:
    """An expiring URL a client can PUT one object to without credentials."""

    url: str
    expires_at: dt.datetime  # UTC, tz-aware
    method: str = "PUT"
    # Headers the client must send with the request, exactly as given (they are signed).
    headers: dict[str, str] = attrs.field(factory=dict)


class CloudError(Exception):
    """A cloud operation failed for a reason a retry will not fix (e.g. no signing identity)."""


def normalize_md5(md5: str | None) -> str | None:
    """Lower-case 32-hex md5, or None; ``ValueError`` for anything else (e.g. base64)."""
    if md5 is None:
        return None
    md5 = md5.strip().lower()
    if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
        raise ValueError(f"md5 must be 32 hex characters, not {md5!r}")
    return md5


def gpu_toleration() -> dict[str, str]:
    """The toleration for the taint GPU node pools carry (GKE, most device-plugin setups)."""
    return {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


class Cloud(abc.ABC):
    """A cloud: storage under one bucket URL, Pod rendering, and signed upload URLs.

    Storage URLs passed to the async methods are full URLs under :attr:`bucket_url`
    (``{bucket_url}/{hash}/model/...``); anything else raises ``ValueError`` — the controller never
    needs to touch data outside its bucket, and refusing it closes path tricks for free.
    Missing objects: ``read`` raises ``FileNotFoundError``; ``exists``/``md5`` return False/None.
    """

    name: ClassVar[str]
    #: GPU types :meth:`apply_gpu` accepts; ``None`` means any (the cloud does not select by type).
    gpu_types: ClassVar[frozenset[str] | None] = None

    def __init__(self, bucket_url: str) -> None:
        self.bucket_url = bucket_url.rstrip("/")
        self.write_fence: Callable[[], None] | None = None
        """Called before every storage write (:meth:`write`, and the removal half of :meth:`move`);
        raising refuses it before anything is sent. The operator sets its leader election's
        fence here, as on its API client (SPEC §7: no write leaves a replica that does not hold
        leadership — the bucket included: a paused leader waking mid-reconcile must not write
        ``completed.json`` after another replica took over)."""

    def check_write(self) -> None:
        """Implementations call this first in every storage write; raises what the fence raises
        (``substratus.runtime.client.NotLeader``)."""
        if self.write_fence is not None:
            self.write_fence()

    # ---- URLs -------------------------------------------------------------------------------
    def object_url(self, *parts: str) -> str:
        """``{bucket_url}/part/part...`` — e.g. ``object_url(hash, "completed.json")``."""
        cleaned = [p.strip("/") for p in parts if p.strip("/")]
        return "/".join([self.bucket_url, *cleaned])

    def key(self, url: str) -> str:
        """The object key of ``url`` relative to the bucket (``""`` for the bucket itself)."""
        url = url.rstrip("/")
        if url == self.bucket_url:
            return ""
        if not url.startswith(self.bucket_url + "/"):
            raise ValueError(f"{url!r} is not under the bucket {self.bucket_url!r}")
        key = url[len(self.bucket_url) + 1:]
        if any(seg in ("", ".", "..") for seg in key.split("/")):
            raise ValueError(f"{url!r} has an empty, '.' or '..' path segment")
        return key

    # ---- storage ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def exists(self, url: str) -> bool:
        """True if an object exists at ``url`` or any object exists under ``url/``."""

    @abc.abstractmethod
    async def read(self, url: str) -> bytes:
        """The content of the object at ``url``; ``FileNotFoundError`` if missing."""

    @abc.abstractmethod
    async def write(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        """Create or replace the object at ``url`` atomically (readers never see a partial object).

        Implementations call :meth:`check_write` before anything else."""

    @abc.abstractmethod
    async def list(self, url: str, limit: int | None = None) -> list[ObjectInfo]:
        """Objects under ``url/`` recursively (files only), sorted by name, at most ``limit``."""

    async def total_size(self, url: str) -> int:
        """Total bytes of the objects under ``url/`` (e.g. for ``status.diskSize``)."""
        return sum(o.size for o in await self.list(url))

    async def move(self, src: str, dst: str) -> None:
        """Move one object (``substratus rerun`` moving ``completed.json`` into ``history/``).

        The content is written at ``dst`` before ``src`` goes away, and an existing ``dst`` is
        never replaced (``FileExistsError``): nothing is lost. The controller never calls this
        — it never removes bucket data (SPEC §3). ``FileNotFoundError`` if ``src`` is missing.
        """
        if await self.exists(dst):
            raise FileExistsError(dst)
        await self.write(dst, await self.read(src))
        await self._remove_moved(src)

    async def _remove_moved(self, url: str) -> None:
        """Remove the source of a :meth:`move` whose content is already at its destination
        (after :meth:`check_write`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot move objects")

    @abc.abstractmethod
    async def md5(self, url: str) -> str | None:
        """Hex md5 of the object at ``url``, or None if there is no such object."""

    # ---- uploads ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def signed_upload_url(self, url: str, ttl_seconds: int, md5: str | None = None) -> SignedURL:
        """A PUT URL for the object at ``url`` valid for ``ttl_seconds``.

        The URL is bound to :data:`UPLOAD_CONTENT_TYPE` and, when ``md5`` (32 hex) is given, to that
        body checksum: storage rejects a body that does not match, so a stored upload is always
        the declared one (SPEC §6: the controller knows the checksum when it issues the URL).
        """

    # ---- pod rendering ----------------------------------------------------------------------
    def apply_mounts(self, pod_spec: dict[str, Any], container_name: str,
                     mounts: builtins.list[Mount]) -> tuple[dict[str, Any], dict[str, str]]:
        """Add one volume per mount and the matching volumeMounts to ``container_name``.

        (``builtins.list`` in annotations: the ``list`` method shadows the builtin in this class.)

        Returns ``(new pod spec, pod annotations to add)``; ``pod_spec`` is not modified.
        """
        spec = copy.deepcopy(pod_spec)
        container = _container(spec, container_name)
        if not mounts:  # no empty lists: they would differ from what the API server stores
            return spec, {}
        volumes: list[dict[str, Any]] = spec.setdefault("volumes", [])
        volume_mounts: list[dict[str, Any]] = container.setdefault("volumeMounts", [])
        taken = {v.get("name") for v in volumes}
        for m in mounts:
            if m.name in taken:
                raise ValueError(f"volume {m.name!r} already exists in the pod spec")
            taken.add(m.name)
            volumes.append(self._volume(m))
            volume_mounts.extend({"name": m.name, "mountPath": p, "readOnly": m.read_only} for p in m.paths)
        return spec, self._mount_annotations()

    def apply_gpu(self, pod_spec: dict[str, Any], container_name: str, gpu_type: str | None,
                  gpu_count: int) -> dict[str, Any]:
        """Schedule onto ``gpu_count`` GPUs of ``gpu_type``; ``gpu_type`` None returns an unchanged copy."""
        spec = copy.deepcopy(pod_spec)
        if gpu_type is None:
            return spec
        if gpu_count < 1:
            raise ValueError(f"gpu count must be at least 1, not {gpu_count}")
        if self.gpu_types is not None and gpu_type not in self.gpu_types:
            raise ValueError(f"unsupported gpu type {gpu_type!r} on {self.name}; "
                             f"supported: {', '.join(sorted(self.gpu_types))}")
        container = _container(spec, container_name)
        resources = container.setdefault("resources", {})
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(gpu_count)
        if "requests" in resources:  # extended resources: requests must equal limits when both set
            resources["requests"][GPU_RESOURCE] = str(gpu_count)
        selector = self._gpu_node_selector(gpu_type)
        if selector:
            spec.setdefault("nodeSelector", {}).update(selector)
        tolerations: list[dict[str, Any]] = spec.setdefault("tolerations", [])
        if gpu_toleration() not in tolerations:
            tolerations.append(gpu_toleration())
        return spec

    def workload_service_account(self, namespace: str) -> dict[str, Any] | None:
        """The ServiceAccount workloads run as in ``namespace``, or None if the cloud needs none.

        The operator ensures it exists and sets ``serviceAccountName`` to its name.
        """
        return None

    async def close(self) -> None:
        """Release connections (the operator calls this once on shutdown)."""
        return None

    # ---- hooks for implementations ----------------------------------------------------------
    @abc.abstractmethod
    def _volume(self, mount: Mount) -> dict[str, Any]:
        """The Pod volume (with ``name == mount.name``) exposing ``mount.url``."""

    def _mount_annotations(self) -> dict[str, str]:
        """Pod annotations needed when the Pod has at least one storage mount."""
        return {}

    def _gpu_node_selector(self, gpu_type: str) -> dict[str, str]:
        """Node selector picking nodes with ``gpu_type`` (empty: no selection by type)."""
        return {}


def _container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in spec.get("containers", []):
        if c.get("name") == name:
            return c
    raise ValueError(f"no container named {name!r} in the pod spec")
