"""`python -m edgeflow train` end to end: bad inputs stop before writing, and the run directory
follows design §2 (files, events with their fields, metrics derivable from events)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from edgeflow import rundir
from edgeflow.rundir import read_events
from edgeflow.rundir.flow_samples_file import read_flow_samples
from tests.helpers import run_cli, tiny_config

pytestmark = pytest.mark.slow  # trains: tests/conftest.py schedules these files first


def write_config(tmp: Path, demo: Path, name: str, **sections: dict) -> Path:
    base: dict[str, dict] = {"runtime": {"heartbeat_seconds": 0.3}, "train": {"num_epochs": 2},
                             "eval": {"eval_batches_per_arch": 2}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return tiny_config(tmp, demo, name, **base)


def edgeflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("edgeflow", *args, env=env, timeout=600)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------ bad input: exit 2 (config) or 4 (data), nothing written

def test_unknown_config_key_exits_2_naming_the_key(tmp_path: Path, demo_data: Path) -> None:
    cfg = write_config(tmp_path, demo_data, "bad", train={"num_epoch": 3})
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 2
    assert "train.num_epoch" in proc.stderr and "did you mean" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_data_folder_exits_4_naming_it(tmp_path: Path, demo_data: Path) -> None:
    cfg = write_config(tmp_path, demo_data, "nodata")
    proc = edgeflow("train", "--config", str(cfg), "--set", f"data.val_dir={tmp_path / 'nowhere' / 'val'}")
    assert proc.returncode == 4
    assert str(tmp_path / "nowhere" / "val") in proc.stderr
    assert not (tmp_path / "out").exists()


def test_signature_mismatch_is_refused_before_anything_is_written(tmp_path: Path, demo_data: Path) -> None:
    cfg = write_config(tmp_path, demo_data, "sig")
    run = tmp_path / "out" / "sig"
    run.mkdir(parents=True)
    signature = {"model": "edgeflownas-supernet-v1", "input_size": [180, 240]}
    (run / "run.json").write_text(json.dumps({"experiment": "sig", "status": "preempted", "signature": signature}))
    (run / "events.jsonl").write_text('{"event": "run_start"}\n')
    before = tree(run)
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 2
    assert "input_size" in proc.stderr and "[180, 240]" in proc.stderr
    assert tree(run) == before


def test_existing_checkpoint_with_resume_off_is_refused(tmp_path: Path, demo_data: Path) -> None:
    cfg = write_config(tmp_path, demo_data, "noresume", checkpoint={"resume": False})
    ckpts = tmp_path / "out" / "noresume" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "latest-000001.index").write_bytes(b"x")
    (ckpts / "latest.json").write_text(json.dumps({"prefix": "latest-000001", "state": {"epoch": 1}}))
    before = tree(tmp_path / "out")
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 2 and "checkpoint.resume" in proc.stderr
    assert tree(tmp_path / "out") == before


def test_warm_start_from_a_missing_run_is_refused(tmp_path: Path, demo_data: Path) -> None:
    cfg = write_config(tmp_path, demo_data, "warm", checkpoint={"resume_experiment_name": "ghost"})
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 2 and "ghost" in proc.stderr
    assert not (tmp_path / "out" / "warm").exists()


# ---------------------------------------------------------------- a complete run

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, demo_data: Path):
    tmp = tmp_path_factory.mktemp("run")
    cfg = write_config(tmp, demo_data, "full")
    proc = edgeflow("train", "--config", str(cfg), env={"EDGEFLOW_JOB_ID": "4242", "EDGEFLOW_IMAGE": "img.sif"})
    return cfg, tmp / "out" / "full", proc


def test_run_directory_files_and_exit_code(finished_run) -> None:
    _, run, proc = finished_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_samples=24" in proc.stdout and "val_samples=8" in proc.stdout
    assert "epoch 2/2" in proc.stdout and "early-stop" in proc.stdout and "samples/s" in proc.stdout
    # The log ends with the result against the zero-flow EPE, and the last evaluation's flow pictures are kept.
    result = re.compile(r"^result: best [\d.]{5} vs zero flow [\d.]{5} \([+-]\d+ %\) \(epoch [12]\)$", re.M)
    assert result.search(proc.stdout), proc.stdout[-2000:]
    samples = read_flow_samples(run / rundir.FLOW_SAMPLES_FILE)
    assert samples.epoch == 2 and sorted(samples.archs) == ["000000000", "222222222"]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["job_ids"] == ["4242"] and info["image"] == "img.sif"
    assert (info["train_samples"], info["val_samples"], info["val_source"]) == (24, 8, "val_dir")
    assert info["signature"]["input_size"] == [32, 48] and info["code_version"] and info["host"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 4
    state = json.loads((run / "state.json").read_text())
    assert (state["epoch"], state["step"], state["status"], state["fairness_gap"]) == (2, 12, "completed", 0)
    assert {json.loads((run / "checkpoints" / f"{k}.json").read_text())["prefix"].split("-")[0]
            for k in ("latest", "best")} == {"latest", "best"}


def test_events_carry_exactly_the_design_fields(finished_run) -> None:
    _, run, _ = finished_run
    events = list(read_events(run / "events.jsonl"))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("epoch") == 2 and kinds.count("eval") == 2 and "heartbeat" in kinds
    required = rundir.EVENT_FIELDS
    for ev in events:
        assert {"event", "time", "experiment", "job_id"} <= set(ev)
        assert ev["job_id"] == "4242" and ev["experiment"] == "full"
        missing = set(required[ev["event"]]) - set(ev)
        assert not missing, (ev["event"], missing)
    start = events[0]
    assert (start["train_samples"], start["val_samples"]) == (24, 8)
    assert (start["start_epoch"], start["resumed_from"]) == (1, None)
    ev = [e for e in events if e["event"] == "eval"][-1]
    assert set(ev["arch_epe"]) == {"000000000", "222222222"} and ev["patience"] == 5
    assert [e["kind"] for e in events if e["event"] == "checkpoint"].count("latest") == 2
    epochs = [e for e in events if e["event"] == "epoch"]
    assert all(e["fairness_gap"] == 0 and e["nonfinite_steps"] == 0 for e in epochs)
    assert all(e["epoch_wall_seconds"] > 0 for e in epochs)  # measured around the steps: evaluation included
    assert epochs[0]["lr"] > epochs[1]["lr"] > 0  # cosine decays
    assert events[-1]["status"] == "completed"


def test_metrics_csv_is_derived_from_events(finished_run) -> None:
    _, run, _ = finished_run
    text = (run / "metrics.csv").read_text()
    assert text == rundir.metrics_csv(read_events(run / "events.jsonl"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["mean_epe"]) > 0 for r in rows)


def test_eval_cli_table_reproduces_the_training_evaluation(finished_run) -> None:
    _, run, _ = finished_run
    proc = edgeflow("eval", "--run", str(run), "--checkpoint", "latest", "--archs", "000000000",
                    "2 2 2 2 2 2 2 2 2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = dict(line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2)
    last_eval = [e for e in read_events(run / "events.jsonl") if e["event"] == "eval"][-1]
    # same checkpoint, same protocol, another process: the same numbers
    for code in ("000000000", "222222222"):
        assert rows[code] == f"{last_eval['arch_epe'][code]:.4f}"
    assert rows["mean"] == f"{last_eval['mean_epe']:.4f}"
    bad = edgeflow("eval", "--run", str(run), "--archs", "00002")
    assert bad.returncode == 2 and "00002" in bad.stderr
    missing = edgeflow("eval", "--run", str(run.parent / "nope"))
    assert missing.returncode == 2 and "not a run directory" in missing.stderr


def test_rerunning_a_completed_run_does_nothing(finished_run) -> None:
    cfg, run, _ = finished_run
    before = (run / "events.jsonl").read_bytes()
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    assert (run / "events.jsonl").read_bytes() == before


def test_nonfinite_steps_are_skipped_then_the_run_ends_diverged(tmp_path: Path, demo_data: Path) -> None:
    # An absurd LR blows the weights up after the first update; every later step is non-finite.
    cfg = write_config(tmp_path, demo_data, "boom", train={"lr": 1e38, "max_nonfinite_steps": 2,
                                                          "grad_clip_global_norm": 1e30})
    proc = edgeflow("train", "--config", str(cfg))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "out" / "boom"
    end = [e for e in read_events(run / "events.jsonl") if e["event"] == "run_end"][-1]
    assert end["status"] == "diverged" and "2 consecutive non-finite" in end["reason"]
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    assert "update skipped" in proc.stdout


def test_warm_start_takes_weights_only_from_another_run(finished_run, tmp_path: Path, demo_data: Path) -> None:
    cfg, run, _ = finished_run
    out = run.parent
    warm_cfg = write_config(tmp_path, demo_data, "warm", runtime={"output_root": str(out)},
                            train={"num_epochs": 1}, checkpoint={"resume_experiment_name": "full"})
    proc = edgeflow("train", "--config", str(warm_cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = list(read_events(out / "warm" / "events.jsonl"))
    start = events[0]
    # resume_experiment_name is init_from of <output_root>/<name>: one warm start, recorded one way.
    assert start["warm_start_from"] == str(run.resolve()) and "/full/checkpoints/latest-" in start["resumed_from"]
    assert start["init_from"]["key"] == "checkpoint.resume_experiment_name"
    assert json.loads((out / "warm" / "run.json").read_text())["init_from"]["run"] == str(run.resolve())
    assert start["start_epoch"] == 1
    state = json.loads((out / "warm" / "state.json").read_text())
    assert state["step"] == 6  # a fresh schedule and step count, not the source's
    first = [e for e in read_events(run / "events.jsonl") if e["event"] == "epoch"][0]
    warm_epoch = [e for e in events if e["event"] == "epoch"][0]
    assert warm_epoch["train_loss"] < first["train_loss"]  # it started from trained weights


def test_continuing_with_more_epochs_reports_horizon_resets_and_early_stops(finished_run) -> None:
    # Runs last: it extends the finished run. Raising num_epochs continues it (horizon change
    # reported); reset_early_stop_on_resume clears best so epoch 3 improves; with a huge min_delta
    # epoch 4 cannot, and patience 1 stops the run there.
    cfg, run, _ = finished_run
    proc = edgeflow("train", "--config", str(cfg), "--set", "train.num_epochs=5",
                    "--set", "checkpoint.reset_early_stop_on_resume=true", "--set", "eval.early_stop_patience=1",
                    "--set", "eval.min_delta=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "num_epochs 2 -> 5" in proc.stdout
    events = list(read_events(run / "events.jsonl"))
    start = [e for e in events if e["event"] == "run_start"][-1]
    assert start["previous_num_epochs"] == 2 and start["start_epoch"] == 3 and start["early_stop_reset"] is True
    evals = {e["epoch"]: e for e in events if e["event"] == "eval"}
    assert evals[3]["improved"] is True and evals[4]["improved"] is False and evals[4]["bad_epochs"] == 1
    assert 5 not in evals
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "early_stopped"
    state = json.loads((run / "state.json").read_text())
    assert (state["status"], state["epoch"], state["best_epoch"]) == ("early_stopped", 4, 3)
