"""The ``local`` cloud: artifacts in a directory shared by the controller and the nodes.

For kind and clusters without a cloud. The bucket is ``file:///abs/path``; workloads see it through
``hostPath`` volumes (kind: an ``extraMounts`` entry on every node, the controller mounting the same
host path), and clients upload build contexts to the operator's own HTTP endpoint
(:class:`UploadServer`) with HMAC-signed, expiring, checksum-bound URLs — the local stand-in for
GCS V4 signed URLs, with the same contract (PUT, fixed content type, body checked against md5).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from substratus.cloud.base import (
    GPU_RESOURCE,
    MAX_SIGNED_URL_TTL,
    UPLOAD_CONTENT_TYPE,
    Cloud,
    Mount,
    ObjectInfo,
    SignedURL,
    normalize_md5,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_SIZE = 10 * 1024**3  # 10 GiB
#: Prefix of in-flight temporary files; :meth:`LocalCloud.list` hides them.
TMP_PREFIX = ".substratus-tmp-"
_CHUNK = 1024 * 1024

__all__ = ["DEFAULT_MAX_UPLOAD_SIZE", "GPU_RESOURCE", "LocalCloud", "UploadServer", "upload_signature"]


def upload_signature(key: bytes, path: str, expires: int, md5: str | None) -> str:
    """HMAC-SHA256 (hex) over ``PUT\\n{path}\\n{expires}\\n{md5 or ''}`` — what a URL is bound to."""
    message = f"PUT\n{path}\n{expires}\n{md5 or ''}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _as_key(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _clean_relative(path: str) -> str | None:
    """``path`` if it is a safe relative object path (no ``..``/``.``/empty segments), else None."""
    if not path or "\\" in path or "\x00" in path:
        return None
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        return None
    return path


def _root_from_url(bucket_url: str) -> Path:
    parsed = urllib.parse.urlparse(bucket_url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"the local cloud needs a file:///absolute/path bucket URL, not {bucket_url!r}")
    path = parsed.path
    if not os.path.isabs(path):
        raise ValueError(f"the local bucket path must be absolute: {bucket_url!r}")
    return Path(os.path.normpath(path))


def _is_visible(name: str) -> bool:
    return not name.startswith(TMP_PREFIX)


class LocalCloud(Cloud):
    """Storage on a shared filesystem, ``hostPath`` volumes, uploads through :class:`UploadServer`."""

    name = "local"
    gpu_types = None  # kind/bare clusters: any GPU node will do, no selection by type

    def __init__(self, bucket_url: str, *, signing_key: bytes | str, upload_base_url: str,
                 host_root: str | None = None, max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        """``host_root``: where the bucket directory is on the nodes, if not the same path as here."""
        self.root = _root_from_url(bucket_url)
        super().__init__("file://" + str(self.root))
        self.host_root = Path(host_root) if host_root else self.root
        self.signing_key = _as_key(signing_key)
        self.upload_base_url = upload_base_url.rstrip("/")
        self.max_upload_size = max_upload_size
        self._clock = clock

    def _path(self, url: str) -> Path:
        key = self.key(url)
        return self.root / key if key else self.root

    # ---- storage ----------------------------------------------------------------------------
    async def exists(self, url: str) -> bool:
        path = self._path(url)
        return await asyncio.to_thread(_exists, path)

    async def read(self, url: str) -> bytes:
        path = self._path(url)
        return await asyncio.to_thread(path.read_bytes)

    async def write(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        """Atomic (temp file + rename); ``content_type`` is not stored — files have no metadata."""
        path = self._path(url)
        self.check_write()
        await asyncio.to_thread(_atomic_write, path, data)
        log.debug("object written", extra={"url": url, "size": len(data)})

    async def list(self, url: str, limit: int | None = None) -> list[ObjectInfo]:
        path = self._path(url)
        items = await asyncio.to_thread(_walk, path)
        return items if limit is None else items[:limit]

    async def _remove_moved(self, url: str) -> None:
        path = self._path(url)
        self.check_write()
        await asyncio.to_thread(path.unlink)

    async def md5(self, url: str) -> str | None:
        path = self._path(url)
        return await asyncio.to_thread(_file_md5, path)

    # ---- uploads ----------------------------------------------------------------------------
    async def signed_upload_url(self, url: str, ttl_seconds: int, md5: str | None = None) -> SignedURL:
        """``{upload_base_url}/uploads/{key}?expires=&md5=&sig=`` served by :class:`UploadServer`."""
        if not 0 < ttl_seconds <= MAX_SIGNED_URL_TTL:
            raise ValueError(f"ttl_seconds must be in 1..{MAX_SIGNED_URL_TTL}, not {ttl_seconds}")
        key = self.key(url)
        md5 = normalize_md5(md5)
        expires = int(self._clock()) + ttl_seconds
        query: dict[str, str] = {"expires": str(expires)}
        if md5:
            query["md5"] = md5
        query["sig"] = upload_signature(self.signing_key, key, expires, md5)
        signed = (f"{self.upload_base_url}/uploads/{urllib.parse.quote(key)}?"
                  f"{urllib.parse.urlencode(query)}")
        headers = {"Content-Type": UPLOAD_CONTENT_TYPE}
        if md5:
            headers["Content-MD5"] = base64.b64encode(bytes.fromhex(md5)).decode()
        log.info("signed upload url issued", extra={"url": url, "expires": expires, "md5": md5 or ""})
        return SignedURL(url=signed, expires_at=dt.datetime.fromtimestamp(expires, dt.UTC),
                         method="PUT", headers=headers)

    def use_upload_port(self, port: int) -> None:
        """Point signed URLs at the port the upload server really bound when the configured base
        URL says ``:0`` (bind to any free port, e.g. tests); any other base URL is left alone."""
        parsed = urllib.parse.urlsplit(self.upload_base_url)
        if parsed.port != 0 or not parsed.hostname:
            return
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        self.upload_base_url = parsed._replace(netloc=f"{host}:{port}").geturl().rstrip("/")

    def upload_server(self) -> UploadServer:
        """The endpoint that accepts this cloud's signed URLs (same root, key and size limit)."""
        return UploadServer(self.root, self.signing_key, self.upload_base_url,
                            max_size=self.max_upload_size, clock=self._clock)

    # ---- pod rendering ----------------------------------------------------------------------
    def _volume(self, mount: Mount) -> dict[str, Any]:
        key = self.key(mount.url)
        host_path = self.host_root / key if key else self.host_root
        # DirectoryOrCreate: an output directory need not exist before the first run.
        return {"name": mount.name, "hostPath": {"path": str(host_path), "type": "DirectoryOrCreate"}}

    # GPU: the base class adds the nvidia.com/gpu limit and NoSchedule toleration; no node
    # selector — on kind/bare clusters the device plugin's resource is the only reliable signal.


def _exists(path: Path) -> bool:
    if path.is_file():
        return True
    if path.is_dir():
        for _dirpath, _dirs, files in os.walk(path):
            if any(_is_visible(f) for f in files):
                return True
    return False


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _walk(root: Path) -> list[ObjectInfo]:
    if not root.is_dir():
        return []
    out: list[ObjectInfo] = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not _is_visible(f):
                continue
            full = Path(dirpath) / f
            try:
                size = full.stat().st_size
            except FileNotFoundError:  # removed while walking
                continue
            out.append(ObjectInfo(name=full.relative_to(root).as_posix(), size=size))
    out.sort(key=lambda o: o.name)
    return out


def _file_md5(path: Path) -> str | None:
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return h.hexdigest()


class _UploadRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UploadServer:
    """HTTP endpoint for the local cloud's signed upload URLs: ``PUT /uploads/{path}``.

    Checks, in order: safe path (400), signature (403), expiry (403), content type (403, as GCS
    does for a signed header), size (413), body md5 (400). The body streams to a temp file next
    to the target while being hashed and is renamed into place only when everything matched, so
    a rejected upload stores nothing and a reader never sees a partial object.
    """

    def __init__(self, storage_root: str | Path, signing_key: bytes | str, base_url: str, *,
                 max_size: int = DEFAULT_MAX_UPLOAD_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(os.path.normpath(os.path.abspath(storage_root)))
        self.signing_key = _as_key(signing_key)
        self.base_url = base_url.rstrip("/")
        self.max_size = max_size
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/uploads/{path:.+}", self._handle_put)
        return app

    async def start(self, host: str = "0.0.0.0", port: int = 8082) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the bound port.

        ``base_url`` is where clients reach this endpoint (logged; signed URLs are built by
        :meth:`LocalCloud.signed_upload_url`).
        """
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1]) if runner.addresses else port
        log.info("upload endpoint listening", extra={"host": host, "port": self.port, "base_url": self.base_url})
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_put(self, request: web.Request) -> web.Response:
        raw = request.match_info["path"]
        try:
            result = await self._receive(request, raw)
        except _UploadRejected as e:
            log.warning("upload rejected", extra={"object_path": raw, "status": e.status, "reason": e.message})
            # Tell the client not to keep the connection: we may not have read its whole body.
            return web.json_response({"error": e.message}, status=e.status, headers={"Connection": "close"})
        log.info("upload stored", extra={"object_path": result["path"], "size": result["size"],
                                          "md5": result["md5"]})
        return web.json_response(result, status=200)

    def _verify(self, request: web.Request, rel: str) -> str | None:
        """Check signature, expiry and headers; returns the bound md5 (or one from Content-MD5)."""
        q = request.query
        expires_raw, sig = q.get("expires"), q.get("sig")
        bound_md5 = q.get("md5") or None
        if not expires_raw or not sig:
            raise _UploadRejected(403, "missing signature: use the URL from status.upload.url as is")
        try:
            expires = int(expires_raw)
        except ValueError:
            raise _UploadRejected(403, "invalid expires parameter") from None
        expected = upload_signature(self.signing_key, rel, expires, bound_md5)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise _UploadRejected(403, "signature does not match this path, expiry and checksum")
        if self._clock() > expires:
            when = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat()
            raise _UploadRejected(403, f"upload URL expired at {when}; change spec.image.upload.requestID "
                                       "to get a fresh one")
        if request.content_type != UPLOAD_CONTENT_TYPE:
            raise _UploadRejected(403, f"Content-Type must be {UPLOAD_CONTENT_TYPE}, "
                                       f"not {request.content_type}")
        header_md5: str | None = None
        if "Content-MD5" in request.headers:
            try:
                header_md5 = base64.b64decode(request.headers["Content-MD5"], validate=True).hex()
            except (binascii.Error, ValueError):
                raise _UploadRejected(400, "Content-MD5 is not base64") from None
            if bound_md5 and header_md5 != bound_md5:
                raise _UploadRejected(400, "Content-MD5 does not match the checksum this URL was issued for")
        return bound_md5 or header_md5

    async def _receive(self, request: web.Request, raw: str) -> dict[str, Any]:
        rel = _clean_relative(raw)
        target = self.root / rel if rel else None
        if rel is None or target is None or not _within(self.root, target):
            raise _UploadRejected(400, "invalid object path")
        expected_md5 = self._verify(request, rel)
        if request.content_length is not None and request.content_length > self.max_size:
            raise _UploadRejected(413, f"upload of {request.content_length} bytes exceeds the "
                                       f"{self.max_size}-byte limit")
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        tmp = target.parent / f"{TMP_PREFIX}{target.name}.{secrets.token_hex(6)}"
        h = hashlib.md5()
        size = 0
        f: BinaryIO = await asyncio.to_thread(open, tmp, "wb")
        try:
            try:
                buf: list[bytes] = []
                buffered = 0
                async for chunk in request.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > self.max_size:
                        raise _UploadRejected(413, f"upload exceeds the {self.max_size}-byte limit")
                    h.update(chunk)
                    buf.append(chunk)
                    buffered += len(chunk)
                    if buffered >= _CHUNK:  # batch disk writes: one thread hop per MiB
                        await asyncio.to_thread(f.write, b"".join(buf))
                        buf, buffered = [], 0
                if buf:
                    await asyncio.to_thread(f.write, b"".join(buf))
                await asyncio.to_thread(_flush, f)
            finally:
                await asyncio.to_thread(f.close)
            digest = h.hexdigest()
            if expected_md5 and digest != expected_md5:
                raise _UploadRejected(400, f"body md5 {digest} does not match the expected {expected_md5}")
            await asyncio.to_thread(os.replace, tmp, target)
        except BaseException:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise
        return {"path": rel, "size": size, "md5": digest}


def _flush(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _within(root: Path, target: Path) -> bool:
    """True if ``target`` stays under ``root`` even after resolving symlinks that already exist."""
    try:
        return Path(os.path.realpath(target)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False
