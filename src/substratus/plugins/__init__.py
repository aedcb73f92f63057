"""kubectl plugins: ``kubectl notebook`` and ``kubectl applybuild`` (SPEC §8).

pip installs them as the console scripts ``kubectl-notebook`` and ``kubectl-applybuild``; kubectl
runs any ``kubectl-*`` executable on ``PATH`` as a sub-command. Both are asyncio programs on our
own client (:class:`substratus.runtime.client.Client`) — no kubectl needed except for what only
the kubelet can do (port-forward, exec, logs).

Exit codes are part of the interface (scripts and CI branch on them); see
``docs/kubectl-plugins.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import aiohttp

from substratus import __version__
from substratus.cli import CliError, ExitCode, add_completion, duration, quiet_broken_pipe
from substratus.runtime.client import ApiError, Invalid

__all__ = ["ExitCode", "KubectlError", "PluginError", "add_common_arguments", "echo", "run_cli"]

log = logging.getLogger(__name__)


PluginError = CliError
"""A failure with a user-facing message and its exit code (:class:`substratus.cli.CliError`)."""

PLUGIN_EXIT_CODES = (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.NO_CLUSTER, ExitCode.NO_CRDS,
                     ExitCode.UPLOAD_REJECTED, ExitCode.BUILD_FAILED, ExitCode.TIMEOUT, ExitCode.INTERRUPTED)


def add_common_arguments(p: argparse.ArgumentParser, *, timeout: float, timeout_help: str) -> None:
    """The kubectl-like flags every plugin takes, with help (and ``--version``, completion)."""
    p.add_argument("-n", "--namespace", help="namespace (default: the manifest's, else the context's, else default)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    p.add_argument("--timeout", type=duration, default=timeout, metavar="DURATION",
                   help=f"{timeout_help}, kubectl-style: 90s, 5m, 1h (default {int(timeout)}s)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_completion(p)


def echo(message: str, stream: TextIO | None = None) -> None:
    """Progress and diagnostics go to stderr; stdout carries only results (the notebook URL)."""
    print(message, file=stream or sys.stderr, flush=True)


class KubectlError(Exception):
    """``kubectl`` (exec, port-forward, cp) failed or is missing; the message has its stderr."""


def _refused(message: str) -> bool:
    return any(w in message.lower() for w in ("forbidden", "unauthorized", "connection refused", "unable to connect"))


def run_cli(main: Callable[[], Coroutine[Any, Any, int]], prog: str) -> int:
    """Run ``main()`` under asyncio and turn its outcome into an exit code.

    SIGINT/SIGTERM cancel ``main``'s task, so its ``finally`` blocks run (copy files back,
    suspend the Notebook); a second signal cancels the clean-up too.
    """

    # The Kubernetes client library warns on its own ("Config not found: ...") before raising what
    # we turn into the one error line; a command line prints that line only.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.ERROR)

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
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (aiohttp.ClientError, ConnectionError) as e:
        echo(f"{prog}: error: lost the connection to the cluster: {e}")
        return ExitCode.NO_CLUSTER
    except Invalid as e:  # admission (CRD schema) said no: the manifest is wrong
        echo(f"{prog}: error: the API server rejected the object: {e.message or e}")
        return ExitCode.USAGE
    except ApiError as e:
        if e.status in (401, 403):
            echo(f"{prog}: error: the API server refused access: {e}")
            return ExitCode.NO_CLUSTER
        echo(f"{prog}: error: the API server answered {e}")
        return ExitCode.ERROR
    except KubectlError as e:  # kubectl exec/port-forward refused (e.g. no pods/exec permission)
        echo(f"{prog}: error: {e}")
        return ExitCode.NO_CLUSTER if _refused(str(e)) else ExitCode.ERROR
    except Exception:  # a bug: show where
        traceback.print_exc()
        return ExitCode.ERROR
