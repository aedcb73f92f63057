"""The substratus.ai/v1 API: the four kinds, their (de)serialisation and helpers.

Reconcilers import from here: ``from substratus.api import Model, from_dict, to_dict``.
"""

from substratus.api.base import CommonSpec, Status
from substratus.api.common import (
    GPU,
    GPU_TYPES,
    BuildStatus,
    GitSource,
    Image,
    ObjectRef,
    ParamValue,
    Resources,
    UploadSource,
    UploadStatus,
    parse_duration,
    secret_ref,
)
from substratus.api.conditions import (
    BUILT,
    COMPLETE,
    READY,
    SERVING,
    Condition,
    Reason,
    SetConditionResult,
    get_condition,
    is_true,
    make_condition,
    ready_summary,
    remove_condition,
    set_condition,
    with_ready,
)
from substratus.api.convert import StructureError, from_dict, spec_errors, structure, to_dict
from substratus.api.dataset import Dataset, DatasetSpec
from substratus.api.kinds import KINDS, AnyKind, KindClass
from substratus.api.meta import (
    API_VERSION,
    GROUP,
    VERSION,
    ObjectMeta,
    format_time,
    owner_reference,
    parse_time,
)
from substratus.api.model import Model, ModelSpec, ModelStatus
from substratus.api.notebook import IdleStatus, Notebook, NotebookSpec, NotebookStatus
from substratus.api.server import Server, ServerSpec
from substratus.api.validate import validate

__all__ = [
    "API_VERSION",
    "BUILT",
    "COMPLETE",
    "GPU",
    "GPU_TYPES",
    "GROUP",
    "KINDS",
    "READY",
    "SERVING",
    "VERSION",
    "AnyKind",
    "BuildStatus",
    "CommonSpec",
    "Condition",
    "Dataset",
    "DatasetSpec",
    "GitSource",
    "IdleStatus",
    "Image",
    "KindClass",
    "Model",
    "ModelSpec",
    "ModelStatus",
    "Notebook",
    "NotebookSpec",
    "NotebookStatus",
    "ObjectMeta",
    "ObjectRef",
    "ParamValue",
    "Reason",
    "Resources",
    "Server",
    "ServerSpec",
    "SetConditionResult",
    "Status",
    "StructureError",
    "UploadSource",
    "UploadStatus",
    "format_time",
    "from_dict",
    "get_condition",
    "is_true",
    "make_condition",
    "owner_reference",
    "parse_duration",
    "parse_time",
    "ready_summary",
    "remove_condition",
    "secret_ref",
    "set_condition",
    "spec_errors",
    "structure",
    "to_dict",
    "validate",
    "with_ready",
]
