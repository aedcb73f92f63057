"""What every kind has: the common spec fields, the common status, and class-level identity."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

from typing import ClassVar

import attrs

from substratus.api.common import BuildStatus, Image, ParamValue, Resources, UploadStatus
from substratus.api.conditions import Condition
from substratus.api.fields import api_field
from substratus.api.meta import GROUP


@attrs.define(kw_only=True)
class CommonSpec:
    """Spec fields shared by all kinds (SPEC §1)."""

    image: Image = api_field(
        "Container image: exactly one of git, upload or name; the controller never changes it (see status.image)."
    )
    command: list[str] = api_field("Overrides the image's command.", factory=list)
    params: dict[str, ParamValue] = api_field(
        "Parameters (string, integer, number or boolean values), given to the container as "
        "PARAM_{KEY} environment variables and /content/params.json.",
        factory=dict,
    )
    env: dict[str, str] = api_field(
        "Environment variables; a value ${{ secrets.NAME.KEY }} becomes a reference to key KEY of Secret NAME.",
        factory=dict,
    )
    resources: Resources = api_field(
        "Compute resources of the workload.", factory=Resources, openapi={"default": {}}
    )


@attrs.define(kw_only=True)
class Status:
    """Observed state; ``ready`` summarises the conditions."""

    ready: bool = api_field("True when the object is usable (complete, or serving).", default=False)
    conditions: list[Condition] = api_field(
        "Ready (the summary: same truth as ready), Built, and Complete or Serving; see the reasons in "
        "the documentation.",
        factory=list,
        openapi={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: str | None = api_field(
        "Storage URL of the object's artifacts (bucket/hash), or its HTTP URL.", default=None
    )
    upload: UploadStatus | None = api_field("Upload instructions for spec.image.upload.", default=None)
    image: str | None = api_field(
        "The image the workloads run: spec.image.name, or the built image pinned by digest (repo@sha256:...).",
        default=None,
    )
    build: BuildStatus | None = api_field(
        "What produced status.image when it was built from spec.image.git or spec.image.upload.", default=None
    )


@attrs.define(kw_only=True)
class ArtifactStatus(Status):
    """Status of the kinds that store artifacts (Model, Dataset)."""

    artifacts_url: str | None = api_field(
        "Storage URL of the artifacts once complete: {url}/model (Model) or {url}/data (Dataset), or "
        "{url}/artifacts for artifacts of the original Substratus adopted in place (`substratus adopt`). "
        "What dependents mount.",
        json="artifactsURL",
        default=None,
    )


class KindInfo:
    """Class-level identity of a kind, used by the CRD generator, naming and the registry.

    Plain mixin (no attrs fields) so the four kinds can still list their fields in wire order.
    """

    __slots__ = ()

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    READY_CONDITION: ClassVar[str]
    """The condition besides Built that makes the object ready (``status.ready`` and ``Ready``)."""
    workload_suffix: ClassVar[str]
    """``{name}-{workload_suffix}`` names the workload (SPEC §2)."""

    @classmethod
    def singular(cls) -> str:
        return cls.KIND.lower()

    @classmethod
    def crd_name(cls) -> str:
        return f"{cls.PLURAL}.{GROUP}"
