"""Build contexts: ``.dockerignore`` exactly as Docker reads it, and a reproducible ``.tar.gz``.

Why our own matcher: the PyPI libraries for ignore files implement *gitignore* rules
(``pathspec``), which differ from Docker's — in ``.dockerignore`` a pattern is anchored at the
context root (``*.md`` does not match ``docs/a.md``), there is no "trailing slash means
directory only", and exceptions (``!``) can re-include files inside an excluded directory. The
only other implementation is buried in the Docker SDK (``docker.utils.build``, an internal
module that pulls in ``requests``). So this is a small port of the reference code:

* :func:`read_dockerignore` — ``moby/patternmatcher/ignorefile.ReadAll`` (comments, BOM,
  whitespace, ``filepath.Clean``, leading ``/`` dropped);
* :class:`Pattern`/:class:`PatternMatcher` — ``moby/patternmatcher`` (``filepath.Match`` syntax
  plus ``**``, including its exact/prefix/suffix fast paths, which are observable);
* :func:`context_entries` — BuildKit's ``fsutil`` walk (what ``docker build`` sends today):
  parent results are inherited per pattern, excluded directories are pruned only when no
  exception could re-include something inside them, and a directory is emitted when something
  inside it is kept. Like the Docker CLI, ``Dockerfile`` and ``.dockerignore`` are always sent
  (kaniko needs the Dockerfile; neither lands in the image unless COPY'd).

The tarball is deterministic (sorted entries, mtime 0, uid/gid 0, no owner names, modes
normalised to 0644/0755, gzip header without name or time) so the same tree always has the
same md5 — which is the upload checksum and the image tag, so an unchanged directory is not
rebuilt. The md5 is stable for a given zlib; a different zlib build may compress differently.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Literal

import attrs

DOCKERIGNORE = ".dockerignore"
DOCKERFILE = "Dockerfile"
GZIP_LEVEL = 6
_CHUNK = 1024 * 1024
_UTF8_BOM = "\ufeff"
# fsutil: a pattern holding any of these can match below a directory it does not name.
_PATTERN_CHARS = set("*[]?^\\")


class DockerignoreError(ValueError):
    """A ``.dockerignore`` pattern Docker would reject (``filepath.ErrBadPattern``)."""


# --- reading the file ---------------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go's ``path.Clean`` (= ``filepath.Clean`` on Unix): ``posixpath.normpath`` keeps a
    leading ``//`` (POSIX allows it), Go does not."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def read_dockerignore(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file, normalised like ``ignorefile.ReadAll``.

    A line is a comment only if ``#`` is in column 1; whitespace around a pattern (and after
    ``!``) is dropped; ``/foo`` and ``foo`` are the same pattern (the context root is both the
    working and the root directory).
    """
    out: list[str] = []
    for i, line in enumerate(text.splitlines()):
        if i == 0:
            line = line.removeprefix(_UTF8_BOM)
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


# --- patterns -----------------------------------------------------------------------------------

MatchType = Literal["exact", "prefix", "suffix", "regexp"]


def _check_class(pattern: str, i: int) -> int:
    """Validate a ``[...]`` class starting at ``pattern[i] == '['`` the way Go's
    ``filepath.Match`` does; returns the index after ``]``."""
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    n = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and n > 0:
            return i + 1
        i = _class_char(pattern, i)
        if i < len(pattern) and pattern[i] == "-":
            i = _class_char(pattern, i + 1)
        n += 1


def _class_char(pattern: str, i: int) -> int:
    if i >= len(pattern) or pattern[i] in "-]":
        raise DockerignoreError(f"syntax error in pattern {pattern!r}: bad character class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise DockerignoreError(f"syntax error in pattern {pattern!r}: trailing backslash in class")
    return i + 1


def _check_syntax(pattern: str) -> None:
    """``filepath.Match(pattern, ".")``'s error: unterminated/empty classes, bad ranges."""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise DockerignoreError(f"syntax error in pattern {pattern!r}: trailing backslash")
            i += 2
        elif c == "[":
            i = _check_class(pattern, i)
        else:
            i += 1


def _class_regex(pattern: str, i: int) -> tuple[str, int]:
    """A (validated) Go ``[...]`` class at ``pattern[i]`` as a Python class; returns the regex
    and the index after ``]``."""
    i += 1
    out = "["
    if pattern[i] == "^":
        out += "^"
        i += 1
    n = 0
    while not (pattern[i] == "]" and n > 0):
        lo, i = _class_member(pattern, i)
        out += lo
        if pattern[i] == "-":
            hi, i = _class_member(pattern, i + 1)
            out += "-" + hi
        n += 1
    return out + "]", i + 1


def _class_member(pattern: str, i: int) -> tuple[str, int]:
    if pattern[i] == "\\":
        i += 1
    return re.escape(pattern[i]), i + 1


@attrs.frozen
class Pattern:
    """One cleaned pattern; ``match`` follows moby's compiled form, fast paths included.

    The fast paths are not just speed: ``**foo`` is a *suffix* match (it matches ``barfoo``),
    ``foo/**`` a *prefix* match — Docker behaves that way, so we do too.
    """

    text: str
    exclusion: bool
    match_type: MatchType
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str, exclusion: bool) -> Pattern:
        _check_syntax(text)
        reg = ""
        kind: MatchType = "exact"
        i, pos = 0, 0
        while pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "*":
                if pos < len(text) and text[pos] == "*":
                    pos += 1
                    if pos < len(text) and text[pos] == "/":  # "**/" is "**"
                        pos += 1
                    if pos >= len(text):  # trailing "**": everything below
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            reg += ".*"
                            kind = "regexp"
                    else:  # any number of directories, even none
                        reg += "(.*/)?"
                        kind = "regexp"
                    if i == 0:
                        kind = "suffix"
                else:
                    reg += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                reg += "[^/]"
                kind = "regexp"
            elif ch == "\\":
                if pos < len(text):
                    reg += re.escape(text[pos])
                    pos += 1
                    kind = "regexp"
                else:
                    reg += re.escape("\\")
            elif ch == "[":
                cls_re, pos = _class_regex(text, pos - 1)
                reg += cls_re
                kind = "regexp"
            else:
                reg += re.escape(ch)
            i += 1
        try:
            regex = re.compile(reg) if kind == "regexp" else None
        except re.error as e:  # e.g. a reversed range [z-a], which Go's regexp rejects too
            raise DockerignoreError(f"syntax error in pattern {text!r}: {e}") from None
        return cls(text=text, exclusion=exclusion, match_type=kind, regex=regex)

    def match(self, path: str) -> bool:
        """Whether ``path`` (slash-separated, relative to the context) matches this pattern."""
        if self.match_type == "exact":
            return path == self.text
        if self.match_type == "prefix":
            return path.startswith(self.text[:-2])
        if self.match_type == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None

    def without_trailing_glob(self) -> str:
        """fsutil's ``patternWithoutTrailingGlob``: ``a/b/**`` and ``a/b/*`` → ``a/b``."""
        text = self.text.removesuffix("/**")
        return text.removesuffix("/*")


@attrs.frozen
class PatternMatcher:
    """An ordered list of patterns; the last one matching a path decides (``!`` re-includes)."""

    patterns: tuple[Pattern, ...]

    @classmethod
    def from_patterns(cls, lines: Iterable[str]) -> PatternMatcher:
        """From ``read_dockerignore`` output (or raw lines: they are trimmed and cleaned again)."""
        out: list[Pattern] = []
        for raw in lines:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p[0] == "!"
            if exclusion:
                if len(p) == 1:
                    raise DockerignoreError('illegal exclusion pattern: "!"')
                p = p[1:]
            out.append(Pattern.compile(p, exclusion))
        return cls(tuple(out))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """True if ``path`` is excluded: moby's ``MatchesOrParentMatches`` (a pattern matching
        any parent directory matches the path too)."""
        path = go_clean(path)
        if path == ".":
            return False  # the context itself is never excluded
        parents = posixpath.dirname(path).split("/") if "/" in path else []
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:  # nothing this pattern could change
                continue
            hit = p.match(path) or any(p.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if hit:
                matched = not p.exclusion
        return matched

    def matches_with_parent(self, path: str, parent: tuple[bool, ...] | None) -> tuple[bool, tuple[bool, ...]]:
        """moby's ``MatchesUsingParentResults``: what BuildKit's walk uses, carrying each
        pattern's result for the parent directory down instead of re-matching every parent."""
        matched = False
        info: list[bool] = []
        for i, p in enumerate(self.patterns):
            hit = bool(parent[i]) if parent else False
            if not hit:
                if p.exclusion != matched:
                    info.append(False)
                    continue
                hit = p.match(path)
                if not hit and not parent and "/" in path:
                    dirs = posixpath.dirname(path).split("/")
                    hit = any(p.match("/".join(dirs[:j + 1])) for j in range(len(dirs)))
            info.append(hit)
            if hit:
                matched = not p.exclusion
        return matched, tuple(info)


def load_matcher(root: Path, dockerfile: str = DOCKERFILE) -> PatternMatcher:
    """``root/.dockerignore`` as a matcher that never excludes the Dockerfile or itself
    (the Docker CLI's ``TrimBuildFilesFromExcludes``)."""
    ignore = root / DOCKERIGNORE
    lines = read_dockerignore(ignore.read_text(encoding="utf-8", errors="surrogateescape")) if ignore.is_file() else []
    matcher = PatternMatcher.from_patterns(lines)
    for keep in (DOCKERIGNORE, dockerfile):
        if matcher.matches(keep):
            lines.append("!" + keep)
    return PatternMatcher.from_patterns(lines)


# --- walking the context ------------------------------------------------------------------------

EntryKind = Literal["file", "dir", "symlink"]


@attrs.frozen
class Entry:
    """One path of the build context."""

    path: str  # relative, "/"-separated, e.g. "src/train.py"
    kind: EntryKind
    source: Path  # where it is on disk


def context_entries(root: Path, matcher: PatternMatcher | None = None) -> list[Entry]:
    """Everything ``docker build root`` would send, sorted by path (parents before children).

    Symlinks are kept as links (never followed); sockets, FIFOs and devices are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"build context {root} is not a directory")
    matcher = matcher if matcher is not None else load_matcher(root)
    only_prefix_exceptions = not any(
        p.exclusion and _PATTERN_CHARS & set(p.without_trailing_glob()) for p in matcher.patterns)
    has_exclusions = matcher.has_exclusions
    out: list[Entry] = []

    def may_reinclude_below(rel: str) -> bool:
        if not only_prefix_exceptions:
            return True  # an exception with wildcards could match anything: walk it
        if not has_exclusions:
            return False
        dir_slash = rel + "/"
        return any(p.exclusion and (p.without_trailing_glob() + "/").startswith(dir_slash) for p in matcher.patterns)

    emitted: set[str] = set()

    def keep(entry: Entry, pending: tuple[Entry, ...]) -> None:
        # Excluded directories we walked into are sent once something inside them is kept.
        for d in pending:
            if d.path not in emitted:
                emitted.add(d.path)
                out.append(d)
        out.append(entry)

    def walk(directory: Path, prefix: str, parent_info: tuple[bool, ...] | None,
             pending: tuple[Entry, ...]) -> None:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:  # removed while walking
            return
        for name in names:
            full = directory / name
            rel = f"{prefix}{name}"
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            excluded, info = matcher.matches_with_parent(rel, parent_info) if matcher.patterns else (False, ())
            if excluded and (not is_dir or not may_reinclude_below(rel)):
                continue
            if is_dir:
                entry = Entry(rel, "dir", full)
                if excluded:
                    walk(full, rel + "/", info or None, (*pending, entry))
                else:
                    keep(entry, pending)
                    walk(full, rel + "/", info or None, ())
                continue
            if stat.S_ISREG(st.st_mode):
                kind: EntryKind = "file"
            elif stat.S_ISLNK(st.st_mode):
                kind = "symlink"
            else:
                continue
            keep(Entry(rel, kind, full), pending)

    walk(root, "", None, ())
    # Directory entries emitted lazily can land after an earlier sibling's children; a plain
    # sort on the path puts every parent before its children and is the determinism we want.
    out.sort(key=lambda e: e.path)
    return out


# --- the tarball --------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file that md5s and counts what passes through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


@attrs.frozen
class Tarball:
    """A written build context: where, its md5 (the upload checksum) and size."""

    path: Path
    md5: str
    size: int
    entries: int


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    st = os.lstat(entry.source)
    info = tarfile.TarInfo(entry.path)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "symlink":
        info.type, info.mode = tarfile.SYMTYPE, 0o777
        info.linkname = os.readlink(entry.source)
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def write_tarball(entries: Sequence[Entry], out: IO[bytes]) -> tuple[str, int]:
    """Write ``entries`` as a deterministic ``.tar.gz`` to ``out``; returns (md5 hex, size)."""
    hashing = _HashingWriter(out)
    # filename="" and mtime=0: the gzip header would otherwise carry a name and the time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, compresslevel=GZIP_LEVEL, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = _tarinfo(entry)
            if info.type == tarfile.REGTYPE:
                with open(entry.source, "rb") as f:
                    tar.addfile(info, _SizedReader(f, info.size))
            else:
                tar.addfile(info)
    hashing.flush()
    return hashing.md5.hexdigest(), hashing.size


class _SizedReader:
    """Exactly ``size`` bytes of ``f`` (padded with NULs if it shrank while we read), so a file
    changing during the tar cannot corrupt the archive's framing."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(min(n, _CHUNK))
        if not data:
            data = b"\0" * min(n, _CHUNK)
        self.left -= len(data)
        return data


def build_tarball(root: Path, dest: Path, matcher: PatternMatcher | None = None) -> Tarball:
    """Tar ``root`` (honouring its ``.dockerignore``) into ``dest``; md5 and size included."""
    entries = context_entries(Path(root), matcher)
    with open(dest, "wb") as f:
        md5, size = write_tarball(entries, f)
    return Tarball(path=Path(dest), md5=md5, size=size, entries=len(entries))
