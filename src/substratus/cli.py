"""What every substratus command line shares: exit codes, durations, help text, clean failures.

The commands (``substratus``, ``kubectl notebook``, ``kubectl applybuild``) end every failure a
user can cause with one line on stderr and an exit code from :class:`ExitCode` — scripts and CI
branch on them, so they are part of the interface (docs/kubectl-plugins.md, docs/operations.md).
A traceback is printed only for a bug.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything unexpected (the message says what)
    USAGE = 2  # bad arguments or configuration, unreadable manifest, wrong kind, invalid spec
    NO_CLUSTER = 3  # no kubeconfig / cannot connect / not authenticated / not allowed
    NO_CRDS = 4  # the substratus.ai CRDs are not installed
    UPLOAD_REJECTED = 5  # the signed URL refused the upload (the server's message is printed)
    BUILD_FAILED = 6  # the image build failed (the build Job's last log lines are printed)
    TIMEOUT = 7  # --timeout ran out
    NOT_READY = 8  # substratus explain: the object exists but is not ready (the report says why)
    INTERRUPTED = 130  # Ctrl-C before the work was done (128 + SIGINT, as shells report it)
    BROKEN_PIPE = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE, as shells report it


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (the message says what)",
    ExitCode.USAGE: "bad arguments, configuration or manifest",
    ExitCode.NO_CLUSTER: "no cluster configured, unreachable, or access refused",
    ExitCode.NO_CRDS: "the substratus.ai CRDs are not installed",
    ExitCode.UPLOAD_REJECTED: "the upload URL refused the upload",
    ExitCode.BUILD_FAILED: "the image build failed",
    ExitCode.TIMEOUT: "--timeout ran out",
    ExitCode.NOT_READY: "the object exists but is not ready",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.BROKEN_PIPE: "stdout closed early (e.g. piped into head)",
}


class CliError(Exception):
    """A failure with a user-facing message and the exit code that classifies it."""

    def __init__(self, code: ExitCode, message: str, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details  # e.g. build log lines, printed after the message


def epilog(examples: Iterable[str], codes: Iterable[ExitCode]) -> str:
    """``--help``'s tail: examples, then the exit-code table (use with RawDescriptionHelpFormatter)."""
    lines = ["examples:", *(f"  {e}" for e in examples), "", "exit codes:"]
    lines += [f"  {int(c):<4} {EXIT_CODE_MEANINGS[c]}" for c in codes]
    return "\n".join(lines)


def duration(text: str) -> float:
    """Seconds from a kubectl-style duration: ``90s``, ``5m``, ``1h30m``, ``250ms``; a bare number is seconds.

    Go's ``time.ParseDuration`` syntax (what kubectl's ``--timeout`` takes). Raises
    ``argparse.ArgumentTypeError`` (argparse turns it into a usage error naming the flag).
    """
    import durationpy

    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = durationpy.from_str(value).total_seconds()
        except Exception:
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use e.g. 90s, 5m, 1h30m (or seconds)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must not be negative")
    return seconds


def add_completion(parser: argparse.ArgumentParser) -> None:
    """``--print-completion {bash,zsh,tcsh}``: print a shell completion script (shtab) and exit."""
    import shtab

    shtab.add_argument_to(parser, ["--print-completion"], help="print a shell completion script and exit")


def fail(prog: str, message: str, stream: TextIO | None = None) -> None:
    print(f"{prog}: error: {message}", file=stream or sys.stderr, flush=True)


def quiet_broken_pipe() -> int:
    """After ``BrokenPipeError`` on stdout: silence the interpreter's flush at exit; the exit code.

    Python's documented recipe (library/signal, "Note on SIGPIPE"): point stdout at /dev/null so
    the final flush does not raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests)
        pass
    return ExitCode.BROKEN_PIPE


def guarded(main: Callable[..., int], prog: str) -> Callable[..., int]:
    """Wrap a command's ``main``: user errors become one line and an exit code, never a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return int(main(*args, **kwargs))
        except CliError as e:
            fail(prog, e.message)
            if e.details:
                print(e.details, file=sys.stderr, flush=True)
            return e.code
        except BrokenPipeError:
            return quiet_broken_pipe()
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
            return ExitCode.INTERRUPTED

    return wrapper
