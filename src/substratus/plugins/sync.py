"""``kubectl notebook --sync``: mirror local edits into the Notebook Pod, copy Pod edits back on exit.

Split in two so the part that decides is tested on its own:

* pure functions — :func:`diff` (what changed between two scans), :func:`plan_pull` (which Pod
  files to copy back, which are conflicts) — over plain ``path → signature`` mappings;
* :class:`Syncer` — polls the local tree, pushes changes through a :class:`PodFiles` transport.
  :class:`KubectlPodFiles` is the real one (``kubectl exec`` + tar: one round trip per batch,
  any image with ``sh``, ``tar``, ``find`` and ``md5sum``, i.e. coreutils or busybox).

Local files are compared by (mtime, size) to find candidates cheaply, then by md5 — the Pod's
clock and mtimes mean nothing here, content does. ``synced`` records, per path, the md5 both
sides last agreed on; that is what makes "changed in the Pod" vs "changed locally" decidable.
Pulling back never deletes local files and never overwrites a file changed on both sides: the
Pod's copy is written next to it as ``<name>.from-notebook``.

What is synced: files (not empty directories) that ``.dockerignore`` does not exclude, minus
the mount points under ``/content`` (``model``, ``data``, ``output``, ``params.json``) and
Jupyter/Python caches (``.ipynb_checkpoints``, ``__pycache__``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, TextIO

import attrs

from substratus.controllers.render import CONTENT_DIR, PARAMS_FILE
from substratus.plugins import KubectlError, echo
from substratus.plugins.tarball import PatternMatcher

#: Top-level names under /content that are mounts, never synced.
RESERVED = ("model", "data", "output", PARAMS_FILE)
#: Directory names never synced at any depth.
CACHE_DIRS = (".ipynb_checkpoints", "__pycache__")
CONFLICT_SUFFIX = ".from-notebook"
_CHUNK = 1024 * 1024

Signature = tuple[int, int]  # (mtime_ns, size)


@attrs.frozen
class Changes:
    changed: tuple[str, ...]  # new or modified
    deleted: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted)


def diff(old: Mapping[str, object], new: Mapping[str, object]) -> Changes:
    """Paths added or whose value changed, and paths gone, between two scans (sorted)."""
    changed = tuple(sorted(p for p, v in new.items() if old.get(p) != v))
    deleted = tuple(sorted(p for p in old if p not in new))
    return Changes(changed, deleted)


@attrs.frozen
class PullPlan:
    copy: tuple[str, ...]  # Pod → local, overwriting (local unchanged since the last sync)
    conflicts: tuple[str, ...]  # changed on both sides: Pod copy saved as <path>.from-notebook
    deleted_in_pod: tuple[str, ...]  # gone in the Pod, kept locally (reported only)


def plan_pull(synced: Mapping[str, str], local: Mapping[str, str], remote: Mapping[str, str]) -> PullPlan:
    """What to copy back given the md5s last agreed (``synced``), and now on each side."""
    copy: list[str] = []
    conflicts: list[str] = []
    for path, md5 in sorted(remote.items()):
        base = synced.get(path)
        if md5 == base or md5 == local.get(path):
            continue  # unchanged in the Pod, or both sides already agree
        if local.get(path) == base:  # local untouched (or absent on both) since the last sync
            copy.append(path)
        else:
            conflicts.append(path)
    deleted = [p for p in sorted(synced) if p not in remote and p in local]
    return PullPlan(tuple(copy), tuple(conflicts), tuple(deleted))


def is_synced_path(rel: str, matcher: PatternMatcher | None) -> bool:
    """Whether a relative path takes part in syncing (see the module docstring)."""
    parts = rel.split("/")
    if parts[0] in RESERVED or any(p in CACHE_DIRS for p in parts) or rel.endswith(CONFLICT_SUFFIX):
        return False
    return not (matcher is not None and matcher.matches(rel))


def scan(root: Path, matcher: PatternMatcher | None) -> dict[str, Signature]:
    """Regular files under ``root`` that are synced, with their (mtime_ns, size)."""
    out: dict[str, Signature] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        # Prune excluded directories (keeping those an exception might re-include is not worth
        # it for a dev loop: the tarball already carried them).
        dirnames[:] = sorted(d for d in dirnames if is_synced_path(prefix + d, matcher))
        for name in filenames:
            rel = prefix + name
            if not is_synced_path(rel, matcher):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):  # symlinks and special files are not synced
                out[rel] = (st.st_mtime_ns, st.st_size)
    return out


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- the Pod side -------------------------------------------------------------------------------


class PodFiles(Protocol):
    """The Notebook Pod's ``/content``, as the syncer needs it."""

    async def snapshot(self) -> dict[str, str]:
        """Every regular file (relative path → md5), mounts and caches excluded."""
        ...

    async def push(self, root: Path, paths: Sequence[str]) -> None:
        """Write the local files ``root/path`` to the same relative paths in the Pod."""
        ...

    async def delete(self, paths: Sequence[str]) -> None:
        ...

    async def pull(self, paths: Sequence[str], dest: Path) -> None:
        """Copy the Pod's ``paths`` into the local directory ``dest`` (same relative paths)."""
        ...


def snapshot_script(root: str = CONTENT_DIR) -> str:
    """The shell run in the Pod to list files with their md5 (mounts and caches pruned)."""
    prune = " -o ".join([f"-path ./{shlex.quote(n)}" for n in RESERVED] + [f"-name {n}" for n in CACHE_DIRS])
    return f"cd {shlex.quote(root)} && find . \\( {prune} \\) -prune -o -type f -exec md5sum {{}} +"


def parse_md5sum(output: str) -> dict[str, str]:
    """``md5sum`` lines (``<md5>  ./path``; a leading ``\\`` marks an escaped name) → path → md5."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        md5, sep, name = line.partition("  ")
        if not sep or len(md5) != 32:
            continue
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        out[name.removeprefix("./")] = md5
    return out


@attrs.define
class KubectlPodFiles:
    """:class:`PodFiles` over ``kubectl exec`` (the API server's exec needs a kubelet)."""

    pod: str
    namespace: str
    container: str = "notebook"
    kubectl_flags: list[str] = attrs.field(factory=list)
    root: str = CONTENT_DIR
    kubectl: str = "kubectl"

    def exec_command(self, *argv: str, stdin: bool = False) -> list[str]:
        return [self.kubectl, "exec", *(["-i"] if stdin else []), self.pod, "-n", self.namespace,
                "-c", self.container, *self.kubectl_flags, "--", *argv]

    async def _run(self, cmd: list[str], stdin: bytes | None = None) -> bytes:
        if shutil.which(cmd[0]) is None:
            raise KubectlError(f"{cmd[0]} not found on PATH")
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise KubectlError(f"{' '.join(cmd[:3])} … failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
        return out

    async def snapshot(self) -> dict[str, str]:
        out = await self._run(self.exec_command("sh", "-c", snapshot_script(self.root)))
        return parse_md5sum(out.decode("utf-8", "surrogateescape"))

    async def push(self, root: Path, paths: Sequence[str]) -> None:
        if paths:
            await self._run(self.exec_command("tar", "-xf", "-", "-C", self.root, stdin=True), tar_bytes(root, paths))

    async def delete(self, paths: Sequence[str]) -> None:
        if paths:
            await self._run(self.exec_command("rm", "-f", "--", *[f"{self.root}/{p}" for p in paths]))

    async def pull(self, paths: Sequence[str], dest: Path) -> None:
        if paths:
            data = await self._run(self.exec_command("tar", "-cf", "-", "-C", self.root, "--", *paths))
            extract_tar(data, dest)


def tar_bytes(root: Path, paths: Sequence[str]) -> bytes:
    """An uncompressed tar of ``root/path`` for each path (what ``tar -x`` in the Pod reads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in paths:
            tar.add(root / p, arcname=p, recursive=False)
    return buf.getvalue()


def extract_tar(data: bytes, dest: Path) -> None:
    """Extract a tar from the Pod, refusing anything outside ``dest`` (links, ``..``, devices)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


# --- the syncer ---------------------------------------------------------------------------------


@attrs.define
class SyncReport:
    pushed: int = 0
    deleted: int = 0
    pulled: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    deleted_in_pod: tuple[str, ...] = ()


class Syncer:
    """Local directory ↔ Pod ``/content``: push on change, pull back once at the end."""

    def __init__(self, root: Path, pod: PodFiles, matcher: PatternMatcher | None, *,
                 interval: float = 1.0, stream: TextIO | None = None) -> None:
        self.root = Path(root)
        self.pod = pod
        self.matcher = matcher
        self.interval = interval
        self.stream = stream
        self.signatures: dict[str, Signature] = {}
        self.synced: dict[str, str] = {}  # path → md5 both sides agree on
        self._md5_cache: dict[str, tuple[Signature, str]] = {}
        self.report = SyncReport()

    def _local_md5(self, rel: str, sig: Signature) -> str:
        cached = self._md5_cache.get(rel)
        if cached and cached[0] == sig:
            return cached[1]
        md5 = file_md5(self.root / rel)
        self._md5_cache[rel] = (sig, md5)
        return md5

    def _local_md5s(self, sigs: Mapping[str, Signature], paths: Sequence[str] | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for rel in paths if paths is not None else sigs:
            try:
                out[rel] = self._local_md5(rel, sigs[rel])
            except FileNotFoundError:
                continue
        return out

    async def start(self) -> int:
        """Make the Pod match the local tree (files the Pod lacks or has differently); returns
        how many files were pushed."""
        remote = {p: m for p, m in (await self.pod.snapshot()).items() if is_synced_path(p, self.matcher)}
        self.signatures = await asyncio.to_thread(scan, self.root, self.matcher)
        local = await asyncio.to_thread(self._local_md5s, self.signatures)
        push = [p for p, md5 in sorted(local.items()) if remote.get(p) != md5]
        await self.pod.push(self.root, push)
        self.synced = {**remote, **local}
        self.report.pushed += len(push)
        if push:
            echo(f"sync: copied {len(push)} file(s) into the Pod", self.stream)
        return len(push)

    async def _remote(self) -> dict[str, str]:
        return {p: m for p, m in (await self.pod.snapshot()).items() if is_synced_path(p, self.matcher)}

    async def _save_pod_copies(self, paths: Sequence[str]) -> None:
        """Copy the Pod's version of ``paths`` next to the local files as ``<path>.from-notebook``."""
        with tempfile.TemporaryDirectory(prefix="substratus-sync-") as tmp:
            await self.pod.pull(paths, Path(tmp))
            for p in paths:
                _move_into(Path(tmp) / p, self.root / (p + CONFLICT_SUFFIX))
        self.report.conflicts = (*self.report.conflicts, *paths)
        for p in paths:
            echo(f"sync: {p} changed locally and in the Pod: kept yours, the Pod's is {p}{CONFLICT_SUFFIX}",
                 self.stream)

    async def poll_once(self) -> Changes:
        """Push what changed locally since the last poll; returns what was pushed/deleted.

        A Pod file edited since the last sync is never silently overwritten or deleted: its
        version is saved locally as ``<path>.from-notebook`` first (one extra listing per push).
        """
        sigs = await asyncio.to_thread(scan, self.root, self.matcher)
        changes = diff(self.signatures, sigs)
        if not changes:
            return changes
        md5s = await asyncio.to_thread(self._local_md5s, sigs, changes.changed)
        push = [p for p in changes.changed if p in md5s and self.synced.get(p) != md5s[p]]
        deleted = [p for p in changes.deleted if p in self.synced]
        if push or deleted:
            remote = await self._remote()
            at_risk = [p for p in push if remote.get(p) not in (None, self.synced.get(p), md5s[p])]
            at_risk += [p for p in deleted if remote.get(p) not in (None, self.synced.get(p))]
            if at_risk:
                await self._save_pod_copies(at_risk)
        if push:
            await self.pod.push(self.root, push)
            self.synced.update({p: md5s[p] for p in push})
            self.report.pushed += len(push)
        if deleted:
            await self.pod.delete(deleted)
            for p in deleted:
                self.synced.pop(p, None)
            self.report.deleted += len(deleted)
        # Only now: a failed round is retried whole on the next poll.
        self.signatures = sigs
        for p in push:
            echo(f"sync: → {p}", self.stream)
        for p in deleted:
            echo(f"sync: ✗ {p}", self.stream)
        return Changes(tuple(push), tuple(deleted))

    async def run(self) -> None:
        """Poll until cancelled; a failed round is reported and retried next round."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except (KubectlError, OSError) as e:
                echo(f"sync: {e} (retrying)", self.stream)

    async def finish(self) -> SyncReport:
        """Push the last local edits, then copy back what changed in the Pod."""
        await self.poll_once()
        remote = await self._remote()
        sigs = await asyncio.to_thread(scan, self.root, self.matcher)
        local = await asyncio.to_thread(self._local_md5s, sigs)
        plan = plan_pull(self.synced, local, remote)
        if plan.copy:
            with tempfile.TemporaryDirectory(prefix="substratus-sync-") as tmp:
                await self.pod.pull(plan.copy, Path(tmp))
                for p in plan.copy:
                    _move_into(Path(tmp) / p, self.root / p)
        if plan.conflicts:  # a local edit after the last push (a race with Ctrl-C)
            await self._save_pod_copies(plan.conflicts)
        self.report.pulled = plan.copy
        self.report.deleted_in_pod = plan.deleted_in_pod
        for p in plan.copy:
            echo(f"sync: ← {p}", self.stream)
        if plan.deleted_in_pod:
            echo(f"sync: deleted in the Pod but kept locally: {', '.join(plan.deleted_in_pod)}", self.stream)
        return self.report


def _move_into(src: Path, dst: Path) -> None:
    if not src.is_file():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)
