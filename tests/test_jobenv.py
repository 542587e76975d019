"""The job's environment is read in one place: job ids, task ranks, node-local folders."""

from __future__ import annotations

from pathlib import Path

from edgeflow import jobenv


def test_job_id_prefers_the_array_form_then_slurm_then_the_launcher() -> None:
    assert jobenv.job_id({}) is None
    assert jobenv.job_id({"SUBMITIT_LOCAL_JOB_ID": "977"}) == "local-977"
    assert jobenv.job_id({"EDGEFLOW_JOB_ID": "local-5", "SUBMITIT_LOCAL_JOB_ID": "977"}) == "local-5"
    assert jobenv.job_id({"SLURM_JOB_ID": "42", "EDGEFLOW_JOB_ID": "local-5"}) == "42"
    array = {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert jobenv.job_id(array) == "40_3" and jobenv.array_job_id(array) == "40"
    assert jobenv.numeric_job_id(array) == 43 and jobenv.numeric_job_id({}) is None
    assert jobenv.local_job_id(977) == "local-977"


def test_tasks_gpus_and_node_local_folders() -> None:
    assert jobenv.task_rank({}) == 0 and jobenv.task_rank({"SLURM_PROCID": "2"}) == 2
    assert jobenv.task_rank({"SLURM_PROCID": "x"}) == 0
    assert jobenv.task_count({"SLURM_NTASKS": "3"}) == 3
    assert jobenv.task_count({"SLURM_NTASKS": "3", "SLURM_STEP_NUM_TASKS": "2"}) == 2
    assert jobenv.visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 2,"}) == ["0", "2"]
    assert jobenv.node_local_dir({}) is None
    assert jobenv.node_local_dir({"TMPDIR": "/t", "SLURM_TMPDIR": "/s"}) == (Path("/s"), "SLURM_TMPDIR")
    assert jobenv.node_local_dir({"TMPDIR": "/t"}) == (Path("/t"), "TMPDIR")
