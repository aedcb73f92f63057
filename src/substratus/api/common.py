"""Spec and status building blocks shared by every kind (SPEC §1 "Common spec fields")."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeAlias

import attrs

from substratus.api.fields import api_field

GPU_TYPES: tuple[str, ...] = (
    "nvidia-tesla-t4",
    "nvidia-l4",
    "nvidia-tesla-a100",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
)
"""Supported accelerators (SPEC §5): the GKE ``cloud.google.com/gke-accelerator`` values."""

MD5_PATTERN = r"^[a-f0-9]{32}$"
DURATION_PATTERN = r"^([0-9]+(h|m|s))+$"

# Upper bounds keep a typo (memory: 1000000) from producing an unschedulable Pod that looks
# merely "pending"; they are generous on purpose.
MAX_CPU = 1024
MAX_GB = 65536
MAX_GPU_COUNT = 16

ParamValue: TypeAlias = str | int | float | bool
"""A ``params`` value: scalars only, because each becomes one ``PARAM_*`` env var."""

# `${{ secrets.NAME.KEY }}` in an env value becomes a secretKeyRef (SPEC §1). NAME is a
# DNS-1123 label (no dots, so the split is unambiguous); KEY is a Secret data key.
SECRET_REF_RE = re.compile(r"^\$\{\{\s*secrets\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([-._a-zA-Z0-9]+)\s*\}\}$")


def secret_ref(value: str) -> tuple[str, str] | None:
    """``(secret name, key)`` if ``value`` is a ``${{ secrets.NAME.KEY }}`` reference."""
    m = SECRET_REF_RE.match(value)
    return (m.group(1), m.group(3)) if m else None


_DURATION_PART = re.compile(r"([0-9]+)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(s: str) -> timedelta:
    """Parse a Go-style duration restricted to h/m/s (``2h``, ``30m``, ``1h30m``)."""
    if not re.fullmatch(DURATION_PATTERN, s):
        raise ValueError(f"invalid duration {s!r}: use e.g. 2h, 30m, 1h30m or 90s")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(s)))


@attrs.define(kw_only=True)
class GitSource:
    """A git repository to build the image from (its Dockerfile at ``path``)."""

    url: str = api_field("Repository URL, e.g. https://github.com/substratusai/model-loader-huggingface.")
    branch: str | None = api_field(
        "Branch to build; mutually exclusive with tag. Default: the repository's default branch.",
        default=None,
    )
    tag: str | None = api_field("Tag to build; mutually exclusive with branch.", default=None)
    path: str | None = api_field("Sub-directory holding the Dockerfile and build context.", default=None)


@attrs.define(kw_only=True)
class UploadSource:
    """A build context uploaded as a .tar.gz through a signed URL published in status.upload."""

    checksum: str = api_field(
        "MD5 (32 lowercase hex characters) of the .tar.gz to upload; the build waits until an object with this checksum is stored.",
        openapi={"pattern": MD5_PATTERN},
    )
    request_id: str | None = api_field(
        "Any string; change it to be issued a fresh upload URL.", json="requestID", default=None
    )


@attrs.define(kw_only=True)
class Image:
    """The container that does the work. The user sets exactly one of git, upload or name
    (SPEC §1 "The spec is the user's": the controller never writes it; a built image is
    reported in status.image)."""

    git: GitSource | None = api_field("Build the image from a git repository.", default=None)
    upload: UploadSource | None = api_field("Build the image from an uploaded directory.", default=None)
    name: str | None = api_field(
        "A prebuilt image reference (registry/repo:tag or registry/repo@sha256:...); not together with git or upload.",
        default=None,
    )


@attrs.define(kw_only=True)
class GPU:
    """Accelerators for the workload (scheduled by node selector, limits and toleration)."""

    type: str = api_field("Accelerator type.", openapi={"enum": list(GPU_TYPES)})
    count: int = api_field(
        "Number of accelerators.",
        default=1,
        emit_default=True,
        openapi={"minimum": 1, "maximum": MAX_GPU_COUNT},
    )


@attrs.define(kw_only=True)
class Resources:
    """Compute for the workload container; memory and disk are in gigabytes."""

    cpu: int = api_field(
        "CPU cores.", default=2, emit_default=True, openapi={"minimum": 1, "maximum": MAX_CPU}
    )
    memory: int = api_field(
        "Memory in GB.", default=10, emit_default=True, openapi={"minimum": 1, "maximum": MAX_GB}
    )
    disk: int = api_field(
        "Ephemeral storage in GB.", default=10, emit_default=True, openapi={"minimum": 1, "maximum": MAX_GB}
    )
    gpu: GPU | None = api_field("Optional accelerators.", default=None)


@attrs.define(kw_only=True)
class ObjectRef:
    """A reference to another substratus object of a known kind."""

    name: str = api_field("Name of the referenced object.")
    namespace: str | None = api_field(
        "Namespace of the referenced object; defaults to this object's namespace.", default=None
    )

    def resolve(self, default_ns: str) -> tuple[str, str]:
        """``(namespace, name)`` with the namespace defaulted to the referrer's (SPEC §1)."""
        return (self.namespace or default_ns, self.name)


@attrs.define(kw_only=True)
class UploadStatus:
    """Where and until when to upload the build context of ``spec.image.upload``."""

    url: str | None = api_field("Signed URL to PUT the .tar.gz to.", default=None)
    request_id: str | None = api_field(
        "The spec.image.upload.requestID this URL was issued for.", json="requestID", default=None
    )
    expires_at: str | None = api_field("RFC3339 time the URL expires.", default=None)
    stored_checksum: str | None = api_field(
        "MD5 of the upload found in storage, once verified.", default=None
    )


@attrs.define(kw_only=True)
class BuildStatus:
    """What produced ``status.image`` when the image is built from git or an upload (SPEC §6).

    ``source`` and ``rebuild`` are what the controller compares with the spec to decide whether
    the recorded image is still the one to run: a different source or rebuild request builds again.
    """

    source: str = api_field(
        "Fingerprint (sha256, 16 hex) of spec.image.git or spec.image.upload (requestID excluded) that was built."
    )
    commit: str | None = api_field(
        "Full commit SHA the git branch or tag resolved to in the build's clone step (the image tag).", default=None
    )
    checksum: str | None = api_field("MD5 of the uploaded build context (the image tag).", default=None)
    rebuild: str | None = api_field(
        "Value of the annotation substratus.ai/rebuild when this build was started.", default=None
    )
    job: str | None = api_field("Name of the build Job that pushed the image.", default=None)
