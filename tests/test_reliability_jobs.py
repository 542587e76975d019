"""The launcher's share of the probe findings: a refused sbatch leaves nothing, a bind it cannot
express is refused before queueing, a trainer data error is never requeued."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_service

from edgeflow import rundir
from tests.helpers import REPO

DEMO = REPO / "configs" / "demo.yaml"


def jobs_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def _env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    env["EDGEFLOW_JOBS_INDEX"] = str(base / "jobs-index.jsonl")
    return env


def _tiny(data: Path, out: Path, name: str) -> list[str]:
    values = {"data.train_dir": data / "train", "data.val_dir": data / "val", "runtime.output_root": out,
              "runtime.experiment_name": name, "data.input_height": 48, "data.input_width": 64,
              "train.batch_size": 4, "eval.batch_size": 4}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def test_a_refused_sbatch_leaves_no_half_made_run_folder(tmp_path_factory: pytest.TempPathFactory,
                                                         demo_data: Path) -> None:
    require_service(shutil.which("sbatch") is not None, "no sbatch on PATH (scripts/slurm-up.sh)")
    base = tmp_path_factory.mktemp("refused")
    image = base / "edgeflow.sif"
    image.touch()
    out = jobs_cli("submit", "--config", str(DEMO), "--cluster", "ci", "--profile-set", f"container.image={image}",
                   "--profile-set", "slurm.partition=nosuchpartition", *_tiny(demo_data, base / "out", "refused"),
                   env=_env(base))
    assert out.returncode == rundir.EXIT_SUBMIT_FAILED, out.stdout + out.stderr
    assert "sbatch refused the job" in out.stderr
    assert not (base / "out" / "refused").exists()
    # An existing run keeps what it had: only the refused submission's files go.
    run = base / "out" / "refused"
    (run / "jobs").mkdir(parents=True)
    (run / "jobs" / "submitted_config.yaml").write_text("previous: submission\n")
    (run / "run.json").write_text("{}")
    out = jobs_cli("submit", "--config", str(DEMO), "--cluster", "ci", "--profile-set", f"container.image={image}",
                   "--profile-set", "slurm.partition=nosuchpartition", *_tiny(demo_data, base / "out", "refused"),
                   env=_env(base))
    assert out.returncode == rundir.EXIT_SUBMIT_FAILED
    assert sorted(p.name for p in (run / "jobs").iterdir()) == ["submitted_config.yaml"]
    assert (run / "jobs" / "submitted_config.yaml").read_text() == "previous: submission\n"


def test_a_data_folder_apptainer_cannot_bind_is_refused_before_queueing(
        tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> None:
    base = tmp_path_factory.mktemp("binds")
    # The profile binds only /srv here, so the trainer's data folder would need its own --bind, which
    # cannot name a path with a comma (wherever the checkout and the temporary folders are).
    data = base / "fc2,v2"
    shutil.copytree(demo_data, data)
    out = jobs_cli("submit", "--config", str(DEMO), "--cluster", "ci", "--dry-run", "--profile-set",
                   "container.binds=['/srv']", *_tiny(data, base / "out", "binds"), env=_env(base))
    assert out.returncode == rundir.EXIT_BAD_INPUT, out.stdout + out.stderr
    assert "data.train_dir" in out.stderr and "apptainer --bind" in out.stderr
    assert not (base / "out" / "binds").exists()


def test_data_errors_are_never_requeued() -> None:
    assert rundir.EXIT_DATA_ERROR not in rundir.REQUEUE_EXIT_CODES
    assert rundir.STATUS_EXIT_CODE["data_error"] == rundir.EXIT_DATA_ERROR


def test_a_repeated_preemption_signal_after_the_checkpoint_does_not_kill_the_trainer() -> None:
    # SLURM delivers SIGUSR2 to every process of the step and the launcher forwards it too: the second
    # copy may land after the trainer wrote its checkpoint and run_end, while it is exiting.
    code = ("import os, signal, time\n"
            "from edgeflow.train.signals import StopFlag\n"
            "flag = StopFlag().install()\n"
            "os.kill(os.getpid(), signal.SIGUSR2)\n"
            "assert flag.requested\n"
            "flag.uninstall(ignore_repeats=True)  # as the trainer does on its way out\n"
            "os.kill(os.getpid(), signal.SIGUSR2)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.2)\n"
            "print('alive')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "alive", (out.returncode, out.stderr)
    assert "uninstall(ignore_repeats=True)" in (REPO / "edgeflow" / "train" / "loop.py").read_text()


def test_a_trainer_killed_after_its_own_preempted_end_is_not_recorded_twice(tmp_path: Path) -> None:
    import time

    from jobs.launch import NodeSpec
    from jobs.profile import ClusterProfile
    from jobs.supervise import NodeJob

    run = tmp_path / "run"
    spec = NodeSpec(config_path="c.yaml", run_dir=str(run), experiment="x", profile=ClusterProfile(name="p"),
                    workdir=str(tmp_path))
    job = NodeJob(spec)
    job._started = time.time() - 1
    fields = {name: None for name in rundir.EVENT_FIELDS["run_end"]}
    rundir.EventLog(run / rundir.EVENTS_FILE, "x", "1").emit(
        "run_end", **dict(fields, status="preempted", reason="SIGUSR2 at epoch 3 batch 2; checkpoint written"))
    job._note_killed_early(-12)
    ends = [e for e in rundir.read_events(run / rundir.EVENTS_FILE) if e["event"] == "run_end"]
    assert [e["status"] for e in ends] == ["preempted"] and "source" not in ends[0]
