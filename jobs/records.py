"""What was submitted: the per-run `jobs/submissions.json` and the user's job-id index.

Light (no submitit): `jobs status`, `jobs list` and `jobs cancel` read these; which recorded jobs are
still queued or running is the executor backend's question (jobs/backends.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.console import console_logger

SUBMITTED_CONFIG = "submitted_config.yaml"
SUBMISSIONS_FILE = "submissions.json"
SWEEPS_DIR = "_sweeps"
# Job id -> run directory, for `status JOB_ID` after SLURM has forgotten the job.
INDEX_ENV = "EDGEFLOW_JOBS_INDEX"


def index_path() -> Path:
    if os.environ.get(INDEX_ENV):
        return Path(os.environ[INDEX_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgeflow" / "jobs.jsonl"


def index_lookup(job_id: str) -> Path | None:
    try:
        lines = index_path().read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(entry.get("job_id")) == job_id:
            return Path(entry["run_dir"])
    return None


def index_add(job_id: str, run_dir: Path) -> None:
    path = index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"job_id": job_id, "run_dir": str(run_dir), "time": time.time()}) + "\n")
    except OSError as exc:  # a read-only home must not fail a submission that already happened
        console_logger("jobs", "jobs: %(message)s").warning("could not record job %s in %s: %s", job_id, path, exc)


def submissions(run_dir: Path) -> list[dict[str, Any]]:
    data = rundir.read_json(Path(run_dir) / rundir.JOBS_DIR / SUBMISSIONS_FILE)
    return list(data.get("submissions", [])) if data else []


def record_submission(run_dir: Path, record: dict[str, Any]) -> None:
    path = Path(run_dir) / rundir.JOBS_DIR / SUBMISSIONS_FILE
    entries = submissions(run_dir) + [record]
    rundir.atomic_write_json(path, {"submissions": entries})
