"""``.dockerignore`` matching and the deterministic build-context tarball (pure, no cluster).

Vectors: the examples of Docker's "dockerignore file" documentation, and the behaviour tables of
moby/patternmatcher's own tests (which Docker's matcher is), so a difference from Docker shows
up here rather than as a mysteriously missing file in a build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
from pathlib import Path

import pytest

from substratus.plugins.tarball import (
    DockerignoreError,
    PatternMatcher,
    build_tarball,
    context_entries,
    load_matcher,
    read_dockerignore,
)


def excluded(patterns: list[str], path: str) -> bool:
    return PatternMatcher.from_patterns(read_dockerignore("\n".join(patterns))).matches(path)


def tree(root: Path, files: dict[str, str], ignore: str | None = None) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def sent(root: Path) -> list[str]:
    """What `docker build root` would send: paths of the context entries (dirs end in /)."""
    return [e.path + ("/" if e.kind == "dir" else "") for e in context_entries(root)]


# --- Docker's documented examples ------------------------------------------------------------------


def test_docs_comment_and_single_level_wildcards() -> None:
    pats = ["# comment", "*/temp*", "*/*/temp*", "temp?"]
    # */temp*: names starting with temp in any immediate subdirectory of the root.
    assert excluded(pats, "somedir/temporary.txt")
    assert excluded(pats, "somedir/temp")
    assert excluded(pats, "somedir/temp/inside.txt")  # a matching directory excludes its contents
    # */*/temp*: two levels below the root.
    assert excluded(pats, "somedir/subdir/temporary.txt")
    # temp?: one-character extension of temp, in the root only.
    assert excluded(pats, "tempa") and excluded(pats, "tempb")
    assert not excluded(pats, "temp")
    assert not excluded(["temp?"], "sub/tempa")
    assert not excluded(pats, "temporary.txt")
    assert not excluded(pats, "a/b/c/temp.txt")
    assert not excluded(pats, "# comment")


def test_docs_double_star_matches_any_number_of_directories() -> None:
    assert excluded(["**/*.go"], "main.go")  # zero directories: the root too
    assert excluded(["**/*.go"], "cmd/main.go")
    assert excluded(["**/*.go"], "a/b/c/x.go")
    assert not excluded(["**/*.go"], "a/b/c/x.gone")


def test_docs_exception_after_exclusion() -> None:
    pats = ["*.md", "!README.md"]
    assert excluded(pats, "CHANGES.md")
    assert not excluded(pats, "README.md")
    # Unlike .gitignore, patterns are anchored at the root: *.md says nothing about docs/x.md.
    assert not excluded(pats, "docs/x.md")


def test_docs_placement_of_exceptions_decides() -> None:
    # Last matching line wins: README-secret.md is excluded again after the exception ...
    pats = ["*.md", "!README*.md", "README-secret.md"]
    assert excluded(pats, "CHANGES.md")
    assert not excluded(pats, "README.md") and not excluded(pats, "README-dev.md")
    assert excluded(pats, "README-secret.md")
    # ... and re-included when the exception comes last.
    pats = ["*.md", "README-secret.md", "!README*.md"]
    assert not excluded(pats, "README-secret.md")
    assert excluded(pats, "CHANGES.md")


def test_docs_leading_slash_and_root_equivalence() -> None:
    for pattern in ("/foo/bar", "foo/bar"):
        assert excluded([pattern], "foo/bar")
        assert excluded([pattern], "foo/bar/baz.txt")
        assert not excluded([pattern], "x/foo/bar")
        assert not excluded([pattern], "foo/barbaz")


def test_read_dockerignore_normalises_like_docker() -> None:
    text = "\ufeff# c\n  *.pyc  \n\n #not a comment\n! /build/ \n/./a/../b//c/\n"
    assert read_dockerignore(text) == ["*.pyc", "#not a comment", "!build", "b/c"]
    # gitignore's "directory only" slash does not exist in Docker: foo/ also excludes a file foo.
    assert excluded(["foo/"], "foo")


def test_invalid_patterns_are_rejected() -> None:
    for bad in (["!"], ["["], ["a["], ["[^bc"], ["[]a]"], ["[-x]"], ["[x-]"], ["[a-b-c]"], ["\\"]):
        with pytest.raises(DockerignoreError):
            PatternMatcher.from_patterns(bad)


# --- moby/patternmatcher's behaviour tables ---------------------------------------------------------

# (pattern, path, exact): exact=True → the pattern matches the path itself; False → only through a
# parent directory; None → no match at all.
MOBY_CASES = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "dir/file", True), ("**/", "dir/file", True), ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True), ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True), ("**/dir", "dir/file", False),
    ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", False),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True), ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True), ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", None), ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", None), ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", None), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", None), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", None),
    ("abc.def", "abcdef", None), ("abc.def", "abc.def", True), ("abc.def", "abcZdef", None),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", None),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True), ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", None), ("abc/**", "abc/def", True), ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", None),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", None),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
]

# Go's filepath.Match table as moby runs it (through the parent-matching Matches).
GO_MATCH_CASES = [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "abc", True),
    ("a*", "ab/c", True), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True), ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True), ("a\\*b", "a*b", True), ("a\\*b", "ab", False),
    ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True), ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "\u03b1", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True),
    ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("[\\-x]", "-", True), ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "path", "exact"), MOBY_CASES)
def test_moby_pattern_table(pattern: str, path: str, exact: bool | None) -> None:
    pm = PatternMatcher.from_patterns([pattern])
    assert pm.patterns[0].match(path) is (exact is True)
    assert pm.matches(path) is (exact is not None)
    # The walk's way (results carried down from each parent) agrees with re-matching parents.
    parent = posixpath.dirname(path)  # Go's filepath.Dir: "a/b/" → "a/b"
    info = None
    for i, _ in enumerate(parent.split("/") if parent else []):
        _, info = pm.matches_with_parent("/".join(parent.split("/")[:i + 1]), info)
    assert pm.matches_with_parent(path, info)[0] is (exact is not None)


@pytest.mark.parametrize(("pattern", "path", "match"), GO_MATCH_CASES)
def test_go_filepath_match_table(pattern: str, path: str, match: bool) -> None:
    assert PatternMatcher.from_patterns([pattern]).matches(path) is match


def test_moby_multi_pattern_table() -> None:
    assert not excluded(["**", "!util/docker/web"], "util/docker/web/foo")
    assert excluded(["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo")
    assert not excluded(["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl")
    assert not excluded(["docs", "!docs/README.md"], "docs/README.md")
    assert not excluded(["docs/", "!docs/README.md"], "docs/README.md")
    assert not excluded(["docs/*", "!docs/README.md"], "docs/README.md")
    assert excluded(["!fileutils.go", "*.go"], "fileutils.go")
    assert not excluded(["*.go"], ".")


# --- walking a real directory ---------------------------------------------------------------------


def test_directory_excluded_then_file_reincluded(tmp_path: Path) -> None:
    root = tree(tmp_path, {"Dockerfile": "FROM x", "docs/keep.md": "k", "docs/drop.md": "d",
                           "docs/sub/deep.md": "x", "src/a.py": "a", ".git/HEAD": "ref"},
                ignore=".git\ndocs\n!docs/keep.md\n")
    assert sent(root) == [".dockerignore", "Dockerfile", "docs/", "docs/keep.md", "src/", "src/a.py"]


def test_everything_excluded_but_exceptions_with_wildcards(tmp_path: Path) -> None:
    root = tree(tmp_path, {"Dockerfile": "FROM x", "a/b/train.py": "", "a/b/data.bin": "", "c.py": "",
                           "notes.txt": ""}, ignore="*\n!**/*.py\n")
    # Dockerfile and .dockerignore are always sent (the Docker CLI re-includes them).
    assert sent(root) == [".dockerignore", "Dockerfile", "a/", "a/b/", "a/b/train.py", "c.py"]


def test_dockerfile_and_dockerignore_always_sent(tmp_path: Path) -> None:
    root = tree(tmp_path, {"Dockerfile": "FROM x", "x.txt": ""}, ignore="Dockerfile\n.dockerignore\nx.txt\n")
    assert sent(root) == [".dockerignore", "Dockerfile"]
    assert load_matcher(root).matches("x.txt")


def test_excluded_directory_without_exceptions_is_pruned(tmp_path: Path) -> None:
    root = tree(tmp_path, {"Dockerfile": "", "node_modules/a/b.js": "", "keep/x": ""},
                ignore="node_modules\n!keep\n")
    assert sent(root) == [".dockerignore", "Dockerfile", "keep/", "keep/x"]


def test_symlinks_are_kept_as_links_and_not_followed(tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", {"Dockerfile": "", "real/f": "data"})
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    os.symlink("../outside", root / "escape")
    os.symlink("real/f", root / "link")
    entries = {e.path: e.kind for e in context_entries(root)}
    assert entries == {"Dockerfile": "file", "escape": "symlink", "link": "symlink", "real": "dir", "real/f": "file"}


# --- the deterministic tarball --------------------------------------------------------------------


def _files(root: Path) -> dict[str, str]:
    return {"Dockerfile": "FROM python:3.11\nCOPY . /content\n", "train.py": "print('hi')\n",
            "pkg/__init__.py": "", "pkg/model.py": "x = 1\n", "data/big.bin": "0" * 5000, "run.sh": "#!/bin/sh\n"}


def test_same_tree_same_md5_across_mtimes_owners_and_locations(tmp_path: Path) -> None:
    a = tree(tmp_path / "a", _files(tmp_path))
    b = tree(tmp_path / "b", _files(tmp_path))
    (a / "run.sh").chmod(0o755)
    (b / "run.sh").chmod(0o700)  # any exec bit → 0755; group/other bits do not matter
    (b / "train.py").chmod(0o600)
    for p in b.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    ta = build_tarball(a, tmp_path / "a.tar.gz")
    ta2 = build_tarball(a, tmp_path / "a2.tar.gz")
    tb = build_tarball(b, tmp_path / "b.tar.gz")
    assert ta.md5 == ta2.md5 == tb.md5
    assert ta.md5 == hashlib.md5((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    assert ta.size == (tmp_path / "a.tar.gz").stat().st_size


def test_content_change_changes_md5(tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", _files(tmp_path))
    before = build_tarball(root, tmp_path / "1.tar.gz").md5
    (root / "train.py").write_text("print('bye')\n")
    assert build_tarball(root, tmp_path / "2.tar.gz").md5 != before
    (root / "train.py").write_text("print('hi')\n")
    assert build_tarball(root, tmp_path / "3.tar.gz").md5 == before
    (root / "new.txt").write_text("")
    assert build_tarball(root, tmp_path / "4.tar.gz").md5 != before


def test_ignored_changes_do_not_change_md5(tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", _files(tmp_path), ignore="*.log\n.git\n")
    before = build_tarball(root, tmp_path / "1.tar.gz").md5
    (root / "train.log").write_text("noise")
    (root / ".git").mkdir()
    (root / ".git" / "index").write_text("x")
    assert build_tarball(root, tmp_path / "2.tar.gz").md5 == before


def test_tarball_headers_are_normalised(tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", _files(tmp_path))
    (root / "run.sh").chmod(0o750)
    t = build_tarball(root, tmp_path / "ctx.tar.gz")
    raw = (tmp_path / "ctx.tar.gz").read_bytes()
    # gzip header: no FNAME flag, MTIME 0.
    assert raw[:2] == b"\x1f\x8b" and raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names) and len(members) == t.entries
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        modes = {m.name: m.mode for m in members}
        assert modes["run.sh"] == 0o755 and modes["train.py"] == 0o644 and modes["pkg"] == 0o755
        assert tar.extractfile("pkg/model.py").read() == b"x = 1\n"  # type: ignore[union-attr]
