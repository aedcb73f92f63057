"""The registry of kinds: what ``from_dict``, the CRD generator and the manager iterate over."""

from __future__ import annotations

from typing import TypeAlias

from substratus.api.dataset import Dataset
from substratus.api.model import Model
from substratus.api.notebook import Notebook
from substratus.api.server import Server

AnyKind: TypeAlias = Model | Dataset | Server | Notebook
KindClass: TypeAlias = type[Model] | type[Dataset] | type[Server] | type[Notebook]

KINDS: dict[str, KindClass] = {cls.KIND: cls for cls in (Model, Dataset, Server, Notebook)}
"""kind → class, in a stable order."""
