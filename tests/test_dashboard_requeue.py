"""The Grafana dashboard's queries, evaluated by promtool: a requeued run (new job_id) stays one series,
and an ended run is not shown as silent for ages (no red "time since last progress")."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import require_service

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "monitor" / "grafana" / "edgeflow-supernet.json"

# Interval 1m. `requeued`: job 1 died at minute 10 without run_end (its pushed series stay as they were),
# job 2 resumed it at minute 11. `done`: completed at minute 10.
SERIES = {
    'edgeflow_last_progress_timestamp_seconds{experiment="requeued",job_id="1"}': "0+60x10 600x50",
    'edgeflow_run_status{experiment="requeued",job_id="1",status="running"}': "1x60",
    'edgeflow_epoch{experiment="requeued",job_id="1"}': "3x60",
    'edgeflow_last_progress_timestamp_seconds{experiment="requeued",job_id="2"}': "_x11 660+60x49",
    'edgeflow_run_status{experiment="requeued",job_id="2",status="running"}': "_x11 1x49",
    'edgeflow_epoch{experiment="requeued",job_id="2"}': "_x11 4x49",
    'edgeflow_last_progress_timestamp_seconds{experiment="done",job_id="3"}': "0+60x10 600x50",
    'edgeflow_run_status{experiment="done",job_id="3",status="running"}': "1x10 0x50",
    'edgeflow_run_status{experiment="done",job_id="3",status="completed"}': "0x10 1x50",
    'edgeflow_epoch{experiment="done",job_id="3"}': "5x60",
}


def panel_expr(title: str) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if p.get("title") == title and p["type"] == "stat")
    return panel["targets"][0]["expr"].replace("$experiment", ".*")


def test_every_per_run_query_merges_the_jobs_of_a_run() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "$experiment" in target["expr"]:
                assert ") without (job_id, instance)" in target["expr"], (panel["title"], target["expr"])
                assert "job_id" not in target.get("legendFormat", ""), panel["title"]


def test_requeued_run_is_one_series_and_ended_run_is_not_red(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require_service(promtool is not None, "promtool (Debian package prometheus) not installed")
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in SERIES.items()],
            "promql_expr_test": [
                {"expr": panel_expr("Epoch"), "eval_time": "30m",
                 "exp_samples": [{"labels": '{experiment="done"}', "value": 5},
                                 {"labels": '{experiment="requeued"}', "value": 4}]},
                {"expr": panel_expr("Run status"), "eval_time": "30m",
                 "exp_samples": [{"labels": '{experiment="done",status="completed"}', "value": 1},
                                 {"labels": '{experiment="requeued",status="running"}', "value": 1}]},
                # Job 2 reported at minute 30 itself; the ended run has no "silent for" value at all.
                {"expr": panel_expr("Time since last progress"), "eval_time": "30m",
                 "exp_samples": [{"labels": '{experiment="requeued"}', "value": 0}]},
            ],
        }],
    }
    path = tmp_path / "dashboard.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
