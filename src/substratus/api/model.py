"""Model: an ML model imported (e.g. from Hugging Face) or trained from a base Model and a
Dataset; its artifacts live in the bucket at ``{status.url}/model``."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

from typing import ClassVar

import attrs

from substratus.api.base import ArtifactStatus, CommonSpec, KindInfo
from substratus.api.common import ObjectRef
from substratus.api.conditions import COMPLETE
from substratus.api.fields import api_field
from substratus.api.meta import API_VERSION, ObjectMeta

MAX_FILES = 100


@attrs.define(kw_only=True)
class ModelSpec(CommonSpec):
    """With neither baseModel nor trainingDataset the Model is an import."""

    base_model: ObjectRef | None = api_field(
        "Model to train from; its artifacts are mounted read-only at /content/model.", default=None
    )
    training_dataset: ObjectRef | None = api_field(
        "Dataset to train on; its artifacts are mounted read-only at /content/data.", default=None
    )


@attrs.define(kw_only=True)
class ModelStatus(ArtifactStatus):
    files: list[str] = api_field(
        f"Names of the stored artifacts (at most {MAX_FILES}).", factory=list, openapi={"maxItems": MAX_FILES}
    )
    disk_size: str | None = api_field("Total size of the artifacts, e.g. 27Gi.", default=None)


@attrs.define(kw_only=True)
class Model(KindInfo):
    """A Model is an ML model imported (e.g. from Hugging Face) or trained from a base Model and a Dataset; its artifacts are kept in a bucket."""

    KIND: ClassVar[str] = "Model"
    PLURAL: ClassVar[str] = "models"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    READY_CONDITION: ClassVar[str] = COMPLETE
    workload_suffix: ClassVar[str] = "model"

    api_version: str = api_field("substratus.ai/v1", default=API_VERSION)
    kind: str = api_field("Model", default="Model")
    metadata: ObjectMeta = api_field("Standard object metadata.", factory=ObjectMeta)
    spec: ModelSpec = api_field("Desired state.")
    status: ModelStatus = api_field("Observed state.", factory=ModelStatus)
