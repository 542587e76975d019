"""The run-directory primitives: atomic files and a tolerant, append-only event log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeflow import rundir


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    rundir.atomic_write_json(path, {"epoch": 1})
    rundir.atomic_write_json(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_previous_content(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    rundir.atomic_write_json(path, {"status": "running"})
    with pytest.raises(ValueError):
        rundir.atomic_write_json(path, {"loss": float("nan")})  # JSON has no NaN
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_event_log_appends_common_fields_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = rundir.EventLog(path, "exp", job_id="123")
    log.emit("run_start", train_samples=10, val_samples=2)
    rundir.EventLog(path, "exp", job_id="124").emit("epoch", epoch=1, train_loss=float("nan"))
    events = list(rundir.read_events(path))
    assert [e["event"] for e in events] == ["run_start", "epoch"]
    assert events[0]["experiment"] == "exp" and events[0]["job_id"] == "123"
    assert events[1]["job_id"] == "124" and events[1]["train_loss"] == "nan"
    assert isinstance(events[0]["time"], float)
    with pytest.raises(ValueError, match="unknown event type"):
        log.emit("epoch_end")


def test_partial_tail_is_not_consumed_and_is_repaired_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rundir.EventLog(path, "exp").emit("heartbeat", epoch=1, step=3)
    with open(path, "ab") as fh:
        fh.write(b'{"event": "epoch", "ep')  # a writer killed mid-line
    data = path.read_bytes()
    events, consumed, malformed = rundir.parse_event_lines(data)
    assert [e["event"] for e in events] == ["heartbeat"] and malformed == 0
    assert consumed < len(data)
    # The next writer terminates the fragment: it becomes one malformed line, the new event is intact.
    rundir.EventLog(path, "exp").emit("run_end", status="failed", reason="test")
    events, consumed, malformed = rundir.parse_event_lines(path.read_bytes())
    assert [e["event"] for e in events] == ["heartbeat", "run_end"]
    assert malformed == 1 and consumed == os.path.getsize(path)


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    data = b'{"event": "epoch", "epoch": 1}\nnot json\n[1, 2]\n\n{"no_event": 1}\n'
    events, consumed, malformed = rundir.parse_event_lines(data)
    assert [e["epoch"] for e in events] == [1]
    assert malformed == 3 and consumed == len(data)


def test_slurm_job_id_prefers_array_form(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "EDGEFLOW_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert rundir.slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert rundir.slurm_job_id() == "42"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert rundir.slurm_job_id() == "40_1"
