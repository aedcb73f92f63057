"""The ``gcp`` cloud: GCS through gcsfs, GCS FUSE CSI volumes, GKE GPUs, V4 signed upload URLs.

Signed URLs are built here (the V4 canonical request is small and fully specified by Google's
"V4 signing process") rather than through ``gcsfs.sign``/``Blob.generate_signed_url``, because
those need a key-bearing credential or make a blocking IAM call inside the event loop. Signing
is delegated to a ``google.auth.crypt.Signer``:

* a service-account key (``GOOGLE_APPLICATION_CREDENTIALS``) or impersonated credentials sign
  locally / through their own mechanism (``credentials.signer``);
* under GKE Workload Identity the ambient credentials are metadata-server tokens with no private
  key, so :class:`google.auth.iam.Signer` calls the IAM Credentials ``signBlob`` API as the
  controller's own Google service account. That account needs
  ``roles/iam.serviceAccountTokenCreator`` on itself and write access to the bucket (it already
  writes ``completed.json``). Blocking calls run in a worker thread.
"""

from __future__ import annotations

import os

# Must happen before gcsfs is imported: the experimental zonal/HNS support probes every bucket's
# layout, which hangs against emulators and buys nothing for a standard artifacts bucket.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import gcsfs

from substratus.cloud.base import (
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

log = logging.getLogger(__name__)

#: SPEC §5: the GPU types GKE exposes through the ``cloud.google.com/gke-accelerator`` label.
GPU_TYPES = frozenset({"nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb",
                       "nvidia-h100-80gb"})
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
GCSFUSE_ANNOTATION = "gke-gcsfuse/volumes"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
DEFAULT_SIGNING_ENDPOINT = "https://storage.googleapis.com"
V4_ALGORITHM = "GOOG4-RSA-SHA256"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class _GcsfsDetailsAtDebug(logging.Filter):
    """gcsfs logs every request it gives up on with ``logger.exception`` (a traceback per retry
    chain, at ERROR) and then raises the same error to its caller, who reports it — once, in its
    own words (a reconcile error, ``substratus adopt``'s one line). Without logging configured,
    Python's last-resort handler printed those tracebacks to a command line's stderr. Here they
    are what they are, details: logged at DEBUG, visible when logging is configured that low."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("gcsfs").addFilter(_GcsfsDetailsAtDebug())


def _filesystem_class(request_attempts: int | None) -> type[gcsfs.GCSFileSystem]:
    """gcsfs' filesystem, or one whose requests are tried at most ``request_attempts`` times.

    gcsfs tries each request 6 times with exponential backoff (1, 2, 4, 8, 16 s plus jitter:
    about 35 s before an unreachable endpoint is an error). Right for a long-running operator,
    long for a command line waiting to say "cannot reach the bucket". The bound re-applies gcsfs'
    own retry decorator (``gcsfs.retry.retry_request``, same backoff and retriable errors) with
    fewer attempts; should a gcsfs release no longer expose what that needs, its default stays.
    """
    if request_attempts is None:
        return gcsfs.GCSFileSystem
    wrapped = getattr(gcsfs.GCSFileSystem._request, "__wrapped__", None)
    try:
        from gcsfs.retry import retry_request
    except ImportError:
        return gcsfs.GCSFileSystem
    if wrapped is None:
        return gcsfs.GCSFileSystem
    bounded = retry_request(retries=max(1, request_attempts))(wrapped)
    return type("BoundedRetryGCSFileSystem", (gcsfs.GCSFileSystem,), {"_request": bounded})


class Signer(Protocol):
    """``google.auth.crypt.Signer``'s shape: RSA-SHA256 over ``message`` (may block)."""

    def sign(self, message: bytes) -> bytes: ...


class SigningCredentials(Protocol):
    """``google.auth.credentials.Signing``: service-account or impersonated credentials."""

    @property
    def signer(self) -> Signer: ...

    @property
    def signer_email(self) -> str: ...


def v4_canonical_query(query: dict[str, str]) -> str:
    """Sorted, RFC 3986-encoded query string (only ``~`` left unescaped, as GCS expects)."""
    return "&".join(sorted(
        f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}" for k, v in query.items()))


def v4_signed_headers(headers: dict[str, str]) -> str:
    return ";".join(sorted(h.lower() for h in headers))


def v4_canonical_request(method: str, resource: str, canonical_query: str, headers: dict[str, str]) -> str:
    """The V4 canonical request; the payload is always ``UNSIGNED-PAYLOAD`` for signed URLs."""
    lower = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    canonical_headers = "".join(f"{n}:{lower[n]}\n" for n in sorted(lower))
    return "\n".join([method, resource, canonical_query, canonical_headers, v4_signed_headers(headers),
                      "UNSIGNED-PAYLOAD"])


def v4_string_to_sign(timestamp: str, scope: str, canonical_request: str) -> str:
    return "\n".join([V4_ALGORITHM, timestamp, scope,
                      hashlib.sha256(canonical_request.encode()).hexdigest()])


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GcpCloud(Cloud):
    """Google Cloud: ``gs://`` bucket, GCS FUSE volumes, GKE accelerators, Workload Identity."""

    name = "gcp"
    gpu_types = GPU_TYPES

    def __init__(self, bucket_url: str, *, project: str | None = None, service_account: str = "",
                 endpoint_url: str | None = None, token: Any = None,
                 signing_credentials: SigningCredentials | None = None,
                 signing_service_account: str | None = None,
                 signing_endpoint: str | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 request_attempts: int | None = None) -> None:
        """
        ``service_account``: GSA the workloads' KSA is bound to (Workload Identity annotation).
        ``endpoint_url``/``token``: passed to gcsfs (tests: an emulator and ``"anon"``).
        ``signing_credentials``: sign URLs with these instead of discovering ADC.
        ``signing_service_account``: with ambient (keyless) credentials, sign as this GSA via IAM
        signBlob instead of the ambient identity.
        ``signing_endpoint``: host signed URLs point at (default storage.googleapis.com, or
        ``endpoint_url`` when set so emulator round trips work).
        """
        if not bucket_url.startswith("gs://") or not bucket_url[5:].strip("/"):
            raise ValueError(f"the gcp cloud needs a gs://BUCKET URL, not {bucket_url!r}")
        super().__init__(bucket_url)
        self.bucket = self.bucket_url[5:].split("/", 1)[0]
        self.project = project
        self.service_account = service_account
        self.endpoint_url = endpoint_url
        self.token = token
        self.signing_endpoint = (signing_endpoint or endpoint_url or DEFAULT_SIGNING_ENDPOINT).rstrip("/")
        self.signing_service_account = signing_service_account
        self._clock = clock
        self._signer: tuple[Signer, str] | None = (
            (signing_credentials.signer, signing_credentials.signer_email) if signing_credentials else None)
        self.request_attempts = request_attempts
        self._fs: gcsfs.GCSFileSystem | None = None
        self._fs_lock = asyncio.Lock()
        self._signer_lock = asyncio.Lock()

    # ---- gcsfs ------------------------------------------------------------------------------
    async def _filesystem(self) -> gcsfs.GCSFileSystem:
        if self._fs is None:
            async with self._fs_lock:
                if self._fs is None:
                    kwargs: dict[str, Any] = {
                        "asynchronous": True,
                        "skip_instance_cache": True,
                        # Jobs write artifacts behind our back: a listings cache would go stale.
                        "use_listings_cache": False,
                        "token": self.token,
                        "endpoint_url": self.endpoint_url,
                    }
                    if self.project:
                        kwargs["project"] = self.project
                    # Credential discovery may query the metadata server: keep it off the loop.
                    fs_class = _filesystem_class(self.request_attempts)
                    fs = await asyncio.to_thread(lambda: fs_class(**kwargs))
                    await fs._set_session()
                    self._fs = fs
        return self._fs

    def _path(self, url: str) -> str:
        key = self.key(url)
        return f"{self.bucket_url[5:]}/{key}" if key else self.bucket_url[5:]

    async def exists(self, url: str) -> bool:
        fs = await self._filesystem()
        return bool(await fs._exists(self._path(url)))

    async def _remove_moved(self, url: str) -> None:
        fs = await self._filesystem()
        self.check_write()  # after the await: a pause there must not let the removal out
        await fs._rm_file(self._path(url))

    async def read(self, url: str) -> bytes:
        fs = await self._filesystem()
        data: bytes = await fs._cat_file(self._path(url))
        return data

    async def write(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        """One media upload (< 50 MB) or a resumable one: GCS makes the object visible atomically."""
        fs = await self._filesystem()
        self.check_write()  # after the await: a pause there must not let the write out
        await fs._pipe_file(self._path(url), data, content_type=content_type)
        log.debug("object written", extra={"url": url, "size": len(data)})

    async def list(self, url: str, limit: int | None = None) -> list[ObjectInfo]:
        fs = await self._filesystem()
        prefix = self._path(url).rstrip("/") + "/"
        found: dict[str, dict[str, Any]] = await fs._find(prefix.rstrip("/"), detail=True)
        items = [ObjectInfo(name=name[len(prefix):], size=int(info.get("size") or 0))
                 for name, info in found.items()
                 if name.startswith(prefix) and not name.endswith("/") and info.get("type", "file") == "file"]
        items.sort(key=lambda o: o.name)
        return items if limit is None else items[:limit]

    async def md5(self, url: str) -> str | None:
        """From the object's ``md5Hash`` metadata (base64); None if missing or composite (no md5)."""
        fs = await self._filesystem()
        try:
            info = await fs._info(self._path(url))
        except FileNotFoundError:
            return None
        if info.get("type") != "file" or not info.get("md5Hash"):
            return None
        return base64.b64decode(info["md5Hash"]).hex()

    async def close(self) -> None:
        fs, self._fs = self._fs, None
        session = getattr(fs, "_session", None) if fs is not None else None
        if session is not None and not session.closed:
            await session.close()

    # ---- signed URLs ------------------------------------------------------------------------
    async def _get_signer(self) -> tuple[Signer, str]:
        if self._signer is None:
            async with self._signer_lock:
                if self._signer is None:
                    self._signer = await asyncio.to_thread(_discover_signer, self.signing_service_account)
                    log.info("url signer ready", extra={"signer_email": self._signer[1]})
        return self._signer

    async def signed_upload_url(self, url: str, ttl_seconds: int, md5: str | None = None) -> SignedURL:
        """V4 signed PUT bound to ``Content-Type`` and, with ``md5``, ``Content-MD5``.

        GCS verifies a signed ``Content-MD5`` against the body (400 BadDigest on mismatch), so a
        wrong upload never lands in the bucket.
        """
        if not 0 < ttl_seconds <= MAX_SIGNED_URL_TTL:
            raise ValueError(f"ttl_seconds must be in 1..{MAX_SIGNED_URL_TTL}, not {ttl_seconds}")
        key = self.key(url)
        if not key:
            raise ValueError("cannot sign an upload URL for the bucket itself")
        md5 = normalize_md5(md5)
        signer, email = await self._get_signer()
        now = self._clock().astimezone(dt.UTC).replace(microsecond=0)
        timestamp = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{now:%Y%m%d}/auto/storage/goog4_request"
        endpoint = urllib.parse.urlsplit(self.signing_endpoint)
        client_headers = {"Content-Type": UPLOAD_CONTENT_TYPE}
        if md5 is not None:
            client_headers["Content-MD5"] = base64.b64encode(bytes.fromhex(md5)).decode()
        signed_headers = client_headers | {"Host": endpoint.netloc}
        resource = "/" + urllib.parse.quote(self._path(url), safe="/~")
        query = v4_canonical_query({
            "X-Goog-Algorithm": V4_ALGORITHM,
            "X-Goog-Credential": f"{email}/{scope}",
            "X-Goog-Date": timestamp,
            "X-Goog-Expires": str(ttl_seconds),
            "X-Goog-SignedHeaders": v4_signed_headers(signed_headers),
        })
        to_sign = v4_string_to_sign(timestamp, scope,
                                    v4_canonical_request("PUT", resource, query, signed_headers))
        try:
            signature = await asyncio.to_thread(signer.sign, to_sign.encode())
        except Exception as e:  # transport/refresh errors from google-auth, IAM permission denied
            raise CloudError(f"signing the upload URL as {email} failed: {e}") from e
        signed_url = f"{endpoint.scheme}://{endpoint.netloc}{resource}?{query}&X-Goog-Signature={signature.hex()}"
        log.info("signed upload url issued", extra={"url": url, "signer_email": email, "ttl": ttl_seconds})
        return SignedURL(url=signed_url, expires_at=now + dt.timedelta(seconds=ttl_seconds),
                         method="PUT", headers=client_headers)

    # ---- pod rendering ----------------------------------------------------------------------
    def _volume(self, mount: Mount) -> dict[str, Any]:
        if not mount.url.startswith("gs://"):
            raise ValueError(f"gcp mounts need gs:// URLs, not {mount.url!r}")
        bucket, _, key = mount.url[5:].partition("/")
        key = key.strip("/")
        options = "implicit-dirs" + (f",only-dir={key}" if key else "")
        return {
            "name": mount.name,
            "csi": {
                "driver": GCSFUSE_DRIVER,
                "readOnly": mount.read_only,
                "volumeAttributes": {"bucketName": bucket, "mountOptions": options},
            },
        }

    def _mount_annotations(self) -> dict[str, str]:
        return {GCSFUSE_ANNOTATION: "true"}

    def _gpu_node_selector(self, gpu_type: str) -> dict[str, str]:
        return {GKE_ACCELERATOR_LABEL: gpu_type}

    def workload_service_account(self, namespace: str) -> dict[str, Any] | None:
        """KSA ``substratus`` bound to the workloads' GSA (Workload Identity: GCS FUSE needs it)."""
        metadata: dict[str, Any] = {
            "name": WORKLOAD_SERVICE_ACCOUNT_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "substratus"},
        }
        if self.service_account:
            metadata["annotations"] = {WORKLOAD_IDENTITY_ANNOTATION: self.service_account}
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def _discover_signer(service_account: str | None) -> tuple[Signer, str]:
    """Find how to sign from Application Default Credentials (blocking; run in a thread)."""
    import google.auth
    from google.auth import credentials as ga_credentials
    from google.auth import iam
    from google.auth.transport.requests import Request

    creds, _ = google.auth.default(scopes=[_CLOUD_PLATFORM])
    if isinstance(creds, ga_credentials.Signing) and service_account in (None, creds.signer_email):
        return creds.signer, creds.signer_email
    request = Request()
    email = service_account
    if not email:
        # Compute Engine / Workload Identity credentials learn their email on refresh.
        creds.refresh(request)
        email = getattr(creds, "service_account_email", None)
    if not email or email == "default":
        raise CloudError("cannot sign upload URLs: the ambient credentials are not a service account "
                         "(use Workload Identity, a service-account key, or set a signing service account)")
    return iam.Signer(request, creds, email), email
