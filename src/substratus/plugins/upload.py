"""Upload a build context and wait for the image build: what both plugins share.

The flow (SPEC §6, §8): tar the directory → md5 → set ``spec.image.upload {checksum,
requestID}`` → the controller publishes ``status.upload.url`` for that requestID → PUT the
tarball there → the controller verifies the stored md5 and runs the build Job → ``Built=True``.

A fresh ``requestID`` per invocation means a fresh URL (never an expired one), and lets us tell
our URL from a stale one. If ``status.upload.storedChecksum`` already equals our checksum the
controller has that exact context, so the PUT is skipped (re-running on an unchanged
directory costs nothing, and does not rebuild).

The cluster is polled (every :data:`POLL_SECONDS`) rather than watched: one object, a
human-scale wait, and nothing to resume when a watch drops.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import attrs
import yaml
import yarl
from kubernetes_asyncio.config.config_exception import ConfigException

from substratus import naming
from substratus.api import KINDS, StructureError, from_dict, to_dict, validate
from substratus.api.conditions import BUILT, COMPLETE, TRUE
from substratus.cloud.base import UPLOAD_CONTENT_TYPE
from substratus.controllers.diff import merge_patch
from substratus.controllers.resources import BY_KIND
from substratus.install import crd_install_hint
from substratus.plugins import ExitCode, PluginError, echo
from substratus.plugins.tarball import DockerignoreError, Tarball, build_tarball
from substratus.runtime.client import ApiError, Client, NotFound, ServerError
from substratus.runtime.resource import Resource

POLL_SECONDS = 0.5
DEFAULT_TIMEOUT = 3600.0
LOG_TAIL_LINES = 30
_CHUNK = 256 * 1024

# Headers an upload can be asked to sign that we know how to produce (lower-case).
_PRODUCIBLE = {"host", "content-type", "content-md5"}


# --- small pieces -------------------------------------------------------------------------------


def new_request_id() -> str:
    """Unique per invocation: a readable UTC timestamp plus randomness (two runs in one second)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def upload_headers(url: str, md5_hex: str) -> dict[str, str]:
    """The headers a PUT to ``url`` must carry, derived from the URL alone.

    The controller's ``SignedURL.headers`` never reach us (only ``status.upload.url`` does), so:

    * ``Content-Type: application/octet-stream`` always — every cloud binds URLs to it;
    * ``Content-MD5`` (base64) when the URL signed it: GCS V4 lists it in
      ``X-Goog-SignedHeaders`` (S3 in ``X-Amz-SignedHeaders``). The local cloud's URL carries
      the md5 as a query parameter it checks the body against, so it needs no header.

    A URL that signs a header we cannot produce is refused here, with a clear message, rather
    than by the storage with a signature mismatch.
    """
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    signed: set[str] = set()
    for key, values in query.items():
        if key.lower() in ("x-goog-signedheaders", "x-amz-signedheaders"):
            for v in values:
                signed.update(h.strip().lower() for h in v.split(";") if h.strip())
    unknown = signed - _PRODUCIBLE
    if unknown:
        raise PluginError(ExitCode.UPLOAD_REJECTED,
                          f"the upload URL requires signed headers this client cannot send: {', '.join(sorted(unknown))}")
    headers = {"Content-Type": UPLOAD_CONTENT_TYPE}
    if "content-md5" in signed:
        headers["Content-MD5"] = base64.b64encode(bytes.fromhex(md5_hex)).decode()
    return headers


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line per 25 %
    otherwise, so CI logs stay short). No dependency: this is all we need from tqdm."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self._tty = self.stream.isatty()
        self._last_quarter = -1

    def update(self, n: int) -> None:
        self.done += n
        frac = min(self.done / self.total, 1.0)
        if self._tty:
            filled = int(frac * self.width)
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {frac:6.1%} "
                              f"{_human_bytes(self.done)}/{_human_bytes(self.total)} {_human_bytes(rate)}/s ")
            self.stream.flush()
        elif int(frac * 4) > self._last_quarter:
            self._last_quarter = int(frac * 4)
            echo(f"{self.label}: {frac:.0%} of {_human_bytes(self.total)}", self.stream)

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _error_message(status: int, body: bytes) -> str:
    """The storage's own explanation: JSON ``error``/``message`` (local endpoint) or the XML
    ``<Message>`` of GCS, else the start of the body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            msg = data.get("error") or data.get("message")
            if isinstance(msg, str):
                return f"HTTP {status}: {msg}"
    except ValueError:
        pass
    if "<Message>" in text and "</Message>" in text:
        return f"HTTP {status}: {text.split('<Message>', 1)[1].split('</Message>', 1)[0]}"
    return f"HTTP {status}: {text[:500] or 'no message'}"


async def put_file(url: str, path: Path, md5_hex: str, size: int, *, progress: bool = True,
                   stream: TextIO | None = None, timeout: float | None = None) -> None:
    """PUT ``path`` (``size`` bytes) to the signed ``url`` with the headers it needs;
    ``PluginError(5)`` with the server's message if it says no.

    ``Content-Length`` is set explicitly: the body streams from disk (for the progress bar), and
    signed-URL PUTs must not be chunked.
    """
    headers = upload_headers(url, md5_hex) | {"Content-Length": str(size)}
    bar = Progress(size, "uploading", stream) if progress else None

    async def body() -> Any:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                if bar:
                    bar.update(len(chunk))
                yield chunk
        finally:
            f.close()

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.put(yarl.URL(url, encoded=True), data=body(), headers=headers) as r:  # signed: send as is
            answer = await r.read()
            status = r.status
    except aiohttp.ClientError as e:
        raise PluginError(ExitCode.UPLOAD_REJECTED, f"upload to {_redact(url)} failed: {e}") from e
    finally:
        if bar:
            bar.close()
    if not 200 <= status < 300:
        raise PluginError(ExitCode.UPLOAD_REJECTED, f"the upload was rejected: {_error_message(status, answer)}")


def _redact(url: str) -> str:
    """The URL without its query: signatures do not belong in logs."""
    return urllib.parse.urlsplit(url)._replace(query="").geturl()


# --- cluster access -----------------------------------------------------------------------------


async def connect(kubeconfig: str | None, context: str | None = None) -> Client:
    """A client that has reached the API server; exit 3 (with why) if there is none."""
    try:
        if context:
            client = await Client.from_kubeconfig(kubeconfig, context=context)
        else:
            client = await Client.auto(kubeconfig)
    except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as e:
        detail = " ".join(str(e).split())  # a YAML error spans lines; the error is one
        raise PluginError(ExitCode.NO_CLUSTER, f"no usable Kubernetes configuration ({detail}); "
                                               "pass --kubeconfig or set KUBECONFIG") from e
    try:
        await client.request("GET", "/version")
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        await client.close()
        raise PluginError(ExitCode.NO_CLUSTER, f"cannot connect to the Kubernetes API server at {client.host}: {e}") from e
    except ApiError as e:
        await client.close()
        if e.status in (401, 403):
            raise PluginError(ExitCode.NO_CLUSTER, f"the API server at {client.host} refused our credentials: {e}") from e
        raise
    return client


async def check_crd(client: Client, res: Resource) -> None:
    """Exit 4 unless the API server serves ``res`` (i.e. the CRDs are installed)."""
    try:
        group = await client.request("GET", f"/apis/{res.group}/{res.version}")
    except NotFound:
        group = None
    plurals = {r.get("name") for r in (group or {}).get("resources") or []}
    if res.plural not in plurals:
        raise PluginError(ExitCode.NO_CRDS, f"the cluster does not serve {res.plural}.{res.group}/{res.version}: "
                                            f"install the substratus CRDs ({await crd_install_hint(client)})")


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """kubectl's rule: the context's namespace, the Pod's own in-cluster, else ``default``."""
    try:
        from kubernetes_asyncio.config.kube_config import list_kube_config_contexts

        contexts, current = list_kube_config_contexts(kubeconfig)
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
        ns = ((chosen or {}).get("context") or {}).get("namespace")
        if ns:
            return str(ns)
    except (ConfigException, OSError, ValueError, TypeError, KeyError):
        in_cluster = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        if in_cluster.is_file():
            return in_cluster.read_text().strip() or "default"
    return "default"


def load_manifest(path: str) -> dict[str, Any]:
    """One object from a YAML/JSON file (``-`` for stdin); exit 2 for anything else."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise PluginError(ExitCode.USAGE, f"cannot read {path}: {e}") from e
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise PluginError(ExitCode.USAGE, f"{path} must hold exactly one object, found {len(docs)}")
    return docs[0]


PENDING_UPLOAD = {"upload": {"checksum": "0" * 32, "requestID": "pending"}}
"""Stands in for ``spec.image`` while a manifest is checked, when the command supplies the image
itself (``--build DIR``, ``applybuild``): :func:`with_upload` replaces it before anything is sent."""


def parse_object(manifest: dict[str, Any], namespace: str, kinds: tuple[str, ...] | None = None, *,
                 image_supplied: bool = False) -> dict[str, Any]:
    """The manifest checked and normalised through our API types (defaults filled in), in
    ``namespace``; exit 2 naming the offending fields otherwise.

    ``image_supplied``: the caller builds the image from a directory, so a manifest without
    ``spec.image`` is complete (the build supplies it)."""
    kind = manifest.get("kind")
    allowed = kinds or tuple(KINDS)
    if kind not in allowed:
        raise PluginError(ExitCode.USAGE, f"kind {kind!r} is not supported here; expected one of {', '.join(allowed)}")
    data = copy.deepcopy(manifest)
    data.setdefault("metadata", {})["namespace"] = namespace
    spec = data.get("spec")
    if image_supplied and (spec is None or isinstance(spec, dict)) and not (spec or {}).get("image"):
        data["spec"] = {**(spec or {}), "image": copy.deepcopy(PENDING_UPLOAD)}
    data.pop("status", None)
    try:
        obj = from_dict(data)
    except StructureError as e:
        raise PluginError(ExitCode.USAGE, f"invalid {kind}: " + "; ".join(e.errors)) from e
    problems = validate(obj)
    if problems:
        raise PluginError(ExitCode.USAGE, f"invalid {kind} {obj.metadata.name!r}: " + "; ".join(problems))
    return to_dict(obj)


def with_upload(obj: dict[str, Any], checksum: str, request_id: str, rebuild: str | None = None) -> dict[str, Any]:
    """``obj`` building from an upload: ``image = {upload}`` (git and a prebuilt name dropped);
    with ``rebuild``, the annotation ``substratus.ai/rebuild`` that asks for a new build even of
    an unchanged context (SPEC §6)."""
    out = copy.deepcopy(obj)
    out["spec"]["image"] = {"upload": {"checksum": checksum, "requestID": request_id}}
    if rebuild:
        out["metadata"].setdefault("annotations", {})[naming.REBUILD_ANNOTATION] = rebuild
    return out


async def apply(client: Client, res: Resource, desired: dict[str, Any]) -> dict[str, Any]:
    """Create ``desired``, or make the live spec equal to it with one merge patch.

    Fields missing from ``desired`` are cleared (like ``kubectl apply``); the controller never
    writes the spec (the built image is in ``status.image``), so the spec is entirely ours.
    Labels and annotations are added, never removed (others' may be there).
    """
    meta = desired["metadata"]
    ns, name = meta["namespace"], meta["name"]
    current = await client.get_or_none(res, name, ns)
    if current is None:
        return await client.create(res, _creatable(desired), ns)
    want = copy.deepcopy(desired["spec"])
    patch: dict[str, Any] = {}
    spec_patch = merge_patch(current.get("spec") or {}, want)
    if spec_patch:
        patch["spec"] = spec_patch
    for key in ("labels", "annotations"):
        live = (current.get("metadata") or {}).get(key) or {}
        extra = {k: v for k, v in (meta.get(key) or {}).items() if live.get(k) != v}
        if extra:
            patch.setdefault("metadata", {})[key] = extra
    if not patch:
        return current
    return await client.patch(res, name, patch, ns)


def _creatable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "spec": obj["spec"]}


# --- waiting ------------------------------------------------------------------------------------


@attrs.define
class Deadline:
    """One ``--timeout`` for the whole command, shared by every wait."""

    seconds: float
    started: float = attrs.field(factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def current_condition(obj: dict[str, Any] | None, type_: str, generation: int) -> dict[str, Any] | None:
    """The condition if it describes ``generation`` or later (an older one is stale news)."""
    c = condition(obj, type_)
    if c is None or int(c.get("observedGeneration") or 0) < generation:
        return None
    return c


class StatusReporter:
    """Prints a line whenever a watched condition's status or reason changes."""

    def __init__(self, label: str, types: tuple[str, ...], stream: TextIO | None = None) -> None:
        self.label = label
        self.types = types
        self.stream = stream
        # Conditions about older generations (e.g. "Suspended" from the last session) are news
        # about a spec we just replaced: not shown.
        self.min_generation = 0
        self._seen: dict[str, tuple[str, str]] = {}

    def report(self, obj: dict[str, Any]) -> None:
        for t in self.types:
            c = current_condition(obj, t, self.min_generation)
            if c is None:
                continue
            key = (str(c.get("status")), str(c.get("reason")))
            if self._seen.get(t) != key:
                self._seen[t] = key
                msg = f": {c['message']}" if c.get("message") else ""
                echo(f"{self.label}: {t}={key[0]} {key[1]}{msg}", self.stream)


async def wait_for(client: Client, res: Resource, name: str, ns: str, check: Callable[[dict[str, Any]], Any],
                   deadline: Deadline, what: str, reporter: StatusReporter | None = None) -> Any:
    """Poll the object until ``check(obj)`` returns something truthy (returned) or raises.

    Exit 7 when the deadline passes, with the last condition seen (the likely culprit).
    """
    last: dict[str, Any] | None = None
    while True:
        try:
            obj = await client.get_or_none(res, name, ns)
        except (aiohttp.ClientError, OSError, TimeoutError, ServerError) as e:
            # A blip (API server restart, network hiccup) should not end a long build wait.
            if deadline.remaining() <= 0:
                raise PluginError(ExitCode.NO_CLUSTER, f"lost the API server while waiting for {what}: {e}") from e
            echo(f"API server unreachable ({e}); retrying")
            await asyncio.sleep(min(2.0, max(deadline.remaining(), 0.01)))
            continue
        if obj is None:
            raise PluginError(ExitCode.ERROR, f"{res.kind} {ns}/{name} was deleted while waiting for {what}")
        last = obj
        if reporter:
            reporter.report(obj)
        result = check(obj)
        if result:
            return result
        if deadline.remaining() <= 0:
            raise PluginError(ExitCode.TIMEOUT, f"timed out after {deadline.seconds:.0f}s waiting for {what}"
                                                + _last_conditions(last))
        await asyncio.sleep(min(POLL_SECONDS, max(deadline.remaining(), 0.01)))


def _last_conditions(obj: dict[str, Any] | None) -> str:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    if not conds:
        return " (the controller has not reported any condition: is the operator running?)"
    return " (last: " + "; ".join(f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message', '')}"
                                  for c in conds) + ")"


def invalid_spec(obj: dict[str, Any], generation: int) -> str | None:
    """The controller's InvalidSpec message for ``generation``, if it rejected the spec."""
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("reason") == "InvalidSpec" and int(c.get("observedGeneration") or 0) >= generation:
            return str(c.get("message") or "")
    return None


# --- the whole upload-and-build ---------------------------------------------------------------


@attrs.frozen
class BuildResult:
    obj: dict[str, Any]
    generation: int
    uploaded: bool  # False: the controller already had this exact context


async def build_logs(name: str, kind: str, ns: str, kubeconfig: str | None, context: str | None = None,
                     runner: Callable[[list[str]], Awaitable[tuple[int, str]]] | None = None) -> str | None:
    """The build Job's last log lines via ``kubectl logs``, or None (no kubectl, no Pods left)."""
    job = naming.child_name(name, kind, naming.BUILD)
    # A failed build's Pod has terminated, so there is nothing to wait for (kubectl waits 20 s).
    cmd = [kubectl_binary(), "logs", f"job/{job}", "-c", "build", f"--tail={LOG_TAIL_LINES}",
           "--pod-running-timeout=3s", "-n", ns, *kubectl_flags(kubeconfig, context)]
    run = runner or _run_capture
    try:
        code, out = await run(cmd)
    except (OSError, TimeoutError):
        return None
    return out.rstrip() if code == 0 and out.strip() else None


def kubectl_binary() -> str:
    """``$KUBECTL`` or ``kubectl`` (read when used, so a wrapper can be swapped in)."""
    return os.environ.get("KUBECTL") or "kubectl"


def kubectl_flags(kubeconfig: str | None, context: str | None) -> list[str]:
    return [*([f"--kubeconfig={kubeconfig}"] if kubeconfig else []), *([f"--context={context}"] if context else [])]


async def _run_capture(cmd: list[str]) -> tuple[int, str]:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(cmd[0])
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode("utf-8", "replace")


def make_tarball(directory: Path, dest_dir: Path) -> Tarball:
    """Tar the build context with clear errors (exit 2) for a missing dir or a bad .dockerignore."""
    if not directory.is_dir():
        raise PluginError(ExitCode.USAGE, f"build context {directory} is not a directory")
    if not (directory / "Dockerfile").is_file():
        raise PluginError(ExitCode.USAGE, f"{directory} has no Dockerfile: the build needs one at its root")
    try:
        return build_tarball(directory, dest_dir / "context.tar.gz")
    except DockerignoreError as e:
        raise PluginError(ExitCode.USAGE, f"{directory / '.dockerignore'}: {e}") from e
    except OSError as e:
        raise PluginError(ExitCode.ERROR, f"cannot read the build context: {e}") from e


async def upload_and_build(client: Client, obj: dict[str, Any], tarball: Tarball, request_id: str,
                           deadline: Deadline, *, kubeconfig: str | None = None, context: str | None = None,
                           progress: bool = True, apply_object: bool = True,
                           reporter: StatusReporter | None = None) -> BuildResult:
    """Set ``obj``'s image to the upload, PUT the tarball to the URL the controller publishes
    for ``request_id``, and wait for ``Built=True``. ``obj`` must already build from the upload
    (see :func:`with_upload`); with ``apply_object=False`` it is only read (already applied)."""
    res = BY_KIND[obj["kind"]]
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    label = f"{obj['kind']} {ns}/{name}"
    reporter = reporter or StatusReporter(label, (BUILT,))
    live = await apply(client, res, obj) if apply_object else await client.get(res, name, ns)
    generation = int(live["metadata"].get("generation") or 1)
    reporter.min_generation = generation
    checksum = tarball.md5
    rebuild = ((obj.get("metadata") or {}).get("annotations") or {}).get(naming.REBUILD_ANNOTATION)

    def url_published(o: dict[str, Any]) -> dict[str, Any] | None:
        bad = invalid_spec(o, generation)
        if bad is not None:
            raise PluginError(ExitCode.USAGE, f"the controller rejected {label}: {bad}")
        up = (o.get("status") or {}).get("upload") or {}
        return up if up.get("url") and up.get("requestID") == request_id else None

    echo(f"{label}: waiting for an upload URL (checksum {checksum}, {tarball.entries} entries, "
         f"{_human_bytes(tarball.size)})")
    upload = await wait_for(client, res, name, ns, url_published, deadline, "the upload URL", reporter)
    uploaded = False
    if upload.get("storedChecksum") == checksum:
        echo(f"{label}: the controller already has this build context (md5 {checksum}); not uploading")
    else:
        await put_file(upload["url"], tarball.path, checksum, tarball.size, progress=progress,
                       timeout=max(deadline.remaining(), 1.0))
        uploaded = True
        echo(f"{label}: uploaded {_human_bytes(tarball.size)}")

    def built(o: dict[str, Any]) -> dict[str, Any] | None:
        bad = invalid_spec(o, generation)
        if bad is not None:
            raise PluginError(ExitCode.USAGE, f"the controller rejected {label}: {bad}")
        c = current_condition(o, BUILT, generation)
        if c is None:
            return None
        if c.get("reason") == "BuildFailed":
            raise _BuildFailed(str(c.get("message") or ""))
        # The build of this checksum (and of this rebuild request): an annotation does not
        # bump the generation, so Built=True alone may still describe the previous build.
        status = o.get("status") or {}
        build = status.get("build") or {}
        ours = build.get("checksum") == checksum and (rebuild is None or build.get("rebuild") == rebuild)
        if c.get("status") == TRUE and status.get("image") and ours:
            return o
        complete = current_condition(o, COMPLETE, generation)
        if complete is not None and complete.get("status") == TRUE:
            # SPEC §3: complete artifacts are never rebuilt or rerun silently — waiting would hang.
            raise PluginError(
                ExitCode.USAGE,
                f"{label} is complete ({complete.get('message')}); a complete Model or Dataset is not built "
                f"again. To run it with this directory: `substratus rerun {obj['kind'].lower()}/{name}"
                f"{'' if ns == 'default' else f' -n {ns}'}`, then run this command again (or use a new name).")
        return None

    try:
        final = await wait_for(client, res, name, ns, built, deadline, "the image build", reporter)
    except _BuildFailed as e:
        logs = await build_logs(name, obj["kind"], ns, kubeconfig, context)
        details = (f"last {LOG_TAIL_LINES} lines of the build log:\n{logs}" if logs
                   else "(no build log available: the build Pod is gone or kubectl cannot reach it)")
        raise PluginError(ExitCode.BUILD_FAILED, f"the image build of {label} failed: {e}", details) from None
    echo(f"{label}: built {final['status']['image']}")
    return BuildResult(final, generation, uploaded)


class _BuildFailed(Exception):
    pass

