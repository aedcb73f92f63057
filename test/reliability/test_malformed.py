"""Scenario 5: 25 malformed objects applied together with 25 valid ones.

Every malformed object is either rejected by the API server's schema (the test asserts the
status code and that the message names the field) or accepted and then marked ``InvalidSpec``
by the controller with a message naming the field, with no children created. The rules the CRD
states as ``x-kubernetes-validations`` (name length, DNS-1035, image required, image source
exclusivity, branch XOR tag) are ``cel`` cases: rejected at admission where the server enforces
CEL (probed from the stored CRD, :func:`substratus.install.crd_enforces_cel`), otherwise (1.20)
accepted and ``InvalidSpec`` — each outcome asserted exactly where it is the right one. A dangling reference
is not malformed (the object may be created later): it waits, naming what is missing. All 25
valid objects converge; the operator task never ends and no reconcile panics.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from reliability_helpers import (
    condition,
    conditions_text,
    dataset,
    hf_secret,
    metric,
    model,
    server,
    wait_ready,
)

from substratus.controllers.resources import BY_KIND, DATASETS, MODELS, SERVERS
from substratus.install import crd_enforces_cel
from substratus.runtime.client import ApiError
from substratus.runtime.resource import CONFIGMAPS, DEPLOYMENTS, EVENTS, JOBS, SECRETS
from substratus.testing.wait import eventually

MD5 = "0123456789abcdef0123456789abcdef"


@attrs.frozen
class Case:
    obj: dict[str, Any]
    expect: str
    """``schema`` (the API server rejects it), ``invalid`` (InvalidSpec), ``cel`` (a CEL rule: ``schema``
    where the server enforces CEL, else ``invalid``) or ``waiting``."""
    field: str
    """What the error/condition message must name."""
    status: int = 422

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def kind(self) -> str:
        return self.obj["kind"]


def malformed(ns: str) -> list[Case]:
    n51 = "d" + "x" * 50
    n63 = "m" + "y" * 62
    s51 = "s" + "z" * 50
    wrong_version = dataset("wrong-version", ns)
    wrong_version["apiVersion"] = "substratus.ai/v1beta1"
    return [
        # --- rejected by the CRD's OpenAPI schema -------------------------------------------------
        Case(model("params-nested", ns, params={"opts": {"lr": 0.1}}), "schema", "spec.params.opts"),
        Case(dataset("params-list", ns, params={"files": ["a", "b"]}), "schema", "spec.params.files"),
        Case(model("gpu-unknown", ns, resources={"gpu": {"type": "nvidia-k80", "count": 1}}), "schema",
             "spec.resources.gpu.type"),
        Case(dataset("cpu-negative", ns, resources={"cpu": -2}), "schema", "spec.resources.cpu"),
        Case(dataset("memory-huge", ns, resources={"memory": 10_000_000}), "schema", "spec.resources.memory"),
        Case(dataset("md5-bad", ns, image={"upload": {"checksum": "not-an-md5", "requestID": "r1"}}), "schema",
             "spec.image.upload.checksum"),
        Case(dataset("Upper-Case", ns), "schema", "metadata.name"),
        Case(dataset("git-no-url", ns, image={"git": {"branch": "main"}}), "schema", "spec.image.git.url"),
        Case(server("server-no-model", ns), "schema", "spec.model"),
        Case(wrong_version, "schema", "API version", status=400),
        # --- a CEL rule: rejected at admission where CEL is enforced, else InvalidSpec ---------------
        # spec.image is required by CEL, not `required` (an upstream spec.build must be stored to be
        # named; SPEC §9).
        Case({**dataset("no-image", ns), "spec": {}}, "cel", "spec.image"),
        Case(dataset(n51, ns), "cel", "metadata.name"),
        Case(model(n63, ns), "cel", "metadata.name"),
        Case(dataset("9lives", ns), "cel", "metadata.name"),
        Case(model("dotted.name", ns), "cel", "metadata.name"),
        Case(dataset("git-and-upload", ns, image={"git": {"url": "https://github.com/org/repo"},
                                                  "upload": {"checksum": MD5, "requestID": "r1"}}),
             "cel", "spec.image"),
        Case(dataset("image-none", ns, image={}), "cel", "spec.image"),
        Case(model("branch-and-tag", ns, image={"git": {"url": "https://github.com/org/repo", "branch": "main",
                                                        "tag": "v1"}}), "cel", "spec.image.git"),
        # --- accepted by every schema, rejected by the controller ---------------------------------
        Case(model("cycle-a", ns, baseModel={"name": "cycle-b"}), "invalid", "spec.baseModel"),
        Case(model("cycle-b", ns, baseModel={"name": "cycle-a"}), "invalid", "spec.baseModel"),
        Case(dataset("env-bad-name", ns, env={"1BAD": "x"}), "invalid", "spec.env.1BAD"),
        Case(dataset("env-bad-secret", ns, env={"TOKEN": "${{ secrets.Bad_Name.key }}"}), "invalid",
             "spec.env.TOKEN"),
        Case(model("ref-bad-name", ns, trainingDataset={"name": "Not_A_Name"}), "invalid",
             "spec.trainingDataset.name"),
        Case(server(s51, ns, model={"name": "valid-m-00"}), "cel", "metadata.name"),
        # --- a dangling reference waits, naming what is missing ------------------------------------
        Case(model("dangling", ns, baseModel={"name": "does-not-exist"}), "waiting",
             f"Model {ns}/does-not-exist (not found)"),
    ]


def valid(ns: str) -> list[dict[str, Any]]:
    out = [
        dataset("valid-d-00", ns),
        dataset("valid-d-01", ns, params={"s": "x", "i": 3, "f": 0.5, "b": True}),
        dataset("valid-d-02", ns, env={"LOG_LEVEL": "debug", "HF_TOKEN": "${{ secrets.hf.token }}"}),
        dataset("valid-d-03", ns, resources={"cpu": 4, "memory": 16, "disk": 20}),
        dataset("valid-d-04", ns, resources={"gpu": {"type": "nvidia-l4", "count": 1}}),
        dataset("valid-d-05", ns, command=["python", "load.py", "--fast"]),
        dataset("valid-d-06", ns, image={"git": {"url": "https://github.com/org/loader", "tag": "v1.2"}}),
        dataset("v" + "a" * 49, ns),  # exactly 50 characters: the longest allowed name
        *(dataset(f"valid-d-{i:02d}", ns, params={"i": i}) for i in range(8, 11)),
        server("valid-s-00", ns, model={"name": "valid-m-01"}, params={"max_tokens": 64}),
        *(model(f"valid-m-{i:02d}", ns, params={"name": f"org/model-{i}"}) for i in range(10)),
        model("valid-m-10", ns, resources={"gpu": {"type": "nvidia-tesla-t4", "count": 2}}),
        model("valid-t-00", ns, baseModel={"name": "valid-m-00"}, trainingDataset={"name": "valid-d-00"}),
        model("valid-t-01", ns, baseModel={"name": "valid-t-00"}, trainingDataset={"name": "valid-d-01"},
              params={"epochs": 1}),
    ]
    return out


async def test_malformed_objects_are_rejected_or_invalid_and_valid_ones_converge(start_operator, sim, admin,
                                                                                 namespace) -> None:
    ns = namespace
    op = await start_operator(workers=4)
    assert op.controller("server") is not None
    await admin.create(SECRETS, hf_secret(ns), ns)  # what valid ${{ secrets.hf.token }} references need
    panics = metric("controller_runtime_reconcile_panics_total")
    bad, good = malformed(ns), valid(ns)
    assert len(bad) == 25 and len(good) == 25
    cel = await crd_enforces_cel(admin)  # the CRDs are installed (start_operator's crds fixture)
    bad = [attrs.evolve(c, expect="schema" if cel else "invalid") if c.expect == "cel" else c for c in bad]

    async def apply(obj: dict[str, Any]) -> dict[str, Any] | ApiError:
        try:
            return await admin.create(BY_KIND[obj["kind"]], obj, ns)
        except ApiError as exc:
            return exc

    objs = [*(c.obj for c in bad), *good]
    results = await asyncio.gather(*(apply(o) for o in objs))
    by_name = {o["metadata"]["name"]: r for o, r in zip(objs, results, strict=True)}
    for obj in good:
        assert not isinstance(by_name[obj["metadata"]["name"]], ApiError), by_name[obj["metadata"]["name"]]

    # Rejected by the schema: the right code, the field named.
    for case in (c for c in bad if c.expect == "schema"):
        r = by_name[case.name]
        assert isinstance(r, ApiError), f"{case.name}: accepted, expected a {case.status} naming {case.field}"
        assert r.status == case.status, (case.name, r.status, r.message)
        assert case.field.lower() in r.message.lower(), f"{case.name}: {case.field!r} not in {r.message!r}"

    # Accepted but invalid: InvalidSpec naming the field, never ready, no children.
    invalid = [c for c in bad if c.expect == "invalid"]
    for case in invalid:
        assert not isinstance(by_name[case.name], ApiError), (case.name, by_name[case.name])
    checked = invalid

    async def all_marked() -> bool:
        for case in checked:
            obj = await admin.get(BY_KIND[case.kind], case.name, ns)
            ready_type = "Serving" if case.kind == "Server" else "Complete"
            c = condition(obj, ready_type)
            assert c and c["reason"] == "InvalidSpec", f"{case.name}: {conditions_text(obj)}"
            assert case.field in c["message"], f"{case.name}: {case.field!r} not in {c['message']!r}"
            assert obj["status"]["ready"] is False
        return True

    await eventually(all_marked, timeout=60)

    dangling = next(c for c in bad if c.expect == "waiting")

    async def dangling_waits() -> bool:
        c = condition(await admin.get(MODELS, dangling.name, ns), "Complete")
        return bool(c and c["reason"] == "WaitingForDependency" and dangling.field in c["message"])

    await eventually(dangling_waits, timeout=30)

    # All 25 valid objects converge.
    await wait_ready(admin, DATASETS, ns, [o["metadata"]["name"] for o in good if o["kind"] == "Dataset"],
                     timeout=90)
    await wait_ready(admin, MODELS, ns, [o["metadata"]["name"] for o in good if o["kind"] == "Model"], timeout=90)
    await wait_ready(admin, SERVERS, ns, [o["metadata"]["name"] for o in good if o["kind"] == "Server"], timeout=60)

    # No children for anything malformed; an InvalidSpec Warning event for each.
    children = [*(await admin.list(JOBS, ns))["items"], *(await admin.list(CONFIGMAPS, ns))["items"],
                *(await admin.list(DEPLOYMENTS, ns))["items"]]
    parents = {(r["kind"], r["name"]) for ch in children for r in ch["metadata"].get("ownerReferences") or []}
    for case in [*invalid, dangling]:
        assert (case.kind, case.name) not in parents, f"{case.name} got children"
    events = (await admin.list(EVENTS, ns))["items"]
    warned = {e["involvedObject"]["name"] for e in events if e["reason"] == "InvalidSpec" and e["type"] == "Warning"}
    assert {c.name for c in checked} <= warned, {c.name for c in checked} - warned

    assert not op.task.done(), "the operator task must never end"
    assert metric("controller_runtime_reconcile_panics_total") == panics, "a reconcile panicked"
    schema_n = sum(c.expect == "schema" for c in bad)
    for case in bad:
        r = by_name[case.name]
        if isinstance(r, ApiError):
            text = f"{r.status}: {r.message}"
        else:
            obj = await admin.get(BY_KIND[case.kind], case.name, ns)
            c = condition(obj, "Serving" if case.kind == "Server" else "Complete") or {}
            text = f"{c.get('reason')}: {c.get('message')}"
        print(f"RELIABILITY malformed case {case.kind} {case.name[:20]}: {text[:220]}")
    print(f"\nRELIABILITY malformed: schema-rejected={schema_n} invalid-spec={len(checked)} "
          f"waiting=1 valid-converged={len(good)}")
