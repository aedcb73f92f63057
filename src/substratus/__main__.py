"""The ``substratus`` command: the operator and its companions.

``substratus run`` is the operator (the container's entry point); ``manifests`` regenerates
the CRDs; ``dev`` starts a local control plane for development; ``explain`` says why an
object is or is not ready; ``rerun`` runs a complete Model's or Dataset's Job again; ``convert``
and ``adopt`` move users of the original Substratus over.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from substratus import __version__
from substratus.config import OperatorConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="substratus", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"substratus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator (flags also read from SUBSTRATUS_* env vars)")
    OperatorConfig.add_arguments(run)

    man = sub.add_parser("manifests", help="write the CRDs generated from the API types")
    man.add_argument("outdir", nargs="?", default="manifests/crd")

    dev = sub.add_parser("dev", help="development helpers")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="WHAT", required=True)
    cp = dev_sub.add_parser("controlplane", help="a local kube-apiserver + etcd on loopback")
    cp.add_argument("action", choices=("up", "down"),
                    help="up: start and stay in the foreground until Ctrl-C; down: stop one started with up")
    cp.add_argument("--dir", default=".dev/controlplane", help="where to write the kubeconfig and logs")
    dev_run = dev_sub.add_parser(
        "run", help="run the operator against $KUBECONFIG, or a local control plane + cluster simulator")
    dev_run.add_argument("--dev-dir", default=".dev", help="state of the local control plane and artifacts")
    dev_run.add_argument("--local", action="store_true", help="use a local control plane even if a cluster is configured")
    OperatorConfig.add_arguments(dev_run)

    ex = sub.add_parser("explain", help="say why a substratus object is or is not ready")
    ex.add_argument("target", help="KIND/NAME, e.g. model/falcon-7b")
    ex.add_argument("-n", "--namespace", default=None)
    ex.add_argument("--kubeconfig", default=None)
    rr = sub.add_parser("rerun", help="run a complete Model's or Dataset's Job again "
                                      "(moves completed.json to {status.url}/history/)")
    rr.add_argument("target", help="KIND/NAME, e.g. model/falcon-7b")
    rr.add_argument("-n", "--namespace", default=None)
    rr.add_argument("--kubeconfig", default=None)

    from substratus.migrate import add_arguments as add_migrate_arguments

    add_migrate_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "run":
        try:
            cfg = OperatorConfig.from_sources(args)
        except ValueError as exc:
            parser.error(str(exc))
        from substratus.operator import run_operator
        from substratus.runtime import eventloop

        return eventloop.run(run_operator(cfg))
    if args.command == "manifests":
        from substratus.api.crd import write_crds

        for path in write_crds(args.outdir):
            print(path)
        return 0
    if args.command == "dev":
        if args.dev_command == "run":
            from substratus.dev import main as dev_main

            try:
                return dev_main(args)
            except ValueError as exc:
                parser.error(str(exc))
        from substratus.testing.controlplane import main as controlplane_main

        return controlplane_main([args.action, "--dir", args.dir])
    if args.command == "explain":
        from substratus.explain import main as explain_main

        return asyncio.run(explain_main(args.target, args.namespace, args.kubeconfig))
    if args.command == "rerun":
        from substratus.rerun import main as rerun_main

        return asyncio.run(rerun_main(args.target, args.namespace, args.kubeconfig))
    if args.command == "convert":
        from substratus.migrate import convert_main

        return convert_main(args)
    if args.command == "adopt":
        from substratus.explain import _current_namespace
        from substratus.migrate import adopt

        return asyncio.run(adopt(args.target, args.namespace or _current_namespace(args.kubeconfig),
                                 cloud_name=args.cloud, cluster_name=args.cluster_name,
                                 bucket_url=args.bucket_url, kubeconfig=args.kubeconfig))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
