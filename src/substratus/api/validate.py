"""Semantic validation the CRD schema cannot do everywhere.

kube-apiserver 1.20 has no CEL, so the rules expressed as ``x-kubernetes-validations`` in the
CRD (name length, image source exclusivity, branch XOR tag) are enforced here too, along with
the schema's own constraints for objects built in Python. Messages start with the field path so
they can go straight into an ``InvalidSpec`` condition.
"""

from __future__ import annotations

import re
from typing import Any

from substratus import naming
from substratus.api.base import CommonSpec
from substratus.api.common import (
    GPU_TYPES,
    MAX_CPU,
    MAX_GB,
    MAX_GPU_COUNT,
    MD5_PATTERN,
    ObjectRef,
    parse_duration,
    secret_ref,
)
from substratus.api.fields import camel
from substratus.api.kinds import AnyKind
from substratus.api.notebook import Notebook, NotebookSpec
from substratus.api.server import Server

# Kubernetes' IsEnvVarName (what a container env name may be).
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

# Image CEL rules; validate() implements the same logic (a test checks the strings are used).
IMAGE_RULES: tuple[tuple[str, str], ...] = (
    (
        "has(self.git) || has(self.upload) || has(self.name)",
        "one of image.git, image.upload or image.name must be set",
    ),
    (
        "!(has(self.git) && has(self.upload))",
        "image.git and image.upload are mutually exclusive",
    ),
    (
        "!has(self.name) || !(has(self.git) || has(self.upload))",
        "image.name cannot be set together with image.git or image.upload (a built image is reported in "
        "status.image)",
    ),
)
GIT_RULES: tuple[tuple[str, str], ...] = (
    ("!(has(self.branch) && has(self.tag))", "git.branch and git.tag are mutually exclusive"),
)
NAME_RULES: tuple[tuple[str, str], ...] = (
    (
        f"self.metadata.name.size() <= {naming.MAX_NAME_LENGTH}",
        f"metadata.name must be at most {naming.MAX_NAME_LENGTH} characters (child names add up to 13)",
    ),
    (
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter)",
    ),
)


def validate(obj: AnyKind) -> list[str]:
    """Human-actionable problems with ``obj`` (empty if none), each naming the field."""
    errors: list[str] = []
    problem = naming.validate_parent_name(obj.metadata.name)
    if problem:
        errors.append(f"metadata.name: {problem}")
    _validate_common(obj.spec, errors)
    spec: Any = obj.spec
    for field in ("base_model", "training_dataset", "model", "dataset"):
        ref = getattr(spec, field, None)
        if ref is not None:
            _validate_ref(ref, f"spec.{camel(field)}", errors)
    if isinstance(obj, Server) and getattr(obj.spec, "model", None) is None:
        errors.append("spec.model: required: the Model to serve")
    if isinstance(obj, Notebook):
        _validate_notebook(obj.spec, errors)
    return errors


def _validate_common(spec: CommonSpec, errors: list[str]) -> None:
    image = spec.image
    if image is None:
        errors.append("spec.image: required: set one of git, upload or name")
    else:
        if image.git is None and image.upload is None and not image.name:
            errors.append("spec.image: " + IMAGE_RULES[0][1])
        if image.git is not None and image.upload is not None:
            errors.append("spec.image: " + IMAGE_RULES[1][1] + "; remove one of them")
        if image.name and (image.git is not None or image.upload is not None):
            # SPEC §1 "The spec is the user's": a built image goes to status.image, so a name
            # beside a build source is the user's contradiction, never something we wrote.
            source = "spec.image.git" if image.git is not None else "spec.image.upload"
            errors.append(
                f"spec.image.name: cannot be set together with {source}; set exactly one of git, upload "
                "or name (the image built from git or upload is reported in status.image)"
            )
        if image.git is not None:
            if not image.git.url:
                errors.append("spec.image.git.url: must not be empty")
            if image.git.branch is not None and image.git.tag is not None:
                errors.append("spec.image.git: " + GIT_RULES[0][1] + "; remove one of them")
        if image.upload is not None and not re.match(MD5_PATTERN, str(image.upload.checksum)):
            errors.append(
                f"spec.image.upload.checksum: {image.upload.checksum!r} is not an MD5 checksum "
                "(32 lowercase hex characters, e.g. the output of `md5sum context.tar.gz`)"
            )

    r = spec.resources
    for field, upper in (("cpu", MAX_CPU), ("memory", MAX_GB), ("disk", MAX_GB)):
        value = getattr(r, field)
        if not _is_int(value) or not 1 <= value <= upper:
            unit = "cores" if field == "cpu" else "GB"
            errors.append(f"spec.resources.{field}: {value!r} must be an integer from 1 to {upper} ({unit})")
    if r.gpu is not None:
        if r.gpu.type not in GPU_TYPES:
            errors.append(
                f"spec.resources.gpu.type: {r.gpu.type!r} is not supported; use one of {', '.join(GPU_TYPES)}"
            )
        if not _is_int(r.gpu.count) or not 1 <= r.gpu.count <= MAX_GPU_COUNT:
            errors.append(
                f"spec.resources.gpu.count: {r.gpu.count!r} must be an integer from 1 to {MAX_GPU_COUNT}"
            )

    env_names: dict[str, str] = {}
    for key, value in spec.params.items():
        if not key:
            errors.append("spec.params: keys must not be empty")
            continue
        if not isinstance(value, str | int | float | bool):
            errors.append(
                f"spec.params.{key}: must be a string, integer, number or boolean, not {_kind_of(value)} "
                "(each param becomes one environment variable)"
            )
        env = naming.param_env_name(key)
        if env in env_names:
            errors.append(
                f"spec.params.{key}: maps to the same environment variable {env} as {env_names[env]!r}; rename one"
            )
        env_names[env] = key

    for key, value in spec.env.items():
        if not ENV_NAME_RE.match(key):
            errors.append(
                f"spec.env.{key}: {key!r} is not a valid environment variable name "
                "(letters, digits, '_', '-', '.'; not starting with a digit)"
            )
        if not isinstance(value, str):
            errors.append(f"spec.env.{key}: must be a string, not {_kind_of(value)}")
        elif "${{" in value and secret_ref(value) is None:
            errors.append(
                f"spec.env.{key}: {value!r} is not a valid secret reference; write ${{{{ secrets.NAME.KEY }}}}"
            )
        if key in env_names:
            # Two sources for one variable: the API server refuses a container with duplicate env
            # names, so no child could ever be written (SPEC §1).
            errors.append(
                f"spec.env.{key}: {key} is also set from spec.params.{env_names[key]}; "
                f"set it in one place (remove spec.env.{key} or spec.params.{env_names[key]})"
            )

    for i, arg in enumerate(spec.command):
        if not isinstance(arg, str):
            errors.append(f"spec.command[{i}]: must be a string, not {_kind_of(arg)}")


def _validate_ref(ref: ObjectRef, path: str, errors: list[str]) -> None:
    problem = naming.validate_parent_name(ref.name)
    if problem:
        errors.append(f"{path}.name: {problem}")
    if ref.namespace is not None and (
        len(ref.namespace) > 63 or not naming.DNS1123_LABEL_RE.match(ref.namespace)
    ):
        errors.append(f"{path}.namespace: {ref.namespace!r} is not a valid namespace name")


def _validate_notebook(spec: NotebookSpec, errors: list[str]) -> None:
    if spec.idle_timeout is not None:
        try:
            if parse_duration(spec.idle_timeout).total_seconds() <= 0:
                errors.append(f"spec.idleTimeout: {spec.idle_timeout!r} must be longer than zero")
        except (ValueError, TypeError):
            errors.append(
                f"spec.idleTimeout: {spec.idle_timeout!r} is not a duration; use e.g. 2h, 30m or 1h30m"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
