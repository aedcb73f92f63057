"""The command lines a newcomer meets first, run as the installed console scripts (subprocesses):
exact exit codes, one line of error, never a traceback; `make run`'s choice of cluster, its
one-session lock and its "simulated" banner; help, versions, completion, durations."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from substratus.cli import ExitCode, duration
from substratus.controllers.resources import MODELS
from substratus.dev import SIMULATED_BANNER, DevError, choose_cluster, session_lock
from substratus.install import install_crds
from substratus.runtime.client import Client

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 60,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUBSTRATUS_") and k != "KUBECONFIG"}
    full_env.update(env or {})
    exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
    return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or REPO)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr  # one line, nothing around it
    errors = lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("SUBSTRATUS_LEADER_ELECT", "ture", "SUBSTRATUS_LEADER_ELECT='ture': expected true or false"),
    ("SUBSTRATUS_MAX_CONCURRENT_RECONCILES", "four", "SUBSTRATUS_MAX_CONCURRENT_RECONCILES='four': expected a whole"),
    ("SUBSTRATUS_MAX_CONCURRENT_RECONCILES", "0", "--max-concurrent-reconciles (SUBSTRATUS_MAX_CONCURRENT_RECONCILES)"),
    ("SUBSTRATUS_CLOUD", "aws", "--cloud (SUBSTRATUS_CLOUD) must be one of local, gcp"),
])
def test_a_wrong_setting_is_one_line_naming_the_variable(var: str, value: str, needle: str) -> None:
    assert_one_line_error(run("substratus", "run", env={var: value}), ExitCode.USAGE, needle)


def test_a_wrong_flag_is_a_usage_error() -> None:
    proc = run("substratus", "run", "--max-concurrent-reconciles", "four")
    assert proc.returncode == ExitCode.USAGE and "Traceback" not in proc.stderr


# --- help, versions, completion, durations ------------------------------------------------------


def test_help_is_plain_text_with_examples_and_exit_codes() -> None:
    for cmd in (("substratus", "--help"), ("kubectl-notebook", "--help"), ("kubectl-applybuild", "--help"),
                ("substratus", "explain", "--help")):
        proc = run(*cmd)
        assert proc.returncode == 0, proc.stderr
        assert "``" not in proc.stdout and ":class:" not in proc.stdout
        assert "examples:" in proc.stdout and "exit codes:" in proc.stdout
    nb = run("kubectl-notebook", "--help").stdout
    for flag in ("--namespace", "--kubeconfig", "--context", "--timeout DURATION", "--version"):
        assert flag in nb
    assert "5m" in nb


def test_make_help_shows_no_make_escapes() -> None:
    proc = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0
    assert "$$" not in proc.stdout and "$KUBECONFIG" in proc.stdout


@pytest.mark.parametrize("prog", ["substratus", "kubectl-notebook", "kubectl-applybuild"])
def test_version(prog: str) -> None:
    proc = run(prog, "--version")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("0.1.0"), proc.stdout


def test_shell_completion_scripts() -> None:
    proc = run("substratus", "completion", "bash")
    assert proc.returncode == 0 and "complete" in proc.stdout and "explain" in proc.stdout
    proc = run("kubectl-notebook", "--print-completion", "zsh")
    assert proc.returncode == 0 and "--sync" in proc.stdout


def test_kubectl_style_durations() -> None:
    assert duration("5m") == 300 and duration("1h30m") == 5400 and duration("90s") == 90
    assert duration("250ms") == 0.25 and duration("600") == 600
    proc = run("kubectl-applybuild", "-f", "x.yaml", ".", "--timeout", "5q")
    assert proc.returncode == ExitCode.USAGE and "invalid duration '5q'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- explain ------------------------------------------------------------------------------------


def test_explain_user_errors(tmp_path: Path) -> None:
    assert_one_line_error(run("substratus", "explain", "pod/x"), ExitCode.USAGE, "unknown kind 'pod'")
    assert_one_line_error(run("substratus", "explain", "model/x", "-A"), ExitCode.USAGE, "-A")
    missing = tmp_path / "nope"
    assert_one_line_error(run("substratus", "explain", "model/x", "--kubeconfig", str(missing)),
                          ExitCode.NO_CLUSTER, "Kubernetes configuration")
    dead = tmp_path / "dead.yaml"
    dead.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: {server: "
                    "'https://127.0.0.1:9'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
                    "users: [{name: u, user: {token: x}}]\n")
    assert_one_line_error(run("substratus", "explain", "model/x", "--kubeconfig", str(dead)),
                          ExitCode.NO_CLUSTER, "cannot connect")


@pytest.mark.parametrize("cmd", [("rerun", "model/x"), ("adopt", "model/x"), ("explain", "model/x")])
def test_every_cluster_command_reports_no_kubeconfig_alike(cmd: tuple[str, ...], tmp_path: Path) -> None:
    """rerun and adopt fail on a missing/unreadable kubeconfig as explain and the plugins do (and none
    of them on a kubeconfig that is not YAML: it was a traceback): one
    line ``substratus: error: …``, exit 3, none of the Kubernetes library's own warnings."""
    missing = tmp_path / "nope"
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("{not: [a kubeconfig")
    for kubeconfig in (missing, garbage):
        proc = run("substratus", *cmd, "--kubeconfig", str(kubeconfig))
        assert_one_line_error(proc, ExitCode.NO_CLUSTER, "substratus: error: no usable Kubernetes configuration")
    dead = tmp_path / "dead.yaml"
    dead.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: {server: "
                    "'https://127.0.0.1:9'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
                    "users: [{name: u, user: {token: x}}]\n")
    assert_one_line_error(run("substratus", *cmd, "--kubeconfig", str(dead)), ExitCode.NO_CLUSTER, "cannot connect")
    assert_one_line_error(run("substratus", cmd[0], "pod/x"), ExitCode.USAGE, "substratus: error: unknown kind")


def test_convert_of_an_unreadable_manifest_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(run("substratus", "convert", str(tmp_path / "nope.yaml")), ExitCode.USAGE,
                          "substratus: error: ", "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [b\n")
    assert_one_line_error(run("substratus", "convert", str(bad)), ExitCode.USAGE, "substratus: error: ")


@pytest.mark.parametrize("cmd", [("rerun",), ("adopt",), ("convert",)])
def test_help_of_every_command_lists_its_exit_codes(cmd: tuple[str, ...]) -> None:
    proc = run("substratus", *cmd, "--help")
    assert proc.returncode == 0 and "exit codes:" in proc.stdout and "examples:" in proc.stdout, proc.stdout


@pytest.fixture
async def models(client: Client, namespace: str) -> str:
    await install_crds(client)
    for i in range(40):
        await client.create(MODELS, {"metadata": {"name": f"m{i:02d}", "namespace": namespace},
                                     "spec": {"image": {"name": "loader:1"}}})
    return namespace


def _explain(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("substratus", "explain", *args, "--kubeconfig", str(kubeconfig))


async def test_explain_json_all_namespaces_context_and_dependencies_once(models: str, kubeconfig: Path) -> None:
    import json

    proc = _explain(kubeconfig, "model/m00", "-n", models, "-o", "json")
    assert proc.returncode == ExitCode.NOT_READY, proc.stderr  # no operator here: no status yet
    doc = json.loads(proc.stdout)
    assert (doc["kind"], doc["name"], doc["found"], doc["ready"]) == ("Model", "m00", True, False)
    assert "no status yet" in doc["why"]
    proc = _explain(kubeconfig, "models", "-A", "-o", "json")
    names = {(d["namespace"], d["name"]) for d in json.loads(proc.stdout)}
    assert {(models, f"m{i:02d}") for i in range(40)} <= names
    context = run("kubectl", f"--kubeconfig={kubeconfig}", "config", "current-context").stdout.strip()
    proc = _explain(kubeconfig, "model/m01", "-n", models, "--context", context)
    assert proc.returncode == ExitCode.NOT_READY and proc.stdout.startswith(f"Model {models}/m01")
    bad = _explain(kubeconfig, "model/m01", "-n", models, "--context", "no-such-context")
    assert_one_line_error(bad, ExitCode.NO_CLUSTER, "no-such-context")


async def test_explain_into_a_closed_pipe_is_quiet(models: str, kubeconfig: Path) -> None:
    """`substratus explain models -A | head -1`: the reader leaves early; no BrokenPipeError."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = await asyncio.to_thread(
        subprocess.run, f"{BIN / 'substratus'} explain models -A --kubeconfig {kubeconfig} | head -c 10",
        shell=True, capture_output=True, text=True, timeout=60, env=env)
    assert len(proc.stdout) == 10
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


# --- make run / substratus dev run ----------------------------------------------------------------


def test_choose_cluster_never_picks_home_kubeconfig_silently() -> None:
    assert choose_cluster(None, {}) is None  # a local control plane, whatever ~/.kube/config holds
    assert choose_cluster(None, {"KUBECONFIG": "/k"}) == "/k"
    assert choose_cluster("/flag", {"KUBECONFIG": "/k"}) == "/flag"
    assert choose_cluster("/flag", {"KUBECONFIG": "/k"}, local=True) is None


def _make_run(args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # An impossible setting makes the operator stop at once, after make decided what to build.
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("SUBSTRATUS_")}
    # -o: never (re)install the venv here; this test is about the control plane.
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "run", f"PY={sys.executable}",
                           "CONTROLPLANE_INSTALL=echo WOULD-BUILD-CONTROLPLANE",
                           f"ARGS={args} --max-concurrent-reconciles=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env={**base, **env})


def test_make_run_builds_nothing_when_a_cluster_is_given(kubeconfig: Path) -> None:
    for args, env in (("", {"KUBECONFIG": str(kubeconfig)}), (f"--kubeconfig={kubeconfig}", {})):
        proc = _make_run(args, env)
        assert "WOULD-BUILD-CONTROLPLANE" not in proc.stdout, proc.stdout
        assert "max-concurrent-reconciles" in proc.stderr and "Traceback" not in proc.stderr
    for args, env in (("", {}), ("--local", {"KUBECONFIG": str(kubeconfig)})):
        assert "WOULD-BUILD-CONTROLPLANE" in _make_run(args, env).stdout


def test_second_session_in_one_checkout_is_one_line_naming_the_first(tmp_path: Path) -> None:
    with session_lock(tmp_path / ".dev"):
        proc = run("substratus", "dev", "run", "--dev-dir", str(tmp_path / ".dev"), cwd=tmp_path)
        assert_one_line_error(proc, ExitCode.ERROR, "another dev session", f"pid {os.getpid()}", "--dev-dir")
        with pytest.raises(DevError, match="another dev session"), session_lock(tmp_path / ".dev"):
            pass
    with session_lock(tmp_path / ".dev"):  # released: taken again
        pass


def test_a_taken_port_stops_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run("substratus", "dev", "run", "--dev-dir", str(tmp_path / ".dev"),
                   f"--metrics-bind-address=127.0.0.1:{port}", cwd=tmp_path)
    assert_one_line_error(proc, ExitCode.ERROR, f"port {port} (--metrics-bind-address", "in use")
    assert not (tmp_path / ".dev" / "controlplane").exists()  # nothing was started


@pytest.fixture
def dev_session(local_controlplane: object, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("SUBSTRATUS_")}
    proc = subprocess.Popen(
        [str(BIN / "substratus"), "dev", "run", "--dev-dir", str(tmp_path / ".dev"), "--leader-elect",
         "--metrics-bind-address=127.0.0.1:0", "--health-probe-bind-address=127.0.0.1:0",
         "--upload-bind-address=127.0.0.1:0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_dev_session_says_it_is_simulated_and_takes_the_lease(dev_session: subprocess.Popen[str],
                                                              tmp_path: Path) -> None:
    """`make run ARGS=--leader-elect` on the local control plane: banner, lease acquired (the namespace is
    created rather than retried forever), a second session refused, Ctrl-C exits 0."""
    assert dev_session.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("acquired lease" in line for line in out):
        line = dev_session.stdout.readline()
        if not line:
            break
        out.append(line)
    text = "".join(out)
    assert SIMULATED_BANNER in text, text
    assert "in memory" in text and f"export KUBECONFIG={(tmp_path / '.dev').resolve()}" in text
    assert "acquired lease" in text, text
    second = run("substratus", "dev", "run", "--dev-dir", str(tmp_path / ".dev"), cwd=tmp_path)
    assert_one_line_error(second, ExitCode.ERROR, f"pid {dev_session.pid}")
    dev_session.send_signal(signal.SIGINT)
    rest, _ = dev_session.communicate(timeout=60)
    assert dev_session.returncode == 0, text + rest
    assert "Traceback" not in text + rest
