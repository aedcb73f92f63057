"""`substratus explain` against the real API server with the operator running."""

from __future__ import annotations

import io

import pytest

from substratus import explain as ex
from substratus.controllers.resources import DATASETS, MODELS
from substratus.runtime.resource import JOBS
from substratus.testing.simulator import OUTCOME_ANNOTATION
from substratus.testing.wait import eventually


def test_parse_target_accepts_kinds_plurals_and_short_names() -> None:
    assert ex.parse_target("nb/x") == ("Notebook", "x")
    assert ex.parse_target("models/x") == ("Model", "x")
    assert ex.parse_target("data/x") == ("Dataset", "x")
    with pytest.raises(ValueError, match="KIND/NAME"):
        ex.parse_target("model")
    with pytest.raises(ValueError, match="unknown kind"):
        ex.parse_target("pod/x")


async def test_explain_walks_the_waiting_chain_to_the_blocker(operator, namespace: str, kubeconfig) -> None:
    client = operator.client
    await client.create(DATASETS, {"metadata": {"name": "slow", "namespace": namespace},
                                   "spec": {"image": {"name": "loader:1"}}})
    await eventually(lambda: operator.manager.cache.get(JOBS, "slow-dataset", namespace))
    await client.patch(JOBS, "slow-dataset", {"metadata": {"annotations": {OUTCOME_ANNOTATION: "hold"}}}, namespace)
    await client.create(MODELS, {"metadata": {"name": "tuned", "namespace": namespace},
                                 "spec": {"image": {"name": "trainer:1"}, "trainingDataset": {"name": "slow"},
                                          "baseModel": {"name": "missing"}}})

    async def waiting() -> str | None:
        text = await ex.explain(client, "model/tuned", namespace)
        return text if "WaitingForDependency" in text else None

    text = await eventually(waiting, timeout=30)
    assert text.splitlines()[0] == f"Model {namespace}/tuned: not ready"
    assert f"Model {namespace}/missing: NOT FOUND" in text
    assert "Job slow-dataset: running" in text
    assert "Job tuned-model: not created" in text
    assert text.count("depends on:") == 1  # one heading over both dependencies
    # The first blocker, depth first: baseModel is listed first and does not exist.
    assert text.splitlines()[-1] == f"why: Model {namespace}/missing does not exist"

    out = io.StringIO()
    code = await ex.main("model/tuned", namespace, str(kubeconfig), out)
    assert code == 8 and "why:" in out.getvalue()  # ExitCode.NOT_READY



def test_summary_puts_the_objects_own_root_cause_before_its_dependencies() -> None:
    """A reference the object may not follow (or a spec to fix, a pass that keeps failing) is
    why it is stuck, whatever state the dependency is in."""
    def node(kind: str, name: str, *conds: tuple[str, str, str]) -> ex.Node:
        status = {"ready": False, "conditions": [{"type": t, "status": s, "reason": r, "message": r.lower()}
                                                 for t, s, r in conds]}
        return ex.Node(kind, "ns", name, {"status": status})

    dep = node("Model", "base", ("Complete", "False", "JobRunning"))
    for reason in ("ReferenceNotPermitted", "ReconcileError", "InvalidSpec"):
        srv = node("Server", "srv", ("Serving", "False", reason))
        srv.dependencies.append(dep)
        assert ex.summary(srv) == f"Server ns/srv: Serving is {reason} — {reason.lower()}"
    waiting = node("Server", "srv", ("Serving", "False", "WaitingForDependency"))
    waiting.dependencies.append(dep)
    assert ex.summary(waiting) == "Model ns/base: Complete is JobRunning — jobrunning"
