"""Server: a Model served over HTTP by a Deployment and a Service on port 8080."""

# api_field() is attrs.field() plus metadata; ruff only knows the stock field specifiers.
# ruff: noqa: RUF009

from __future__ import annotations

from typing import ClassVar

import attrs

from substratus.api.base import CommonSpec, KindInfo, Status
from substratus.api.common import ObjectRef
from substratus.api.conditions import SERVING
from substratus.api.fields import api_field
from substratus.api.meta import API_VERSION, ObjectMeta


@attrs.define(kw_only=True)
class ServerSpec(CommonSpec):
    model: ObjectRef = api_field("Model to serve; its artifacts are mounted read-only at /content/model.")


@attrs.define(kw_only=True)
class Server(KindInfo):
    """A Server serves a Model over HTTP (a Deployment and a Service on port 8080)."""

    KIND: ClassVar[str] = "Server"
    PLURAL: ClassVar[str] = "servers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    READY_CONDITION: ClassVar[str] = SERVING
    workload_suffix: ClassVar[str] = "server"

    api_version: str = api_field("substratus.ai/v1", default=API_VERSION)
    kind: str = api_field("Server", default="Server")
    metadata: ObjectMeta = api_field("Standard object metadata.", factory=ObjectMeta)
    spec: ServerSpec = api_field("Desired state.")
    status: Status = api_field("Observed state.", factory=Status)
