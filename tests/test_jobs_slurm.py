"""The launcher against a real single-node SLURM (scripts/slurm-up.sh) and the real trainer.

Apptainer cannot be installed here: the `ci` profile runs the container path through the stand-in
tests/bin/apptainer, which records its arguments and runs the command after the image on the host.
SLURM holds a requeued job back for ~2 minutes (BeginTime); the tests release it at once with
`scontrol update StartTime=now` once they have seen it requeued, to keep this module short.
The timeouts below only bound the waits; no assertion is about speed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import require_service

from edgeflow import rundir
from tests.helpers import REPO

pytestmark = pytest.mark.slurm

DEMO = REPO / "configs" / "demo.yaml"


def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture(scope="module", autouse=True)
def _slurm() -> None:
    require_service(slurm_up(), "no single-node SLURM (sbatch + sinfo with an idle node); run scripts/slurm-up.sh")


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Paths and environment of one test: jobs inherit it (sbatch exports the environment)."""
    base = tmp_path_factory.mktemp("slurmjob")
    image = base / "edgeflow.sif"
    image.touch()
    e = dict(os.environ)
    # `python` inside the "image" is this venv's interpreter; `apptainer` is the stand-in.
    e["PATH"] = os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent), e["PATH"]])
    e["APPTAINER_STANDIN_LOG"] = str(base / "apptainer.log")
    e["EDGEFLOW_JOBS_INDEX"] = str(base / "jobs-index.jsonl")
    return {"base": base, "image": image, "env": e, "out": base / "out", "log": base / "apptainer.log"}


def tiny(data: Path, out: Path, **extra: Any) -> list[str]:
    """A demo config small enough for a CPU job of a few seconds per epoch."""
    values = {
        "data.train_dir": data / "train", "data.val_dir": data / "val", "runtime.output_root": out,
        "data.input_height": 48, "data.input_width": 64, "train.batch_size": 4, "eval.batch_size": 4,
        "eval.bn_recal_batches": 1, "eval.eval_batches_per_arch": 1,
        "eval.pool": "['000000000', '111111111', '222222222']", "eval.early_stop_patience": 1000,
        "runtime.heartbeat_seconds": 2,
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def jobs_cli(env: dict[str, Any], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=env["env"], capture_output=True,
                          text=True, timeout=timeout)


def submit(env: dict[str, Any], *args: str, wait: bool = False) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    cmd = ["submit", "--config", str(DEMO), "--cluster", "ci",
           "--profile-set", f"container.image={env['image']}", *args]
    out = jobs_cli(env, *cmd, *(["--wait"] if wait else []))
    return out, re.findall(r"^submitted job (\S+):", out.stdout, flags=re.M)


class SqueueFailed(Exception):
    pass


def queue_state(job_id: str) -> tuple[str, str] | None:
    """(state, reason) while the job is in the queue, None once it left; SqueueFailed when squeue could not
    tell (a busy slurmctld answers nothing): an empty answer then is not an empty queue."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%T %r", "-j", job_id], capture_output=True, text=True)
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise SqueueFailed(out.stderr.strip())
    line = out.stdout.strip()
    return tuple(line.split(None, 1)) if line else None  # type: ignore[return-value]


def events(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in rundir.read_events(run / "events.jsonl") if kind is None or e["event"] == kind]


def wait_for(what: str, pred: Callable[[], bool], run: Path, limit_s: float = 300) -> None:
    end = time.time() + limit_s
    while time.time() < end:
        try:
            if pred():
                return
        except SqueueFailed:
            pass  # ask again
        time.sleep(1)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((run / "jobs").glob("*_log.*")))
    pytest.fail(f"gave up waiting for {what} after {limit_s:.0f} s; queue: "
                f"{subprocess.run(['squeue'], capture_output=True, text=True).stdout}\n{logs}")


def release_when_requeued(job_id: str, run: Path, time_limit_min: int | None = None) -> None:
    """Wait until SLURM holds the requeued job (PENDING, reason BeginTime), then let it start soon.

    Not at once: slurmd refuses a start within the second of the requeue ("Killing non-startable batch
    job: Job credential revoked", the job then ends), so the start is set a few seconds ahead.
    `time_limit_min` gives the next slot another time limit.
    """
    update = ["scontrol", "update", f"JobId={job_id}", "StartTime=now+3"]
    if time_limit_min is not None:
        update.append(f"TimeLimit={time_limit_min}")

    def held() -> bool:
        state = queue_state(job_id)
        return bool(state) and state[0] == "PENDING" and "BeginTime" in state[1]

    wait_for(f"job {job_id} requeued", held, run)
    last_update = 0.0

    def started() -> bool:
        nonlocal last_update
        if held() and time.time() - last_update > 15:
            subprocess.run(update, check=False)
            last_update = time.time()
        state = queue_state(job_id)
        return state is None or state[0] != "PENDING"

    wait_for(f"requeued job {job_id} to start", started, run)


def left_queue(job_id: str) -> Callable[[], bool]:
    return lambda: queue_state(job_id) is None


def epoch_numbers(run: Path) -> list[int]:
    return [int(e["epoch"]) for e in events(run, "epoch")]


def test_demo_runs_to_completion_through_slurm(env: dict[str, Any], demo_data: Path) -> None:
    out, ids = submit(env, *tiny(demo_data, env["out"], train__num_epochs=2), wait=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(ids) == 1 and ids[0].isdigit()
    job_id, run = ids[0], env["out"] / "demo"
    assert f"run directory: {run}" in out.stdout and f"python -m jobs status {run}" in out.stdout
    assert f"python -m monitor --run {run}" in out.stdout and "demo: completed" in out.stdout
    assert queue_state(job_id) is None

    # The run-directory contract (design §2).
    for name in ("config.yaml", "run.json", "events.jsonl", "state.json", "metrics.csv"):
        assert (run / name).is_file(), name
    assert any((run / "checkpoints").iterdir())
    assert (run / "jobs" / "submitted_config.yaml").is_file()
    assert (run / "jobs" / f"{job_id}_0_log.out").is_file() and (run / "jobs" / f"{job_id}_submission.sh").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["job_ids"] == [job_id]
    assert info["image"] == str(env["image"])
    starts = events(run, "run_start")
    assert len(starts) == 1 and starts[0]["train_samples"] == 24 and starts[0]["val_samples"] == 8
    assert epoch_numbers(run) == [1, 2] and events(run, "eval") and events(run, "checkpoint")
    assert events(run)[-1]["event"] == "run_end" and events(run)[-1]["status"] == "completed"
    assert all(e.get("job_id") == job_id for e in events(run))

    # The trainer ran "inside the image": the stand-in saw exactly this call.
    (call,) = env["log"].read_text().splitlines()
    args = shlex.split(call)
    assert args[0] == "exec" and "--bind" in args and str(env["image"]) in args
    assert args[args.index(str(env["image"])) + 1:] == [
        "python", "-m", "edgeflow", "train", "--config", str(run / "jobs" / "submitted_config.yaml")]

    status = jobs_cli(env, "status", job_id)
    assert status.returncode == 0 and f"run:        {run}" in status.stdout
    assert "status:     completed" in status.stdout and "last epoch: 2" in status.stdout


def test_empty_val_folder_queues_nothing(env: dict[str, Any], demo_data: Path) -> None:
    data = env["base"] / "data"
    shutil.copytree(demo_data / "train", data / "train")
    (data / "val").mkdir()
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    out, ids = submit(env, *tiny(data, env["out"], runtime__experiment_name="emptyval"))
    assert out.returncode == 4 and ids == []
    assert "preflight: FAILED" in out.stdout and str(data / "val") in out.stdout
    assert "nothing was queued" in out.stderr
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert after == before
    named = subprocess.run(["squeue", "-h", "-n", "emptyval"], capture_output=True, text=True).stdout
    assert named.strip() == ""
    assert not (env["out"] / "emptyval").exists()


def test_sbatch_refusal_is_reported(env: dict[str, Any], demo_data: Path) -> None:
    out, ids = submit(env, *tiny(demo_data, env["out"]), "--profile-set", "slurm.partition=nosuchpartition")
    assert out.returncode == 5 and ids == []
    assert "sbatch refused the job" in out.stderr and "partition" in out.stderr


def test_two_element_array_runs_both(env: dict[str, Any], demo_data: Path) -> None:
    out, ids = submit(env, *tiny(demo_data, env["out"], train__num_epochs=1), "--seeds", "0", "1",
                      "--array-parallelism", "2", "--profile-set", "slurm.cpus_per_task=1", wait=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "job array of 2 elements" in out.stdout
    array_id = ids[0].split("_")[0]
    assert ids == [f"{array_id}_0", f"{array_id}_1"]
    for seed, job_id in zip((0, 1), ids, strict=True):
        run = env["out"] / f"demo_s{seed}"
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "completed" and info["job_ids"] == [job_id]
        assert f"seed: {seed}" in (run / "config.yaml").read_text()
        assert epoch_numbers(run) == [1]
        log = run / "jobs" / f"{job_id}_0_log.out"
        assert log.is_symlink() and "trainer finished: completed" in log.read_text()
    assert len(env["log"].read_text().splitlines()) == 2


def test_three_task_job_trains_one_run_and_resumes_after_preemption(env: dict[str, Any], demo_data: Path) -> None:
    # One trainer per SLURM task (srun of 3 tasks; the test SLURM has 4 CPU slots on 2 cores); they find
    # each other through SlurmClusterResolver and train as MultiWorkerMirroredStrategy replicas
    # (arch_parallel: one arch of the step each). The preemption signal reaches every task; all
    # checkpoint at the same step and resume. Preempted mid-epoch, on the first heartbeat: a signal
    # during an evaluation waits for the slowest task's evaluation, which on this loaded machine can
    # outlast SLURM's 30 s between SIGTERM and SIGKILL (docs/distribute.md says so). Four epochs, not two:
    # the requeue must land before the run could end (on a loaded machine two epochs of 12 steps once
    # finished between the first heartbeat and the requeue's signal).
    out, ids = submit(env, *tiny(demo_data, env["out"], train__num_epochs=4, train__distribute="multi_worker",
                                 train__batch_size=2, eval__pool="['000000000']"),
                      "--profile-set", "slurm.tasks_per_node=3", "--profile-set", "slurm.cpus_per_task=1",
                      "--profile-set", "slurm.additional.overcommit=true")
    assert out.returncode == 0, out.stdout + out.stderr
    job_id, run = ids[0], env["out"] / "demo"
    script = (run / "jobs" / f"{job_id}_submission.sh").read_text()
    assert "#SBATCH --ntasks-per-node=3" in script and "#SBATCH --overcommit" in script
    wait_for("the first heartbeat", lambda: bool(events(run, "heartbeat")), run)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # what a preempting scheduler does
    release_when_requeued(job_id, run)
    wait_for("the job to finish", left_queue(job_id), run)

    # Only the chief (task 0) wrote the run directory: one run_start and one run_end per start.
    ends = events(run, "run_end")
    assert [e["status"] for e in ends] == ["preempted", "completed"], ends
    starts = events(run, "run_start")
    assert len(starts) == 2 and starts[1]["resumed_from"]
    assert all(s["replicas"] == 3 for s in starts)
    assert "SIGTERM" in ends[0]["reason"]
    assert epoch_numbers(run) == [1, 2, 3, 4]  # continued, not restarted
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["job_ids"] == [job_id]
    assert len(info["tasks"]) == 3 and len(set(info["tasks"])) == 3
    # Every task ran a trainer in the image, in both starts, and knew its place.
    assert len(env["log"].read_text().splitlines()) == 6
    for task in range(3):
        log = (run / "jobs" / f"{job_id}_{task}_log.out").read_text()
        assert f"task {task} of 3: waiting" in log


def test_time_limit_requeues_resumes_and_ends_as_timeout(env: dict[str, Any], demo_data: Path) -> None:
    # A 2-minute slot with SIGUSR2 50 s before its end, one requeue allowed. The first signal comes
    # from SLURM's time limit; the second is sent by the test once the resumed run has trained an
    # epoch (the same signal, `scancel --signal=USR2`, without waiting out a second slot). submitit
    # counts both as time-outs (jobs under 10 min, by the submitted limit), so the second exhausts
    # max_requeues. The second slot gets a 10-minute limit: SLURM sends its own signal up to a minute
    # early, so in a second 2-minute slot it could come before the resumed run's first epoch, or race
    # the test's (seen as two SIGUSR2 within a second in one slot's log).
    out, ids = submit(env, *tiny(demo_data, env["out"], train__num_epochs=1000),
                      "--profile-set", "slurm.time_min=2", "--profile-set", "slurm.signal_delay_s=50",
                      "--profile-set", "slurm.max_requeues=1")
    assert out.returncode == 0, out.stdout + out.stderr
    job_id, run = ids[0], env["out"] / "demo"
    release_when_requeued(job_id, run, time_limit_min=10)
    # Under load the first slot may end before its first epoch does: wait for an epoch of the resumed
    # run itself, whatever the first one managed.
    wait_for("an epoch after the resume", lambda: len(events(run, "run_start")) == 2 and
             events(run)[-1]["event"] in ("epoch", "eval", "checkpoint", "heartbeat") and
             any(e["time"] > events(run, "run_start")[1]["time"] for e in events(run, "epoch")), run)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for("the job to end", left_queue(job_id), run)

    ends = events(run, "run_end")
    assert [e["status"] for e in ends] == ["preempted", "preempted", "timeout"], ends
    assert all("SIGUSR2" in e["reason"] for e in ends[:2])
    assert ends[2]["source"] == "launcher" and "max_requeues (1) exhausted" in ends[2]["reason"]
    starts = events(run, "run_start")
    assert len(starts) == 2 and starts[1]["resumed_from"]
    # The resume starts where the first slot's checkpoint stopped: after its epoch, or inside it when the
    # signal came mid-epoch (on a loaded machine, possibly still in epoch 1).
    first = [e for e in events(run, "checkpoint") if e["time"] < starts[1]["time"] and e["kind"] == "latest"][-1]
    assert starts[1]["start_epoch"] == first["epoch"] + (0 if first.get("batch_in_epoch") else 1)
    numbers = epoch_numbers(run)
    assert numbers == list(range(1, len(numbers) + 1)) and numbers[-1] >= starts[1]["start_epoch"]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "timeout" and "max_requeues" in info["reason"]
    # Both slots' lines are in the one log, the second appended to the first (--open-mode=append in the
    # batch script, inherited by srun as SLURM_OPEN_MODE): the requeue loses nothing a user reads.
    log = (run / "jobs" / f"{job_id}_0_log.out").read_text()
    slots = log.split("edgeflow job on ")[1:]  # the profile's setup line starts every slot
    assert len(slots) == 2, log
    assert "Requeued job" in slots[0] and "SIGUSR2" in slots[0], slots[0]
    assert "asking submitit to requeue" in slots[1] and "max_requeues (1) exhausted" in slots[1], slots[1]
    status = jobs_cli(env, "status", str(run))
    assert "status:     timeout" in status.stdout and "resumed:    1 time(s)" in status.stdout
