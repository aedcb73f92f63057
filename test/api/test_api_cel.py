"""The CRDs' CEL rules (x-kubernetes-validations) say what the controller says, case for case.

kube-apiserver 1.20 (CI's) has no CEL, so the rules the CRDs carry are evaluated here with
cel-python, at the schema node each one sits on, exactly as a CEL-capable server would at
admission; the controller's verdict is what its reconciler computes (``from_dict`` + ``validate``,
SPEC §1/§2). For every case both reject or both accept, and the controller's message names the
field whose rule fired. Cases the schema alone rejects (types, enums, patterns) are left out: no
CEL rule is involved there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import pytest

from substratus.api import KINDS, StructureError, from_dict, spec_errors, validate
from substratus.api.crd import crd_for

VALIDATIONS = "x-kubernetes-validations"
_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def rule_nodes(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[dict]]]:
    """(path of properties, rules) for every schema node that carries CEL rules."""
    if schema.get(VALIDATIONS):
        yield path, schema[VALIDATIONS]
    for name, sub in (schema.get("properties") or {}).items():
        yield from rule_nodes(sub, (*path, name))


def cel_violations(kind: str, obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) of every rule a CEL-capable server would reject ``obj`` with.

    A rule applies only where its node is present in the object (as on the server)."""
    schema = crd_for(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    out = []
    for path, rules in rule_nodes(schema):
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        activation = {"self": celpy.json_to_cel(node)}
        for rule in rules:
            program = _PROGRAMS.get(rule["rule"])
            if program is None:
                program = _PROGRAMS[rule["rule"]] = _ENV.program(_ENV.compile(rule["rule"]))
            result = program.evaluate(activation)  # an evaluation error also rejects, as on the server
            if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                out.append((".".join(path), rule["message"]))
    return out


def controller_errors(obj: dict[str, Any]) -> list[str]:
    """What the reconciler reports as InvalidSpec (KindReconciler.reconcile)."""
    try:
        parsed = from_dict(obj)
    except StructureError as exc:
        return spec_errors(exc)
    return validate(parsed)


BASE_SPEC: dict[str, dict[str, Any]] = {
    "Model": {}, "Dataset": {}, "Notebook": {}, "Server": {"model": {"name": "opt"}},
}


def make(kind: str, name: str = "ok", image: Any = None, **spec: Any) -> dict[str, Any]:
    body = {**copy.deepcopy(BASE_SPEC[kind]), **spec}
    if image is not None:
        body["image"] = image
    return {"apiVersion": "substratus.ai/v1", "kind": kind, "metadata": {"name": name, "namespace": "default"},
            "spec": body}


GIT = {"url": "https://github.com/substratusai/model-loader-huggingface"}
UPLOAD = {"checksum": "0" * 32, "requestID": "r1"}
NAME = "substratusai/model-loader:v1"

# (case id, kind, object). Every CEL rule is violated by at least one case (checked below).
CASES: list[tuple[str, str, dict[str, Any]]] = []
for kind in KINDS:
    CASES += [
        (f"{kind}-name-image", kind, make(kind, image={"name": NAME})),
        (f"{kind}-git", kind, make(kind, image={"git": GIT})),
        (f"{kind}-git-branch", kind, make(kind, image={"git": {**GIT, "branch": "main"}})),
        (f"{kind}-git-tag", kind, make(kind, image={"git": {**GIT, "tag": "v1"}})),
        (f"{kind}-upload", kind, make(kind, image={"upload": UPLOAD})),
        (f"{kind}-name-50", kind, make(kind, name="a" * 50, image={"name": NAME})),
        (f"{kind}-name-1", kind, make(kind, name="a", image={"name": NAME})),
        (f"{kind}-name-51", kind, make(kind, name="a" * 51, image={"name": NAME})),
        (f"{kind}-name-uppercase", kind, make(kind, name="Falcon", image={"name": NAME})),
        (f"{kind}-name-digit-first", kind, make(kind, name="7b", image={"name": NAME})),
        (f"{kind}-name-dash-last", kind, make(kind, name="opt-", image={"name": NAME})),
        (f"{kind}-name-dot", kind, make(kind, name="opt.125m", image={"name": NAME})),
        (f"{kind}-no-image", kind, make(kind)),
        (f"{kind}-empty-image", kind, make(kind, image={})),
        (f"{kind}-git-and-upload", kind, make(kind, image={"git": GIT, "upload": UPLOAD})),
        (f"{kind}-name-and-git", kind, make(kind, image={"git": GIT, "name": NAME})),
        (f"{kind}-name-and-upload", kind, make(kind, image={"upload": UPLOAD, "name": NAME})),
        (f"{kind}-all-three", kind, make(kind, image={"git": GIT, "upload": UPLOAD, "name": NAME})),
        (f"{kind}-branch-and-tag", kind, make(kind, image={"git": {**GIT, "branch": "main", "tag": "v1"}})),
        (f"{kind}-upstream-build", kind, make(kind, image={"name": NAME}, build={"git": {"url": GIT["url"]}})),
        (f"{kind}-upstream-modelName", kind, make(kind, image={"name": NAME}, modelName="base")),
    ]
CASES += [
    ("Model-upstream-model", "Model", make("Model", image={"name": NAME}, model={"name": "base"})),
    ("Model-upstream-dataset", "Model", make("Model", image={"name": NAME}, dataset={"name": "squad"})),
]


@pytest.mark.parametrize(("kind", "obj"), [(k, o) for _, k, o in CASES], ids=[c for c, _, _ in CASES])
def test_cel_and_controller_agree(kind: str, obj: dict[str, Any]) -> None:
    cel = cel_violations(kind, obj)
    errors = controller_errors(obj)
    assert bool(cel) == bool(errors), f"CEL says {cel}, the controller says {errors}"
    for path, message in cel:
        field = path.split(".")[-1] if path else "metadata.name"
        assert any(field in e for e in errors), f"CEL rule on {path or '<root>'} ({message}) vs {errors}"


def test_every_rule_is_exercised() -> None:
    fired = {message for _, kind, obj in CASES for _, message in cel_violations(kind, obj)}
    every = {r["message"] for kind in KINDS
             for _, rules in rule_nodes(crd_for(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
             for r in rules}
    assert every - fired == set()


def test_exactly_one_image_source() -> None:
    # SPEC §1: exactly one of git / upload / name — every other combination fails a rule.
    combos = {"git": GIT, "upload": UPLOAD, "name": NAME}
    for mask in range(8):
        image = {k: v for i, (k, v) in enumerate(combos.items()) if mask >> i & 1}
        rejected = any(p == "spec.image" for p, _ in cel_violations("Dataset", make("Dataset", image=image)))
        assert rejected is (len(image) != 1), image
