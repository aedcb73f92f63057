"""``kubectl notebook``: a Jupyter dev loop on the cluster (seed 000 "Iterate on Model Training
Code", SPEC §8).

    kubectl notebook NAME | -f notebook.yaml | -f model.yaml  [--build DIR] [--sync] ...

1. Decide the Notebook: an existing one by NAME; a Notebook manifest; or, from a Model, Dataset
   or Server manifest, the Notebook ``{name}-{kind}`` with that workload's image, params, env,
   resources and mounts (its base model / dataset / served model), to develop that workload's
   code in the environment it runs in.
2. ``--build DIR``: tar DIR (honouring ``.dockerignore``), upload, wait for the build (see
   :mod:`substratus.plugins.upload`).
3. Resume it (``suspend: false``, and a new ``substratus.ai/resume`` annotation value, which
   starts a Notebook the controller stopped for idleness: ``status.idle``), wait for
   ``Serving=True`` while printing each condition change.
4. Read Jupyter's token from the Secret the controller made (``{name}-notebook-token``), run
   ``kubectl port-forward`` to 8888, print ``http://localhost:8888/?token=…`` on stdout, open it.
   The forward is restarted with backoff whenever it drops, for as long as the Pod runs
   (:class:`PortForward`).
5. ``--sync``: mirror local edits into the Pod (:mod:`substratus.plugins.sync`).
6. On exit — Ctrl-C, SIGTERM, or an error after the Notebook was resumed — copy Pod changes
   back (``--sync``) and set ``suspend: true`` (unless ``--keep-running``). The Pod stops, the
   Notebook and its output stay.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import shutil
import subprocess
import sys
import tempfile
import time
import webbrowser
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from substratus import naming
from substratus.api import Notebook
from substratus.api.conditions import BUILT, SERVING, TRUE
from substratus.cli import epilog
from substratus.controllers.notebook import PORT, TOKEN_KEY, token_secret_name
from substratus.controllers.resources import BY_KIND, NOTEBOOKS
from substratus.plugins import PLUGIN_EXIT_CODES, ExitCode, PluginError, add_common_arguments, echo, run_cli
from substratus.plugins.sync import KubectlPodFiles, Syncer
from substratus.plugins.tarball import load_matcher
from substratus.plugins.upload import (
    DEFAULT_TIMEOUT,
    Deadline,
    StatusReporter,
    apply,
    check_crd,
    connect,
    current_condition,
    default_namespace,
    invalid_spec,
    kubectl_binary,
    kubectl_flags,
    load_manifest,
    make_tarball,
    new_request_id,
    parse_object,
    upload_and_build,
    wait_for,
    with_upload,
)
from substratus.runtime.client import ApiError, Client, NotFound
from substratus.runtime.informer import Backoff
from substratus.runtime.resource import PODS, SECRETS

PROG = "kubectl notebook"
WORKLOAD_KINDS = ("Model", "Dataset", "Server")
FOR_ANNOTATION = "substratus.ai/notebook-for"
PORT_FORWARD_READY_SECONDS = 30.0
PORT_FORWARD_RESTARTS = 5
"""Restarts in a row, without a healthy period between them, before asking whether the Pod is gone."""
PORT_FORWARD_HEALTHY_SECONDS = 60.0
"""A forward that ran this long was healthy: the restart budget and the backoff start over."""
PORT_FORWARD_BACKOFF = (1.0, 30.0)
"""First and longest wait (seconds) before restarting a port-forward that stopped."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Open a Jupyter Notebook on the cluster for a Notebook, or for the dev loop of a "
                               "Model, Dataset or Server; suspend it on exit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog([
            "kubectl notebook my-nb                        # resume an existing Notebook and open it",
            "kubectl notebook -f nb.yaml --build . --sync  # build from this directory, mirror edits",
            "kubectl notebook -f model.yaml --build .      # a Notebook for a Model's dev loop",
            "kubectl notebook my-nb --no-open --timeout 10m",
        ], PLUGIN_EXIT_CODES))
    p.add_argument("name", nargs="?", help="an existing Notebook (or one to create with --build)")
    p.add_argument("-f", "--filename", help="a Notebook, Model, Dataset or Server manifest ('-' for stdin)")
    p.add_argument("--build", metavar="DIR", help="build the image from DIR (tarred honouring .dockerignore)")
    p.add_argument("--sync", action="store_true",
                   help="mirror local edits in --build DIR (or --sync-dir) into the Pod; copy Pod edits back on exit")
    p.add_argument("--sync-dir", metavar="DIR", help="directory to sync (default: the --build DIR)")
    add_common_arguments(p, timeout=DEFAULT_TIMEOUT, timeout_help="how long to wait for upload, build and readiness")
    p.add_argument("--port", type=int, default=PORT, help="local port to forward to Jupyter (default %(default)s)")
    p.add_argument("--no-port-forward", action="store_true", help="do not run kubectl port-forward")
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    p.add_argument("--keep-running", action="store_true", help="do not suspend the Notebook on exit")
    p.add_argument("--no-progress", action="store_true", help="no upload progress bar")
    return p


# --- deciding the Notebook (pure) -----------------------------------------------------------------


def notebook_for(workload: dict[str, Any]) -> dict[str, Any]:
    """The Notebook ``{name}-{kind}`` for developing ``workload`` (a normalised Model, Dataset
    or Server): same image, params, env and resources, and the same inputs mounted.

    Not the command: the workload's runs the job (``train.sh``); the Notebook's default starts
    Jupyter. Mounts: a Model's ``baseModel`` → ``model`` and ``trainingDataset`` → ``dataset``
    (what it trains on), a Server's ``model`` → ``model`` (what it serves); a Dataset has none.
    """
    kind, meta, spec = workload["kind"], workload["metadata"], workload["spec"]
    if kind not in WORKLOAD_KINDS:
        raise PluginError(ExitCode.USAGE, f"cannot derive a Notebook from a {kind}")
    name = f"{meta['name']}-{kind.lower()}"
    problem = naming.validate_parent_name(name)
    if problem:
        raise PluginError(ExitCode.USAGE, f"the Notebook for {kind} {meta['name']!r} would be named {name!r}, "
                                          f"which cannot be used: {problem}")
    nb_spec: dict[str, Any] = {"image": copy.deepcopy(spec["image"]), "suspend": False}
    for key in ("params", "env", "resources"):
        if spec.get(key):
            nb_spec[key] = copy.deepcopy(spec[key])
    mounts = {"Model": (("baseModel", "model"), ("trainingDataset", "dataset")),
              "Server": (("model", "model"),)}.get(kind, ())
    for src, dst in mounts:
        if spec.get(src):
            nb_spec[dst] = copy.deepcopy(spec[src])
    return {
        "apiVersion": workload["apiVersion"], "kind": Notebook.KIND,
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "annotations": {FOR_ANNOTATION: f"{kind}/{meta['name']}"}},
        "spec": nb_spec,
    }


def new_resume_value() -> str:
    """A ``substratus.ai/resume`` value no earlier run used (nanoseconds since the epoch)."""
    return str(time.time_ns())


def with_resume(notebook: dict[str, Any]) -> dict[str, Any]:
    """``notebook`` with a new ``substratus.ai/resume`` annotation: a Notebook the controller
    stopped for idleness (``status.idle``) starts again; the spec is not touched for that."""
    out = copy.deepcopy(notebook)
    out.setdefault("metadata", {}).setdefault("annotations", {})[naming.RESUME_ANNOTATION] = new_resume_value()
    return out


def port_forward_command(notebook: str, namespace: str, local_port: int = PORT, *, kubeconfig: str | None = None,
                         context: str | None = None, kubectl: str | None = None) -> list[str]:
    """``kubectl port-forward pod/{name}-notebook {local}:8888`` (the Pod, not a Service: a
    Notebook has none)."""
    pod = naming.child_name(notebook, Notebook.KIND)
    return [kubectl or kubectl_binary(), "port-forward", f"pod/{pod}", f"{local_port}:{PORT}", "-n", namespace,
            *kubectl_flags(kubeconfig, context)]


def notebook_url(token: str, local_port: int = PORT) -> str:
    return f"http://localhost:{local_port}/?token={token}"


# --- the session ------------------------------------------------------------------------------------


@attrs.define
class Options:
    name: str | None = None
    filename: str | None = None
    build: str | None = None
    sync: bool = False
    sync_dir: str | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    port: int = PORT
    port_forward: bool = True
    open_browser: bool = True
    keep_running: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Options:
        a = parser().parse_args(argv)
        if bool(a.name) == bool(a.filename):
            raise PluginError(ExitCode.USAGE, "give a Notebook NAME or -f FILE (exactly one)")
        if a.sync and not (a.sync_dir or a.build):
            raise PluginError(ExitCode.USAGE, "--sync needs a directory: --build DIR or --sync-dir DIR")
        return cls(name=a.name, filename=a.filename, build=a.build, sync=a.sync, sync_dir=a.sync_dir,
                   namespace=a.namespace, kubeconfig=a.kubeconfig, context=a.context, timeout=a.timeout,
                   port=a.port, port_forward=not a.no_port_forward, open_browser=not a.no_open,
                   keep_running=a.keep_running, progress=not a.no_progress)


@attrs.define
class PortForward:
    """``kubectl port-forward`` as a child process: started once it says "Forwarding from",
    its output drained for as long as it runs (it prints a line per connection; a full pipe would
    stall it), restarted whenever it dies (it does when a connection to the Pod breaks).

    Restarts back off (``backoff``, 1 s doubling to 30 s, jittered). A forward that stayed up for
    ``healthy_after`` seconds was healthy: the budget of ``restarts`` failures in a row and the
    backoff start over, so drops hours apart never add up. Once the budget is spent, ``pod_alive``
    decides: while the Pod still runs, keep trying at the slowest pace (the session works as long
    as the Pod does); when it is gone (suspended, deleted), give up and say so. Without
    ``pod_alive`` the budget ends the retries.
    """

    command: list[str]
    stream: TextIO | None = None
    restarts: int = PORT_FORWARD_RESTARTS
    ready_timeout: float = PORT_FORWARD_READY_SECONDS
    healthy_after: float = PORT_FORWARD_HEALTHY_SECONDS
    backoff: Backoff = attrs.field(factory=lambda: Backoff(*PORT_FORWARD_BACKOFF, jitter=0.2))
    pod_alive: Callable[[], Awaitable[bool]] | None = None
    on_restarted: Callable[[], Awaitable[None]] | None = None
    """Called after each successful restart (the Pod may be a new one, e.g. with a new token)."""
    proc: asyncio.subprocess.Process | None = None
    stderr_tail: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=20))
    restarted: int = 0
    """Restarts so far in this session (for the user's messages and tests)."""
    _ready_at: float | None = None
    _tasks: list[asyncio.Task[None]] = attrs.field(factory=list)
    _watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if shutil.which(self.command[0]) is None:
            raise PluginError(ExitCode.ERROR, f"{self.command[0]} not found on PATH (needed for port-forward; "
                                              "or pass --no-port-forward)")
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch())

    async def _spawn(self) -> None:
        self.stderr_tail.clear()
        self._ready_at = None
        proc = self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        err_task = asyncio.create_task(self._drain(proc.stderr, keep=True))
        ready = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ready_timeout):
                while line := await proc.stdout.readline():
                    if line.startswith(b"Forwarding from"):
                        ready = True
                        break
        if ready:
            self._ready_at = time.monotonic()
            self._tasks = [err_task, asyncio.create_task(self._drain(proc.stdout, keep=False))]
            return
        await self._terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await err_task
        why = " ".join(self.stderr_tail) or f"no 'Forwarding from' within {self.ready_timeout:.0f}s"
        raise PluginError(ExitCode.ERROR, f"kubectl port-forward did not start: {why}")

    async def _drain(self, reader: asyncio.StreamReader, *, keep: bool) -> None:
        while line := await reader.readline():
            if keep:
                self.stderr_tail.append(line.decode(errors="replace").strip())

    async def _alive(self) -> bool:
        if self.pod_alive is None:
            return False
        try:
            return await self.pod_alive()
        except Exception as e:  # cannot tell (API server unreachable): the Pod may well run on
            echo(f"port-forward: cannot tell whether the Pod still runs ({e}); still retrying", self.stream)
            return True

    async def _watch(self) -> None:
        failures = 0
        while True:
            assert self.proc is not None
            await self.proc.wait()
            if self._ready_at is not None and time.monotonic() - self._ready_at >= self.healthy_after:
                failures = 0
                self.backoff.reset()
            failures += 1
            why = " ".join(self.stderr_tail) or "no message"
            if failures > self.restarts and not await self._alive():
                gone = "its Pod is not running" if self.pod_alive is not None else \
                    f"{self.restarts} restarts failed in a row"
                echo(f"port-forward stopped ({why}); {gone}: giving up (the Notebook keeps running "
                     "until you exit)", self.stream)
                return
            delay = self.backoff.next()
            echo(f"port-forward stopped ({why}); restarting it in {delay:.1f}s", self.stream)
            await asyncio.sleep(delay)
            self.restarted += 1
            try:
                await self._spawn()
            except PluginError as e:
                echo(e.message, self.stream)
                continue
            if self.on_restarted is not None:
                try:
                    await self.on_restarted()
                except Exception as e:  # a hook must never end the forwarding
                    echo(f"port-forward: after restarting: {e}", self.stream)

    async def _terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def stop(self) -> None:
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._watcher, self._tasks = None, []
        await self._terminate()


async def read_token(client: Client, name: str, ns: str) -> str:
    """Jupyter's token from the Secret the Notebook controller keeps (key ``token``)."""
    secret_name = token_secret_name(name)
    try:
        secret = await client.get(SECRETS, secret_name, ns)
    except NotFound:
        raise PluginError(ExitCode.ERROR, f"the Notebook is ready but its token Secret {ns}/{secret_name} "
                                          "does not exist") from None
    raw = (secret.get("data") or {}).get(TOKEN_KEY)
    if not raw:
        raise PluginError(ExitCode.ERROR, f"Secret {ns}/{secret_name} has no {TOKEN_KEY!r} key")
    return base64.b64decode(raw).decode()


class Session:
    """One ``kubectl notebook`` run; see the module docstring for the steps."""

    def __init__(self, client: Client, opts: Options, *, out: TextIO | None = None, err: TextIO | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.client = client
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err
        self.stop = stop or asyncio.Event()
        self.deadline = Deadline(opts.timeout)
        self.name = ""
        self.ns = ""
        self.url: str | None = None
        self.syncer: Syncer | None = None

    async def _target(self) -> tuple[dict[str, Any] | None, str, str]:
        """(desired Notebook or None for "the existing NAME", name, namespace)."""
        o = self.opts
        ns_default = o.namespace or default_namespace(o.kubeconfig, o.context)
        if o.name:
            return None, o.name, ns_default
        assert o.filename is not None
        manifest = load_manifest(o.filename)
        file_ns = (manifest.get("metadata") or {}).get("namespace")
        if o.namespace and file_ns and file_ns != o.namespace:
            raise PluginError(ExitCode.USAGE, f"the namespace in {o.filename} ({file_ns}) does not match "
                                              f"--namespace {o.namespace}")
        ns = file_ns or ns_default
        obj = parse_object(manifest, ns, (Notebook.KIND, *WORKLOAD_KINDS), image_supplied=bool(o.build))
        if obj["kind"] != Notebook.KIND:
            await check_crd(self.client, BY_KIND[obj["kind"]])
            obj = notebook_for(await self._resolve_image(obj))
        else:
            obj = await self._resolve_image(obj)
        obj["spec"]["suspend"] = False
        return obj, obj["metadata"]["name"], ns

    async def _resolve_image(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Without --build, a manifest whose image is an upload (which only --build can send)
        borrows what the cluster built from it: a workload lends the image it was built into;
        a Notebook already built from that same checksum keeps its image as it is."""
        image = obj["spec"]["image"]
        if self.opts.build or "upload" not in image:
            return obj
        meta = obj["metadata"]
        live = await self.client.get_or_none(BY_KIND[obj["kind"]], meta["name"], meta["namespace"])
        live_image = ((live or {}).get("spec") or {}).get("image") or {}
        live_status = (live or {}).get("status") or {}
        built = live_status.get("image") if (live_status.get("build") or {}).get("checksum") else None
        out = copy.deepcopy(obj)
        if obj["kind"] == Notebook.KIND:
            same = (live_image.get("upload") or {}).get("checksum") == image["upload"].get("checksum")
            if same and built:
                out["spec"]["image"] = live_image
                return out
        elif built:
            # The workload's built image, pinned by digest (status.image; SPEC §1).
            out["spec"]["image"] = {"name": built}
            return out
        raise PluginError(ExitCode.USAGE, f"{obj['kind']} {meta['name']} builds from an upload that has not been "
                                          "built in the cluster: pass --build DIR")

    async def run(self) -> int:
        o = self.opts
        await check_crd(self.client, NOTEBOOKS)
        desired, self.name, self.ns = await self._target()
        label = f"Notebook {self.ns}/{self.name}"
        with tempfile.TemporaryDirectory(prefix="kubectl-notebook-") as tmp:
            tarball = make_tarball(Path(o.build), Path(tmp)) if o.build else None
            request_id = new_request_id()
            if desired is not None:
                if tarball:
                    desired = with_upload(desired, tarball.md5, request_id)
                desired = with_resume(desired)
                live = await apply(self.client, NOTEBOOKS, desired)
            else:
                live = await self._resume_existing(tarball.md5 if tarball else None, request_id)
            echo(f"{label}: applied (suspend: false, resumed)", self.err)
            generation = int(live["metadata"].get("generation") or 1)
            try:
                return await self._session(live, tarball, request_id, generation, label)
            finally:
                await self._clean_up(label)

    async def _resume_existing(self, checksum: str | None, request_id: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"suspend": False}
        if checksum:
            spec["image"] = {"upload": {"checksum": checksum, "requestID": request_id}, "git": None}
        patch = {"metadata": {"annotations": {naming.RESUME_ANNOTATION: new_resume_value()}}, "spec": spec}
        try:
            return await self.client.patch(NOTEBOOKS, self.name, patch, self.ns)
        except NotFound:
            if not checksum:
                raise PluginError(ExitCode.USAGE, f"Notebook {self.ns}/{self.name} not found: create it with "
                                                  "-f FILE, or give --build DIR to create one from a directory") from None
            return await self.client.create(NOTEBOOKS, {
                "apiVersion": NOTEBOOKS.api_version, "kind": Notebook.KIND,
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {"image": {"upload": {"checksum": checksum, "requestID": request_id}}, "suspend": False}},
                self.ns)

    async def _session(self, live: dict[str, Any], tarball: Any, request_id: str, generation: int,
                       label: str) -> int:
        o = self.opts
        reporter = StatusReporter(label, (BUILT, SERVING), self.err)
        reporter.min_generation = generation
        if tarball is not None:
            await upload_and_build(self.client, live, tarball, request_id, self.deadline, kubeconfig=o.kubeconfig,
                                   context=o.context, progress=o.progress, apply_object=False, reporter=reporter)

        def serving(obj: dict[str, Any]) -> dict[str, Any] | None:
            bad = invalid_spec(obj, generation)
            if bad is not None:
                raise PluginError(ExitCode.USAGE, f"the controller rejected {label}: {bad}")
            built = current_condition(obj, BUILT, generation)
            if built and built.get("reason") == "BuildFailed":
                raise PluginError(ExitCode.BUILD_FAILED, f"the image build of {label} failed: {built.get('message')}")
            c = current_condition(obj, SERVING, generation)
            return obj if c and c.get("status") == TRUE else None

        await wait_for(self.client, NOTEBOOKS, self.name, self.ns, serving, self.deadline, "the Notebook to be ready",
                       reporter)
        token = await read_token(self.client, self.name, self.ns)
        self.url = notebook_url(token, o.port)
        forward: PortForward | None = None
        try:
            if o.port_forward:
                forward = PortForward(port_forward_command(self.name, self.ns, o.port, kubeconfig=o.kubeconfig,
                                                           context=o.context), self.err, pod_alive=self._pod_alive,
                                      on_restarted=self._refresh_url)
                await forward.start()
            print(self.url, file=self.out, flush=True)
            if o.open_browser:
                await asyncio.to_thread(webbrowser.open, self.url)
            sync_task: asyncio.Task[None] | None = None
            if o.sync:
                root = Path(o.sync_dir or o.build or ".")
                pod = KubectlPodFiles(naming.child_name(self.name, Notebook.KIND), self.ns,
                                      kubectl_flags=kubectl_flags(o.kubeconfig, o.context), kubectl=kubectl_binary())
                self.syncer = Syncer(root, pod, load_matcher(root), stream=self.err)
                await self.syncer.start()
                sync_task = asyncio.create_task(self.syncer.run())
            echo(f"{label}: ready at {self.url} — press Ctrl-C to stop"
                 + (" (the Notebook is suspended on exit)" if not o.keep_running else ""), self.err)
            try:
                await self.stop.wait()
            except asyncio.CancelledError:
                # Ctrl-C / SIGTERM is how an interactive session ends: a normal exit.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            finally:
                if sync_task is not None:
                    sync_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sync_task
            return ExitCode.OK
        finally:
            if forward is not None:
                await forward.stop()

    async def _refresh_url(self) -> None:
        """A replaced Pod may run with a new token (its Secret was deleted or rotated): print the
        URL that works now, so the session keeps working as long as the Notebook does."""
        token = await read_token(self.client, self.name, self.ns)
        url = notebook_url(token, self.opts.port)
        if url != self.url:
            self.url = url
            print(url, file=self.out, flush=True)
            echo(f"Notebook {self.ns}/{self.name}: its token changed (the Pod was replaced); "
                 f"use the new URL: {url}", self.err)

    async def _pod_alive(self) -> bool:
        """The Notebook's Pod exists, is not being deleted and has not ended: worth forwarding to."""
        try:
            pod = await self.client.get(PODS, naming.child_name(self.name, Notebook.KIND), self.ns)
        except NotFound:
            return False
        except ApiError as e:
            raise RuntimeError(f"reading the Pod: {e}") from e
        phase = (pod.get("status") or {}).get("phase")
        return not (pod.get("metadata") or {}).get("deletionTimestamp") and phase not in ("Succeeded", "Failed")

    async def _clean_up(self, label: str) -> None:
        """Copy Pod edits back, then suspend; each step reported, neither skipped by the other."""
        if self.syncer is not None:
            try:
                await self.syncer.finish()
            except Exception as e:  # the Pod may be gone already; suspending matters more
                echo(f"sync: could not copy files back from the Pod: {e}", self.err)
        if self.opts.keep_running:
            echo(f"{label}: left running (--keep-running)", self.err)
            return
        try:
            await self.client.patch(NOTEBOOKS, self.name, {"spec": {"suspend": True}}, self.ns)
            echo(f"{label}: suspended (resume with `kubectl notebook {self.name} -n {self.ns}`)", self.err)
        except NotFound:
            pass
        except Exception as e:
            echo(f"{label}: could not suspend it ({e}); run "
                 f"`kubectl patch notebook {self.name} -n {self.ns} --type=merge -p '{{\"spec\":{{\"suspend\":true}}}}'`",
                 self.err)


async def run(opts: Options, *, out: TextIO | None = None, err: TextIO | None = None,
              stop: asyncio.Event | None = None) -> int:
    client = await connect(opts.kubeconfig, opts.context)
    try:
        return await Session(client, opts, out=out, err=err, stop=stop).run()
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = Options.from_args(argv)
    except PluginError as e:
        echo(f"{PROG}: error: {e.message}")
        return e.code
    return run_cli(lambda: run(opts), PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Options", "Session", "main", "notebook_for", "notebook_url", "port_forward_command", "run"]
