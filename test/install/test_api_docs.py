"""docs/api.md is generated from the API types and must not drift from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from manifest_helpers import REPO

from substratus.api.conditions import REASONS
from substratus.api.crd import crd_for
from substratus.api.docs import HEADER, render_api_reference, rows
from substratus.api.kinds import KINDS

API_MD = REPO / "docs" / "api.md"


def test_checked_in_api_reference_matches_the_types() -> None:
    assert API_MD.read_text() == render_api_reference(), \
        "docs/api.md is stale: run `make docs` (python -m substratus.api.docs docs/api.md)"


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        name = part.rstrip("[]").lstrip("*")
        if name:
            node = node["properties"][name]
        elif part.startswith("*"):
            node = node["additionalProperties"]
        for _ in range(part.count("[]")):
            node = node["items"]
    return node


def test_every_row_is_a_field_the_crd_serves_with_its_description() -> None:
    text = render_api_reference()
    for kind, cls in KINDS.items():
        schema = crd_for(cls)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        table = list(rows(cls))
        assert {r.path.split(".")[0] for r in table} == {"apiVersion", "kind", "metadata", "spec", "status"}
        for r in table:
            prop = _schema_at(schema, r.path)
            if r.path.startswith(("spec.", "status.")):
                assert f"| `{r.path}` |" in text.split(f"## {kind}\n", 1)[1]
                assert (prop.get("description") or "").replace("|", "\\|") in r.description
                # spec.image is required by a CEL rule (and the controller), not `required`: an
                # upstream manifest with spec.build instead must be stored to be told its new name.
                assert r.required == (r.path.rpartition(".")[2].rstrip("[]") in
                                      (_schema_at(schema, r.path.rpartition(".")[0]).get("required") or [])
                                      if "." in r.path else False) or r.path == "spec.image"
    # Nested maps and lists are walked: condition fields and GPU settings are documented.
    assert "| `status.conditions[].reason` | string |" in text
    assert "| `spec.resources.gpu.count` | integer |  | `1` |" in text
    assert "| `spec.suspend` | boolean |  | `false` |" in text


def test_every_condition_reason_is_listed() -> None:
    text = render_api_reference()
    for type_, reasons in REASONS.items():
        line = next(line for line in text.splitlines() if line.startswith(f"| `{type_}` |"))
        assert all(f"`{r}`" in line for r in reasons)


def test_module_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    subprocess.run([sys.executable, "-m", "substratus.api.docs", str(out)], check=True, capture_output=True)
    assert out.read_text() == render_api_reference()
    assert out.read_text().startswith(HEADER)
    stdout = subprocess.run([sys.executable, "-m", "substratus.api.docs"], check=True, capture_output=True,
                            text=True).stdout
    assert stdout == render_api_reference()


def test_make_docs_target() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "docs: install ## Regenerate docs/api.md from the API types" in makefile
    assert "\t$(PY) -m substratus.api.docs docs/api.md" in makefile
