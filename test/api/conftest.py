from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(params=EXAMPLES, ids=[str(p.relative_to(REPO / "examples")) for p in EXAMPLES])
def example(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)
