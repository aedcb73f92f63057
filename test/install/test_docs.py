"""The operator docs name every flag, metric, alert and condition reason there is, and their links work."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from manifest_helpers import REPO

import substratus.controllers.metrics  # noqa: F401  (registers the domain metrics)
from substratus.api.conditions import REASONS
from substratus.config import OperatorConfig
from substratus.runtime.metrics import REGISTRY

DOCS = REPO / "docs"
OURS = ("quickstart.md", "architecture.md", "operations.md", "troubleshooting.md", "api.md")


def read(name: str) -> str:
    return (DOCS / name).read_text()


def test_operations_lists_every_flag_and_environment_variable() -> None:
    text = read("operations.md")
    for f in attrs.fields(OperatorConfig):
        flag = "--" + f.name.replace("_", "-")
        assert f"`{flag}`" in text or f"`{flag}` /" in text, flag
        assert f"`{OperatorConfig.env_name(f.name)}`" in text, f.name


def test_operations_explains_every_metric() -> None:
    text = read("operations.md")
    # describe() covers plain metrics and custom collectors (the work queue's) alike; the process,
    # platform and GC collectors describe nothing and name their series when collected.
    names = set()
    for collector in REGISTRY._collector_to_names:
        described = collector.describe() if hasattr(collector, "describe") else []
        for family in described:
            names.add(family.name + ("_total" if family.type == "counter" else ""))
        if not described:
            names |= {sample.name for family in collector.collect() for sample in family.samples}
    assert "process_resident_memory_bytes" in names and "python_info" in names
    for name in names:
        assert re.search(rf"^\| [^|]*`{name}`[^|]* \|", text, re.M), f"{name} is not in the metrics table"


def test_troubleshooting_explains_every_reason_of_every_condition() -> None:
    text = read("troubleshooting.md")
    sections = dict(re.findall(r"^## (\w+)[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    for type_, reasons in REASONS.items():
        section = next(body for title, body in sections.items() if title == type_)
        for reason in reasons:
            assert f"| `{reason}` |" in section, f"{type_}/{reason}"
    assert "kubectl describe" in text and "kubectl get ai" in text


def test_quickstart_installs_both_overlays_and_the_examples() -> None:
    text = read("quickstart.md")
    assert "kubectl apply -k manifests/overlays/local" in text
    # gcp: through the user's overlay over manifests/overlays/gcp (test_manifests renders it).
    assert "kubectl apply -k ../substratus-gcp" in text and "/manifests/overlays/gcp" in text
    for example in re.findall(r"examples/[\w./-]+\.yaml", text):
        assert (REPO / example).is_file(), example


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


MARKDOWN = sorted([REPO / "README.md", *DOCS.glob("*.md")])


@pytest.mark.parametrize("source", MARKDOWN, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(source: Path) -> None:
    """Every relative link of README.md and docs/ resolves, and never leaves the repository (a
    link to ../shared/ is dead in any clone)."""
    name = source.name
    text = re.sub(r"```.*?```", "", source.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        doc = (source.parent / path).resolve() if path else source
        assert doc.is_relative_to(REPO), f"{name}: {target} points outside the repository"
        assert doc.exists(), f"{name}: broken link {target}"
        if anchor and doc.suffix == ".md":
            anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", doc.read_text(), re.M)}
            assert anchor in anchors, f"{name}: no heading for #{anchor} in {doc.name}"
