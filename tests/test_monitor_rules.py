"""Prometheus rules, their promtool unit tests, the sample config, and the Grafana files: structure, and
every metric they query is one the sidecar exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import require_service
from monitor_support import REPO, samples, write_full_run

from monitor.publish import render
from monitor.sidecar import Sidecar
from tests.helpers import SparseEventLog as EventLog

PROM = REPO / "monitor" / "prometheus"
GRAFANA = REPO / "monitor" / "grafana"
RULES = PROM / "edgeflow.rules.yml"
DASHBOARD = GRAFANA / "edgeflow-supernet.json"

# design §4: every alert the issue asks for.
REQUIRED_ALERTS = {
    "EdgeflowRunStalled", "EdgeflowLossNotFinite", "EdgeflowEpeNotFinite", "EdgeflowLossDiverging",
    "EdgeflowEpeRising", "EdgeflowGradNormSpike", "EdgeflowFairnessGap", "EdgeflowNoValidationSamples",
    "EdgeflowEarlyStopNear", "EdgeflowSidecarDown",
    # issue 25
    "EdgeflowRunEndedBadly", "EdgeflowThroughputDrop", "EdgeflowCheckpointStale", "EdgeflowRestartLoop",
    "EdgeflowRankingUnstable",
}

PROMQL_WORDS = {
    "and", "or", "unless", "on", "ignoring", "by", "without", "group_left", "group_right", "bool", "offset",
    "Inf", "NaN", "inf", "nan",
}
PROMETHEUS_OWN = {"up", "ALERTS"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                       # label matchers
    expr = re.sub(r"\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)                      # range selectors
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name in PROMQL_WORDS:
            continue
        names.add(name)
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Sample names the sidecar renders for a full run (one running, one ended) plus its own health."""
    root = tmp_path_factory.mktemp("runs")
    write_full_run(root / "running", experiment="running", epochs=3, end=None)
    write_full_run(root / "ended", experiment="ended", epochs=2, end="completed")
    # a ranking of the running run's archs, in its own folder (RUN/rank/<name>)
    EventLog(root / "running" / "rank" / "pool" / "events.jsonl", "running/rank/pool", "9").emit(
        "search", kind="rank", name="pool", evaluations=3, target=12, best_epe=4.1, front_size=2)
    sidecar = Sidecar(roots=[root])
    sidecar.scan()
    names = {name for name, _ in samples(render(sidecar).decode())}
    assert {"edgeflow_train_loss", "edgeflow_arch_epe", "edgeflow_monitor_up"} <= names
    return names


def rule_list() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.sub(r"^label_values\((\w+),.*\)$", r"\1", query))
    return exprs


def test_promtool_checks_rules_and_sample_config():
    require_service(shutil.which("promtool") is not None, "promtool (Debian package prometheus) not installed")
    rules = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(rule_list())} rules found" in rules.stdout
    config = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=PROM, capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_pass():
    require_service(shutil.which("promtool") is not None, "promtool (Debian package prometheus) not installed")
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run(["promtool", "test", "rules", *map(str, tests)], cwd=PROM / "tests",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fail_when_a_rule_is_broken(tmp_path):
    # The unit tests must notice a wrong rule: raise the fairness threshold and they must fail.
    require_service(shutil.which("promtool") is not None, "promtool (Debian package prometheus) not installed")
    (tmp_path / "tests").mkdir()
    shutil.copy(PROM / "tests" / "edgeflow.rules.test.yml", tmp_path / "tests")
    (tmp_path / "edgeflow.rules.yml").write_text(
        RULES.read_text().replace("expr: edgeflow_fairness_gap > 0", "expr: edgeflow_fairness_gap > 5"))
    result = subprocess.run(["promtool", "test", "rules", "edgeflow.rules.test.yml"], cwd=tmp_path / "tests",
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "EdgeflowFairnessGap" in result.stdout + result.stderr


def test_every_required_alert_exists_and_is_unit_tested_both_ways():
    rules = rule_list()
    names = {r["alert"] for r in rules if "alert" in r}
    assert REQUIRED_ALERTS <= names
    tests = yaml.safe_load((PROM / "tests" / "edgeflow.rules.test.yml").read_text())["tests"]
    firing, silent = set(), set()
    for group in tests:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert names <= firing, f"alerts never shown firing: {names - firing}"
    assert names <= silent, f"alerts never shown silent: {names - silent}"
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]


def test_rules_query_only_exported_metrics(exported):
    used = set().union(*(metric_names(r["expr"]) for r in rule_list()))
    assert {"edgeflow_last_progress_timestamp_seconds", "edgeflow_fairness_gap"} <= used
    assert used - PROMETHEUS_OWN <= exported, f"not exported: {used - PROMETHEUS_OWN - exported}"


def test_metric_name_extraction():
    assert metric_names('(time() - a_b{x="y z"} > 900) and on (experiment, job_id) (c{s="r"} == 1)') == {"a_b", "c"}
    assert metric_names("increase(n_total[1h]) > 0 or abs(d) == +Inf") == {"n_total", "d"}


def test_dashboard_structure():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edgeflow-supernet"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["experiment"]["type"] == "query" and variables["experiment"]["includeAll"]
    assert variables["datasource"]["query"] == "prometheus"
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "edgeflow.yml").read_text())
    assert variables["datasource"]["current"]["value"] == provisioned["datasources"][0]["uid"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            if "edgeflow_monitor" not in target["expr"]:
                assert 'experiment=~"$experiment"' in target["expr"], (panel["title"], target["expr"])
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("loss", "gradient norm", "mean epe", "per arch", "early stopping", "fairness gap",
                  "throughput", "since last progress", "status"):
        assert topic in titles, topic
    exprs = " ".join(dashboard_exprs(dashboard))
    for metric in ("edgeflow_epe_std", "edgeflow_epe_best", "edgeflow_early_stop_patience", "edgeflow_arch_epe",
                   "edgeflow_zero_flow_epe", "edgeflow_pool_rank_tau", "edgeflow_pool_rank_tau_best",
                   "edgeflow_search_evaluations", "edgeflow_search_target", "edgeflow_search_best_epe",
                   "edgeflow_search_front_size", "edgeflow_monitor_unreadable_files", "edgeflow_monitor_future_events"):
        assert metric in exprs


def test_dashboard_queries_only_exported_metrics(exported):
    used = set().union(*(metric_names(e) for e in dashboard_exprs(json.loads(DASHBOARD.read_text()))))
    assert len(used) >= 15
    assert used - PROMETHEUS_OWN <= exported, f"not exported: {used - PROMETHEUS_OWN - exported}"


def test_grafana_provisioning():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "edgeflow.yml").read_text())
    (ds,) = datasources["datasources"]
    assert datasources["apiVersion"] == 1
    assert ds["type"] == "prometheus" and ds["uid"] and ds["url"].startswith("http")
    assert ds["jsonData"]["manageAlerts"] is True  # the Prometheus rules show up in Grafana alerting
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "edgeflow.yml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).is_absolute()


def test_sample_prometheus_config_matches_the_rules():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "edgeflow-monitor" in jobs  # the name EdgeflowSidecarDown's up{} selector uses
    assert 'up{job="edgeflow-monitor"}' in RULES.read_text()
    assert jobs["edgeflow-pushgateway"]["honor_labels"] is True
    assert config["rule_files"] == ["edgeflow.rules.yml"]
