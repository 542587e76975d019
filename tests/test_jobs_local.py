"""The launcher with the `local` profile (submitit's LocalExecutor, no SLURM, no container), real trainer.

Covers what `make demo` relies on, and the ends the trainer cannot record itself: a trainer killed
outright gets its `run_end` from the launcher, and `cancel` makes a running trainer checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeflow import rundir
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # trains: tests/conftest.py schedules these files first

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("localjob")
    env = dict(os.environ, EDGEFLOW_JOBS_INDEX=str(base / "index.jsonl"))
    values = {
        "data.train_dir": demo_data / "train", "data.val_dir": demo_data / "val", "runtime.output_root": base,
        "data.input_height": 48, "data.input_width": 64, "train.batch_size": 4, "eval.batch_size": 4,
        "eval.bn_recal_batches": 1, "eval.eval_batches_per_arch": 1,
        "eval.pool": "['000000000', '111111111']", "eval.early_stop_patience": 1000,
    }
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    return {"base": base, "env": env, "sets": sets, "run": base / "demo"}


def jobs_cli(s: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=s["env"], capture_output=True,
                          text=True, timeout=600)


def wait_for(what: str, pred: Callable[[], bool], limit_s: float = 300) -> None:
    end = time.time() + limit_s
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what} after {limit_s:.0f} s")


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in rundir.read_events(run / "events.jsonl") if e["event"] == kind]


def controller_pid(run: Path) -> int:
    return int(json.loads((run / "jobs" / "submissions.json").read_text())["submissions"][-1]["pid"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def trainer_pid(run: Path) -> int | None:
    """The trainer process of this run (our own child's child), found by its command line."""
    needle = f"edgeflow\0train\0--config\0{run / 'jobs' / 'submitted_config.yaml'}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
    return None


def test_local_profile_runs_to_completion_with_a_sidecar(setup: dict[str, Any]) -> None:
    textfile = setup["base"] / "textfile"
    out = jobs_cli(setup, "submit", "--config", str(DEMO), "--cluster", "local", "--wait", *setup["sets"],
                   "--set", "train.num_epochs=1", "--profile-set", "monitor.sidecar=true",
                   "--profile-set", f"monitor.textfile_dir={textfile}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo: completed" in out.stdout
    # --wait streamed the job's log while it waited: the host side's and the trainer's own lines.
    assert "[edgeflow-jobs " in out.stdout and "run completed: num_epochs=1 reached" in out.stdout
    run = setup["run"]
    info = json.loads((run / "run.json").read_text())
    job_id = f"local-{controller_pid(run)}"
    assert info["status"] == "completed" and info["job_ids"] == [job_id] and info["image"] == ""
    assert [e["epoch"] for e in events(run, "epoch")] == [1]
    assert f"submitted job {job_id}: experiment demo" in out.stdout
    # The monitor ran next to the trainer and exported the finished run for node_exporter.
    (prom,) = textfile.glob("*.prom")
    assert "edgeflow_" in prom.read_text() and 'experiment="demo"' in prom.read_text()
    log = (run / "jobs" / f"{controller_pid(run)}_0_log.out").read_text()
    assert f"monitor sidecar: {sys.executable} -m monitor --run {run} --textfile {textfile}" in log
    status = jobs_cli(setup, "status", job_id)
    assert status.returncode == 0 and "status:     completed" in status.stdout and str(run) in status.stdout


def test_killed_trainer_is_recorded_by_the_launcher(setup: dict[str, Any]) -> None:
    out = jobs_cli(setup, "submit", "--config", str(DEMO), "--cluster", "local", *setup["sets"],
                   "--set", "train.num_epochs=500")
    assert out.returncode == 0, out.stdout + out.stderr
    run = setup["run"]
    wait_for("the first epoch", lambda: bool(events(run, "epoch")))
    pid = trainer_pid(run)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no chance to write anything: only the launcher can say what happened
    wait_for("the job to end", lambda: not alive(controller_pid(run)))
    end = events(run, "run_end")[-1]
    assert end["status"] == "failed" and end["source"] == "launcher"
    assert "signal SIGKILL" in end["reason"] and "without writing run_end" in end["reason"]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "SIGKILL" in info["reason"]


def test_cancel_makes_the_trainer_checkpoint(setup: dict[str, Any]) -> None:
    out = jobs_cli(setup, "submit", "--config", str(DEMO), "--cluster", "local", *setup["sets"],
                   "--set", "train.num_epochs=500")
    assert out.returncode == 0, out.stdout + out.stderr
    run = setup["run"]
    wait_for("the first epoch", lambda: bool(events(run, "epoch")))
    again = jobs_cli(setup, "submit", "--config", str(DEMO), "--cluster", "local", *setup["sets"],
                     "--set", "train.num_epochs=500")
    assert again.returncode == 5 and "already has a job in the queue" in again.stderr
    cancel = jobs_cli(setup, "cancel", str(run))
    assert cancel.returncode == 0 and "cancelled local-" in cancel.stdout
    wait_for("the job to end", lambda: not alive(controller_pid(run)))
    end = events(run, "run_end")[-1]
    assert end["status"] == "preempted" and "SIGTERM" in end["reason"]
    assert events(run, "checkpoint")[-1]["kind"] == "latest"
    assert json.loads((run / "run.json").read_text())["status"] == "preempted"
