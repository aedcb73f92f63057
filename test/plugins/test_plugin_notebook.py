"""``kubectl notebook``: deciding the Notebook (pure), and whole sessions against the real local
API server with the operator in-process (upload → build → Ready → URL with token → suspend).

Not exercised (no kubelet here): a real Pod behind the port-forward, the browser and ``kubectl
exec`` — their command lines are checked instead; the port-forward's restarts run against a
stand-in kubectl that really forwards TCP to a local server and drops like the real one, and the
sync engine is tested against a directory standing in for the Pod (test_plugin_sync.py).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from plugin_helpers import CLUSTER, REGISTRY, condition, context_dir, manifest

from substratus.controllers.notebook import JupyterStatus
from substratus.controllers.resources import DATASETS, MODELS, NOTEBOOKS
from substratus.plugins import ExitCode, PluginError, notebook
from substratus.plugins.notebook import Options, notebook_for, notebook_url, port_forward_command
from substratus.plugins.tarball import build_tarball
from substratus.plugins.upload import parse_object
from substratus.runtime.informer import Backoff
from substratus.runtime.resource import PODS, SECRETS
from substratus.testing.wait import eventually

# --- pure ---------------------------------------------------------------------------------------------


def _obj(kind: str, name: str = "falcon-7b-k8s", **spec: Any) -> dict[str, Any]:
    spec.setdefault("image", {"git": {"url": "https://github.com/substratusai/model-trainer-huggingface"}})
    return parse_object({"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name}, "spec": spec},
                        "team-a")


def test_notebook_for_a_training_model_mirrors_its_environment() -> None:
    model = _obj("Model", command=["train.sh"], params={"epochs": 1}, env={"HF_TOKEN": "${{ secrets.hf.token }}"},
                 resources={"cpu": 2, "memory": 8, "gpu": {"count": 4, "type": "nvidia-l4"}},
                 baseModel={"name": "falcon-7b"}, trainingDataset={"name": "k8s-instructions", "namespace": "data"})
    nb = notebook_for(model)
    assert nb["kind"] == "Notebook"
    assert nb["metadata"] == {"name": "falcon-7b-k8s-model", "namespace": "team-a",
                              "annotations": {"substratus.ai/notebook-for": "Model/falcon-7b-k8s"}}
    spec = nb["spec"]
    assert spec["image"] == model["spec"]["image"] and spec["params"] == {"epochs": 1}
    assert spec["env"] == {"HF_TOKEN": "${{ secrets.hf.token }}"}
    assert spec["resources"] == model["spec"]["resources"]
    assert spec["model"] == {"name": "falcon-7b"} and spec["dataset"] == {"name": "k8s-instructions", "namespace": "data"}
    assert "command" not in spec  # the Notebook runs Jupyter, not train.sh
    assert spec["suspend"] is False
    parse_object(nb, "team-a", ("Notebook",))  # a valid Notebook


def test_notebook_for_server_and_dataset() -> None:
    assert notebook_for(_obj("Server", "opt", model={"name": "opt"}))["spec"]["model"] == {"name": "opt"}
    nb = notebook_for(_obj("Dataset", "squad"))
    assert nb["metadata"]["name"] == "squad-dataset" and "model" not in nb["spec"] and "dataset" not in nb["spec"]


def test_notebook_for_refuses_a_name_that_would_be_too_long() -> None:
    with pytest.raises(PluginError) as e:
        notebook_for(_obj("Dataset", "d" * 45))
    assert e.value.code == ExitCode.USAGE and "at most 50" in e.value.message


def test_a_manifest_without_image_is_complete_when_build_supplies_it() -> None:
    bare = {"apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": "dev"}, "spec": {}}
    with pytest.raises(PluginError) as e:
        parse_object(bare, "team-a")
    assert e.value.code == ExitCode.USAGE and "spec.image" in e.value.message
    assert "upload" in parse_object(bare, "team-a", image_supplied=True)["spec"]["image"]
    no_spec = {k: v for k, v in bare.items() if k != "spec"}
    assert "upload" in parse_object(no_spec, "team-a", image_supplied=True)["spec"]["image"]


def test_port_forward_command_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECTL", raising=False)
    assert port_forward_command("nb", "team-a", 9999, kubeconfig="/k", context="kind") == [
        "kubectl", "port-forward", "pod/nb-notebook", "9999:8888", "-n", "team-a", "--kubeconfig=/k", "--context=kind"]
    assert port_forward_command("nb", "ns", kubectl="k") == ["k", "port-forward", "pod/nb-notebook", "8888:8888", "-n", "ns"]
    assert notebook_url("abc") == "http://localhost:8888/?token=abc"


def test_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert notebook.main([]) == 2
    assert notebook.main(["nb", "-f", "x.yaml"]) == 2
    assert notebook.main(["nb", "--sync"]) == 2
    assert "--sync needs a directory" in capsys.readouterr().err
    assert Options.from_args(["nb", "--build", ".", "--sync"]).sync


# --- sessions against the cluster ----------------------------------------------------------------------


async def _start(opts: Options) -> tuple[asyncio.Task[int], io.StringIO, asyncio.Event]:
    out, stop = io.StringIO(), asyncio.Event()
    task = asyncio.create_task(notebook.run(opts, out=out, stop=stop))
    return task, out, stop


async def _url(task: asyncio.Task[int], out: io.StringIO) -> str:
    async def printed() -> str:
        if task.done():
            task.result()  # raise what failed
            raise AssertionError("the session ended before printing the URL")
        return out.getvalue().strip()

    return await eventually(printed, timeout=60, message="the notebook URL on stdout")


async def _token(client: Any, name: str, ns: str) -> str:
    secret = await client.get(SECRETS, f"{name}-notebook-token", ns)
    return base64.b64decode(secret["data"]["token"]).decode()


def _opts(kubeconfig: Path, **kw: Any) -> Options:
    return Options(kubeconfig=str(kubeconfig), timeout=60, port_forward=False, open_browser=False, progress=False,
                   **kw)


async def test_notebook_build_ready_url_then_suspend_on_exit(operator: Any, namespace: str, kubeconfig: Path,
                                                             tmp_path: Path) -> None:
    client = operator.client
    ctx = context_dir(tmp_path / "ctx")
    md5 = build_tarball(ctx, tmp_path / "expected.tar.gz").md5
    file = manifest(tmp_path / "nb.yaml", "Notebook", "dev", namespace, params={"lr": 0.1})
    task, out, stop = await _start(_opts(kubeconfig, filename=str(file), build=str(ctx)))

    url = await _url(task, out)
    assert url == f"http://localhost:8888/?token={await _token(client, 'dev', namespace)}"
    nb = await client.get(NOTEBOOKS, "dev", namespace)
    assert nb["status"]["image"].startswith(f"{REGISTRY}/{CLUSTER}-notebook-{namespace}-dev@sha256:")
    assert nb["status"]["build"]["checksum"] == md5 and "name" not in nb["spec"]["image"]
    assert nb["spec"]["suspend"] is False and nb["status"]["ready"] is True
    assert condition(nb, "Serving")["reason"] == "Available"
    pod = await client.get(PODS, "dev-notebook", namespace)
    assert pod["spec"]["containers"][0]["image"] == nb["status"]["image"]

    stop.set()  # what Ctrl-C does in the interactive phase
    assert await asyncio.wait_for(task, 30) == ExitCode.OK
    nb = await client.get(NOTEBOOKS, "dev", namespace)
    assert nb["spec"]["suspend"] is True

    # Resuming by name (no build): suspend flips back, Ready again, same token; Ctrl-C (task
    # cancellation, as the signal handler does) still exits 0 and suspends.
    task, out, _ = await _start(_opts(kubeconfig, name="dev", namespace=namespace))
    assert await _url(task, out) == url
    task.cancel()
    assert await asyncio.wait_for(task, 30) == ExitCode.OK
    assert (await client.get(NOTEBOOKS, "dev", namespace))["spec"]["suspend"] is True
    await eventually(lambda: _gone(client, "dev-notebook", namespace), timeout=30, message="the Pod deleted")


class _JupyterStatus:
    """The Notebook controller's Jupyter status reader, standing in for the pod proxy only (no
    kubelet here, see test/controllers/test_notebook.py for the HTTP one): idle since 3 h until
    ``active`` is set. The controller's idle decision is production code."""

    def __init__(self) -> None:
        self.last_activity = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)

    def active(self) -> None:
        self.last_activity = dt.datetime.now(dt.UTC)

    async def read(self, namespace: str, pod: str, token: str) -> JupyterStatus:
        return JupyterStatus(last_activity=self.last_activity)


async def test_kubectl_notebook_resumes_an_idle_notebook_without_touching_its_spec(
        operator: Any, namespace: str, kubeconfig: Path) -> None:
    client = operator.client
    jupyter = _JupyterStatus()
    ctl = next(c for c in operator.manager.controllers if c.name == "notebook")
    ctl.reconciler.status_reader = jupyter
    await client.create(NOTEBOOKS, {"apiVersion": "substratus.ai/v1", "kind": "Notebook",
                                    "metadata": {"name": "sleepy", "namespace": namespace},
                                    "spec": {"image": {"name": "substratusai/notebook:v1"}, "idleTimeout": "1h"}})

    async def idle() -> dict[str, Any] | None:
        nb = await client.get(NOTEBOOKS, "sleepy", namespace)
        c = condition(nb, "Serving")
        return nb if c and c["reason"] == "Idle" and await _gone(client, "sleepy-notebook", namespace) else None

    nb = await eventually(idle, timeout=30, message="the idle Notebook stopped")
    assert nb["spec"]["suspend"] is False and nb["metadata"]["generation"] == 1
    assert "kubectl notebook sleepy" in condition(nb, "Serving")["message"]

    jupyter.active()
    task, out, stop = await _start(_opts(kubeconfig, name="sleepy", namespace=namespace))
    await _url(task, out)
    nb = await client.get(NOTEBOOKS, "sleepy", namespace)
    assert condition(nb, "Serving")["reason"] == "Available" and "idle" not in nb["status"]
    assert nb["metadata"]["generation"] == 1, "resumed by the annotation, not a spec change"
    assert nb["metadata"]["annotations"]["substratus.ai/resume"]
    assert await client.get_or_none(PODS, "sleepy-notebook", namespace) is not None
    stop.set()
    assert await asyncio.wait_for(task, 30) == ExitCode.OK


async def test_build_supplies_the_image_a_manifest_leaves_out(operator: Any, namespace: str, kubeconfig: Path,
                                                               tmp_path: Path) -> None:
    """`kubectl notebook -f nb.yaml --build DIR` where nb.yaml has no spec.image (issue 17, item 10)."""
    ctx = context_dir(tmp_path / "ctx")
    md5 = build_tarball(ctx, tmp_path / "expected.tar.gz").md5
    file = tmp_path / "nb.yaml"
    file.write_text(f"apiVersion: substratus.ai/v1\nkind: Notebook\nmetadata: {{name: bare, namespace: {namespace}}}\n")
    task, out, stop = await _start(_opts(kubeconfig, filename=str(file), build=str(ctx)))
    await _url(task, out)
    nb = await operator.client.get(NOTEBOOKS, "bare", namespace)
    assert nb["spec"]["image"]["upload"]["checksum"] == md5
    stop.set()
    assert await asyncio.wait_for(task, 30) == ExitCode.OK


async def _gone(client: Any, pod: str, ns: str) -> bool:
    return await client.get_or_none(PODS, pod, ns) is None


async def test_interrupt_while_building_still_suspends(operator: Any, namespace: str, kubeconfig: Path,
                                                       tmp_path: Path) -> None:
    ctx = context_dir(tmp_path / "ctx")
    task, _, _ = await _start(_opts(kubeconfig, name="early", namespace=namespace, build=str(ctx)))
    await eventually(lambda: operator.client.get_or_none(NOTEBOOKS, "early", namespace), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert (await operator.client.get(NOTEBOOKS, "early", namespace))["spec"]["suspend"] is True


async def test_notebook_for_model_manifest_is_the_dev_loop(operator: Any, namespace: str, kubeconfig: Path,
                                                          tmp_path: Path) -> None:
    client = operator.client
    for res, kind, name in ((MODELS, "Model", "base"), (DATASETS, "Dataset", "data")):
        await client.create(res, {"apiVersion": "substratus.ai/v1", "kind": kind,
                                  "metadata": {"name": name, "namespace": namespace},
                                  "spec": {"image": {"name": f"loader/{name}:v1"}}})
    file = manifest(tmp_path / "model.yaml", "Model", "tuned", namespace, params={"epochs": 1},
                    baseModel={"name": "base"}, trainingDataset={"name": "data"}, command=["train.sh"])
    task, out, stop = await _start(_opts(kubeconfig, filename=str(file), build=str(context_dir(tmp_path / "ctx"))))
    await _url(task, out)
    nb = await client.get(NOTEBOOKS, "tuned-model", namespace)
    assert nb["spec"]["model"] == {"name": "base"} and nb["spec"]["dataset"] == {"name": "data"}
    assert nb["spec"]["params"] == {"epochs": 1} and "command" not in nb["spec"]
    mounts = {m["mountPath"] for m in (await client.get(PODS, "tuned-model-notebook", namespace))
              ["spec"]["containers"][0]["volumeMounts"]}
    assert {"/content/model", "/content/data", "/content/output"} <= mounts
    assert await client.get_or_none(MODELS, "tuned", namespace) is None  # the Model itself is left alone
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0


async def test_session_runs_port_forward_and_can_keep_running(operator: Any, namespace: str, kubeconfig: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv_file = tmp_path / "argv"
    monkeypatch.setenv("KUBECTL", _fake_kubectl(tmp_path, f"""echo "$@" > {argv_file}
echo "Forwarding from 127.0.0.1:18888 -> 8888"
exec sleep 60
"""))
    opts = _opts(kubeconfig, name="pf", namespace=namespace, build=str(context_dir(tmp_path / "ctx")), port=18888,
                 keep_running=True)
    opts.port_forward = True
    task, out, stop = await _start(opts)
    assert (await _url(task, out)).startswith("http://localhost:18888/?token=")
    assert argv_file.read_text().split() == ["port-forward", "pod/pf-notebook", "18888:8888", "-n", namespace,
                                             f"--kubeconfig={kubeconfig}"]
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert (await operator.client.get(NOTEBOOKS, "pf", namespace))["spec"]["suspend"] is False  # --keep-running


async def test_session_prints_the_new_url_when_the_notebook_token_changes(operator: Any, namespace: str,
                                                                           kubeconfig: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 #8/#9: the token Secret is deleted mid-session; the operator rolls the Pod with a
    new token and the session, restarting its dropped port-forward, prints the URL that works now."""
    monkeypatch.setenv("KUBECTL", _fake_kubectl(tmp_path, """echo "Forwarding from 127.0.0.1:18889 -> 8888"
sleep 1
echo "error: lost connection to pod" >&2
exit 1
"""))
    monkeypatch.setattr(notebook, "PORT_FORWARD_BACKOFF", (0.2, 0.5))
    opts = _opts(kubeconfig, name="rot", namespace=namespace, build=str(context_dir(tmp_path / "ctx")), port=18889,
                 keep_running=True)
    opts.port_forward = True
    task, out, stop = await _start(opts)
    first = await _url(task, out)
    old = await _token(operator.client, "rot", namespace)
    assert first == notebook_url(old, 18889)
    await operator.client.delete(SECRETS, "rot-notebook-token", namespace)

    async def new_url() -> str | None:
        lines = out.getvalue().split()
        return lines[-1] if len(lines) >= 2 else None

    url = await eventually(new_url, timeout=60, message="a second URL on stdout")
    token = await _token(operator.client, "rot", namespace)
    assert token != old and url == notebook_url(token, 18889)
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0


async def test_unknown_notebook_without_build_exits_2(operator: Any, namespace: str, kubeconfig: Path) -> None:
    with pytest.raises(PluginError) as e:
        await notebook.run(_opts(kubeconfig, name="nope", namespace=namespace), out=io.StringIO())
    assert e.value.code == ExitCode.USAGE and "not found" in e.value.message


async def test_kubectl_notebook_as_a_kubectl_plugin_with_ctrl_c(operator: Any, namespace: str, kubeconfig: Path,
                                                                tmp_path: Path) -> None:
    """The installed console script, found by kubectl on PATH; SIGINT ends it cleanly."""
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "notebook", "cli", "--build", str(context_dir(tmp_path / "ctx")), "-n", namespace,
        f"--kubeconfig={kubeconfig}", "--timeout=90", "--no-port-forward", "--no-open", "--no-progress",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        assert line.decode().startswith("http://localhost:8888/?token="), (await proc.stderr.read()).decode()
    finally:
        # kubectl execs the plugin (same pid), so the signal reaches our handler.
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    err = (await proc.stderr.read()).decode()
    assert code == 0, err
    assert "Built=True BuildSucceeded" in err and "Serving=True Available" in err and "suspended" in err
    assert (await operator.client.get(NOTEBOOKS, "cli", namespace))["spec"]["suspend"] is True


async def test_refused_kubectl_exec_is_one_line_and_still_suspends(operator: Any, namespace: str,
                                                                   kubeconfig: Path, tmp_path: Path) -> None:
    """`--sync` for a user without pods/exec: kubectl exec is refused after the URL is printed. One
    line naming the refusal and exit 3, the Notebook suspended, no traceback (issue 17, item 5)."""
    refusing = tmp_path / "kubectl"
    refusing.write_text("#!/bin/sh\necho 'Error from server (Forbidden): pods \"sync-notebook\" is forbidden: "
                        "User \"dev\" cannot create resource \"pods/exec\"' >&2\nexit 1\n")
    refusing.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(refusing)}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubectl-notebook"), "sync", "--build", str(context_dir(tmp_path / "ctx")),
        "--sync", "-n", namespace, f"--kubeconfig={kubeconfig}", "--timeout=90s", "--no-port-forward", "--no-open",
        "--no-progress", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err_bytes = await asyncio.wait_for(proc.communicate(), 120)
    err = err_bytes.decode()
    assert out.decode().startswith("http://localhost:8888/?token="), err
    assert proc.returncode == ExitCode.NO_CLUSTER, err
    assert "Traceback" not in err and "forbidden" in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert (await operator.client.get(NOTEBOOKS, "sync", namespace))["spec"]["suspend"] is True


async def test_upload_manifest_without_build_reuses_what_was_built(operator: Any, namespace: str,
                                                                   kubeconfig: Path, tmp_path: Path) -> None:
    client = operator.client
    ctx = context_dir(tmp_path / "ctx")
    md5 = build_tarball(ctx, tmp_path / "expected.tar.gz").md5
    upload = {"upload": {"checksum": md5, "requestID": "from-git-repo"}}
    nb_file = manifest(tmp_path / "nb.yaml", "Notebook", "again", namespace, image=upload)
    ds_file = manifest(tmp_path / "ds.yaml", "Dataset", "never-built", namespace, image=upload)
    # Nothing built yet: only --build can send an upload.
    for f in (nb_file, ds_file):
        with pytest.raises(PluginError) as e:
            await notebook.run(_opts(kubeconfig, filename=str(f)), out=io.StringIO())
        assert e.value.code == ExitCode.USAGE and "pass --build DIR" in e.value.message

    task, out, stop = await _start(_opts(kubeconfig, filename=str(nb_file), build=str(ctx)))
    await _url(task, out)
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    built = (await client.get(NOTEBOOKS, "again", namespace))["spec"]["image"]

    task, out, stop = await _start(_opts(kubeconfig, filename=str(nb_file)))  # same manifest, no --build
    await _url(task, out)
    assert (await client.get(NOTEBOOKS, "again", namespace))["spec"]["image"] == built
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0


# --- port-forward process management, with a stand-in kubectl (no kubelet here) ---------------------


def _fake_kubectl(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-kubectl"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


async def test_port_forward_output_is_drained_and_the_process_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "wrote-everything"
    # ~600 KB of "Handling connection" lines: far more than a pipe holds if nobody reads it.
    kubectl = _fake_kubectl(tmp_path, f"""echo "Forwarding from 127.0.0.1:8888 -> 8888"
i=0; while [ $i -lt 20000 ]; do echo "Handling connection for 8888"; i=$((i+1)); done
touch {marker}
exec sleep 60
""")
    pf = notebook.PortForward([kubectl, "port-forward", "pod/x-notebook", "8888:8888"], io.StringIO())
    await pf.start()
    await eventually(marker.exists, timeout=30, message="the fake port-forward to write all its output")
    proc = pf.proc
    await pf.stop()
    assert proc is not None and proc.returncode is not None


async def test_port_forward_is_restarted_when_it_dies(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    kubectl = _fake_kubectl(tmp_path, f"""echo run >> {runs}
echo "Forwarding from 127.0.0.1:8888 -> 8888"
echo "error: lost connection to pod" >&2
exit 1
""")
    log = io.StringIO()
    pf = notebook.PortForward([kubectl], log, restarts=2, backoff=Backoff(0.05, 0.1))
    await pf.start()
    await eventually(lambda: runs.exists() and len(runs.read_text().split()) == 3, timeout=30)
    await eventually(lambda: "giving up" in log.getvalue(), timeout=10)
    assert "lost connection to pod" in log.getvalue()
    await pf.stop()


async def test_port_forward_that_cannot_start_says_why(tmp_path: Path) -> None:
    kubectl = _fake_kubectl(tmp_path, 'echo "error: unable to forward port because pod is not running" >&2\nexit 1\n')
    with pytest.raises(PluginError) as e:
        await notebook.PortForward([kubectl], io.StringIO()).start()
    assert e.value.code == ExitCode.ERROR and "pod is not running" in e.value.message


def _forwarding_kubectl(tmp_path: Path, listen: int, backend: int, lifetime: float) -> tuple[str, Path]:
    """A stand-in ``kubectl port-forward`` that really forwards ``listen`` → ``backend`` over TCP
    and, like the real one when its connection to the Pod breaks, exits 1 with "lost connection
    to pod" after ``lifetime`` seconds. Each run appends a line to the returned file."""
    runs = tmp_path / "runs"
    script = tmp_path / "fake-kubectl"
    script.write_text(f"""#!{sys.executable}
import asyncio, sys
open({str(runs)!r}, "a").write("run\\n")

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(client_r, client_w):
    pod_r, pod_w = await asyncio.open_connection("127.0.0.1", {backend})
    print("Handling connection for {listen}", flush=True)
    await asyncio.gather(pipe(client_r, pod_w), pipe(pod_r, client_w), return_exceptions=True)

async def main():
    await asyncio.start_server(handle, "127.0.0.1", {listen}, reuse_address=True)
    print("Forwarding from 127.0.0.1:{listen} -> 8888", flush=True)
    await asyncio.sleep({lifetime})
    print("E1129 portforward.go:413] error copying from remote stream to local connection", file=sys.stderr)
    print("error: lost connection to pod", file=sys.stderr, flush=True)
    sys.exit(1)

asyncio.run(main())
""")
    script.chmod(0o755)
    return str(script), runs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def jupyter_stand_in() -> Any:
    """An HTTP server standing in for Jupyter behind the forward; yields its port."""
    async def api(_: web.Request) -> web.Response:
        return web.json_response({"version": "2.14.0"})

    app = web.Application()
    app.router.add_get("/api", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _answers(port: int) -> bool:
    try:
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api", timeout=2) as r:
            return r.status == 200 and (await r.json())["version"] == "2.14.0"
    except (TimeoutError, OSError):
        return False


async def test_port_forward_outlives_more_drops_than_its_budget_when_each_follows_a_healthy_period(
        tmp_path: Path, jupyter_stand_in: int) -> None:
    """Issue 20 #9: drops hours apart (here: each after a healthy period) never use up the budget —
    eight drops with a budget of two, and the URL still answers."""
    listen = _free_port()
    kubectl, runs = _forwarding_kubectl(tmp_path, listen, jupyter_stand_in, lifetime=1.0)
    log = io.StringIO()
    pf = notebook.PortForward([kubectl], log, restarts=2, healthy_after=0.5, backoff=Backoff(0.05, 0.2))
    await pf.start()
    try:
        assert await _answers(listen)
        await eventually(lambda: runs.exists() and len(runs.read_text().split()) >= 9, timeout=60,
                         message="eight drops and restarts")
        await eventually(lambda: _answers(listen), timeout=10, message="the forwarded port to answer after 8 drops")
        assert "giving up" not in log.getvalue()
        assert log.getvalue().count("lost connection to pod") >= 8
    finally:
        await pf.stop()


async def test_port_forward_backs_off_and_gives_up_only_when_the_pod_is_gone(tmp_path: Path,
                                                                             jupyter_stand_in: int) -> None:
    """Drops in quick succession back off (growing waits); past the budget it keeps going while the
    Pod runs and stops once it does not."""
    listen = _free_port()
    kubectl, runs = _forwarding_kubectl(tmp_path, listen, jupyter_stand_in, lifetime=0.0)
    checks: list[bool] = []

    async def pod_alive() -> bool:
        checks.append(len(checks) < 2)  # runs for two more checks, then is gone (e.g. suspended)
        return checks[-1]

    log = io.StringIO()
    pf = notebook.PortForward([kubectl], log, restarts=2, healthy_after=60,
                              backoff=Backoff(0.1, 0.4, jitter=0), pod_alive=pod_alive)
    await pf.start()
    try:
        await eventually(lambda: "giving up" in log.getvalue(), timeout=30, message="the forward to give up")
        # 1 start + 2 restarts of budget + 2 more while the Pod still ran; the third check said gone.
        assert len(runs.read_text().split()) == 5
        assert checks == [True, True, False]
        assert "its Pod is not running: giving up" in log.getvalue()
        waits = [float(line.rsplit(" in ", 1)[1].rstrip("s")) for line in log.getvalue().splitlines()
                 if "restarting it in" in line]
        assert waits == [0.1, 0.2, 0.4, 0.4]
    finally:
        await pf.stop()
