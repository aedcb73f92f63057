"""Notebook: a Jupyter environment (one Pod, port 8888) with a Model and/or Dataset mounted."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

from typing import ClassVar

import attrs

from substratus.api.base import CommonSpec, KindInfo, Status
from substratus.api.common import DURATION_PATTERN, ObjectRef
from substratus.api.conditions import SERVING
from substratus.api.fields import api_field
from substratus.api.meta import API_VERSION, ObjectMeta


@attrs.define(kw_only=True)
class NotebookSpec(CommonSpec):
    model: ObjectRef | None = api_field("Model mounted read-only at /content/model.", default=None)
    dataset: ObjectRef | None = api_field("Dataset mounted read-only at /content/data.", default=None)
    suspend: bool = api_field("True stops the Pod and keeps the object.", default=False, emit_default=True)
    idle_timeout: str | None = api_field(
        "Stop the Pod after Jupyter has been idle this long (h/m/s units, e.g. 2h, 30m, 1h30m). Unset: never.",
        default=None,
        openapi={"pattern": DURATION_PATTERN},
    )


@attrs.define(kw_only=True)
class IdleStatus:
    """Why and when the controller stopped an idle Notebook's Pod (``spec.idleTimeout``).

    The spec is the user's (SPEC §1), so idleness is recorded here, never as ``spec.suspend``.
    The Pod starts again when ``metadata.annotations["substratus.ai/resume"]`` differs from
    ``resume`` or ``metadata.generation`` from ``generation`` (a spec change)."""

    since: str = api_field("RFC3339 time the controller stopped the Pod.")
    last_activity: str = api_field("RFC3339 time of Jupyter's last activity (its /api/status) at that moment.")
    resume: str = api_field(
        "Value of the substratus.ai/resume annotation when the Pod was stopped (absent: there was none); "
        "setting a different value resumes the Notebook.",
        default="",
    )
    generation: int = api_field(
        "metadata.generation when the Pod was stopped; a spec change resumes the Notebook.",
        default=0, openapi={"minimum": 0},
    )


@attrs.define(kw_only=True)
class NotebookStatus(Status):
    """Status of a Notebook."""

    idle: IdleStatus | None = api_field(
        "Set while the Pod is stopped because Jupyter was idle longer than spec.idleTimeout; cleared on resume.",
        default=None,
    )


@attrs.define(kw_only=True)
class Notebook(KindInfo):
    """A Notebook is a Jupyter environment (one Pod, port 8888) with a Model and/or Dataset mounted, for developing workloads."""

    KIND: ClassVar[str] = "Notebook"
    PLURAL: ClassVar[str] = "notebooks"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("nb",)
    READY_CONDITION: ClassVar[str] = SERVING
    workload_suffix: ClassVar[str] = "notebook"

    api_version: str = api_field("substratus.ai/v1", default=API_VERSION)
    kind: str = api_field("Notebook", default="Notebook")
    metadata: ObjectMeta = api_field("Standard object metadata.", factory=ObjectMeta)
    spec: NotebookSpec = api_field("Desired state.")
    status: NotebookStatus = api_field("Observed state.", factory=NotebookStatus)
