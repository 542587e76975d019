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
LOCK_FILE = ".lock"  # held by the run's trainer (edgeflow/rundir/lock.py)
SAMPLES_FILE = "samples.json"  # the sample ids of the run's current sample set (a resume compares them)
FLOW_SAMPLES_FILE = "flow_samples.npz"  # the latest evaluation's flow pictures (rundir/flow_samples_file.py)


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
    def flow_samples(self) -> Path:
        return self.root / FLOW_SAMPLES_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def jobs(self) -> Path:
        return self.root / JOBS_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR


# Files only edgeflow writes into a run directory: one of them marks a folder as a run directory.
RUN_MARKERS = (RUN_FILE, EVENTS_FILE, LOCK_FILE, f"{JOBS_DIR}/submissions.json", f"{CHECKPOINT_DIR}/latest.json")


def foreign_folder(path: Path, choose: str = "runtime.experiment_name or runtime.output_root") -> str:
    """Why `path` must not be used as a run directory ("" when it may: absent, empty, or a run's):
    an existing folder edgeflow did not make (someone's data, /etc/ssh) is never written into. `choose`:
    what the user changes to pick another folder."""
    if not os.path.lexists(path):
        return ""
    if not path.is_dir():
        return f"{path} exists and is not a folder"
    if any((path / marker).exists() for marker in RUN_MARKERS):
        return ""
    try:
        if next(os.scandir(path), None) is None:
            return ""
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    return (f"{path} exists, is not empty and is not an edgeflow run directory (no {RUN_FILE}); it is left "
            f"alone: choose another {choose}")


def hostname() -> str:
    return socket.gethostname()
