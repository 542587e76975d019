"""The file names of a run directory, `<output_root>/<experiment_name>/`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
JOBS_DIR = "jobs"
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "train.log"
SAMPLES_FILE = "samples.json"  # the sample ids of the run's current sample set (a resume compares them)


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def run(self) -> Path:
        return self.root / RUN_FILE

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def jobs(self) -> Path:
        return self.root / JOBS_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR


def slurm_job_id() -> str | None:
    """The job id as SLURM shows it in squeue (array elements as JOB_TASK)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("EDGEFLOW_JOB_ID") or None


def hostname() -> str:
    return socket.gethostname()
