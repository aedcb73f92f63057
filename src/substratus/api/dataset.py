"""Dataset: data imported by a container into the bucket at ``{status.url}/data``."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

from typing import ClassVar

import attrs

from substratus.api.base import ArtifactStatus, CommonSpec, KindInfo
from substratus.api.conditions import COMPLETE
from substratus.api.fields import api_field
from substratus.api.meta import API_VERSION, ObjectMeta


@attrs.define(kw_only=True)
class DatasetSpec(CommonSpec):
    """Only the common fields: the image's job is to write the data to /content/output."""


@attrs.define(kw_only=True)
class Dataset(KindInfo):
    """A Dataset is data imported by a container into a bucket, to be mounted into Model training and Notebooks."""

    KIND: ClassVar[str] = "Dataset"
    PLURAL: ClassVar[str] = "datasets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("data",)  # `ds` would collide with DaemonSets
    READY_CONDITION: ClassVar[str] = COMPLETE
    workload_suffix: ClassVar[str] = "dataset"

    api_version: str = api_field("substratus.ai/v1", default=API_VERSION)
    kind: str = api_field("Dataset", default="Dataset")
    metadata: ObjectMeta = api_field("Standard object metadata.", factory=ObjectMeta)
    spec: DatasetSpec = api_field("Desired state.")
    status: ArtifactStatus = api_field("Observed state.", factory=ArtifactStatus)
