"""Runtime resource descriptors for the substratus kinds."""

from __future__ import annotations

from substratus.api import GROUP, VERSION, Dataset, Model, Notebook, Server
from substratus.runtime.resource import Resource

MODELS = Resource(GROUP, VERSION, Model.PLURAL, Model.KIND)
DATASETS = Resource(GROUP, VERSION, Dataset.PLURAL, Dataset.KIND)
SERVERS = Resource(GROUP, VERSION, Server.PLURAL, Server.KIND)
NOTEBOOKS = Resource(GROUP, VERSION, Notebook.PLURAL, Notebook.KIND)

BY_KIND: dict[str, Resource] = {r.kind: r for r in (MODELS, DATASETS, SERVERS, NOTEBOOKS)}
