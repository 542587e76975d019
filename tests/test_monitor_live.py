"""The real sidecar process following a run directory the test writes into, scraped over HTTP, and a real
Prometheus server scraping it on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from conftest import require_service
from monitor_support import REPO, Sidecar, free_port, wait_for

from tests.helpers import SparseEventLog as EventLog

OBSERVERS = [["--observer", "inotify"], ["--observer", "polling", "--poll-interval", "0.2"]]


def raw_line(step: int, **extra) -> bytes:
    record = {"event": "heartbeat", "time": 1.0e9 + step, "experiment": "live", "job_id": "7", "epoch": 1,
              "step": step, **extra}
    return (json.dumps(record) + "\n").encode()


def append(path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


@pytest.mark.parametrize("observer", OBSERVERS, ids=["inotify", "polling"])
def test_sidecar_survives_every_tailing_fault(tmp_path, observer):
    run = tmp_path / "outputs" / "live"  # neither folder exists when the sidecar starts
    events = run / "events.jsonl"
    # a long rescan interval: the watchdog observer, not the safety-net rescan, must deliver the changes
    sidecar = Sidecar(["--run", str(run), *observer, "--rescan-interval", "120"], tmp_path)
    try:
        assert "waiting for it" in sidecar.stderr()
        labels = {"experiment": "live", "job_id": "7"}

        # late-created run directory
        log = EventLog(events, "live", "7")
        log.emit("run_start", train_samples=96, val_samples=16, num_epochs=3, patience=2)
        log.emit("heartbeat", epoch=1, step=3, samples_per_second=10.0)
        sidecar.wait_value("edgeflow_step", 3, **labels)

        # partial last line: not read until its end arrives
        scans = sidecar.value("edgeflow_monitor_scans_total")
        full = raw_line(4)
        append(events, full[:15])
        wait_for(lambda: sidecar.value("edgeflow_monitor_scans_total") > scans, what="a scan after the fragment")
        assert sidecar.value("edgeflow_step", **labels) == 3
        assert sidecar.value("edgeflow_monitor_malformed_lines") == 0
        append(events, full[15:])
        sidecar.wait_value("edgeflow_step", 4, **labels)

        # malformed line: counted, skipped, the next line still read
        append(events, b'{"event": "heartbeat", "step": \n' + raw_line(5))
        sidecar.wait_value("edgeflow_step", 5, **labels)
        assert sidecar.value("edgeflow_monitor_malformed_lines") == 1

        # truncation: the file is read again from its start, the old values are gone
        with open(events, "wb") as fh:
            fh.write(raw_line(1))
        sidecar.wait_value("edgeflow_step", 1, **labels)
        assert sidecar.value("edgeflow_monitor_malformed_lines") == 0
        assert sidecar.value("edgeflow_run_starts_total", **labels) == 0  # its run_start was truncated away

        # recreation (new inode, longer than before)
        tmp = run / "events.new"
        EventLog(tmp, "live", "7").emit("run_start", train_samples=96, val_samples=16, num_epochs=3, patience=2)
        for epoch in (1, 2):
            EventLog(tmp, "live", "7").emit("epoch", epoch=epoch, step=12 * epoch, train_loss=1.0, nonfinite_steps=1)
        os.replace(tmp, events)
        sidecar.wait_value("edgeflow_step", 24, **labels)
        assert sidecar.value("edgeflow_epochs_completed_total", **labels) == 2
        assert sidecar.value("edgeflow_nonfinite_steps_total", **labels) == 2
        before = {k: sidecar.value(k, **labels) for k in
                  ("edgeflow_epochs_completed_total", "edgeflow_nonfinite_steps_total", "edgeflow_run_starts_total")}
    finally:
        assert sidecar.stop() == 0, sidecar.stderr()

    # restart: everything is derived again from the files, nothing is counted twice
    restarted = Sidecar(["--run", str(run), *observer, "--rescan-interval", "120"], tmp_path)
    try:
        restarted.wait_value("edgeflow_step", 24, **labels)
        after = {k: restarted.value(k, **labels) for k in before}
        assert after == before == {"edgeflow_epochs_completed_total": 2, "edgeflow_nonfinite_steps_total": 2,
                                   "edgeflow_run_starts_total": 1}
        # and it keeps following
        EventLog(events, "live", "7").emit("run_end", status="completed", reason="done")
        restarted.wait_value("edgeflow_run_status", 1, status="completed", **labels)
        assert restarted.value("edgeflow_run_status", status="running", **labels) == 0
    finally:
        restarted.stop()


def test_root_discovers_new_runs(tmp_path):
    root = tmp_path / "outputs"
    root.mkdir()
    sidecar = Sidecar(["--root", str(root), "--observer", "inotify", "--rescan-interval", "120"], tmp_path)
    try:
        assert sidecar.value("edgeflow_monitor_runs_followed") == 0
        for name in ("a", "b"):
            EventLog(root / name / "events.jsonl", name, None).emit("heartbeat", epoch=1, step=len(name) + 10)
        sidecar.wait_value("edgeflow_monitor_runs_followed", 2)
        sidecar.wait_value("edgeflow_step", 11, experiment="b")
    finally:
        sidecar.stop()


def prometheus_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(port: int, query: str) -> float | None:
    result = prometheus_query(port, query)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path):
    """A real Prometheus on a free loopback port scraping `targets` every second, with our rules loaded."""
    require_service(shutil.which("prometheus") is not None, "prometheus (Debian package) not installed")
    procs = []

    def start(target_port: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{REPO / 'monitor' / 'prometheus' / 'edgeflow.rules.yml'}']\n"
            "scrape_configs:\n"
            "  - job_name: edgeflow-monitor\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log))
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200,
                 timeout=60, what="prometheus ready")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_prometheus_scrapes_the_sidecar_and_evaluates_rules(tmp_path, prometheus):
    require_service(shutil.which("promtool") is not None, "promtool not installed")
    root = tmp_path / "outputs"
    log = EventLog(root / "prom" / "events.jsonl", "prom", "555")
    log.emit("run_start", train_samples=96, val_samples=16, num_epochs=4, patience=3)
    log.emit("heartbeat", epoch=1, step=6, samples_per_second=31.5)
    sidecar = Sidecar(["--root", str(root), "--observer", "inotify"], tmp_path)
    try:
        port = prometheus(sidecar.port)
        sel = '{experiment="prom",job_id="555"}'
        wait_for(lambda: scalar(port, f"edgeflow_step{sel}") == 6, timeout=60, what="step 6 in Prometheus")
        assert scalar(port, f"edgeflow_samples_per_second{sel}") == 31.5
        assert scalar(port, 'up{job="edgeflow-monitor"}') == 1
        assert scalar(port, 'edgeflow_run_status{experiment="prom",status="running"}') == 1

        log.emit("epoch", epoch=1, step=12, lr=1e-3, train_loss=2.0, grad_norm=5.0, grad_norm_p90=6.0,
                 clip_rate=0.0, fairness_gap=2, nonfinite_steps=0, epoch_seconds=3.0, samples_per_second=30.0)
        log.emit("eval", epoch=1, mean_epe=4.9, std_epe=0.3, arch_epe={"000021222": 4.8}, best_epe=4.9,
                 best_epoch=1, bad_epochs=0, patience=3, improved=True)
        wait_for(lambda: scalar(port, f"edgeflow_epe_mean{sel}") == 4.9, timeout=60, what="EPE in Prometheus")
        assert scalar(port, 'edgeflow_arch_epe{arch="000021222",experiment="prom"}') == 4.8
        # the fairness-gap rule fires from the live series (no `for`, so on the next evaluation)
        firing = wait_for(lambda: prometheus_query(
            port, 'ALERTS{alertname="EdgeflowFairnessGap",alertstate="firing"}'), timeout=60, what="alert")
        assert firing[0]["metric"]["experiment"] == "prom"
        assert not prometheus_query(port, 'ALERTS{alertname="EdgeflowRunStalled"}')
    finally:
        sidecar.stop()


@pytest.mark.parametrize("observer", OBSERVERS, ids=["inotify", "polling"])
def test_run_directory_deleted_and_recreated(tmp_path, observer):
    run = tmp_path / "again"
    EventLog(run / "events.jsonl", "again", "1").emit("heartbeat", epoch=1, step=3)
    sidecar = Sidecar(["--run", str(run), *observer, "--rescan-interval", "120"], tmp_path)
    try:
        sidecar.wait_value("edgeflow_step", 3, experiment="again")
        shutil.rmtree(run)
        wait_for(lambda: sidecar.value("edgeflow_step", experiment="again") is None, what="old values dropped")
        EventLog(run / "events.jsonl", "again", "2").emit("heartbeat", epoch=1, step=8)
        sidecar.wait_value("edgeflow_step", 8, experiment="again", job_id="2")
        # the new directory is watched, not only found: a later append arrives too
        EventLog(run / "events.jsonl", "again", "2").emit("heartbeat", epoch=1, step=9)
        sidecar.wait_value("edgeflow_step", 9, experiment="again", job_id="2")
    finally:
        sidecar.stop()


@pytest.fixture
def pushgateway(tmp_path):
    """A real Pushgateway (Debian package prometheus-pushgateway) on a free loopback port."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    require_service(binary is not None, "prometheus-pushgateway (Debian package) not installed")
    port = free_port()
    log = open(tmp_path / "pushgateway.log", "wb")
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, timeout=30,
             what="pushgateway ready")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def gateway_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_real_pushgateway_accepts_groups_and_forgets_ended_runs(tmp_path, pushgateway):
    from monitor_support import value, write_full_run

    root = tmp_path / "outputs"
    write_full_run(root / "a", experiment="a", job_id="31_2", epochs=2, end=None)
    log_b = write_full_run(root / "b", experiment="b", job_id=None, epochs=1, end=None)

    def once() -> None:
        result = subprocess.run([sys.executable, "-m", "monitor", "--root", str(root), "--pushgateway", pushgateway,
                                 "--instance", "svc1", "--once"], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0 and f"pushgateway {pushgateway}:" not in result.stderr, result.stderr

    once()
    text = gateway_text(pushgateway)
    assert value(text, "edgeflow_step", job="edgeflow", experiment="a", job_id="31_2") == 24
    assert value(text, "edgeflow_step", job="edgeflow", experiment="b") == 12
    assert value(text, "edgeflow_monitor_runs_followed", job="edgeflow_monitor", instance="svc1") == 2

    log_b.emit("run_end", status="completed", reason="done")
    # A run that ends badly keeps its group, with its final status: EdgeflowRunEndedBadly must see it.
    write_full_run(root / "c", experiment="c", job_id="40", epochs=1, end="diverged")
    once()
    text = gateway_text(pushgateway)
    assert value(text, "edgeflow_step", experiment="b") is None  # its group was deleted
    assert value(text, "edgeflow_step", experiment="a", job_id="31_2") == 24
    assert value(text, "edgeflow_run_status", job="edgeflow", experiment="c", job_id="40", status="diverged") == 1


def test_sigterm_exports_the_final_state(tmp_path):
    # The launcher stops a per-job sidecar with SIGTERM right after the trainer exits: the run_end written
    # just before must still reach the textfile, even when the (slow) poller has not seen it yet.
    run = tmp_path / "job"
    log = EventLog(run / "events.jsonl", "job", "9")
    log.emit("run_start", train_samples=8, val_samples=4, num_epochs=1, patience=1)
    out = tmp_path / "textfile"
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--run", str(run), "--textfile", str(out),
                             "--observer", "polling", "--poll-interval", "300", "--rescan-interval", "300"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    prom = out / "edgeflow_job.prom"
    wait_for(lambda: prom.exists() and 'status="running"} 1.0' in prom.read_text(), what="first textfile")
    log.emit("run_end", status="completed", reason="done")
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = prom.read_text()
    assert 'edgeflow_run_status{experiment="job",job_id="9",status="completed"} 1.0' in text
    assert "monitor: stopped" in err
