"""kubectl plugins: ``kubectl notebook`` and ``kubectl applybuild`` (SPEC §8).

pip installs them as the console scripts ``kubectl-notebook`` and ``kubectl-applybuild``; kubectl
runs any ``kubectl-*`` executable on ``PATH`` as a sub-command. Both are asyncio programs on our
own client (:class:`substratus.runtime.client.Client`) — no kubectl needed except for what only
the kubelet can do (port-forward, exec, logs).

Exit codes are part of the interface (scripts and CI branch on them); see
``docs/kubectl-plugins.md``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import aiohttp

from substratus.runtime.client import ApiError, Invalid

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything unexpected (the message says what)
    USAGE = 2  # bad arguments, unreadable manifest, wrong kind, invalid spec
    NO_CLUSTER = 3  # no kubeconfig / cannot connect / not authenticated
    NO_CRDS = 4  # the substratus.ai CRDs are not installed
    UPLOAD_REJECTED = 5  # the signed URL refused the upload (the server's message is printed)
    BUILD_FAILED = 6  # the image build failed (the build Job's last log lines are printed)
    TIMEOUT = 7  # --timeout ran out
    INTERRUPTED = 130  # Ctrl-C before the work was done (128 + SIGINT, as shells report it)


class PluginError(Exception):
    """A failure with a user-facing message and the exit code that classifies it."""

    def __init__(self, code: ExitCode, message: str, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details  # e.g. build log lines, printed after the message


def echo(message: str, stream: TextIO | None = None) -> None:
    """Progress and diagnostics go to stderr; stdout carries only results (the notebook URL)."""
    print(message, file=stream or sys.stderr, flush=True)


def run_cli(main: Callable[[], Coroutine[Any, Any, int]], prog: str) -> int:
    """Run ``main()`` under asyncio and turn its outcome into an exit code.

    SIGINT/SIGTERM cancel ``main``'s task, so its ``finally`` blocks run (copy files back,
    suspend the Notebook); a second signal cancels the clean-up too.
    """

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main())
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                echo(f"\n{prog}: interrupted, cleaning up (interrupt again to skip the clean-up)")
            else:
                echo(f"{prog}: clean-up skipped")
            task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / no signals here
                pass
        try:
            return await task
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        return int(asyncio.run(runner()))
    except asyncio.CancelledError:
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except PluginError as e:
        echo(f"{prog}: error: {e.message}")
        if e.details:
            echo(e.details)
        return e.code
    except (aiohttp.ClientError, ConnectionError) as e:
        echo(f"{prog}: error: lost the connection to the cluster: {e}")
        return ExitCode.NO_CLUSTER
    except Invalid as e:  # admission (CRD schema) said no: the manifest is wrong
        echo(f"{prog}: error: the API server rejected the object: {e.message or e}")
        return ExitCode.USAGE
    except ApiError as e:
        echo(f"{prog}: error: the API server answered {e}")
        return ExitCode.ERROR
    except Exception:  # a bug: show where
        traceback.print_exc()
        return ExitCode.ERROR
