"""Alerts reach someone: a real Prometheus evaluates edgeflow's rules on the real sidecar's metrics and
sends the firing alert to a real Alertmanager (Debian's prometheus-alertmanager) configured from the
sample monitor/alertmanager/alertmanager.yml, which delivers it to a webhook on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import require_service
from monitor_support import REPO, Sidecar, free_port, wait_for

from tests.helpers import SparseEventLog as EventLog

ALERTMANAGER = REPO / "monitor" / "alertmanager" / "alertmanager.yml"
PROM = REPO / "monitor" / "prometheus"


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/edgeflow-alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(cmd: list[str], log: Path, ready_url: str, what: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: urllib.request.urlopen(ready_url, timeout=2).status == 200, timeout=60, what=what)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"{what}: {log.read_text()[-2000:]}") from None
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_sample_alertmanager_config_is_valid() -> None:
    amtool = shutil.which("amtool")
    require_service(amtool is not None, "amtool (Debian package prometheus-alertmanager) not installed")
    out = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def test_a_firing_rule_reaches_the_webhook_through_alertmanager(tmp_path: Path) -> None:
    binary = alertmanager_binary()
    require_service(binary is not None, "prometheus-alertmanager (Debian package) not installed; "
                    "sudo make services installs it")
    require_service(shutil.which("prometheus") is not None, "prometheus (Debian package) not installed")
    hook = Webhook()
    procs: list[subprocess.Popen[bytes]] = []
    root = tmp_path / "outputs"
    log = EventLog(root / "gap" / "events.jsonl", "gap", "777")
    log.emit("run_start", train_samples=96, val_samples=16, num_epochs=4, patience=3)
    # A strict-fairness gap: EdgeflowFairnessGap (severity critical, no `for`) fires at once.
    log.emit("epoch", epoch=1, step=12, lr=1e-3, train_loss=2.0, grad_norm=5.0, grad_norm_p90=6.0, clip_rate=0.0,
             fairness_gap=2, nonfinite_steps=0, epoch_seconds=3.0, samples_per_second=30.0)
    # A run that diverged: EdgeflowRunEndedBadly (its own route) fires at once as well.
    ended = EventLog(root / "div" / "events.jsonl", "div", "778")
    ended.emit("run_start", train_samples=96, val_samples=16, num_epochs=4, patience=3)
    ended.emit("run_end", status="diverged", reason="too many consecutive non-finite steps")
    sidecar = Sidecar(["--root", str(root), "--observer", "polling", "--poll-interval", "0.2"], tmp_path)
    try:
        # The shipped routing, with the webhook pointed at this test and waits shortened.
        am_cfg = yaml.safe_load(ALERTMANAGER.read_text())
        am_cfg["receivers"][0]["webhook_configs"][0]["url"] = hook.url
        for route in [am_cfg["route"], *am_cfg["route"].get("routes", [])]:
            route.update(group_wait="1s", group_interval="1s")
        (tmp_path / "am.yml").write_text(yaml.safe_dump(am_cfg))
        am_port = free_port()
        procs.append(start([binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
                            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                           tmp_path / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready", "alertmanager"))
        # The shipped Prometheus config, pointed at this sidecar and this Alertmanager.
        prom_cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
        prom_cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        prom_cfg["rule_files"] = [str(PROM / "edgeflow.rules.yml")]
        prom_cfg["scrape_configs"] = [{"job_name": "edgeflow-monitor",
                                       "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"]}]}]
        prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        prom_port = free_port()
        procs.append(start(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                           tmp_path / "prometheus.log", f"http://127.0.0.1:{prom_port}/-/ready", "prometheus"))

        def delivered() -> list[dict]:
            return [a for body in hook.received for a in body.get("alerts", [])
                    if a["labels"].get("alertname") == "EdgeflowFairnessGap" and a["status"] == "firing"]

        alerts = wait_for(delivered, timeout=120, interval=0.5, what="EdgeflowFairnessGap at the webhook")
        labels = alerts[0]["labels"]
        assert labels["experiment"] == "gap" and labels["severity"] == "critical"
        assert "strict-fairness gap" in alerts[0]["annotations"]["summary"]
        body = next(b for b in hook.received if b.get("alerts"))
        assert body["receiver"] == "edgeflow-webhook" and set(body["groupLabels"]) == {"alertname", "experiment"}

        def ended_badly() -> list[dict]:
            return [a for body in hook.received for a in body.get("alerts", [])
                    if a["labels"].get("alertname") == "EdgeflowRunEndedBadly" and a["status"] == "firing"]

        (alert,) = wait_for(ended_badly, timeout=120, interval=0.5, what="EdgeflowRunEndedBadly at the webhook")
        assert (alert["labels"]["experiment"], alert["labels"]["status"]) == ("div", "diverged")
        assert alert["annotations"]["summary"] == "edgeflow run div (job 778) ended: diverged"
    finally:
        for proc in reversed(procs):
            stop(proc)
        sidecar.stop()
        hook.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib must reach the loopback servers directly, whatever proxy the environment names.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
