"""Secure metrics: ``/metrics`` over HTTPS, for callers the API server authenticates and authorizes.

What controller-runtime's ``metrics/filters.WithAuthenticationAndAuthorization`` does: the
caller's bearer token goes to a TokenReview (who is it?), the user it names to a
SubjectAccessReview for the non-resource URL (``get /metrics``: may it?). Prometheus' service
account then needs a ClusterRole granting ``nonResourceURLs: ["/metrics"], verbs: ["get"]``
(``manifests/rbac/metrics_reader_role.yaml``) and the operator needs to create both reviews.

Answers: 401 without a token or for a token the API server does not accept, 403 when the review
says no, 500 when the API server cannot be asked (never a scrape on a guess). Decisions are cached
for :attr:`MetricsAuth.ttl` seconds per token, so a scrape every 15 s costs two API calls a minute.
The certificate is ``tls.crt``/``tls.key`` from a directory (e.g. a cert-manager Secret mounted
there); without one a self-signed certificate is generated at start, as controller-runtime does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from substratus.runtime.client import ApiError, Client
from substratus.runtime.resource import SUBJECTACCESSREVIEWS, TOKENREVIEWS

log = logging.getLogger(__name__)


class MetricsAuth:
    """Authenticate (TokenReview) and authorize (SubjectAccessReview) requests to the metrics endpoint."""

    def __init__(self, client: Client, ttl: float = 60.0) -> None:
        self.client = client
        self.ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, int, str]] = {}

    async def decide(self, token: str, path: str, verb: str = "get") -> tuple[int, str]:
        """(HTTP status, reason): 200 allowed, 401 unauthenticated, 403 forbidden, 500 review failed."""
        if not token:
            return 401, "no bearer token"
        key = (hashlib.sha256(token.encode()).hexdigest(), path, verb)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1], hit[2]
        try:
            status, reason = await self._review(token, path, verb)
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("metrics authorization failed", extra={"error": repr(exc)})
            return 500, "authorization failed"
        self._cache[key] = (now + self.ttl, status, reason)
        if len(self._cache) > 1000:  # tokens rotate; keep the cache bounded
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return status, reason

    async def _review(self, token: str, path: str, verb: str) -> tuple[int, str]:
        review = await self.client.create(TOKENREVIEWS, {"spec": {"token": token}})
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return 401, status.get("error") or "token not authenticated"
        user = status.get("user") or {}
        sar = await self.client.create(SUBJECTACCESSREVIEWS, {"spec": {
            "user": user.get("username"), "uid": user.get("uid"), "groups": user.get("groups") or [],
            "extra": user.get("extra") or {}, "nonResourceAttributes": {"path": path, "verb": verb}}})
        sar_status = sar.get("status") or {}
        if not sar_status.get("allowed"):
            return 403, f"{user.get('username')} may not {verb} {path}"
        return 200, "allowed"

    def middleware(self) -> Middleware:
        @web.middleware
        async def check(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            status, reason = await self.decide(token, request.path, request.method.lower())
            if status != 200:
                return web.Response(status=status, text=f"{reason}\n")
            return await handler(request)

        return check


def server_ssl_context(cert_dir: str) -> ssl.SSLContext:
    """TLS 1.2+ server context from ``{cert_dir}/tls.crt`` and ``tls.key``, or a self-signed pair."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_dir:
        d = Path(cert_dir)
        ctx.load_cert_chain(d / "tls.crt", d / "tls.key")
        return ctx
    cert, key = self_signed()
    with tempfile.TemporaryDirectory(prefix="substratus-metrics-") as tmp:
        (Path(tmp) / "tls.crt").write_bytes(cert)
        (Path(tmp) / "tls.key").write_bytes(key)
        ctx.load_cert_chain(Path(tmp) / "tls.crt", Path(tmp) / "tls.key")
    return ctx


def self_signed(hostname: str | None = None) -> tuple[bytes, bytes]:
    """A PEM certificate and key for ``hostname`` (default: this host), valid for a year."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
