"""The job's environment: the one place that reads what SLURM, submitit and the launcher set.

Light (standard library only), on the ground floor: the trainer, the launcher's node side, the
rankings and the data staging ask here instead of reading `SLURM_*` themselves, so a job id, a task
rank or a node-local folder means the same everywhere. Every function takes an optional mapping in
place of `os.environ`, for tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Set by the launcher for a job of its local executor (no SLURM there); the trainer records it.
LAUNCHER_JOB_ID = "EDGEFLOW_JOB_ID"
# Set by the launcher for a job run in an Apptainer image: the image the trainer runs in.
IMAGE = "EDGEFLOW_IMAGE"
# Folders for node-local files, most specific first.
NODE_LOCAL_DIRS = ("SLURM_TMPDIR", "TMPDIR")
LOCAL_PREFIX = "local-"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def local_job_id(pid: int | str) -> str:
    """The id of a job of the local executor (its controller's pid), as every record shows it."""
    return f"{LOCAL_PREFIX}{pid}"


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    """This job's id as the queue shows it: `JOB_TASK` for an array element, the SLURM job id, or the
    launcher's id of a local job; None outside any job."""
    e = _env(env)
    array_job, task = e.get("SLURM_ARRAY_JOB_ID"), e.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    if e.get("SLURM_JOB_ID"):
        return e["SLURM_JOB_ID"]
    if e.get(LAUNCHER_JOB_ID):
        return e[LAUNCHER_JOB_ID]
    local = e.get("SUBMITIT_LOCAL_JOB_ID")
    return local_job_id(local) if local else None


def array_job_id(env: Mapping[str, str] | None = None) -> str | None:
    """The whole array's id for an array element (what its elements share), else the job id."""
    e = _env(env)
    return e.get("SLURM_ARRAY_JOB_ID") or job_id(e)


def numeric_job_id(env: Mapping[str, str] | None = None) -> int | None:
    """SLURM's numeric job id (not the array form), None outside SLURM."""
    text = _env(env).get("SLURM_JOB_ID", "")
    return int(text) if text.isdigit() else None


def in_slurm(env: Mapping[str, str] | None = None) -> bool:
    return bool(_env(env).get("SLURM_JOB_ID"))


def task_rank(env: Mapping[str, str] | None = None) -> int:
    """This task's rank among the job's tasks (0 for a one-task or a local job)."""
    try:
        return int(_env(env).get("SLURM_PROCID", "0"))
    except ValueError:
        return 0


def task_count(env: Mapping[str, str] | None = None) -> int:
    """Tasks of this job step (1 outside SLURM)."""
    e = _env(env)
    try:
        return int(e.get("SLURM_STEP_NUM_TASKS", e.get("SLURM_NTASKS", "1")))
    except ValueError:
        return 1


def usable_cpus(env: Mapping[str, str] | None = None) -> int:
    """CPU cores this process may use: SLURM's cpus per task in a job, else the process's affinity."""
    text = _env(env).get("SLURM_CPUS_PER_TASK", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def required(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A SLURM task variable, or None when it is not set (the caller says what that means)."""
    value = _env(env).get(name)
    return value or None


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs SLURM (or the user) made visible to this process, as CUDA_VISIBLE_DEVICES lists them."""
    return [g.strip() for g in _env(env).get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]


def node_local_dir(env: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The node-local folder and the variable that named it; None when no job set one."""
    e = _env(env)
    for name in NODE_LOCAL_DIRS:
        if e.get(name):
            return Path(e[name]), name
    return None


def image(env: Mapping[str, str] | None = None) -> str:
    """The Apptainer image this process runs in ("" outside one)."""
    return _env(env).get(IMAGE, "")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, ended but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process is a zombie until reaped
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True
