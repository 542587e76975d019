"""`jobs status` says plainly whether a run is alive; `jobs list` and `jobs logs` over crafted runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from edgeflow import rundir
from edgeflow.rundir.events import build_event
from tests.helpers import REPO, run_cli


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def craft_run(root: Path, name: str, *, progress_age: float, pid: int | None, status: str = "running") -> Path:
    run = root / name
    (run / rundir.JOBS_DIR).mkdir(parents=True)
    now = time.time()
    events = [
        build_event("run_start", name, "local-1", dict(train_samples=24, val_samples=8, resumed_from=None,
                                                       start_epoch=1, num_epochs=10, patience=5), now - 7200),
        build_event("epoch", name, "local-1", dict(epoch=1, step=6, lr=1e-3, train_loss=1.234567, grad_norm=2.0,
                                                   grad_norm_p90=3.0, clip_rate=0.0, fairness_gap=0,
                                                   nonfinite_steps=0, epoch_seconds=61.7,
                                                   samples_per_second=4.0), now - progress_age - 30),
        build_event("heartbeat", name, "local-1", dict(epoch=2, step=9, samples_per_second=3.14159),
                    now - progress_age),
    ]
    rundir.paths.RunPaths(run).events.write_text("".join(rundir.to_json(e) + "\n" for e in events))
    rundir.atomic_write_json(run / rundir.RUN_FILE, {"experiment": name, "status": status,
                                                     "job_ids": ["local-1"]})
    if pid is not None:
        log = run / rundir.JOBS_DIR / f"{pid}_0_log.out"
        log.write_text(f"trainer of {name}\nepoch 1/10: step 6/6 100% | ...\n")
        rundir.atomic_write_json(run / rundir.JOBS_DIR / "submissions.json", {"submissions": [
            {"job_id": f"local-{pid}", "executor": "local", "cluster": "local", "pid": pid,
             "stdout": str(log), "stderr": str(log.with_suffix(".err"))}]})
    return run


def status_json(run: Path) -> dict:
    proc = run_cli("jobs", "status", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_status_flags_a_dead_run_and_says_what_to_do(tmp_path: Path) -> None:
    run = craft_run(tmp_path, "gone", progress_age=3600, pid=dead_pid())
    proc = run_cli("jobs", "status", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "verdict:    LOOKS DEAD" in proc.stdout, proc.stdout
    assert f"--config {run}/jobs/submitted_config.yaml --cluster local" in proc.stdout
    assert "progress:   last heartbeat 1h00m ago" in proc.stdout
    assert "3.14 samples/s" in proc.stdout and "train loss 1.235" in proc.stdout  # rounded for people
    info = status_json(run)
    assert info["health"]["verdict"] == "dead" and info["health"]["progress_age_s"] == pytest.approx(3600, abs=60)


def test_status_tells_alive_from_stalled(tmp_path: Path) -> None:
    alive = craft_run(tmp_path, "alive", progress_age=20, pid=os.getpid())
    stalled = craft_run(tmp_path, "stalled", progress_age=3600, pid=os.getpid())
    assert status_json(alive)["health"]["verdict"] == "alive"
    assert status_json(stalled)["health"]["verdict"] == "stalled"
    # A stall threshold longer than the silence: not stalled.
    proc = run_cli("jobs", "status", str(stalled), "--json", "--stall-minutes", "120")
    assert json.loads(proc.stdout)["health"]["verdict"] == "alive"
    ended = craft_run(tmp_path, "ended", progress_age=3600, pid=dead_pid(), status="completed")
    assert status_json(ended)["health"]["verdict"] == "ended"


def test_list_and_logs(tmp_path: Path) -> None:
    craft_run(tmp_path, "a-dead", progress_age=3600, pid=dead_pid())
    run = craft_run(tmp_path, "b-alive", progress_age=20, pid=os.getpid())
    proc = run_cli("jobs", "list", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["experiment", "status", "verdict"]
    assert lines[1].split()[:4] == ["a-dead", "running", "dead", "1"] and "1h00m ago" in lines[1]
    assert lines[2].split()[:3] == ["b-alive", "running", "alive"] and "RUNNING" in lines[2]
    # A requeue with a new job id: a second log file, printed after the first.
    later = run / rundir.JOBS_DIR / "99999999_0_log.out"
    later.write_text("resumed from checkpoints/latest\n")
    os.utime(later, (time.time() + 5, time.time() + 5))
    out = run_cli("jobs", "logs", str(run)).stdout
    assert out.index("trainer of b-alive") < out.index("resumed from checkpoints/latest"), out
    assert out.count("==> ") == 2


def test_status_and_list_show_epe_to_4_digits_against_zero_flow_and_the_measured_epoch_time(tmp_path: Path) -> None:
    name, now = "timed", time.time()
    run = tmp_path / name
    run.mkdir()

    def epoch(e: int, wall: float) -> dict:
        return build_event("epoch", name, "1", dict(epoch=e, step=6 * e, lr=1e-3, train_loss=1.5, grad_norm=2.0,
                                                     grad_norm_p90=3.0, clip_rate=0.0, fairness_gap=0,
                                                     nonfinite_steps=0, epoch_seconds=17.0, samples_per_second=4.0,
                                                     epoch_wall_seconds=wall), now - 100 + e)

    events = [
        build_event("run_start", name, "1", dict(train_samples=24, val_samples=8, resumed_from=None, start_epoch=1,
                                                 num_epochs=10, patience=5, zero_flow_epe=5.1479), now - 200),
        # The first epoch of a start pays the trace and follows no evaluation: left out of the mean.
        epoch(1, 90.0), epoch(2, 34.0), epoch(3, 36.0),
        build_event("eval", name, "1", dict(epoch=3, mean_epe=2.9, std_epe=0.1, median_epe=2.9, p90_epe=3.0,
                                            arch_epe={"000000000": 2.9}, best_epe=2.9, best_epoch=3, bad_epochs=0,
                                            patience=5, improved=True), now - 90),
    ]
    (run / rundir.EVENTS_FILE).write_text("".join(rundir.to_json(e) + "\n" for e in events))
    rundir.atomic_write_json(run / rundir.RUN_FILE, {"experiment": name, "status": "completed", "job_ids": ["1"]})
    rundir.atomic_write_json(run / rundir.STATE_FILE, {"experiment": name, "status": "completed", "epoch": 3,
                                                       "num_epochs": 10, "best_epe": 2.9, "best_epoch": 3})
    out = run_cli("jobs", "status", str(run)).stdout
    assert "35s per epoch with evaluation and checkpoints, 17s of it training steps" in out, out
    assert "mean EPE 2.900 (best 2.900 at epoch 3" in out, out
    assert "result:     best 2.900 vs zero flow 5.148 (-44 %)" in out, out
    listed = run_cli("jobs", "list", "--root", str(tmp_path)).stdout.splitlines()
    assert listed[1].split()[:5] == ["timed", "completed", "ended", "3/10", "2.900"], listed


@pytest.mark.parametrize("mode", [["--textfile", "/proc"], ["--pushgateway", "http://127.0.0.1:9"]],
                         ids=["textfile-unwritable", "pushgateway-unreachable"])
def test_monitor_once_exits_nonzero_when_the_export_fails(tmp_path: Path, mode: list[str]) -> None:
    run = craft_run(tmp_path, "m", progress_age=20, pid=None)
    proc = run_cli("monitor", "--run", str(run), *mode, "--once")
    assert proc.returncode == 1, proc.stderr
    assert "monitor: --once: the export failed" in proc.stderr
    ok = run_cli("monitor", "--run", str(run), "--textfile", str(tmp_path / "prom"), "--once")
    assert ok.returncode == 0 and (tmp_path / "prom" / "edgeflow_m.prom").is_file(), ok.stderr


def test_a_ranking_making_progress_is_alive_like_the_monitor_says(tmp_path: Path) -> None:
    # A ranking's folder (RUN/rank/<name>) reports progress with `search` events only: with its trainer
    # events an hour old and a search event seconds ago, the run is alive, not stalled.
    run = craft_run(tmp_path, "ranking", progress_age=3600, pid=os.getpid())
    search = build_event("search", "ranking", "local-1", dict(kind="rank", name="r", evaluations=3, target=9,
                                                               best_epe=1.5, front_size=2), time.time() - 5)
    with open(run / "events.jsonl", "a") as fh:
        fh.write(rundir.to_json(search) + "\n")
    info = status_json(run)
    assert info["health"]["verdict"] == "alive" and info["health"]["progress_event"] == "search", info["health"]


def test_a_failing_squeue_is_not_an_empty_queue(tmp_path: Path, demo_data: Path) -> None:
    # squeue that cannot reach slurmctld (a loaded login node) answers nothing: that must neither let a
    # second job into a run whose job may be running, nor call the run dead.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out on send/recv "
                                    "operation' >&2\nexit 1\n")
    (bin_dir / "squeue").chmod(0o755)
    run = craft_run(tmp_path, "busy", progress_age=3600, pid=None)
    rundir.atomic_write_json(run / rundir.JOBS_DIR / "submissions.json", {"submissions": [
        {"job_id": "4242", "executor": "slurm", "cluster": "ci", "stdout": "x", "stderr": "y"}]})
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = run_cli("jobs", "status", str(run), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["health"]["verdict"] == "unknown"
    proc = run_cli("jobs", "submit", "--config", str(REPO / "configs" / "demo.yaml"), "--cluster", "local",
                   "--dry-run", "--set", f"runtime.output_root={tmp_path}", "--set", "runtime.experiment_name=busy",
                   "--set", f"data.train_dir={demo_data / 'train'}", "--set", f"data.val_dir={demo_data / 'val'}",
                   env=env)
    assert proc.returncode == rundir.EXIT_SUBMIT_FAILED, proc.stdout + proc.stderr
    assert "cannot tell whether run" in proc.stderr and "Socket timed out" in proc.stderr
