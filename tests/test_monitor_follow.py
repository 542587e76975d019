"""The tailer and the derivation of values from real run files (in-process, no services)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from monitor_support import value, write_full_run

from edgeflow.rundir import RunPaths, atomic_write_json
from monitor.follow import EventTail
from monitor.publish import render
from monitor.runstate import RunState
from monitor.sidecar import Sidecar, find_runs
from tests.helpers import SparseEventLog as EventLog


def line(**fields) -> bytes:
    return (json.dumps({"time": 1.0, "experiment": "e", **fields}) + "\n").encode()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_partial_line_waits_for_its_end(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    full = line(event="heartbeat", step=7)
    append(path, line(event="run_start") + full[:10])
    first = tail.read()
    assert [e["event"] for e in first.events] == ["run_start"]
    assert first.malformed == 0
    append(path, full[10:])
    second = tail.read()
    assert [(e["event"], e["step"]) for e in second.events] == [("heartbeat", 7)]
    assert second.malformed == 0 and not second.reset


def test_malformed_line_is_counted_and_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    append(path, line(event="run_start") + b"{not json\n" + b"[1, 2]\n" + line(event="heartbeat", step=3))
    result = EventTail(path).read()
    assert [e["event"] for e in result.events] == ["run_start", "heartbeat"]
    assert result.malformed == 2
    assert result.lines == 4


def test_truncated_file_is_read_from_the_start(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    append(path, line(event="run_start") + line(event="heartbeat", step=5))
    assert len(tail.read().events) == 2
    with open(path, "wb") as fh:  # same inode, smaller
        fh.write(line(event="heartbeat", step=1))
    result = tail.read()
    assert result.reset
    assert [e["step"] for e in result.events] == [1]


def test_rewrite_in_place_that_grows_past_the_offset_is_noticed(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    append(path, line(event="heartbeat", step=1))
    tail.read()
    inode = path.stat().st_ino
    with open(path, "wb") as fh:  # same inode, different content, longer than before
        fh.write(line(event="heartbeat", step=2, samples_per_second=1.0) * 3)
    assert path.stat().st_ino == inode
    result = tail.read()
    assert result.reset
    assert [e["step"] for e in result.events] == [2, 2, 2]


def test_recreated_file_is_read_from_the_start(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    append(path, line(event="run_start") + line(event="heartbeat", step=5) + line(event="heartbeat", step=6))
    tail.read()
    replacement = tmp_path / "new.jsonl"
    # longer than the old file, so only the identity (inode) can tell
    append(replacement, line(event="run_start") * 2 + line(event="heartbeat", step=9) * 3)
    os.replace(replacement, path)
    result = tail.read()
    assert result.reset
    assert [e.get("step") for e in result.events] == [None, None, 9, 9, 9]


def test_missing_file_is_waited_for(tmp_path):
    path = tmp_path / "later" / "events.jsonl"
    tail = EventTail(path)
    assert tail.read().events == [] and not tail.exists
    path.parent.mkdir()
    append(path, line(event="run_start"))
    assert [e["event"] for e in tail.read().events] == ["run_start"]
    path.unlink()
    gone = tail.read()
    assert gone.reset and not tail.exists


def test_run_state_from_a_full_run(tmp_path):
    write_full_run(tmp_path, experiment="fc2", job_id="77", epochs=3, end="completed")
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    (_, state), = sidecar.snapshot()[0]
    assert (state.experiment, state.job_id, state.status) == ("fc2", "77", "completed")
    v = state.values
    assert v["epoch"] == 3 and v["step"] == 36
    assert v["train_loss"] == 2.5 and v["learning_rate"] == 1e-3 / 3
    assert math.isclose(v["epe_mean"], 5.1) and math.isclose(v["epe_best"], 5.1)
    assert state.evaluations == 3 and state.epochs_completed == 3
    assert v["train_samples"] == 96 and v["val_samples"] == 16 and v["early_stop_patience"] == 5
    assert set(state.arch_epe) == {"000000000", "111111111", "222222222", "000021222"}
    assert state.last_checkpoint_time is not None and state.end_time is not None
    assert state.last_progress_time >= state.run_start_time


def test_non_finite_values_written_as_strings_are_exported_as_nan(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", "nan-run", "5")
    log.emit("run_start", train_samples=8, val_samples=4, num_epochs=2, patience=2)
    log.emit("epoch", epoch=1, step=4, train_loss=float("nan"), grad_norm=float("inf"), nonfinite_steps=4)
    log.emit("eval", epoch=1, mean_epe=float("nan"), arch_epe={"000000000": float("nan")})
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    assert 'edgeflow_train_loss{experiment="nan-run",job_id="5"} NaN' in text
    assert 'edgeflow_grad_norm{experiment="nan-run",job_id="5"} +Inf' in text
    assert 'edgeflow_arch_epe{arch="000000000",experiment="nan-run",job_id="5"} NaN' in text
    assert 'edgeflow_nonfinite_steps_total{experiment="nan-run",job_id="5"} 4.0' in text


def test_replayed_epoch_after_resume_is_not_double_counted():
    state = RunState()
    for epoch, nonfinite in ((1, 2), (2, 1), (2, 1), (3, 0)):  # epoch 2 replayed after a crash
        state.apply({"event": "epoch", "time": 1.0, "epoch": epoch, "nonfinite_steps": nonfinite})
    assert state.nonfinite_steps == 3


def test_epe_rising_streak_and_reset():
    state = RunState()
    for epe in (5.0, 5.1, 5.2, 5.3):
        state.apply({"event": "eval", "time": 1.0, "mean_epe": epe})
    assert state.epe_rising == 3
    state.apply({"event": "eval", "time": 2.0, "mean_epe": 4.0})
    assert state.epe_rising == 0


def test_requeue_changes_job_id_and_resume_sets_running(tmp_path):
    log = write_full_run(tmp_path, job_id="100", epochs=1, end="preempted")
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    assert sidecar.snapshot()[0][0][1].status == "preempted"
    resumed = EventLog(log.path, "exp", "101")
    resumed.emit("run_start", train_samples=96, val_samples=16, resumed_from="checkpoints/latest", start_epoch=1,
                 num_epochs=3, patience=5)
    sidecar.scan()
    state = sidecar.snapshot()[0][0][1]
    assert (state.job_id, state.status, state.run_starts) == ("101", "running", 2)


def test_run_json_and_state_json_fill_in_before_events(tmp_path):
    paths = RunPaths(tmp_path / "early")
    atomic_write_json(paths.run, {"experiment": "early", "status": "running", "job_ids": ["9", "10"],
                                  "train_samples": 50, "val_samples": 0})
    atomic_write_json(paths.state, {"epoch": 4, "step": 40, "bad_epochs": 2, "patience": 6})
    sidecar = Sidecar(runs=[paths.root])
    sidecar.scan()
    state = sidecar.snapshot()[0][0][1]
    assert (state.experiment, state.job_id, state.status) == ("early", "10", "running")
    v = state.values
    assert (v["val_samples"], v["epoch"], v["early_stop_bad_evaluations"], v["early_stop_patience"]) == (0, 4, 2, 6)


def test_bad_run_json_is_reported_and_ignored(tmp_path, capsys):
    write_full_run(tmp_path, epochs=1, end=None)
    (tmp_path / "run.json").write_text("{broken")
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    assert "run.json: not a JSON object" in capsys.readouterr().err
    assert sidecar.snapshot()[0][0][1].value("epoch") == 1


def test_restart_derives_the_same_values(tmp_path):
    write_full_run(tmp_path, epochs=3, end=None)
    first = Sidecar(runs=[tmp_path])
    first.scan()
    first.scan()  # scanning again reads nothing new and adds nothing
    second = Sidecar(runs=[tmp_path])
    second.scan()

    def run_lines(s: Sidecar) -> list[str]:
        return [x for x in render(s).decode().splitlines() if x.startswith("edgeflow_") and "monitor" not in x]

    assert run_lines(first) == run_lines(second)
    assert 'edgeflow_epochs_completed_total{experiment="exp",job_id="1001"} 3.0' in run_lines(second)


def test_root_finds_runs_at_any_depth_and_drops_removed_ones(tmp_path):
    write_full_run(tmp_path / "a", experiment="a", epochs=1)
    write_full_run(tmp_path / "group" / "b", experiment="b", epochs=1)
    (tmp_path / "a" / "checkpoints" / "x").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert find_runs(tmp_path) == [tmp_path / "a", tmp_path / "group" / "b"]
    sidecar = Sidecar(roots=[tmp_path])
    sidecar.scan()
    assert sorted(s.experiment for _, s in sidecar.snapshot()[0]) == ["a", "b"]
    shutil.rmtree(tmp_path / "a")
    sidecar.scan()
    assert [s.experiment for _, s in sidecar.snapshot()[0]] == ["b"]


def test_copied_run_directory_does_not_duplicate_series(tmp_path, capsys):
    write_full_run(tmp_path / "exp", experiment="exp", job_id="1", epochs=1, end=None)
    shutil.copytree(tmp_path / "exp", tmp_path / "exp.bak")
    EventLog(tmp_path / "exp" / "events.jsonl", "exp", "1").emit("heartbeat", epoch=2, step=99)
    sidecar = Sidecar(roots=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()  # Prometheus rejects a whole scrape that has duplicate samples
    steps = [x for x in text.splitlines() if x.startswith("edgeflow_step{")]
    assert steps == ['edgeflow_step{experiment="exp",job_id="1"} 99.0']  # the newer copy wins
    assert "edgeflow_monitor_duplicate_runs 1.0" in text
    assert "exp.bak: same experiment and job id as another run directory" in capsys.readouterr().err


def test_overlong_fragment_is_dropped_not_buffered(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path, max_line=100)
    append(path, line(event="run_start") + b"x" * 500)
    result = tail.read()
    assert [e["event"] for e in result.events] == ["run_start"]
    assert result.malformed == 1 and tail.pending == b""
    append(path, b"yyy\n" + line(event="heartbeat", step=2))
    after = tail.read()
    assert [e["step"] for e in after.events] == [2]


def test_odd_field_types_are_ignored_not_fatal(tmp_path):
    path = tmp_path / "events.jsonl"
    append(path, b'{"event": ["epoch"], "time": "soon"}\n'
           b'{"event": "epoch", "time": 2.0, "epoch": [1], "train_loss": [1], "nonfinite_steps": 2}\n'
           b'{"event": "eval", "time": 3.0, "mean_epe": "bad", "arch_epe": [1, 2], "experiment": 7}\n'
           b'{"event": "run_end", "time": 4.0, "status": "exploded", "reason": 5}\n')
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    state = sidecar.snapshot()[0][0][1]
    assert state.value("train_loss") is None and state.value("epe_mean") is None and state.arch_epe == {}
    assert state.nonfinite_steps == 2 and state.epochs_completed == 1
    assert state.status == "failed"  # an unknown end status is still an end
    assert state.experiment == tmp_path.name  # no usable experiment field: the folder's name
    render(sidecar)


def test_unreadable_events_file_is_reported_once_not_fatal(tmp_path, capsys):
    (tmp_path / "events.jsonl").mkdir()  # a folder where the file should be
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    sidecar.scan()
    err = capsys.readouterr().err
    assert err.count(f"cannot read {tmp_path / 'events.jsonl'}") == 1
    (tmp_path / "events.jsonl").rmdir()
    EventLog(tmp_path / "events.jsonl", "back", "1").emit("heartbeat", epoch=1, step=5)
    sidecar.scan()
    assert sidecar.snapshot()[0][0][1].value("step") == 5


# The run metrics the sidecar exported before its figures came from edgeflow/rundir/figures.py: names and
# kinds are an interface (the alert rules, the dashboard, users' own queries), so none may change.
EXPORTED_BEFORE = {
    "epoch": "gauge", "step": "gauge", "num_epochs": "gauge", "epochs_completed": "counter", "train_loss": "gauge",
    "grad_norm": "gauge", "grad_norm_p90": "gauge", "grad_clip_ratio": "gauge", "learning_rate": "gauge",
    "epe_mean": "gauge", "epe_std": "gauge", "epe_median": "gauge", "epe_p90": "gauge", "epe_best": "gauge",
    "epe_best_epoch": "gauge", "epe_rising_evaluations": "gauge", "evaluations": "counter",
    "early_stop_bad_evaluations": "gauge", "early_stop_patience": "gauge", "fairness_gap": "gauge",
    "nonfinite_steps": "counter", "samples_per_second": "gauge", "replicas": "gauge", "train_samples": "gauge",
    "val_samples": "gauge", "epoch_duration_seconds": "gauge", "run_start_timestamp_seconds": "gauge",
    "run_starts": "counter", "last_progress_timestamp_seconds": "gauge", "last_event_timestamp_seconds": "gauge",
    "last_checkpoint_timestamp_seconds": "gauge", "search_evaluations": "gauge", "search_target": "gauge",
    "search_best_epe": "gauge", "search_front_size": "gauge", "run_end_timestamp_seconds": "gauge",
    "arch_epe": "gauge", "run_status": "gauge",
}
NEW_FIGURES = {"zero_flow_epe": "gauge", "pool_rank_tau": "gauge", "pool_rank_tau_best": "gauge",
               "epoch_wall_seconds": "gauge"}


def test_run_metrics_are_the_figures_table_plus_what_the_monitor_derives(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from edgeflow.rundir.figures import FIGURES, SEARCH_BEST_EPE

    log = write_full_run(tmp_path, experiment="t", job_id="3", epochs=2, end=None)
    log.emit("run_start", train_samples=96, val_samples=16, resumed_from="checkpoints/latest", start_epoch=2,
             num_epochs=4, patience=5, zero_flow_epe=9.5, replicas=1)
    log.emit("eval", epoch=3, mean_epe=5.0, pool_rank_tau=0.75, pool_rank_tau_best=0.5)
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    families = {f.name.removeprefix("edgeflow_"): f for f in text_string_to_metric_families(text)
                if not f.name.startswith("edgeflow_monitor_")}
    assert {name: f.type for name, f in families.items()} == EXPORTED_BEFORE | NEW_FIGURES
    for figure in (*FIGURES, SEARCH_BEST_EPE):
        if figure.metric and figure.events != ("search",):
            family = families[figure.metric]
            assert (family.type, family.documentation) == (figure.kind, figure.help)
            assert family.samples, f"{figure.metric}: the full run reports it, so it must be exported"
    labels = {"experiment": "t", "job_id": "3"}
    assert value(text, "edgeflow_zero_flow_epe", **labels) == 9.5
    assert value(text, "edgeflow_pool_rank_tau", **labels) == 0.75
    assert value(text, "edgeflow_pool_rank_tau_best", **labels) == 0.5
    assert value(text, "edgeflow_epe_rising_evaluations", **labels) == 0  # 5.0 is below the last one


def test_state_json_as_the_trainer_writes_it_fills_in_before_the_events(tmp_path):
    from edgeflow.rundir import STATE_FIELDS, write_state

    state = dict.fromkeys(STATE_FIELDS, 0) | {"experiment": "s", "status": "running", "epoch": 7, "step": 70,
                                              "num_epochs": 20, "best_epe": 4.5, "best_epoch": 6, "bad_epochs": 1,
                                              "patience": 15, "fairness_counts": [[3, 3, 3]], "fairness_gap": 0}
    write_state(tmp_path / "state.json", state)
    atomic_write_json(tmp_path / "run.json", {"experiment": "s", "status": "running", "job_ids": ["5"],
                                              "train_samples": 96, "val_samples": 16})
    sidecar = Sidecar(runs=[tmp_path])
    sidecar.scan()
    text = render(sidecar).decode()
    expected = {"epoch": 7, "step": 70, "num_epochs": 20, "epe_best": 4.5, "epe_best_epoch": 6,
                "early_stop_bad_evaluations": 1, "early_stop_patience": 15, "fairness_gap": 0,
                "train_samples": 96, "val_samples": 16}
    got = {name: value(text, f"edgeflow_{name}", experiment="s", job_id="5") for name in expected}
    assert got == expected
