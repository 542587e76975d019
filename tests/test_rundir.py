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
    with pytest.raises(TypeError):
        rundir.atomic_write_json(path, {"loss": object()})  # not JSON at all
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_event_log_appends_common_fields_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = rundir.EventLog(path, "exp", job_id="123")
    log.emit("run_start", train_samples=10, val_samples=2, resumed_from=None, start_epoch=1, num_epochs=2,
             patience=3)
    rundir.EventLog(path, "exp", job_id="124").emit("heartbeat", epoch=1, step=1, samples_per_second=float("nan"))
    events = list(rundir.read_events(path))
    assert [e["event"] for e in events] == ["run_start", "heartbeat"]
    assert events[0]["experiment"] == "exp" and events[0]["job_id"] == "123"
    assert events[1]["job_id"] == "124" and events[1]["samples_per_second"] == "nan"
    assert isinstance(events[0]["time"], float)
    with pytest.raises(ValueError, match="unknown event type"):
        log.emit("epoch_end")


def test_partial_tail_is_not_consumed_and_is_repaired_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rundir.EventLog(path, "exp").emit("heartbeat", epoch=1, step=3, samples_per_second=1.0)
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


def test_writer_checks_the_schema_and_orders_fields(tmp_path: Path) -> None:
    log = rundir.EventLog(tmp_path / "events.jsonl", "exp")
    with pytest.raises(rundir.EventSchemaError, match=r"checkpoint event is missing fields \['path'\]"):
        log.emit("checkpoint", epoch=1, kind="latest")
    record = log.emit("checkpoint", path="p", extra=1, kind="best", epoch=2)
    assert list(record)[:6] == ["event", "time", "experiment", "epoch", "kind", "path"]
    assert list(record)[-1] == "extra"
    assert not list(rundir.read_events(tmp_path / "events.jsonl"))[1:]  # the refused event was not written


def test_hostile_lines_are_skipped_once_each(tmp_path: Path) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    data = (b'{"event": "heartbeat", "epoch": 1}\n' + nested + b"\n" + b"\x00\xff\rgarbage\r\x0c\n"
            + b'{"event": "heartbeat", "epoch": 2}\n')
    events, consumed, malformed = rundir.parse_event_lines(data)
    assert [e["epoch"] for e in events] == [1, 2]
    assert malformed == 2 and consumed == len(data)
    (tmp_path / "events.jsonl").write_bytes(data)
    assert rundir.last_event(tmp_path / "events.jsonl", "heartbeat")["epoch"] == 2
    assert rundir.last_event(tmp_path / "events.jsonl", "run_end") is None


def test_lone_surrogate_is_written_as_valid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rundir.EventLog(path, "exp\ud800name").emit("run_end", status="failed", reason="bad \udfff")
    path.read_bytes().decode("utf-8")  # strict: raises if anything unencodable got through
    (event,) = rundir.read_events(path)
    assert event["experiment"] == "exp\ufffdname" and event["reason"] == "bad \ufffd"


def test_one_rule_for_non_finite_numbers_in_every_file(tmp_path: Path) -> None:
    rundir.atomic_write_json(tmp_path / "state.json", {"best_epe": float("inf"), "loss": float("nan")})
    back = json.loads((tmp_path / "state.json").read_text())
    assert back == {"best_epe": "inf", "loss": "nan"}
    assert rundir.as_float(back["best_epe"]) == float("inf") and rundir.as_float(None) is None


def test_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        rundir.atomic_write_text(tmp_path / "a.txt", "x")
        rundir.EventLog(tmp_path / "events.jsonl", "exp").emit("run_end", status="failed", reason="r")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "events.jsonl").stat().st_mode & 0o777 == 0o644


def test_exit_codes_and_statuses_agree() -> None:
    assert set(rundir.STATUS_EXIT_CODE) <= set(rundir.END_STATUSES)
    assert rundir.STATUS_EXIT_CODE["data_error"] == rundir.EXIT_DATA_ERROR != rundir.EXIT_BAD_INPUT
    codes = [rundir.EXIT_OK, rundir.EXIT_FAILED, rundir.EXIT_BAD_INPUT, rundir.EXIT_DIVERGED,
             rundir.EXIT_DATA_ERROR, rundir.EXIT_SUBMIT_FAILED, rundir.EXIT_PREEMPTED]
    assert len(set(codes)) == len(codes) and set(codes) == set(rundir.EXIT_CODE_MEANING)


def test_numbers_a_reader_meets_never_raise() -> None:
    # A 400-digit integer in any event line must not stop a reader (the sidecar, `jobs status`).
    assert rundir.as_float(10**400) == float("inf") and rundir.as_float(-(10**400)) == float("-inf")
    assert rundir.as_float("9" * 100) is None and rundir.as_float("nan") != rundir.as_float("nan")
    assert rundir.as_float({"x": 1}) is None and rundir.as_float(True) is None


def test_last_event_survives_any_time_field(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "run_end", "time": ' + "9" * 400 + ', "status": "failed", "reason": "x"}\n'
                    '{"event": "run_end", "time": "soon", "status": "completed", "reason": "y"}\n')
    assert rundir.last_event(path, "run_end")["reason"] == "y"
    assert rundir.last_event(path, "run_end", since=1.0) is None
