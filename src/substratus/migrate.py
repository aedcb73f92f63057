"""Moving from the original Substratus (Go, v0.10): ``substratus convert`` and ``substratus adopt``.

SPEC §9. Same group and version, different field names; the full mapping is in
docs/migrating-from-substratus.md. :func:`convert_object` is pure: one upstream object in, this
product's object out, with one line per change — or :class:`NotConvertible` naming what cannot
be converted mechanically. The result is checked against the generated CRD schema (an unknown
field would be pruned by the API server, i.e. silently lost) and the controller's validation,
so what ``convert`` prints is what the API server stores and the controller accepts.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import yaml

from substratus import naming
from substratus.api import KINDS, StructureError, format_time, from_dict, validate
from substratus.api.common import GPU_TYPES
from substratus.api.meta import GROUP
from substratus.api.openapi_validate import validate_openapi
from substratus.api.schema import kind_schema
from substratus.cli import CliError, ExitCode, epilog
from substratus.cloud.base import Cloud, CloudError

GPU_TYPE_RENAMES: dict[str, str] = {"nvidia-a100": "nvidia-tesla-a100", "nvidia-t4": "nvidia-tesla-t4"}
"""Upstream ``GPUType`` values (api/v1/common_types.go) → GKE accelerator names (SPEC §5);
``nvidia-l4`` is the same in both."""

SERVER_SET_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink",
                       "deletionTimestamp", "deletionGracePeriodSeconds")
"""Set by the API server; left in an exported manifest they make ``kubectl apply`` fail."""

REFERENCE_RENAMES: dict[str, dict[str, str]] = {"Model": {"model": "baseModel", "dataset": "trainingDataset"}}
MODEL_NAME_TARGET: dict[str, str] = {"Model": "baseModel", "Server": "model", "Notebook": "model"}
UPSTREAM_GCP_RESOURCES: dict[str, int] = {"cpu": 2, "memory": 4, "disk": 100}
"""What upstream requested on GCP for an object with no ``spec.resources`` at all
(internal/resources/resources.go ``Apply``: CPU 2, Memory 4 GB, Disk 100 GB). Its CRD defaults
(2/10/10, the same as ours) applied only inside a ``resources`` object that was written."""
UPSTREAM_ARTIFACTS_DIR = "artifacts"
PROG = "substratus"


def _fail(err: IO[str], code: ExitCode, message: str) -> ExitCode:
    """Every failure of ``convert`` and ``adopt``: one line, ``substratus: error: <what>``, as the
    other commands print it (substratus.cli), and the shared exit code."""
    err.write(f"{PROG}: error: {message}\n")
    err.flush()
    return code
"""Where the original Substratus stored an object's artifacts: ``{bucket}/{hash}/artifacts``."""


class NotConvertible(ValueError):
    """A manifest (or a field of it) cannot be converted mechanically; the message says why
    and what to do."""


@attrs.frozen
class Converted:
    obj: dict[str, Any]
    changes: list[str]


def _ident(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def is_substratus(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and isinstance(obj.get("apiVersion"), str)
            and obj["apiVersion"].split("/")[0] == GROUP)


def convert_object(obj: Mapping[str, Any], *, default_gpu_type: str | None = None) -> Converted:
    """This product's manifest for one upstream substratus object (any other object is returned
    unchanged with no changes). Raises NotConvertible with every problem found, or for a YAML
    document that is not a mapping (no Kubernetes object; ``kubectl apply`` would reject it)."""
    if not isinstance(obj, Mapping):
        raise NotConvertible(f"a YAML {type(obj).__name__}, not a Kubernetes object (a mapping with apiVersion "
                             "and kind)")
    if not is_substratus(obj):
        return Converted(dict(obj), [])
    kind = obj.get("kind")
    if kind not in KINDS:
        raise NotConvertible(f"kind {kind!r} has no equivalent here (kinds: {', '.join(KINDS)})")
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    changes: list[str] = []
    problems: list[str] = []

    meta = out.setdefault("metadata", {})
    dropped = [k for k in SERVER_SET_METADATA if k in meta]
    for k in dropped:
        del meta[k]
    if dropped:
        changes.append(f"metadata.{{{','.join(dropped)}}}: removed (set by the API server)")
    if meta.get("ownerReferences"):
        # They name owners by uid, and uids do not survive a move to another cluster: the garbage
        # collector deletes an object whose owner's uid does not exist.
        del meta["ownerReferences"]
        changes.append("metadata.ownerReferences: removed (they name owners by their uid in the old cluster; "
                       "the garbage collector would delete this object)")
    annotations = meta.get("annotations") or {}
    if "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        del annotations["kubectl.kubernetes.io/last-applied-configuration"]
        if not annotations:
            del meta["annotations"]
        changes.append("metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]: removed "
                       "(it holds the upstream spec)")
    if "status" in out:
        del out["status"]
        changes.append("status: removed (the controller writes it; upstream status.artifacts.url is status.url, "
                       "status.buildUpload is status.upload)")
    name_problem = naming.validate_parent_name(str(meta.get("name") or ""))
    if name_problem:
        problems.append(f"metadata.name: {name_problem}; renaming changes the object's bucket location, "
                        "so choose the new name yourself")

    spec = out.get("spec")
    if not isinstance(spec, dict):
        problems.append("spec: missing or not an object")
        raise NotConvertible("; ".join(problems))
    order = list(spec)
    upstream_shaped = _is_upstream_shaped(kind, spec)
    _convert_image(spec, changes, problems)
    _convert_references(kind, spec, changes, problems)
    _convert_gpu(spec, default_gpu_type, changes, problems)
    if upstream_shaped and spec.get("resources") is None:
        spec["resources"] = dict(UPSTREAM_GCP_RESOURCES)
        changes.append("spec.resources: omitted → cpu 2, memory 4, disk 100 (what upstream requested on GCP "
                       "without spec.resources; omitted here it would be cpu 2, memory 10, disk 10)")
    out["spec"] = _in_original_order(spec, order, {"build": "image", "modelName": MODEL_NAME_TARGET.get(kind, ""),
                                                   **REFERENCE_RENAMES.get(kind, {})})
    if problems:
        raise NotConvertible("; ".join(problems))
    problems = check_converted(out)
    if problems:
        raise NotConvertible("; ".join(problems))
    return Converted(out, changes)


def _is_upstream_shaped(kind: str, spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` is written in upstream's shape: every upstream object named its image as
    a string ``spec.image`` or a ``spec.build`` (here ``spec.image`` is an object), and
    ``modelName`` or a Model's ``model``/``dataset`` exist only upstream. A manifest already in
    this product's shape is left as it is (``convert`` is idempotent)."""
    return (isinstance(spec.get("image"), str) or "build" in spec or "modelName" in spec
            or any(k in spec for k in REFERENCE_RENAMES.get(kind, {})))


def _in_original_order(spec: dict[str, Any], order: list[str], renames: dict[str, str]) -> dict[str, Any]:
    """``spec`` with each key where its upstream name was, so a diff of the files stays readable."""
    keys = [renames.get(k, k) for k in order]
    ordered = [k for i, k in enumerate(keys) if k in spec and k not in keys[:i]]
    return {k: spec[k] for k in ordered + [k for k in spec if k not in ordered]}


def _convert_image(spec: dict[str, Any], changes: list[str], problems: list[str]) -> None:
    image = spec.get("image")
    build = spec.pop("build", None)
    if build is not None:
        if not isinstance(build, dict) or len([k for k in ("git", "upload") if build.get(k)]) != 1 \
                or set(build) - {"git", "upload"}:
            problems.append("spec.build: expected exactly one of git or upload")
            return
        if isinstance(image, str):
            # Upstream's controller wrote the built image into spec.image; here the spec is the
            # user's and the built image is status.image (SPEC §1).
            changes.append(f"spec.image: {image!r} removed (upstream's controller set it after building "
                           "spec.build; the built image is status.image here)")
        elif image is not None:
            problems.append("spec.image: set together with spec.build; keep one image source")
            return
        if build.get("git"):
            git = dict(build["git"])
            if git.get("branch") and git.get("tag"):
                # Upstream cloned --branch TAG when both were set (build_reconciler.go) and tagged
                # the image with it (cloud/common.go ObjectBuiltImageURL): the tag is what it built.
                changes.append(f"spec.build.git.branch: {git.pop('branch')!r} removed (tag {git['tag']!r} "
                               "is set too; upstream built the tag, here they are exclusive)")
            spec["image"] = {"git": {k: v for k, v in git.items() if v not in (None, "")}}
            changes.append("spec.build.git → spec.image.git")
        else:
            upload = dict(build["upload"])
            checksum = upload.pop("md5Checksum", None)
            if not isinstance(checksum, str):
                problems.append("spec.build.upload.md5Checksum: missing")
                return
            new_upload: dict[str, Any] = {"checksum": checksum.lower()}
            if upload.get("requestID"):
                new_upload["requestID"] = upload.pop("requestID")
            upload.pop("requestID", None)
            if upload:
                problems.append(f"spec.build.upload: no equivalent for {', '.join(sorted(upload))}")
                return
            spec["image"] = {"upload": new_upload}
            lower = " (lower-cased)" if checksum != checksum.lower() else ""
            changes.append(f"spec.build.upload → spec.image.upload; md5Checksum → checksum{lower}")
        return
    if isinstance(image, str):
        spec["image"] = {"name": image}
        changes.append(f"spec.image: {image!r} → spec.image.name")


def _convert_references(kind: str, spec: dict[str, Any], changes: list[str], problems: list[str]) -> None:
    for old, new in REFERENCE_RENAMES.get(kind, {}).items():
        if old in spec:
            if new in spec:
                problems.append(f"spec.{old}: spec.{new} is set too; keep one")
                continue
            spec[new] = spec.pop(old)
            changes.append(f"spec.{old} → spec.{new}")
    if "modelName" in spec:
        target = MODEL_NAME_TARGET.get(kind)
        value = spec.pop("modelName")
        if target is None:
            problems.append(f"spec.modelName: a {kind} has no model reference; remove it")
        elif target in spec and (spec[target] or {}).get("name") != value:
            problems.append(f"spec.modelName: differs from spec.{target}.name; keep one")
        else:
            spec[target] = {"name": value}
            changes.append(f"spec.modelName → spec.{target}.name")


def _convert_gpu(spec: dict[str, Any], default_gpu_type: str | None, changes: list[str],
                 problems: list[str]) -> None:
    gpu = (spec.get("resources") or {}).get("gpu")
    if not isinstance(gpu, dict):
        return
    gpu_type = gpu.get("type")
    if not gpu_type:
        if default_gpu_type is None:
            problems.append("spec.resources.gpu.type: omitted (upstream: any GPU) but required here, and which "
                            "accelerator to use is your choice: pass --default-gpu-type TYPE or set it "
                            f"(one of {', '.join(GPU_TYPES)})")
            return
        gpu["type"] = default_gpu_type
        changes.append(f"spec.resources.gpu.type: omitted (any GPU) → {default_gpu_type} (--default-gpu-type)")
    elif gpu_type in GPU_TYPE_RENAMES:
        gpu["type"] = GPU_TYPE_RENAMES[gpu_type]
        changes.append(f"spec.resources.gpu.type: {gpu_type} → {gpu['type']}")
    if "count" in gpu and gpu["count"] is not None and not gpu["count"]:
        # Upstream asked for 0 GPUs on a GPU node (resources.go Apply); here count is 1 or more.
        problems.append("spec.resources.gpu.count: 0 (upstream: no GPU, scheduled on a GPU node) has no "
                        "equivalent: remove spec.resources.gpu for no GPU, or set a count of 1 or more")
    elif gpu.get("count") is None:
        gpu["count"] = 1
        changes.append("spec.resources.gpu.count: omitted → 1")


def check_converted(obj: Mapping[str, Any]) -> list[str]:
    """What the API server would prune or reject, and what the controller would call
    ``InvalidSpec``, for a converted object (empty when it will be stored as written and run)."""
    cls = KINDS[str(obj.get("kind"))]
    # The CRD schema also declares the upstream names; after conversion none may remain.
    problems = [p.replace(": unknown field", ": no equivalent here (the API server would drop it)")
                for p in validate_openapi(dict(obj), kind_schema(cls, cel=False))]
    if problems:
        return problems
    try:
        return validate(from_dict(obj))
    except StructureError as exc:
        return list(exc.errors)


# --- reading and writing manifests -------------------------------------------------------------

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""What ``kubectl apply -f DIR`` reads from a directory (JSON is YAML to the parser)."""


def _yaml_files(path: Path) -> list[Path]:
    """The manifest files at ``path``: itself, or every ``MANIFEST_SUFFIXES`` file below a
    directory, sorted. Raises FileNotFoundError for a directory with none, so a mistyped
    directory is an error rather than an empty, successful conversion."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        if not found:
            raise FileNotFoundError(f"{path}: no {', '.join('*' + s for s in MANIFEST_SUFFIXES)} files below it")
        return found
    return [path]


def read_documents(paths: Iterable[str], stdin: IO[str]) -> Iterator[tuple[str, Any]]:
    """``(source, document)`` for every YAML document in ``paths`` (files, directories searched
    for ``*.yaml``/``*.yml``/``*.json``, ``-`` for stdin); a ``kind: List`` is expanded into its
    items. Raises OSError, UnicodeDecodeError (a file that is not UTF-8) or yaml.YAMLError."""
    for arg in paths:
        files: list[tuple[str, str]] = []
        if arg == "-":
            files.append(("<stdin>", stdin.read()))
        else:
            files.extend((str(p), p.read_text()) for p in _yaml_files(Path(arg)))
        for source, text in files:
            for i, doc in enumerate(yaml.safe_load_all(text)):
                if doc is None:
                    continue
                where = f"{source}#{i + 1}" if i else source
                # kubectl get prints kind: List; the API itself ModelList, DatasetList, ...
                if (isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List")
                        and isinstance(doc.get("items"), list)):
                    for j, item in enumerate(doc["items"]):
                        yield f"{where}[{j}]", item
                else:
                    yield where, doc


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompt templates, scripts in ``command``) as ``|`` blocks, the way
    upstream's examples write them, instead of quoted one-liners with blank lines between."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself where a block cannot hold the value exactly
    # (e.g. trailing spaces on a line).
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str_representer)


def convert_main(args: argparse.Namespace, stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout,
                 stderr: IO[str] = sys.stderr) -> int:
    """``substratus convert``: all or nothing — converted YAML on stdout only if every document
    converts; one line per change (and every refusal) on stderr. Exit 0; 2 (usage: bad
    arguments, an unreadable or unconvertible manifest) otherwise, nothing written."""
    if args.default_gpu_type is not None and args.default_gpu_type not in GPU_TYPES:
        return _fail(stderr, ExitCode.USAGE,
                     f"--default-gpu-type {args.default_gpu_type!r}: use one of {', '.join(GPU_TYPES)}")
    converted: list[dict[str, Any]] = []
    failed = 0
    try:
        docs = list(read_documents(args.paths or ["-"], stdin))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return _fail(stderr, ExitCode.USAGE, str(exc).replace("\n", " "))
    for source, doc in docs:
        ident = _ident(doc) if isinstance(doc, Mapping) else "(not an object)"
        try:
            result = convert_object(doc, default_gpu_type=args.default_gpu_type)
        except NotConvertible as exc:
            failed += 1
            stderr.write(f"{source}: {ident}: cannot convert: {exc}\n")
            continue
        for change in result.changes:
            stderr.write(f"{source}: {ident}: {change}\n")
        converted.append(result.obj)
    if failed:
        return _fail(stderr, ExitCode.USAGE, f"{failed} of {len(docs)} documents cannot be converted; nothing written")
    stdout.write(yaml.dump_all(converted, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                               width=1 << 16, allow_unicode=True, explicit_start=True))
    return ExitCode.OK


# --- adopting an upstream bucket directory -------------------------------------------------------

def completed_marker_for_adoption(kind: str, namespace: str, name: str, generation: int | None,
                                  now: dt.datetime) -> dict[str, Any]:
    """The ``completed.json`` that adopts upstream artifacts in place: ``artifacts`` names the
    directory (relative to ``status.url``) that holds them, so nothing is moved (SPEC §3, §9)."""
    body: dict[str, Any] = {"adopted": "original Substratus", "artifacts": UPSTREAM_ARTIFACTS_DIR,
                            "kind": kind, "object": f"{namespace}/{name}", "completionTime": format_time(now)}
    if generation is not None:
        body["generation"] = generation
    return body


def add_arguments(sub: Any) -> None:
    """The ``convert`` and ``adopt`` subcommands of ``substratus``."""
    conv = sub.add_parser(
        "convert", help="rewrite manifests of the original Substratus (v0.10) for this product",
        description="Reads YAML or JSON (files, directories, or - for stdin; multi-document, kind: List), writes "
                    "the converted manifests to stdout and one line per change to stderr. Refuses (exit 2, "
                    "nothing written) what cannot be converted mechanically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog(["substratus convert old/ | kubectl apply -f -",
                       "substratus convert --default-gpu-type nvidia-l4 model.yaml > converted.yaml"],
                      (ExitCode.OK, ExitCode.USAGE, ExitCode.INTERRUPTED, ExitCode.BROKEN_PIPE)))
    conv.add_argument("paths", nargs="*", metavar="PATH", help="file, directory or - (default: stdin)")
    conv.add_argument("--default-gpu-type", default=None, metavar="TYPE",
                      help=f"GPU type for upstream manifests that omit it (any GPU): one of {', '.join(GPU_TYPES)}")
    adopt = sub.add_parser(
        "adopt", help="complete a Model/Dataset from artifacts the original Substratus left in the bucket",
        description="Finds {bucket}/{hash}/artifacts written by the original Substratus and writes "
                    "{bucket}/{hash}/completed.json, so the object completes without running a Job. "
                    "Never moves or deletes data. Exit 1: nothing to adopt (or, for a Notebook, files wait "
                    "to be copied), the object is missing, or the bucket cannot be read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog(["substratus adopt model/falcon-7b -n team-a --cluster-name old --bucket-url gs://bucket",
                       "substratus adopt dataset/squad -n team-a     # status.url read from the cluster"],
                      (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.NO_CLUSTER, ExitCode.NO_CRDS,
                       ExitCode.INTERRUPTED)))
    adopt.add_argument("target", help="KIND/NAME, e.g. model/falcon-7b (Model or Dataset; notebook/NAME lists an "
                                      "upstream Notebook's files and prints how to copy them)")
    adopt.add_argument("-n", "--namespace", default=None, help="default: the kubeconfig's namespace, else default")
    adopt.add_argument("--cluster-name", default=os.environ.get("SUBSTRATUS_CLUSTER_NAME"),
                       help="the operator's --cluster-name; with --bucket-url, no cluster access is needed "
                            "[env SUBSTRATUS_CLUSTER_NAME]")
    adopt.add_argument("--bucket-url", default=os.environ.get("SUBSTRATUS_BUCKET_URL"),
                       help="the operator's --bucket-url [env SUBSTRATUS_BUCKET_URL]")
    adopt.add_argument("--cloud", default=os.environ.get("SUBSTRATUS_CLOUD", "local"), choices=("local", "gcp"),
                       help="how to reach the bucket [env SUBSTRATUS_CLOUD, default local]")
    adopt.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    adopt.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


ADOPTABLE = ("Model", "Dataset")


STORAGE_ATTEMPTS = 3
"""Tries per storage request from ``adopt`` (gcsfs' backoff: about 3 s before an unreachable
bucket is reported, instead of its default ~35 s)."""


async def adopt(target: str, namespace: str | None, *, cloud_name: str, cluster_name: str | None,
                bucket_url: str | None, kubeconfig: str | None, out: IO[str] = sys.stdout,
                err: IO[str] = sys.stderr, context: str | None = None) -> int:
    """``substratus adopt``: 0 adopted (or already complete); otherwise one line on ``err``,
    ``substratus: error: …``, and the shared exit code (substratus.cli.ExitCode): 2 bad
    arguments, 3 no cluster (no usable kubeconfig, unreachable, refused), 4 CRDs missing,
    1 nothing to adopt, the object or its ``status.url`` missing, or the bucket unreadable.
    Writes only ``{url}/completed.json``; lists, never moves or deletes. ``namespace`` None:
    the kubeconfig context's."""
    from substratus.cloud import build_cloud
    from substratus.cloud.gcp import GcpCloud
    from substratus.config import OperatorConfig
    from substratus.controllers.resources import BY_KIND
    from substratus.explain import _current_namespace, parse_target
    from substratus.plugins.upload import check_crd, connect
    from substratus.runtime.client import ApiError

    try:
        kind, name = parse_target(target)
    except ValueError as exc:
        return _fail(err, ExitCode.USAGE, str(exc))
    if kind not in (*ADOPTABLE, "Notebook"):
        return _fail(err, ExitCode.USAGE, "only a Model or a Dataset has artifacts to adopt (and a Notebook "
                                          f"files to find), not a {kind}")
    plural = KINDS[kind].PLURAL
    generation: int | None = None
    if bool(cluster_name) != bool(bucket_url):
        return _fail(err, ExitCode.USAGE, "give both --cluster-name and --bucket-url, or neither (then the "
                                          "object's status.url is read from the cluster)")
    namespace = namespace or _current_namespace(kubeconfig, context)
    if cluster_name and bucket_url:
        url = naming.storage_url(bucket_url, naming.storage_hash(cluster_name, namespace, plural, name))
    else:
        try:
            client = await connect(kubeconfig, context)
        except CliError as exc:
            return _fail(err, exc.code, exc.message)
        try:
            await check_crd(client, BY_KIND[kind])
            obj = await client.get_or_none(BY_KIND[kind], name, namespace)
        except CliError as exc:
            return _fail(err, exc.code, exc.message)
        except (ApiError, OSError) as exc:
            code = ExitCode.NO_CLUSTER if isinstance(exc, OSError) or getattr(exc, "status", 0) in (401, 403) \
                else ExitCode.ERROR
            return _fail(err, code, f"talking to the API server at {client.host}: {exc}")
        finally:
            await client.close()
        status_url = ((obj or {}).get("status") or {}).get("url")
        if not status_url:
            return _fail(err, ExitCode.ERROR, f"{kind} {namespace}/{name} "
                         + ("not found" if obj is None else "has no status.url yet")
                         + "; give --cluster-name and --bucket-url (the operator's flags) to adopt before applying it")
        url = str(status_url)
        generation = ((obj or {}).get("metadata") or {}).get("generation")
    # The cloud's object operations take full URLs under its bucket: the object's parent will do.
    cloud = build_cloud(OperatorConfig(cloud=cloud_name, bucket_url=url.rsplit("/", 1)[0],
                                       upload_signing_key="unused: adopt signs nothing"))
    if isinstance(cloud, GcpCloud):
        cloud.request_attempts = STORAGE_ATTEMPTS
    try:
        if kind == "Notebook":
            return await notebook_files_at(cloud, namespace, name, url, out, err)
        return await adopt_at(cloud, kind, namespace, name, url, generation, out, err)
    finally:
        await cloud.close()


def _unreadable(err: IO[str], url: str, exc: BaseException) -> ExitCode:
    detail = " ".join(str(exc).split())  # gcsfs' messages span lines ("Forbidden: path\nwhy")
    return _fail(err, ExitCode.ERROR, f"cannot read {url}/: {type(exc).__name__}: {detail} (check --bucket-url, "
                                      "--cloud and the credentials); nothing written")


async def adopt_at(cloud: Cloud, kind: str, namespace: str, name: str, url: str, generation: int | None,
                   out: IO[str], err: IO[str]) -> int:
    """Adopt the upstream artifacts under ``url`` (``{bucket}/{hash}``) through ``cloud``; see
    :func:`adopt`. A bucket that cannot be read or written (missing, mistyped, no permission,
    unreachable) is one error line and exit 1, never a traceback."""
    marker = naming.completed_marker_url(url)
    upstream = f"{url}/{UPSTREAM_ARTIFACTS_DIR}"
    try:
        if await cloud.exists(marker):
            out.write(f"{kind} {namespace}/{name} is already complete: {marker} exists; nothing written\n")
            return ExitCode.OK
        listing = await cloud.list(upstream)
    except (CloudError, OSError, TimeoutError) as exc:  # aiohttp's connection errors and gcsfs' 404/403 are OSErrors
        return _unreadable(err, url, exc)
    if not listing:
        return _fail(err, ExitCode.ERROR,
                     f"no artifacts of the original Substratus at {upstream}/ (hash = md5 of "
                     f"clusters/CLUSTER/namespaces/{namespace}/{KINDS[kind].PLURAL}/{name}, the same rule upstream "
                     "used: check the cluster name, namespace and bucket); nothing written")
    body = completed_marker_for_adoption(kind, namespace, name, generation, dt.datetime.now(dt.UTC))
    try:
        await cloud.write(marker, _json(body))
    except (CloudError, OSError, TimeoutError) as exc:
        detail = " ".join(str(exc).split())
        return _fail(err, ExitCode.ERROR, f"cannot write {marker}: {type(exc).__name__}: {detail}; nothing adopted")
    size = sum(o.size for o in listing)
    out.write(f"adopted {len(listing)} files ({size} bytes) at {upstream}/ in place; wrote {marker}\n"
              f"{kind} {namespace}/{name} completes without running a Job (status.artifactsURL = {upstream})\n")
    return ExitCode.OK


async def notebook_files_at(cloud: Cloud, namespace: str, name: str, url: str, out: IO[str],
                            err: IO[str]) -> int:
    """Where an upstream Notebook's files are, and how to bring them into this product's Notebook.

    Upstream mounted ``{url}/artifacts`` read-write at ``/content/artifacts`` of every Notebook
    Pod (internal/controller/notebook_controller.go), so a user's work lives there; here a
    Notebook's ``/content/output`` (and ``/content/artifacts``) is ``{url}/output``
    (controllers/notebook.py). Nothing marks a Notebook complete, and adopt never moves data:
    this lists the files and prints the copy command. 0 when there is nothing to bring over,
    1 when files wait to be copied (or the bucket cannot be read)."""
    from substratus.controllers.notebook import output_url

    upstream = f"{url}/{UPSTREAM_ARTIFACTS_DIR}"
    try:
        listing = await cloud.list(upstream)
    except (CloudError, OSError, TimeoutError) as exc:
        return _unreadable(err, url, exc)
    if not listing:
        out.write(f"Notebook {namespace}/{name}: no files of the original Substratus at {upstream}/; "
                  "nothing to bring over\n")
        return ExitCode.OK
    target = output_url(url)
    size = sum(o.size for o in listing)
    err.write(f"Notebook {namespace}/{name}: {len(listing)} files ({size} bytes) of the original Substratus at "
              f"{upstream}/; here the Notebook's /content/output and /content/artifacts are {target}/, so "
              f"they are not visible until copied (adopt never moves data; nothing written):\n"
              f"  {_copy_command(upstream, target)}\n")
    return ExitCode.ERROR


def _copy_command(source: str, target: str) -> str:
    """A shell command copying the directory ``source`` into ``target`` (bucket URLs)."""
    if source.startswith("file://"):
        src, dst = source.removeprefix("file://"), target.removeprefix("file://")
        return f"mkdir -p '{dst}' && cp -r '{src}/.' '{dst}/'"
    return f"gsutil -m cp -r '{source}/*' '{target}/'"
