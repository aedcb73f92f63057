"""Cloud integrations behind one interface (:class:`Cloud`); pick one with :func:`build_cloud`.

Implementations are imported lazily: importing this package never imports gcsfs (or aiohttp's
server) unless that cloud is chosen, keeping the local/kind path light.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from substratus.cloud.base import (
    GPU_RESOURCE,
    MAX_SIGNED_URL_TTL,
    UPLOAD_CONTENT_TYPE,
    WORKLOAD_SERVICE_ACCOUNT_NAME,
    Cloud,
    CloudError,
    Mount,
    ObjectInfo,
    SignedURL,
    normalize_md5,
)

if TYPE_CHECKING:
    from substratus.config import OperatorConfig

log = logging.getLogger(__name__)

#: Where the local cloud keeps artifacts when no --bucket-url is given.
DEFAULT_LOCAL_BUCKET_URL = "file:///var/lib/substratus/artifacts"

__all__ = [
    "DEFAULT_LOCAL_BUCKET_URL",
    "GPU_RESOURCE",
    "MAX_SIGNED_URL_TTL",
    "UPLOAD_CONTENT_TYPE",
    "WORKLOAD_SERVICE_ACCOUNT_NAME",
    "Cloud",
    "CloudError",
    "Mount",
    "ObjectInfo",
    "SignedURL",
    "build_cloud",
    "normalize_md5",
]

_LAZY = {"LocalCloud": "substratus.cloud.local", "UploadServer": "substratus.cloud.local",
         "GcpCloud": "substratus.cloud.gcp"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _port_of(bind_address: str, default: int = 8082) -> int:
    _, _, port = bind_address.rpartition(":")
    return int(port) if port.isdigit() else default


def build_cloud(cfg: OperatorConfig) -> Cloud:
    """The :class:`Cloud` selected by ``cfg.cloud``.

    local: with no ``upload_signing_key`` a random per-process key is used — fine for one replica,
    but replicas behind one upload Service must share a key or URLs issued by the leader fail
    elsewhere. With no ``upload_base_url`` URLs point at ``http://127.0.0.1:{upload port}``, which
    suits ``kubectl port-forward`` to the operator.
    """
    if cfg.cloud == "local":
        from substratus.cloud.local import LocalCloud

        key = cfg.upload_signing_key
        if not key:
            key = secrets.token_hex(32)
            log.info("upload signing key not set; using a random per-process key")
        base_url = cfg.upload_base_url or f"http://127.0.0.1:{_port_of(cfg.upload_bind_address)}"
        return LocalCloud(cfg.bucket_url or DEFAULT_LOCAL_BUCKET_URL, signing_key=key,
                          upload_base_url=base_url)
    if cfg.cloud == "gcp":
        from substratus.cloud.gcp import GcpCloud

        return GcpCloud(cfg.bucket_url, project=cfg.gcp_project or None,
                        service_account=cfg.gcp_service_account)
    raise ValueError(f"unknown cloud {cfg.cloud!r} (supported: local, gcp)")
