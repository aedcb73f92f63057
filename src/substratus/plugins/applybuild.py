"""``kubectl applybuild -f obj.yaml DIR``: apply any substratus object with its image built from DIR.

The object's ``spec.image`` is replaced by ``upload`` (any ``git`` or ``name`` in the manifest
is ignored: DIR is the source), the object is created or its spec made equal to the manifest,
DIR is uploaded and the command waits for ``Built=True`` — the workload itself (a Job, a
Deployment, a Pod) then starts as usual; follow it with ``kubectl get`` or ``substratus explain``.
An unchanged DIR is not built again; ``--rebuild`` sets the annotation ``substratus.ai/rebuild``
to a new value, which builds it again (SPEC §6). Prints the image the object now runs
(``status.image``, pinned by digest).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs

from substratus.cli import epilog
from substratus.controllers.resources import BY_KIND
from substratus.plugins import PLUGIN_EXIT_CODES, ExitCode, PluginError, add_common_arguments, echo, run_cli
from substratus.plugins.upload import (
    DEFAULT_TIMEOUT,
    Deadline,
    check_crd,
    connect,
    default_namespace,
    load_manifest,
    make_tarball,
    new_request_id,
    parse_object,
    upload_and_build,
    with_upload,
)

PROG = "kubectl applybuild"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Apply a Model, Dataset, Server or Notebook whose image is "
                                                       "built from a local directory, and wait for the build.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=epilog([
                                    "kubectl applybuild -f model.yaml .             # build this directory",
                                    "kubectl applybuild -f server.yaml src/ --timeout 30m",
                                    "kubectl applybuild -f - . < dataset.yaml        # manifest on stdin",
                                ], PLUGIN_EXIT_CODES))
    p.add_argument("-f", "--filename", required=True, help="the object's manifest ('-' for stdin)")
    p.add_argument("directory", metavar="DIR", help="build context: a directory with a Dockerfile")
    add_common_arguments(p, timeout=DEFAULT_TIMEOUT, timeout_help="how long to wait for the upload URL and the build")
    p.add_argument("--no-progress", action="store_true", help="no upload progress bar")
    p.add_argument("--rebuild", action="store_true",
                   help="build again even if the directory is unchanged (sets the annotation substratus.ai/rebuild)")
    return p


@attrs.define
class Options:
    filename: str
    directory: str
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    progress: bool = True
    rebuild: bool = False

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Options:
        a = parser().parse_args(argv)
        return cls(filename=a.filename, directory=a.directory, namespace=a.namespace, kubeconfig=a.kubeconfig,
                   context=a.context, timeout=a.timeout, progress=not a.no_progress, rebuild=a.rebuild)


async def run(opts: Options, *, out: TextIO | None = None) -> int:
    manifest = load_manifest(opts.filename)  # before connecting: a typo should not need a cluster
    file_ns = (manifest.get("metadata") or {}).get("namespace")
    if opts.namespace and file_ns and file_ns != opts.namespace:
        raise PluginError(ExitCode.USAGE, f"the namespace in {opts.filename} ({file_ns}) does not match "
                                          f"--namespace {opts.namespace}")
    ns = file_ns or opts.namespace or default_namespace(opts.kubeconfig, opts.context)
    obj = parse_object(manifest, ns, image_supplied=True)  # DIR is the source: spec.image may be left out
    deadline = Deadline(opts.timeout)
    client = await connect(opts.kubeconfig, opts.context)
    try:
        await check_crd(client, BY_KIND[obj["kind"]])
        with tempfile.TemporaryDirectory(prefix="kubectl-applybuild-") as tmp:
            tarball = make_tarball(Path(opts.directory), Path(tmp))
            request_id = new_request_id()
            rebuild = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ") if opts.rebuild else None
            result = await upload_and_build(client, with_upload(obj, tarball.md5, request_id, rebuild), tarball,
                                            request_id,
                                            deadline, kubeconfig=opts.kubeconfig, context=opts.context,
                                            progress=opts.progress)
    finally:
        await client.close()
    meta = result.obj["metadata"]
    # stdout: the one result a script wants — the object and the image it now runs.
    print(f"{result.obj['kind'].lower()}/{meta['name']} built {result.obj['status']['image']}",
          file=out or sys.stdout, flush=True)
    if not result.uploaded:
        echo("(the build context was unchanged: nothing uploaded)")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    opts = Options.from_args(argv)
    return run_cli(lambda: run(opts), PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
