"""``kubectl notebook --sync``: the pure diff/plan functions, and the syncer end to end against a
directory standing in for the Pod's /content — driven through the very shell commands
``kubectl exec`` would run in the Pod (find/md5sum/tar/rm), just without kubectl (no kubelet)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs

from substratus.plugins.sync import (
    KubectlPodFiles,
    Syncer,
    diff,
    is_synced_path,
    parse_md5sum,
    plan_pull,
    snapshot_script,
)
from substratus.plugins.tarball import PatternMatcher, load_matcher

# --- pure ---------------------------------------------------------------------------------------------


def test_diff_reports_new_modified_and_deleted_sorted() -> None:
    old = {"a.py": (1, 10), "b.py": (1, 10), "gone.py": (1, 1)}
    new = {"b.py": (2, 10), "a.py": (1, 10), "c.py": (5, 5)}
    changes = diff(old, new)
    assert changes.changed == ("b.py", "c.py") and changes.deleted == ("gone.py",)
    assert not diff(new, dict(new))


def test_plan_pull_decides_copy_conflict_and_deleted() -> None:
    synced = {"same.py": "s", "pod_edit.py": "p0", "both.py": "b0", "agree.py": "a0", "rm_in_pod.py": "r",
              "local_edit.py": "l0", "rm_both.py": "x"}
    local = {"same.py": "s", "pod_edit.py": "p0", "both.py": "b-local", "agree.py": "a1", "rm_in_pod.py": "r",
             "local_edit.py": "l1"}
    remote = {"same.py": "s", "pod_edit.py": "p1", "both.py": "b-pod", "agree.py": "a1", "local_edit.py": "l0",
              "new.ipynb": "n"}
    plan = plan_pull(synced, local, remote)
    assert plan.copy == ("new.ipynb", "pod_edit.py")  # changed only in the Pod (or new there)
    assert plan.conflicts == ("both.py",)  # changed on both sides, differently
    assert plan.deleted_in_pod == ("rm_in_pod.py",)  # reported, local copy kept


def test_what_is_synced() -> None:
    matcher = PatternMatcher.from_patterns([".git", "*.log"])
    assert is_synced_path("train.py", matcher) and is_synced_path("lib/x.py", matcher)
    for rel in ("model/w.bin", "data/x", "output/o", "params.json", ".git/HEAD", "debug.log",
                "a/.ipynb_checkpoints/n.ipynb", "lib/__pycache__/x.pyc", "train.py.from-notebook"):
        assert not is_synced_path(rel, matcher), rel
    assert is_synced_path("sub/model/w.bin", None)  # only the top-level mount points are reserved


def test_parse_md5sum_handles_escaped_names() -> None:
    out = ("d41d8cd98f00b204e9800998ecf8427e  ./a b.py\n"
           "\\0cc175b9c0f1b6a831c399e269772661  ./we\\\\ird\\nname\n"
           "garbage line\n")
    assert parse_md5sum(out) == {"a b.py": "d41d8cd98f00b204e9800998ecf8427e",
                                 "we\\ird\nname": "0cc175b9c0f1b6a831c399e269772661"}


def test_kubectl_exec_commands() -> None:
    pod = KubectlPodFiles("nb-notebook", "team-a", kubectl_flags=["--kubeconfig=/k"])
    assert pod.exec_command("tar", "-xf", "-", "-C", "/content", stdin=True) == [
        "kubectl", "exec", "-i", "nb-notebook", "-n", "team-a", "-c", "notebook", "--kubeconfig=/k", "--",
        "tar", "-xf", "-", "-C", "/content"]
    assert "-path ./model -o -path ./data -o -path ./output -o -path ./params.json" in snapshot_script()


# --- the syncer against a stand-in Pod ------------------------------------------------------------------


@attrs.define
class LocalShellPodFiles(KubectlPodFiles):
    """The real Pod-side commands (sh/find/md5sum/tar/rm), run here against ``root``."""

    def exec_command(self, *argv: str, stdin: bool = False) -> list[str]:
        return list(argv)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # mtime-based polling: make each write visibly newer, whatever the filesystem's resolution.
    t = time.time() + write.bump  # type: ignore[attr-defined]
    write.bump += 1  # type: ignore[attr-defined]
    os.utime(path, (t, t))


write.bump = 1  # type: ignore[attr-defined]


async def test_syncer_round_trip(tmp_path: Path) -> None:
    local, pod_root = tmp_path / "local", tmp_path / "content"
    write(local / "Dockerfile", "FROM x\n")
    write(local / ".dockerignore", "*.log\n")
    write(local / "train.py", "v1\n")
    write(local / "lib/util.py", "u1\n")
    write(local / "keep.py", "k1\n")
    write(local / "debug.log", "ignored\n")
    write(local / "data/local.csv", "a mount point in the Pod\n")
    # The Pod as the image built it: same train.py, an older lib/util.py, its own files and mounts.
    write(pod_root / "train.py", "v1\n")
    write(pod_root / "lib/util.py", "u0\n")
    write(pod_root / "image_only.txt", "from the image\n")
    write(pod_root / "model/weights.bin", "mounted\n")
    write(pod_root / "params.json", "{}\n")

    pod = LocalShellPodFiles("unused", "unused", root=str(pod_root))
    syncer = Syncer(local, pod, load_matcher(local), interval=0.01)

    # Start: only what differs goes in; ignored files and mount points never do.
    assert await syncer.start() == 4  # Dockerfile, .dockerignore, keep.py, lib/util.py
    assert (pod_root / "lib/util.py").read_text() == "u1\n"
    assert not (pod_root / "debug.log").exists() and not (pod_root / "data").exists()

    # Local edits, a new file and a deletion are mirrored on the next poll.
    write(local / "train.py", "v2\n")
    write(local / "new/module.py", "m\n")
    (local / "keep.py").unlink()
    changes = await syncer.poll_once()
    assert changes.changed == ("new/module.py", "train.py") and changes.deleted == ("keep.py",)
    assert (pod_root / "train.py").read_text() == "v2\n" and (pod_root / "new/module.py").read_text() == "m\n"
    assert not (pod_root / "keep.py").exists()
    assert not await syncer.poll_once()  # nothing new

    # Meanwhile, in Jupyter: an edit, a new notebook, a deletion, a conflicting edit.
    write(pod_root / "lib/util.py", "u-from-pod\n")
    write(pod_root / "analysis.ipynb", "{}\n")
    write(pod_root / ".ipynb_checkpoints/analysis-checkpoint.ipynb", "{}\n")
    (pod_root / "Dockerfile").unlink()
    write(pod_root / "train.py", "v3-pod\n")
    write(local / "train.py", "v3-local\n")  # not yet pushed when we exit

    report = await syncer.finish()
    # The last local edit is pushed first, so train.py is not a conflict: local wins (just pushed).
    assert (pod_root / "train.py").read_text() == "v3-local\n"
    assert report.pulled == ("analysis.ipynb", "lib/util.py")
    assert (local / "lib/util.py").read_text() == "u-from-pod\n" and (local / "analysis.ipynb").exists()
    assert not (local / ".ipynb_checkpoints").exists()
    assert report.deleted_in_pod == ("Dockerfile",) and (local / "Dockerfile").exists()
    assert not (local / "image_only.txt").exists()  # untouched image files are not "changes"


async def test_syncer_never_loses_the_pods_edit(tmp_path: Path) -> None:
    local, pod_root = tmp_path / "local", tmp_path / "content"
    write(local / "train.py", "v1\n")
    write(local / "old.py", "o1\n")
    pod_root.mkdir()
    pod = LocalShellPodFiles("unused", "unused", root=str(pod_root))
    syncer = Syncer(local, pod, None)
    await syncer.start()
    # Both sides edit train.py between two polls; old.py is edited in Jupyter, deleted locally.
    write(pod_root / "train.py", "pod\n")
    write(local / "train.py", "local\n")
    write(pod_root / "old.py", "o-pod\n")
    (local / "old.py").unlink()
    changes = await syncer.poll_once()
    assert changes.changed == ("train.py",) and changes.deleted == ("old.py",)
    assert (pod_root / "train.py").read_text() == "local\n"  # local wins in the Pod ...
    assert (local / "train.py.from-notebook").read_text() == "pod\n"  # ... and the Pod's edit is kept
    assert (local / "old.py.from-notebook").read_text() == "o-pod\n"
    assert syncer.report.conflicts == ("train.py", "old.py")
    report = await syncer.finish()
    assert report.pulled == () and not (pod_root / "train.py.from-notebook").exists()
