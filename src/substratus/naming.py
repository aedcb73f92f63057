"""Deterministic names: children, built images, bucket locations, labels, param env vars.

Pure functions (SPEC §2, §3). Determinism is the point: the bucket location of an object is a
function of (cluster, namespace, plural, name), so re-applying an object into a new cluster finds
its artifacts again, and child names let the controller find its children without bookkeeping.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

MAX_NAME_LENGTH = 50
"""Parents are limited to 50 characters so that ``{name}-{kind}-bld`` (suffix ≤ 13) fits the
63-character limit of Jobs, Pods and Services."""

DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
REBUILD_ANNOTATION = "substratus.ai/rebuild"
"""On a parent: any new value builds the image again (SPEC §6; ``kubectl applybuild --rebuild``)."""
RESUME_ANNOTATION = "substratus.ai/resume"
"""On a Notebook stopped for idleness (``status.idle``): a value other than the one recorded when
it was stopped starts the Pod again (``kubectl notebook``, or ``kubectl annotate notebook/NAME
substratus.ai/resume=$(date +%s) --overwrite``). The controller never writes ``spec.suspend`` (SPEC §1)."""
RERUN_ANNOTATION = "substratus.ai/rerun"
"""On a parent: set by ``substratus rerun`` beside moving ``completed.json``; a new value is a new workload Job."""
MANAGED_BY = "substratus"

Role = Literal["workload", "build", "params"]
WORKLOAD: Role = "workload"
BUILD: Role = "build"
PARAMS: Role = "params"
_ROLE_SUFFIX: dict[str, str] = {WORKLOAD: "", BUILD: "-bld", PARAMS: "-params"}

_ARTIFACT_DIRS = {"model": "model", "dataset": "data"}
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


class InvalidName(ValueError):
    """A parent name cannot be used to derive child names."""


def validate_parent_name(name: str) -> str | None:
    """None if ``name`` may name a substratus object, else a message saying why not."""
    if not name:
        return "name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"name {name!r} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if not DNS1035_RE.match(name):
        return (
            f"name {name!r} must be a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return None


def child_name(parent_name: str, kind: str, role: Role = WORKLOAD) -> str:
    """``{name}-{kind}`` (workload), ``{name}-{kind}-bld`` (build Job) or
    ``{name}-{kind}-params`` (params ConfigMap); raises InvalidName for unusable parents."""
    problem = validate_parent_name(parent_name)
    if problem:
        raise InvalidName(problem)
    if role not in _ROLE_SUFFIX:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(_ROLE_SUFFIX)}")
    return f"{parent_name}-{kind.lower()}{_ROLE_SUFFIX[role]}"


def image_repo(registry: str, cluster: str, kind: str, namespace: str, name: str) -> str:
    """``{registry}/{cluster}-{lower(kind)}-{namespace}-{name}``: the repository builds push to (SPEC §2)."""
    return f"{registry.rstrip('/')}/{cluster}-{kind.lower()}-{namespace}-{name}"


def image_name(registry: str, cluster: str, kind: str, namespace: str, name: str, tag: str) -> str:
    """``{registry}/{cluster}-{lower(kind)}-{namespace}-{name}:{tag}`` (SPEC §2).

    Characters a Docker tag cannot hold (e.g. ``/`` in a branch name) become ``-`` and the tag
    is cut to 128 characters.
    """
    clean_tag = _TAG_INVALID.sub("-", tag)[:128]
    if not clean_tag or clean_tag[0] in ".-":
        clean_tag = "_" + clean_tag[:127]
    return f"{image_repo(registry, cluster, kind, namespace, name)}:{clean_tag}"


def storage_hash(cluster: str, namespace: str, plural: str, name: str) -> str:
    """md5 of ``clusters/{cluster}/namespaces/{namespace}/{plural}/{name}`` (SPEC §3): a
    deterministic, evenly spread bucket prefix."""
    key = f"clusters/{cluster}/namespaces/{namespace}/{plural}/{name}"
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()


def storage_url(bucket_url: str, hash: str) -> str:
    """``status.url``: ``{bucket-url}/{hash}``."""
    return f"{bucket_url.rstrip('/')}/{hash}"


def artifacts_url(url: str, kind: str) -> str:
    """``{url}/model`` for a Model, ``{url}/data`` for a Dataset."""
    sub = _ARTIFACT_DIRS.get(kind.lower())
    if sub is None:
        raise ValueError(f"{kind} has no artifacts directory; only Model and Dataset do")
    return f"{url.rstrip('/')}/{sub}"


def is_plain_segment(name: str) -> bool:
    """One path segment of letters, digits, ``.``, ``_``, ``-`` (not ``.``/``..``): safe to append
    to a storage URL read from the bucket (e.g. ``completed.json``'s ``artifacts``)."""
    return bool(_SEGMENT.match(name)) and name not in (".", "..")


def upload_object_url(url: str, checksum: str) -> str:
    """Where an uploaded build context is stored: ``{url}/build/{checksum}.tar.gz``."""
    return f"{url.rstrip('/')}/build/{checksum}.tar.gz"


def completed_marker_url(url: str) -> str:
    """``{url}/completed.json``: written when a workload Job succeeds; the bucket is the source
    of truth for completion (SPEC §3)."""
    return f"{url.rstrip('/')}/completed.json"


def build_record_url(url: str) -> str:
    """``{url}/build.json``: the last successful build of any kind (source fingerprint, digest-
    pinned image), so an object restored into a fresh cluster adopts its image (SPEC §6)."""
    return f"{url.rstrip('/')}/build.json"


def history_url(url: str, name: str) -> str:
    """``{url}/history/{name}``: where ``substratus rerun`` moves a completion marker (SPEC §3)."""
    return f"{url.rstrip('/')}/history/{name}"


def child_labels(kind: str, name: str) -> dict[str, str]:
    """Labels every child carries, so children can be listed and watched by parent."""
    return {MANAGED_BY_LABEL: MANAGED_BY, f"substratus.ai/{kind.lower()}": name}


def param_env_name(key: str) -> str:
    """``PARAM_`` + upper-cased key with every non-alphanumeric character replaced by ``_``."""
    return "PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()
