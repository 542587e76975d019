"""No content of a run directory may stop the sidecar or another run's export (issue 21).

Numbers no float holds, odd types in any field of any event, run.json or state.json; a clock ahead of the
sidecar's; a FIFO where a run file should be. Each is written into a real run directory next to a
healthy run, and the healthy run's export must go on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import require_service
from monitor_support import REPO, Sidecar, value, write_full_run

from edgeflow.rundir import EVENT_FIELDS, parse_event_line
from edgeflow.rundir.events import COMMON_FIELDS
from edgeflow.rundir.figures import FIGURES
from monitor import runstate
from monitor import sidecar as sidecar_mod
from monitor.publish import render
from tests.helpers import SparseEventLog as EventLog

# JSON texts of values that must never stop the reader: integers beyond any float, floats beyond the
# float range (JSON reads them as infinities), NaN, and every JSON type where a number is expected.
HOSTILE = ["9" * 400, "-" + "9" * 400, "1e400", "-1e400", "NaN", "Infinity", '"1e400"', '"9' + "9" * 400 + '"',
           "true", "null", "[1, 2]", '{"a": 1}', '"x"', '""', "[" * 50 + "]" * 50, '"\\ud800"']


def _fields(kind: str) -> list[str]:
    extras = {f.name for f in FIGURES if kind in f.events}
    return [*COMMON_FIELDS, *EVENT_FIELDS[kind], *sorted(extras - set(EVENT_FIELDS[kind]))]


def hostile_lines() -> list[str]:
    """One line per event kind, field and hostile value; the other fields are sane."""
    lines = []
    for kind in EVENT_FIELDS:
        for name in _fields(kind):
            for text in HOSTILE:
                sane = {"event": kind, "time": time.time() - 60, "experiment": "bad", "job_id": "1"}
                body = json.dumps({k: v for k, v in sane.items() if k != name})[:-1]
                lines.append(f'{body}, "{name}": {text}}}')
    return lines


def test_no_value_in_any_field_of_any_event_stops_the_sidecar(tmp_path: Path) -> None:
    write_full_run(tmp_path / "ok", experiment="ok", epochs=2, end=None)
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = hostile_lines()
    (bad / "events.jsonl").write_text("\n".join(lines) + "\n")
    for name, fields in (("run.json", ("experiment", "status", "job_ids", "job_id", "train_samples")),
                         ("state.json", ("epoch", "step", "best_epe", "bad_epochs", "patience", "fairness_gap"))):
        (bad / name).write_text("{" + ", ".join(f'"{f}": {HOSTILE[i % len(HOSTILE)]}'
                                                for i, f in enumerate(fields)) + "}")
    sidecar = sidecar_mod.Sidecar(roots=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    assert value(text, "edgeflow_step", experiment="ok") == 24
    # A number beyond the float range is as large as a float gets, not an error.
    assert value(text, "edgeflow_train_loss", experiment="bad") == math.inf
    # Only a line whose `event` is not a string is malformed (design §2); every other one was used.
    not_events = sum(parse_event_line(line.encode()) is None for line in lines)
    assert value(text, "edgeflow_monitor_malformed_lines") == not_events
    # A restart replays the same lines: still nothing stops it, and it derives the same values.
    again = sidecar_mod.Sidecar(roots=[tmp_path])
    again.scan()
    assert render(again).decode().split("edgeflow_monitor_")[0] == text.split("edgeflow_monitor_")[0]


@pytest.mark.parametrize("content", [b"[" * 100_000, b'{"epoch": ' + b"9" * 400 + b"}", b'{"epoch": 1e400}'],
                         ids=["deep", "huge-int", "huge-float"])
def test_run_json_and_state_json_of_any_content_are_survived(tmp_path: Path, content: bytes) -> None:
    write_full_run(tmp_path / "ok", experiment="ok", epochs=1, end=None)
    (tmp_path / "bad").mkdir()  # no events yet: run.json and state.json are all there is to read
    (tmp_path / "bad" / "run.json").write_bytes(content)
    (tmp_path / "bad" / "state.json").write_bytes(content)
    sidecar = sidecar_mod.Sidecar(roots=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    assert value(text, "edgeflow_step", experiment="ok") == 12
    assert len(sidecar.followers) == 2


def test_a_400_digit_number_neither_kills_the_sidecar_nor_its_restart(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    write_full_run(root / "a-bad", experiment="bad", job_id="1", epochs=1, end=None)
    with open(root / "a-bad" / "events.jsonl", "a") as fh:
        fh.write('{"event": "heartbeat", "time": ' + "9" * 400 + ', "experiment": "bad", "step": '
                 + "9" * 400 + "}\n")
    log = write_full_run(root / "b-ok", experiment="ok", job_id="2", epochs=1, end=None)
    for attempt in range(2):  # the second start replays the same line
        sidecar = Sidecar(["--root", str(root), "--observer", "polling", "--poll-interval", "0.2"], tmp_path)
        try:
            log.emit("heartbeat", epoch=2, step=100 + attempt)
            sidecar.wait_value("edgeflow_step", 100 + attempt, experiment="ok")
            assert sidecar.value("edgeflow_step", experiment="bad") == math.inf
            assert sidecar.proc.poll() is None, sidecar.stderr()
        finally:
            assert sidecar.stop() == 0, sidecar.stderr()


def test_a_reader_fault_in_one_run_is_counted_and_the_others_go_on(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever is still unforeseen: an event that breaks the reader is skipped and counted; a run whose
    # reading breaks is counted and named, and the other runs are read as usual.
    write_full_run(tmp_path / "ok", experiment="ok", epochs=1, end=None)
    write_full_run(tmp_path / "odd", experiment="odd", epochs=1, end=None)
    write_full_run(tmp_path / "broken", experiment="broken", epochs=1, end=None)
    real_apply, real_refresh = runstate.RunState.apply, sidecar_mod.RunFollower.refresh

    def apply(self, event, *args, **kwargs):
        if event.get("experiment") == "odd" and event.get("event") == "eval":
            raise RuntimeError("unforeseen")
        return real_apply(self, event, *args, **kwargs)

    def refresh(self):
        if self.dir.name == "broken":
            raise RuntimeError("unforeseen")
        return real_refresh(self)

    monkeypatch.setattr(runstate.RunState, "apply", apply)
    monkeypatch.setattr(sidecar_mod.RunFollower, "refresh", refresh)
    sidecar = sidecar_mod.Sidecar(roots=[tmp_path])
    sidecar.scan()
    sidecar.scan()
    text = render(sidecar).decode()
    assert value(text, "edgeflow_step", experiment="ok") == 12
    assert value(text, "edgeflow_step", experiment="odd") == 12  # the events after the bad one count
    assert value(text, "edgeflow_monitor_malformed_lines") == 1
    assert value(text, "edgeflow_monitor_unreadable_files") == 1


# ------------------------------------------------------------------ a clock ahead (issue 21 #4)

def test_a_future_timestamp_neither_pins_progress_nor_hides_later_events(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", "skew", "1")
    now = time.time()
    log.emit("run_start", train_samples=8, val_samples=4, num_epochs=2, patience=2)
    with open(tmp_path / "events.jsonl", "a") as fh:  # a node whose clock runs a day ahead
        fh.write(json.dumps({"event": "heartbeat", "time": now + 86400, "experiment": "skew", "job_id": "1",
                             "epoch": 1, "step": 5}) + "\n")
    sidecar = sidecar_mod.Sidecar(runs=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    assert value(text, "edgeflow_step") == 5  # the event's values count; its time does not
    assert value(text, "edgeflow_last_progress_timestamp_seconds") <= time.time()
    assert value(text, "edgeflow_last_event_timestamp_seconds") <= time.time()
    assert value(text, "edgeflow_monitor_future_events") == 1
    later = time.time() + 1
    log.emit("heartbeat", epoch=1, step=6)
    with open(tmp_path / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "heartbeat", "time": later, "experiment": "skew", "job_id": "1",
                             "epoch": 1, "step": 7}) + "\n")
    sidecar.scan()
    text = render(sidecar).decode()
    assert value(text, "edgeflow_last_progress_timestamp_seconds") == later


def test_stall_alert_fires_on_what_the_sidecar_exports_after_a_future_timestamp(tmp_path: Path) -> None:
    # The real sidecar reads a run whose last event came from a node a day ahead; promtool then plays
    # what Prometheus would scrape from it from then on (times shifted so the run starts at promtool's 0)
    # through the shipped rules: the run stopped 20 minutes ago, so EdgeflowRunStalled must fire.
    require_service(shutil.which("promtool") is not None, "promtool (Debian package prometheus) not installed")
    now = time.time()
    start = now - 1200
    lines = [{"event": "run_start", "time": start, "train_samples": 8, "val_samples": 4, "num_epochs": 9,
              "patience": 3},
             {"event": "heartbeat", "time": start + 60, "epoch": 1, "step": 3},
             {"event": "heartbeat", "time": start + 120 + 86400, "epoch": 1, "step": 6}]
    run = tmp_path / "skew"
    run.mkdir()
    (run / "events.jsonl").write_text("".join(json.dumps({**e, "experiment": "skew", "job_id": "9"}) + "\n"
                                              for e in lines))
    os.utime(run / "events.jsonl", (start + 120, start + 120))  # the file server's clock: written then
    sidecar = sidecar_mod.Sidecar(runs=[run])
    sidecar.scan()
    text = render(sidecar).decode()
    progress = value(text, "edgeflow_last_progress_timestamp_seconds", experiment="skew")
    assert value(text, "edgeflow_run_status", experiment="skew", status="running") == 1
    labels = '{experiment="skew",job_id="9"}'
    silent_seconds = 40 * 60 - round(progress - start)
    silent = f"{silent_seconds // 60}m {silent_seconds % 60}s"
    tests = {
        "rule_files": [str(REPO / "monitor" / "prometheus" / "edgeflow.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"edgeflow_last_progress_timestamp_seconds{labels}", "values": f"{progress - start}x60"},
                {"series": 'edgeflow_run_status{experiment="skew",job_id="9",status="running"}',
                 "values": "1x60"}],
            "alert_rule_test": [{
                "eval_time": "40m", "alertname": "EdgeflowRunStalled",
                "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "experiment": "skew", "job_id": "9"},
                    "exp_annotations": {
                        "summary": "edgeflow run skew (job 9) made no progress for 15 min",
                        "description": f"No heartbeat/epoch/eval event for {silent} while the run is running. "
                                       "Check the SLURM job (squeue -j 9) and its log under the run's jobs/ folder."},
                }]}],
        }],
    }
    path = tmp_path / "skew.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ FIFOs (issue 21 #7)

def test_a_fifo_in_place_of_a_run_file_stalls_no_run(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    write_full_run(root / "a-fifo-events", experiment="fifo-events", epochs=1, end=None)
    (root / "a-fifo-events" / "events.jsonl").unlink()
    os.mkfifo(root / "a-fifo-events" / "events.jsonl")
    write_full_run(root / "b-fifo-json", experiment="fifo-json", epochs=1, end=None)
    for name in ("run.json", "state.json"):
        (root / "b-fifo-json" / name).unlink()
        os.mkfifo(root / "b-fifo-json" / name)
    log = write_full_run(root / "c-ok", experiment="ok", epochs=1, end=None)
    sidecar = Sidecar(["--root", str(root), "--observer", "polling", "--poll-interval", "0.2"], tmp_path)
    try:
        sidecar.wait_value("edgeflow_step", 12, experiment="ok")
        log.emit("heartbeat", epoch=2, step=13)
        sidecar.wait_value("edgeflow_step", 13, experiment="ok")
        assert sidecar.value("edgeflow_step", experiment="fifo-json") == 12  # its events are read
        sidecar.wait_value("edgeflow_monitor_unreadable_files", 3)
        assert "not a regular file" in sidecar.stderr()
        # Replaced by a real file, the run is read again.
        (root / "a-fifo-events" / "events.jsonl").unlink()
        write_full_run(root / "a-fifo-events", experiment="fifo-events", epochs=2, end=None)
        sidecar.wait_value("edgeflow_step", 24, experiment="fifo-events")
        sidecar.wait_value("edgeflow_monitor_unreadable_files", 2)
    finally:
        assert sidecar.stop() == 0, sidecar.stderr()
