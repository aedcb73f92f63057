"""The operator image, without a Docker engine: the Dockerfile's stages, user and entry point, the
build context .dockerignore leaves, and the builder stage's command run on that context."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import attrs
from manifest_helpers import REPO, find, rendered

from substratus.config import OperatorConfig

UID = 65532


@attrs.frozen
class Instruction:
    cmd: str
    args: str


@attrs.frozen
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, cmd: str) -> list[str]:
        return [i.args for i in self.instructions if i.cmd == cmd]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments and parser directives dropped."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        cmd, _, args = line.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, line
            stages.append(Stage(m[1], m[2], []))
        else:
            assert stages, f"{cmd} before FROM"
            stages[-1].instructions.append(Instruction(cmd, " ".join(args.split())))
    return stages


STAGES = parse_dockerfile((REPO / "Dockerfile").read_text())


def test_multi_stage_build_on_python_311_slim() -> None:
    assert [(s.base, s.name) for s in STAGES] == [("python:3.11-slim", "builder"), ("python:3.11-slim", "runtime")]
    builder, runtime = STAGES
    assert builder.all("COPY") == ["pyproject.toml README.md ./", "src ./src"]
    assert any(r.startswith("pip wheel --no-deps --wheel-dir /wheels .") for r in builder.all("RUN"))
    # The final stage takes nothing from the context: only the wheel, from the builder.
    assert runtime.all("COPY") == [] and runtime.all("ADD") == []
    (install,) = runtime.all("RUN")
    assert "from=builder" in install and "pip install /wheels/*.whl" in install


def test_runs_substratus_run_as_non_root_without_writing() -> None:
    runtime = STAGES[-1]
    assert runtime.all("USER") == [f"{UID}:{UID}"]
    assert f"--uid {UID}" in runtime.all("RUN")[0]
    env = " ".join(runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    (entry,) = runtime.all("ENTRYPOINT")
    assert json.loads(entry) == ["substratus", "run"]  # exec form: SIGTERM reaches the operator
    assert runtime.all("CMD") == []  # the Deployment's args are appended to the entry point
    exposed = {int(p) for p in runtime.all("EXPOSE")[0].split()}
    defaults = OperatorConfig()
    assert exposed == {int(a.rpartition(":")[2]) for a in (
        defaults.metrics_bind_address, defaults.health_probe_bind_address, defaults.upload_bind_address)}
    # The Deployment runs the image as the user it was built for (local excepted: see its patch).
    pod = find(rendered("gcp"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == UID == pod["securityContext"]["runAsGroup"]


def test_entry_point_exists() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["substratus"] == "substratus.__main__:main"
    proc = subprocess.run([sys.executable, "-m", "substratus", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--leader-elect" in proc.stdout


def _context(ignore: str, files: list[str]) -> list[str]:
    """Files a .dockerignore keeps (Docker's rules: patterns in order, the last match wins, ``!`` re-includes)."""
    rules = [line.strip() for line in ignore.splitlines() if line.strip() and not line.startswith("#")]

    def kept(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, pattern.replace("**/", "*/"))
                   for p in prefixes):
                keep = negate
        return keep

    return [f for f in files if kept(f)]


def test_build_context_and_builder_stage(tmp_path: Path) -> None:
    """What .dockerignore sends is enough for the builder's `pip wheel`, and the wheel is complete."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    context = _context((REPO / ".dockerignore").read_text(), tracked)
    assert "pyproject.toml" in context and "README.md" in context and "src/substratus/__main__.py" in context
    assert not [f for f in context if f.startswith(("test/", "docs/", "manifests/", ".venv/", ".git/"))]
    for f in context:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, tmp_path / f)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("substratus-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"substratus/__main__.py", "substratus/operator.py", "substratus/py.typed"} <= names
    assert not [n for n in names if n.endswith(".pyc")]
    assert "substratus = substratus.__main__:main" in entry_points
