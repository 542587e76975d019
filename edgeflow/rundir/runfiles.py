"""run.json and state.json: who the run is and where it stands, each replaced atomically.

run.json is written at every start (job ids accumulate across requeues) and updated at the end;
state.json after every epoch and checkpoint. Both follow the non-finite rule of `jsonsafe`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeflow.rundir.atomic import atomic_write_json, read_json
from edgeflow.rundir.codes import END_STATUSES
from edgeflow.rundir.events import EventLog
from edgeflow.rundir.paths import RunPaths, hostname

# What every run.json written at a start holds (the trainer adds documented extras: image,
# data record, imported_from, replicas, hosts, ...).
RUN_FIELDS = ("experiment", "status", "job_ids", "host", "code_version", "train_samples", "val_samples",
              "val_source", "signature", "created", "updated")

STATE_FIELDS = ("experiment", "status", "epoch", "step", "batch_in_epoch", "num_epochs", "steps_per_epoch",
                "best_epe", "best_epoch", "bad_epochs", "patience", "fairness_counts", "fairness_gap",
                "nonfinite_steps", "updated")


def read_run(path: str | Path) -> dict[str, Any] | None:
    """run.json as a dict; None when missing. Invalid JSON raises ValueError naming the file."""
    data = read_json(path)
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def write_run_start(path: str | Path, previous: dict[str, Any] | None, *, experiment: str,
                    job_id: str | None, **fields: Any) -> dict[str, Any]:
    """Write run.json for a (re)start: status running, job ids accumulated, `created` kept."""
    job_ids = list((previous or {}).get("job_ids") or [])
    if job_id and job_id not in job_ids:
        job_ids.append(job_id)
    now = time.time()
    run: dict[str, Any] = {"experiment": experiment, "status": "running", "job_ids": job_ids,
                           "host": hostname(), **fields,
                           "created": (previous or {}).get("created", now), "updated": now}
    missing = [k for k in RUN_FIELDS if k not in run]
    if missing:
        raise ValueError(f"run.json is missing fields {missing}")
    atomic_write_json(path, run)
    return run


def update_run(path: str | Path, **fields: Any) -> dict[str, Any]:
    run = read_run(path) or {}
    run.update(fields, updated=time.time())
    atomic_write_json(path, run)
    return run


def write_state(path: str | Path, state: dict[str, Any]) -> None:
    missing = [k for k in STATE_FIELDS if k not in state]
    if missing:
        raise ValueError(f"state.json is missing fields {missing}")
    atomic_write_json(path, state)


def read_state(path: str | Path) -> dict[str, Any] | None:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def record_end(run_dir: str | Path, experiment: str, job_id: str | None, status: str, reason: str,
               **extra: Any) -> dict[str, Any]:
    """An end the trainer could not record itself (never end silently): `run_end` from the launcher,
    and run.json's status set atomically (created when missing; an unreadable one is left alone)."""
    if status not in END_STATUSES:
        raise ValueError(f"unknown end status {status!r}; expected one of {END_STATUSES}")
    paths = RunPaths(Path(run_dir))
    record = EventLog(paths.events, experiment, job_id).emit("run_end", status=status, reason=reason,
                                                             source="launcher", **extra)
    try:
        run = read_run(paths.run) or {"experiment": experiment}
    except ValueError:
        return record  # the event says what happened; a human decides about the broken run.json
    if run.get("status") and run.get("status") != "running":
        # E.g. an earlier run's "completed" when this job could not even start: keep it visible.
        run["previous_status"] = run["status"]
    run.update(status=status, reason=reason, end_time=time.time(), updated=time.time())
    if job_id:
        ids = run.get("job_ids")
        if not isinstance(ids, list):
            ids = []
        if job_id not in ids:
            ids.append(job_id)
        run["job_ids"] = ids
        run.setdefault("job_id", job_id)
    atomic_write_json(paths.run, run)
    return record
