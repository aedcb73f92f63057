"""The ServiceMonitor, the alerts and the Grafana dashboard: every query names metrics the operator
really exports, the layout is sane, and — with promtool (Debian's ``prometheus`` package; set
``PROMTOOL`` or put it on PATH) — every expression parses and each alert fires when it should."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifest_helpers import MANIFESTS, REPO, find, kustomize
from prometheus_client import Counter, Histogram, Summary

import substratus.controllers.metrics  # noqa: F401  (registers the domain metrics)
from substratus.runtime.metrics import REGISTRY

JOB = "substratus-metrics"
ALERTS = {
    "SubstratusReconcileErrors", "SubstratusReconcilePanics", "SubstratusWorkqueueStuck",
    "SubstratusWorkqueueGrowing", "SubstratusLongRunningReconcile", "SubstratusNoLeader",
    "SubstratusMultipleLeaders",
}
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "30s", "$job": JOB}


def exported_names() -> set[str]:
    """Every sample name /metrics can carry, children or not."""
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for n in REGISTRY._collector_to_names[collector]:
            names.add(n)
        if isinstance(collector, Histogram):
            base = collector._name
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
        elif isinstance(collector, Counter | Summary):
            names.add(collector._name + ("_total" if isinstance(collector, Counter) else ""))
    return names


_FUNCS = {"sum", "max", "min", "avg", "count", "rate", "increase", "deriv", "delta", "absent", "by", "without",
          "histogram_quantile", "and", "or", "unless", "on", "ignoring", "clamp_min", "vector", "le"}


def metric_names(expr: str) -> set[str]:
    """Identifiers used as metric selectors (followed by ``{`` or ``[``) in a PromQL expression."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    return {m for m in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr)} - _FUNCS


def rule_file() -> dict[str, Any]:
    rule = find(kustomize(MANIFESTS / "prometheus"), "PrometheusRule", "substratus")
    return {"groups": rule["spec"]["groups"]}


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_file()["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MANIFESTS / "prometheus" / "dashboard.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


# --- static -----------------------------------------------------------------------------------


def test_alerts_are_documented_and_use_real_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERTS
    operations = (REPO / "docs" / "operations.md").read_text()
    exported = exported_names()
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert f"docs/operations.md#{r['alert'].lower()}" in r["annotations"]["description"]
        assert re.search(rf"^#+ {r['alert']}$", operations, re.M), f"no section for {r['alert']} in operations.md"
        used = metric_names(r["expr"])
        assert used and used <= exported, (r["alert"], used - exported)
        assert f'job="{JOB}"' in r["expr"]


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objs = kustomize(MANIFESTS / "prometheus") + kustomize(MANIFESTS / "manager")
    sm = find(objs, "ServiceMonitor")["spec"]
    svc = find(objs, "Service", JOB)
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["selector"]["matchLabels"].items())
    assert sm["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert [e["port"] for e in sm["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]
    # The dashboard ConfigMap is picked up by Grafana's sidecar and holds the checked-in JSON.
    cm = find(objs, "ConfigMap", "substratus-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["substratus.json"]) == dashboard()


def test_dashboard_layout() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "job"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["expr"] and t["refId"] for t in p["targets"])


def test_dashboard_queries_use_real_metrics_and_cover_the_spec() -> None:
    exported = exported_names()
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names and names <= exported, (expr, names - exported)
        assert 'job=~"$job"' in expr
        used |= names
    required = {
        "controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket", "workqueue_depth",
        "workqueue_queue_duration_seconds_bucket", "workqueue_retries_total", "leader_election_master_status",
        "rest_client_requests_total", "substratus_objects", "substratus_time_to_ready_seconds_bucket",
    }
    assert required <= used, required - used


# --- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    cached = Path(os.environ.get("SUBSTRATUS_TOOLS_DIR") or Path.home() / ".cache/substratus/tools") / "promtool"
    path = os.environ.get("PROMTOOL") or shutil.which("promtool") or (str(cached) if cached.exists() else None)
    if not path:
        pytest.skip("promtool not found (make tools, or set PROMTOOL)")
    return path


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}{proc.stderr}"


def test_promtool_checks_alerts_and_dashboard_queries(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rule_file()))
    # Dashboard queries as recording rules: promtool then parses each one.
    records = [{"record": f"dashboard:query_{i}", "expr": substitute(e)} for i, e in enumerate(dashboard_exprs())]
    assert not any("$" in r["expr"] for r in records)
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    _run([promtool, "check", "rules", "alerts.yaml", "dashboard.yaml"], tmp_path)


def _series(metric: str, values: str, **labels: str) -> dict[str, str]:
    sel = ",".join(f'{k}="{v}"' for k, v in {"job": JOB, "namespace": "substratus", **labels}.items())
    return {"series": f"{metric}{{{sel}}}", "values": values}


def _alert(alertname: str, **labels: str) -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for r in alert_rules() if r["alert"] == alertname)
    return {"exp_labels": {"severity": severity, **labels}}


def test_alerts_fire_when_they_should(promtool: str, tmp_path: Path) -> None:
    """``promtool test rules``: each alert on synthetic series, and a near miss that must stay quiet.
    (Annotations are left out here — ``check rules`` validates their templates.)"""
    groups = rule_file()["groups"]
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump({"groups": groups}))
    ns = {"namespace": "substratus"}
    wq = {"name": "model", "controller": "model"}
    leader = {"name": "substratus-leader"}
    tests = [
        {"interval": "1m", "input_series": [
            # model: 6 errors of 30 reconciles a minute (20 %); dataset: 1 of 60 (under 10 %).
            _series("controller_runtime_reconcile_errors_total", "0+6x40", controller="model"),
            _series("controller_runtime_reconcile_total", "0+30x40", controller="model", result="error"),
            _series("controller_runtime_reconcile_errors_total", "0+1x40", controller="dataset"),
            _series("controller_runtime_reconcile_total", "0+60x40", controller="dataset", result="success"),
            _series("controller_runtime_reconcile_panics_total", "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 "
                                                                 "1 1 1 1 1 1 1 1 1 1", controller="model"),
         ], "alert_rule_test": [
            {"eval_time": "10m", "alertname": "SubstratusReconcileErrors", "exp_alerts": []},  # not for 15m yet
            {"eval_time": "30m", "alertname": "SubstratusReconcileErrors",
             "exp_alerts": [_alert("SubstratusReconcileErrors", controller="model", **ns)]},
            {"eval_time": "5m", "alertname": "SubstratusReconcilePanics",
             "exp_alerts": [_alert("SubstratusReconcilePanics", controller="model", **ns)]},
            {"eval_time": "30m", "alertname": "SubstratusReconcilePanics", "exp_alerts": []},
        ]},
        {"interval": "1m", "input_series": [
            # queue model: 5 items, nothing finishes; queue dataset: 5 items, work goes on.
            _series("workqueue_depth", "5x40", **wq),
            _series("workqueue_work_duration_seconds_count", "100x40", **wq),
            _series("workqueue_depth", "5x40", name="dataset", controller="dataset"),
            _series("workqueue_work_duration_seconds_count", "0+10x40", name="dataset", controller="dataset"),
            # queue server: grows by one a minute.
            _series("workqueue_depth", "0+1x60", name="server", controller="server"),
            _series("workqueue_work_duration_seconds_count", "0+10x60", name="server", controller="server"),
            # one reconcile of the notebook controller never returns.
            _series("workqueue_longest_running_processor_seconds", "0+60x30", name="notebook", controller="notebook"),
         ], "alert_rule_test": [
            {"eval_time": "30m", "alertname": "SubstratusWorkqueueStuck",
             "exp_alerts": [_alert("SubstratusWorkqueueStuck", name="model", **ns)]},
            {"eval_time": "30m", "alertname": "SubstratusWorkqueueGrowing", "exp_alerts": []},  # > 10 for < 30m
            {"eval_time": "50m", "alertname": "SubstratusWorkqueueGrowing",
             "exp_alerts": [_alert("SubstratusWorkqueueGrowing", name="server", **ns)]},
            {"eval_time": "7m", "alertname": "SubstratusLongRunningReconcile", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "SubstratusLongRunningReconcile",
             "exp_alerts": [_alert("SubstratusLongRunningReconcile", name="notebook", **ns)]},
        ]},
        {"interval": "1m", "input_series": [
            _series("leader_election_master_status", "1x4 0x10", pod="a", **leader),
            _series("leader_election_master_status", "0x4 0x5 1x5", pod="b", **leader),
         ], "alert_rule_test": [
            {"eval_time": "4m", "alertname": "SubstratusNoLeader", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "SubstratusNoLeader", "exp_alerts": [_alert("SubstratusNoLeader")]},
            {"eval_time": "13m", "alertname": "SubstratusNoLeader", "exp_alerts": []},  # b took over
            {"eval_time": "13m", "alertname": "SubstratusMultipleLeaders", "exp_alerts": []},
        ]},
        {"interval": "1m", "input_series": [
            _series("up", "1x10"),  # scraped, but no leader-election series at all (e.g. not exported)
         ], "alert_rule_test": [
            # absent() labels its series with the selector's equality matchers.
            {"eval_time": "5m", "alertname": "SubstratusNoLeader",
             "exp_alerts": [_alert("SubstratusNoLeader", job=JOB, name="substratus-leader")]},
        ]},
        {"interval": "1m", "input_series": [
            _series("leader_election_master_status", "1x10", pod="a", **leader),
            _series("leader_election_master_status", "1x10", pod="b", **leader),
         ], "alert_rule_test": [
            {"eval_time": "3m", "alertname": "SubstratusMultipleLeaders", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "SubstratusMultipleLeaders",
             "exp_alerts": [_alert("SubstratusMultipleLeaders")]},
        ]},
    ]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests}))
    _run([promtool, "test", "rules", "alerts_test.yaml"], tmp_path)
