"""A real local Kubernetes control plane (kube-apiserver + etcd 3.4) for tests and dev mode.

Like controller-runtime's envtest: no kubelet, no scheduler, no controller-manager — just the API
server and its storage, so tests exercise real admission, validation, resourceVersions, watches,
the status subresource and RBAC instead of mocks. The binaries come from
``hack/install-controlplane.sh`` (1.20.2, built from Debian packages because nothing but package
registries is reachable); ``$SUBSTRATUS_KUBE_APISERVER`` / ``$SUBSTRATUS_ETCD`` select any other
binary, and the launcher reads the apiserver's ``--version`` to pass only the flags that version
accepts (:func:`apiserver_version_flags`). Status changes that a kubelet or
kube-controller-manager would make are faked by :mod:`substratus.testing.simulator`.

Usage::

    with ControlPlane() as cp:
        ...  # cp.kubeconfig_path, cp.server_url, cp.token, cp.ca_path, cp.etcd_url

or ``python -m substratus.testing.controlplane up --dir .dev/controlplane``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import attrs
import yaml

logger = logging.getLogger("substratus.testing.controlplane")  # not __main__ under -m

KUBE_VERSION = "1.20.2"
"""What ``hack/install-controlplane.sh`` builds (Debian's source); any other via the variables below."""
ENV_DIR = "SUBSTRATUS_CONTROLPLANE_DIR"
ENV_APISERVER = "SUBSTRATUS_KUBE_APISERVER"
"""Path of a kube-apiserver binary to use instead of the installed 1.20.2 (any version >= 1.20)."""
ENV_ETCD = "SUBSTRATUS_ETCD"
"""Path of an etcd binary to use instead of the installed 3.4.23."""
INSTALL_SCRIPT = "hack/install-controlplane.sh"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or is unhealthy."""


class ControlPlaneNotInstalled(ControlPlaneError, FileNotFoundError):
    """The kube-apiserver/etcd binaries are missing: run ``hack/install-controlplane.sh``."""


def default_binary_dir() -> Path:
    """``$SUBSTRATUS_CONTROLPLANE_DIR/1.20.2`` (default ``~/.cache/substratus/controlplane/1.20.2``)."""
    root = os.environ.get(ENV_DIR) or str(Path.home() / ".cache" / "substratus" / "controlplane")
    return Path(root) / KUBE_VERSION


def find_binaries(binary_dir: Path | None = None) -> dict[str, Path]:
    """Locate kube-apiserver, etcd and (optional) etcdctl, or raise a message naming the installer.

    With ``binary_dir`` only that directory is searched. Without it, ``$SUBSTRATUS_KUBE_APISERVER``
    and ``$SUBSTRATUS_ETCD`` (paths of binaries) win over :func:`default_binary_dir`; a variable
    naming a missing or non-executable file is an error, never silently ignored.
    """
    d = Path(binary_dir) if binary_dir else default_binary_dir()
    overrides = {} if binary_dir else {name: os.environ.get(env) for name, env in
                                       (("kube-apiserver", ENV_APISERVER), ("etcd", ENV_ETCD))}
    found: dict[str, Path] = {}
    missing = []
    for name in ("kube-apiserver", "etcd", "etcdctl"):
        override = overrides.get(name)
        p = Path(override).expanduser() if override else d / name
        if p.is_file() and os.access(p, os.X_OK):
            found[name] = p
        elif override:
            env = ENV_APISERVER if name == "kube-apiserver" else ENV_ETCD
            raise ControlPlaneNotInstalled(f"{env}={override}: not an executable file")
        elif name != "etcdctl":
            missing.append(name)
    if missing:
        raise ControlPlaneNotInstalled(
            f"{', '.join(missing)} not found in {d}: run `{INSTALL_SCRIPT}` first (about 5 minutes the "
            f"first time; set {ENV_DIR} to use another cache directory, or {ENV_APISERVER}/{ENV_ETCD} "
            "to use other binaries)"
        )
    return found


@attrs.frozen(order=True)
class KubeVersion:
    """A Kubernetes release as ``kube-apiserver --version`` reports it (``Kubernetes v1.36.2``)."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> KubeVersion:
        """The first ``vMAJOR.MINOR[.PATCH]`` in ``text``; ValueError if there is none.

        Pre-release and build suffixes (``-rc.1``, ``+k3s1``, ``-dirty``) are ignored: flags and
        validation change at minor releases."""
        m = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not m:
            raise ValueError(f"no Kubernetes version in {text.strip()[:200]!r}")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))


def binary_version(path: Path, timeout: float = 30.0) -> KubeVersion:
    """Run ``path --version`` and parse it; :class:`ControlPlaneError` if that fails."""
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout)
        return KubeVersion.parse(proc.stdout + proc.stderr)
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise ControlPlaneError(f"cannot read the version of {path}: {e}") from e


# kube-apiserver flags that exist only in some releases: (flag, first minor with it, first minor
# without it). Every other flag the launcher passes is accepted by every release from 1.20 on.
# Source: the kube-apiserver CHANGELOGs; docs/controlplane.md has the table for users.
VERSIONED_APISERVER_FLAGS: tuple[tuple[str, KubeVersion | None, KubeVersion | None], ...] = (
    # Insecure serving: 1.20 accepts only 0 (its default is already 0 but we say so); removed in 1.24.
    ("--insecure-port=0", None, KubeVersion(1, 24)),
)


def apiserver_version_flags(version: KubeVersion) -> list[str]:
    """The version-dependent flags the launcher passes to kube-apiserver ``version`` (pure)."""
    return [flag for flag, since, until in VERSIONED_APISERVER_FLAGS
            if (since is None or version >= since) and (until is None or version < until)]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (sockets held together so they can't repeat)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


@attrs.frozen
class _Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    sa_key: Path
    sa_pub: Path


def _generate_pki(d: Path) -> _Pki:
    """A throwaway CA, a serving cert signed by it (127.0.0.1/localhost SANs) and an SA key pair.

    A separate CA (rather than a bare self-signed leaf) keeps both Go's and Python's strict X.509
    verification happy.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "substratus-local-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")
    ]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1", "10.0.0.1")]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pem = serialization.Encoding.PEM
    pki = _Pki(
        ca_cert=d / "ca.crt", server_cert=d / "apiserver.crt", server_key=d / "apiserver.key",
        sa_key=d / "sa.key", sa_pub=d / "sa.pub",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert.public_bytes(pem))
    nopass = serialization.NoEncryption()
    _write_private(
        pki.server_key, server_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, nopass)
    )
    _write_private(pki.sa_key, sa_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, nopass))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the child if the launcher dies without calling stop() (no leaked servers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@attrs.define(eq=False)
class _Proc:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the child."""
        if self.alive():
            logger.debug("stopping process", extra={"proc": self.name, "pid": self.pid})
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("process ignored SIGTERM, killing", extra={"proc": self.name, "pid": self.pid})
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        self.log_file.close()


def _spawn(name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> _Proc:
    log_file = log_path.open("ab")
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    popen = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})}, preexec_fn=preexec, close_fds=True,
    )
    logger.info("started process", extra={"proc": name, "pid": popen.pid, "log": str(log_path)})
    return _Proc(name=name, args=args, log_path=log_path, popen=popen, log_file=log_file)


@attrs.define(eq=False)
class ControlPlane:
    """kube-apiserver + etcd on loopback, with a token-authenticated admin kubeconfig.

    ``watch_cache`` is off by default so watches are served straight from etcd: then
    :meth:`compact` deterministically turns stale resourceVersions into ``410 Gone`` (with the
    cache on, the apiserver answers from memory and compaction is invisible to watchers).
    """

    binary_dir: Path | None = None
    """Directory with the binaries; default :func:`default_binary_dir`."""
    work_dir: Path | None = None
    """Certs, kubeconfig and logs. Default: a temp dir removed by :meth:`stop`. A given dir is kept."""
    apiserver_args: list[str] = attrs.Factory(list)
    """Extra ``--flag=value`` arguments for kube-apiserver (appended, so they override ours)."""
    etcd_args: list[str] = attrs.Factory(list)
    watch_cache: bool = False
    start_timeout: float = 60.0
    keep_work_dir: bool = False

    token: str = attrs.field(init=False, factory=lambda: secrets.token_hex(24))
    version: KubeVersion | None = attrs.field(init=False, default=None)
    """The kube-apiserver binary's version, read by :meth:`start` (None before)."""
    _bins: dict[str, Path] = attrs.field(init=False, factory=dict)
    _own_work_dir: bool = attrs.field(init=False, default=False)
    _data_dir: Path | None = attrs.field(init=False, default=None)
    _pki: _Pki | None = attrs.field(init=False, default=None)
    _etcd: _Proc | None = attrs.field(init=False, default=None)
    _apiserver: _Proc | None = attrs.field(init=False, default=None)
    _etcd_port: int = attrs.field(init=False, default=0)
    _apiserver_port: int = attrs.field(init=False, default=0)
    _atexit_registered: bool = attrs.field(init=False, default=False)

    # ----------------------------------------------------------------------------------- public
    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._etcd_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self._work / "kubeconfig"

    @property
    def ca_path(self) -> Path:
        return self._work / "pki" / "ca.crt"

    @property
    def apiserver_log(self) -> Path:
        return self._work / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self._work / "etcd.log"

    @property
    def apiserver_pid(self) -> int | None:
        return self._apiserver.pid if self._apiserver and self._apiserver.alive() else None

    @property
    def etcd_pid(self) -> int | None:
        return self._etcd.pid if self._etcd and self._etcd.alive() else None

    @property
    def running(self) -> bool:
        return bool(self._apiserver and self._apiserver.alive() and self._etcd and self._etcd.alive())

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver and wait for ``/readyz``; returns ``self``."""
        if self.running:
            return self
        t0 = time.monotonic()
        self._bins = find_binaries(self.binary_dir)
        self.version = binary_version(self._bins["kube-apiserver"])
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="substratus-controlplane-"))
            self._own_work_dir = True
        self._work.mkdir(parents=True, exist_ok=True)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._pki = _generate_pki(self._work / "pki")
            tokens = self._work / "tokens.csv"
            _write_private(tokens, f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'.encode())
            self._start_etcd()
            self._apiserver_port = _free_ports(1)[0]
            self._write_kubeconfig()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        logger.info("control plane ready", extra={
            "version": self.version, "server": self.server_url, "etcd": self.etcd_url,
            "kubeconfig": str(self.kubeconfig_path), "elapsed": round(time.monotonic() - t0, 1)})
        return self

    def stop(self) -> None:
        """Stop kube-apiserver then etcd (SIGTERM, then SIGKILL) and remove temp dirs. Idempotent."""
        if self._apiserver:
            self._apiserver.stop()
            self._apiserver = None
        if self._etcd:
            self._etcd.stop()
            self._etcd = None
            logger.info("control plane stopped", extra={"server": self.server_url})
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
        if self._own_work_dir and self.work_dir and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
            self._own_work_dir = False

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port, keeping etcd (and so all data)."""
        if not self._apiserver or not self._etcd or not self._etcd.alive():
            raise ControlPlaneError("control plane is not running")
        t0 = time.monotonic()
        self._apiserver.stop()
        self._apiserver = None
        self._start_apiserver()
        logger.info("kube-apiserver restarted", extra={"server": self.server_url, "elapsed": round(time.monotonic() - t0, 1)})

    def compact(self) -> int:
        """Compact etcd up to its current revision (through etcd's JSON gateway); returns it.

        Afterwards any watch or paginated list from an older resourceVersion fails with 410 Gone.
        """
        rev = int(self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1,
                                                   "keys_only": True})["header"]["revision"])
        try:
            self._etcd_call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        except ControlPlaneError as e:
            if "compacted" not in str(e):  # already compacted at this revision: fine
                raise
        logger.info("etcd compacted", extra={"revision": rev})
        return rev

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting the control plane's CA (for plain HTTP clients)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- private
    @property
    def _work(self) -> Path:
        if self.work_dir is None:
            raise ControlPlaneError("control plane has not been started")
        return Path(self.work_dir)

    def _start_etcd(self) -> None:
        # tmpfs when available: etcd fsyncs every write, which dominates API latency on slow disks.
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self._work
        env = {"ETCD_UNSUPPORTED_ARCH": "arm64"} if platform.machine() in ("aarch64", "arm64") else {}
        last_err: Exception | None = None
        for _attempt in range(3):  # a freshly picked port can be taken by someone else: retry
            self._data_dir = Path(tempfile.mkdtemp(prefix="substratus-etcd-", dir=base))
            self._etcd_port, peer_port = _free_ports(2)
            peer = f"http://127.0.0.1:{peer_port}"
            args = [
                str(self._bins["etcd"]),
                "--name=default",
                f"--data-dir={self._data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-outputs=stderr",
                *self.etcd_args,
            ]
            self._etcd = _spawn("etcd", args, self.etcd_log, env)
            try:
                self._wait_for("etcd", self._etcd, self._etcd_healthy, self.etcd_log)
                return
            except ControlPlaneError as e:
                last_err = e
                self._etcd.stop()
                self._etcd = None
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir = None
                if "address already in use" not in _tail(self.etcd_log, 50):
                    raise
        raise ControlPlaneError(f"etcd failed to start after 3 attempts: {last_err}")

    def _apiserver_cmd(self) -> list[str]:
        assert self._pki is not None and self.version is not None
        return [
            str(self._bins["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}",
            *apiserver_version_flags(self.version),
            f"--secure-port={self._apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self._work / 'pki'}",
            f"--tls-cert-file={self._pki.server_cert}",
            f"--tls-private-key-file={self._pki.server_key}",
            f"--client-ca-file={self._pki.ca_cert}",
            f"--token-auth-file={self._work / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._pki.sa_pub}",
            f"--service-account-signing-key-file={self._pki.sa_key}",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            *self.apiserver_args,
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = _spawn("kube-apiserver", self._apiserver_cmd(), self.apiserver_log)
        self._wait_for("kube-apiserver", self._apiserver, self._apiserver_ready, self.apiserver_log)

    def _wait_for(self, name: str, proc: _Proc, check: Any, log: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(
                    f"{name} exited with code {proc.popen.returncode} during startup; last log lines "
                    f"({log}):\n{_tail(log)}"
                )
            ok, last = check()
            if ok:
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name} not ready after {self.start_timeout:.0f}s (last check: {last}); last log lines "
            f"({log}):\n{_tail(log)}"
        )

    def _etcd_healthy(self) -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                body = r.read().decode()
                return '"true"' in body, body
        except (OSError, urllib.error.URLError) as e:
            return False, str(e)

    def _apiserver_ready(self) -> tuple[bool, str]:
        req = urllib.request.Request(f"{self.server_url}/readyz",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=2, context=self.ssl_context()) as r:
                return r.status == 200, r.read().decode(errors="replace")[:200]
        except urllib.error.HTTPError as e:
            return False, f"HTTP {e.code}: {e.read().decode(errors='replace')[:500]}"
        except (OSError, urllib.error.URLError) as e:
            return False, str(e)

    def _etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.etcd_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                result: dict[str, Any] = json.loads(r.read())
                return result
        except urllib.error.HTTPError as e:
            raise ControlPlaneError(f"etcd {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    def _write_kubeconfig(self) -> None:
        assert self._pki is not None
        ca = base64.b64encode(self._pki.ca_cert.read_bytes()).decode()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "substratus-local",
                          "cluster": {"server": self.server_url, "certificate-authority-data": ca}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "substratus-local",
                          "context": {"cluster": "substratus-local", "user": ADMIN_USER, "namespace": "default"}}],
            "current-context": "substratus-local",
            "preferences": {},
        }
        path = self.kubeconfig_path
        tmp = path.with_suffix(".tmp")
        _write_private(tmp, yaml.safe_dump(cfg, sort_keys=False).encode())
        tmp.replace(path)


# ------------------------------------------------------------------------------------------- CLI
PIDFILE = "controlplane.pid"
STATEFILE = "controlplane.json"


def _cmd_up(args: argparse.Namespace) -> int:
    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    pidfile = d / PIDFILE
    if pidfile.exists():
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text().strip()), 0)
            print(f"a control plane is already running from {d} (pid {pidfile.read_text().strip()})",
                  file=sys.stderr)
            return 1
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("received a signal, stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    cp = ControlPlane(work_dir=d, apiserver_args=list(args.apiserver_arg or []), watch_cache=args.watch_cache)
    try:
        cp.start()
        pidfile.write_text(f"{os.getpid()}\n")
        (d / STATEFILE).write_text(json.dumps({
            "pid": os.getpid(), "server": cp.server_url, "etcd": cp.etcd_url,
            "kubeconfig": str(cp.kubeconfig_path), "ca": str(cp.ca_path),
            "apiserverPid": cp.apiserver_pid, "etcdPid": cp.etcd_pid,
        }, indent=2) + "\n")
        print(f"export KUBECONFIG={cp.kubeconfig_path}", flush=True)
        while not stopping.wait(1.0):
            if not cp.running:
                logger.error("control plane process exited; see its logs", extra={"logs": str(d)})
                return 1
        return 0
    finally:
        cp.stop()
        for f in (pidfile, d / STATEFILE):
            f.unlink(missing_ok=True)


def _cmd_down(args: argparse.Namespace) -> int:
    pidfile = Path(args.dir) / PIDFILE
    if not pidfile.exists():
        print(f"no control plane running from {args.dir}", file=sys.stderr)
        return 0
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # The launcher removes its pidfile after stopping etcd and kube-apiserver.
        if not pidfile.exists():
            return 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.2)
    print(f"control plane launcher (pid {pid}) did not exit within 30s", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m substratus.testing.controlplane",
                                     description="Run a local kube-apiserver + etcd.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start and stay in the foreground until SIGTERM/SIGINT")
    up.add_argument("--dir", required=True, help="work dir: kubeconfig, pidfile, certs, logs")
    up.add_argument("--apiserver-arg", action="append", help="extra kube-apiserver flag (repeatable)")
    up.add_argument("--watch-cache", action="store_true", help="enable the apiserver watch cache")
    down = sub.add_parser("down", help="stop a control plane started with `up --dir DIR`")
    down.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _cmd_up(args) if args.command == "up" else _cmd_down(args)
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
