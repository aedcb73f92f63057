"""The substratus command: the operator and its companions.

run is the operator (the container's entry point); manifests regenerates the CRDs; dev starts
a local control plane for development; explain says why an object is or is not ready; rerun runs
a complete Model's or Dataset's Job again; convert and adopt move users of the original
Substratus over.
"""

from __future__ import annotations

import argparse
import sys

from substratus import __version__
from substratus.cli import CliError, ExitCode, epilog, fail, guarded
from substratus.config import ConfigError, OperatorConfig

PROG = "substratus"

EXAMPLES = [
    "substratus explain model/facebook-opt-125m      # why it is or is not ready",
    "substratus explain models -A -o json            # every Model in every namespace, as JSON",
    "substratus run --kubeconfig ~/.kube/config      # the operator against a cluster",
    "substratus dev run                              # what `make run` does",
    "substratus completion bash > /etc/bash_completion.d/substratus",
]
EXIT_CODES = (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.NO_CLUSTER, ExitCode.NO_CRDS,
              ExitCode.NOT_READY, ExitCode.INTERRUPTED, ExitCode.BROKEN_PIPE)


def build_parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").strip()
    parser = argparse.ArgumentParser(prog=PROG, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=epilog(EXAMPLES, EXIT_CODES))
    parser.add_argument("--version", action="version", version=f"substratus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator (flags also read from SUBSTRATUS_* env vars)",
                         description="Run the operator. Every flag is also an environment variable "
                                     "SUBSTRATUS_<FLAG> (flags win); docs/operations.md lists them.")
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
        "run", help="run the operator against --kubeconfig/$KUBECONFIG, else a local simulated cluster",
        description="Run the operator for development. With --kubeconfig or $KUBECONFIG: against that "
                    "cluster (CRDs installed there). Otherwise: a local kube-apiserver + etcd with a cluster "
                    "SIMULATOR (no container runs; data in memory). ~/.kube/config is never used unless "
                    "passed with --kubeconfig. One session per --dev-dir.")
    dev_run.add_argument("--dev-dir", default=".dev", help="state of the local control plane and artifacts")
    dev_run.add_argument("--local", action="store_true", help="use a local control plane even if a cluster is configured")
    OperatorConfig.add_arguments(dev_run)

    ex = sub.add_parser("explain", help="say why a substratus object is or is not ready",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=epilog(["substratus explain model/falcon-7b -n team-a",
                                       "substratus explain nb/my-notebook -o json",
                                       "substratus explain models -A          # every Model, all namespaces"],
                                      (ExitCode.OK, ExitCode.USAGE, ExitCode.NO_CLUSTER, ExitCode.NO_CRDS,
                                       ExitCode.NOT_READY)))
    ex.add_argument("target", help="KIND/NAME (e.g. model/falcon-7b), or KIND for every object of that kind")
    ex.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's, else default)")
    ex.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (with a KIND, no name)")
    ex.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    ex.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    ex.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")

    comp = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh)",
                          description="e.g. `source <(substratus completion bash)`; the plugins print theirs "
                                      "with `kubectl-notebook --print-completion bash`.")
    comp.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    rr = sub.add_parser("rerun", help="run a complete Model's or Dataset's Job again "
                                      "(moves completed.json to {status.url}/history/)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=epilog(["substratus rerun model/falcon-7b -n team-a"],
                                      (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.NO_CLUSTER,
                                       ExitCode.NO_CRDS, ExitCode.INTERRUPTED)))
    rr.add_argument("target", help="KIND/NAME, e.g. model/falcon-7b")
    rr.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's, else default)")
    rr.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    rr.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")

    from substratus.migrate import add_arguments as add_migrate_arguments

    add_migrate_arguments(sub)
    return parser


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    if args.command == "completion":
        import shtab

        print(shtab.complete(build_parser(), shell=args.shell))
        return ExitCode.OK
    if args.command == "run":
        try:
            cfg = OperatorConfig.from_sources(args)
        except ConfigError as exc:
            raise CliError(ExitCode.USAGE, str(exc)) from None
        from substratus.operator import run_operator
        from substratus.runtime import eventloop

        return eventloop.run(run_operator(cfg))
    if args.command == "manifests":
        from substratus.api.crd import write_crds

        for path in write_crds(args.outdir):
            print(path)
        return ExitCode.OK
    if args.command == "dev":
        if args.dev_command == "run":
            from substratus.dev import DevError
            from substratus.dev import main as dev_main

            try:
                return dev_main(args)
            except ConfigError as exc:
                raise CliError(ExitCode.USAGE, str(exc)) from None
            except DevError as exc:
                raise CliError(ExitCode.ERROR, str(exc)) from None
        from substratus.testing.controlplane import main as controlplane_main

        return controlplane_main([args.action, "--dir", args.dir])
    if args.command == "explain":
        from substratus.explain import main as explain_main
        from substratus.plugins import run_cli

        return run_cli(lambda: explain_main(args.target, args.namespace, args.kubeconfig, context=args.context,
                                            all_namespaces=args.all_namespaces, output=args.output), PROG)
    if args.command == "rerun":
        from substratus.plugins import run_cli
        from substratus.rerun import main as rerun_main

        return run_cli(lambda: rerun_main(args.target, args.namespace, args.kubeconfig, context=args.context), PROG)
    if args.command == "convert":
        from substratus.migrate import convert_main

        return convert_main(args)
    if args.command == "adopt":
        from substratus.migrate import adopt
        from substratus.plugins import run_cli

        return run_cli(lambda: adopt(args.target, args.namespace, cloud_name=args.cloud,
                                     cluster_name=args.cluster_name, bucket_url=args.bucket_url,
                                     kubeconfig=args.kubeconfig, context=args.context), PROG)
    fail(PROG, f"unknown command {args.command}")
    return ExitCode.USAGE


main = guarded(_main, PROG)
"""Entry point of the ``substratus`` console script: one line and an exit code for user errors."""


if __name__ == "__main__":
    sys.exit(main())
