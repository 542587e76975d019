"""How the launcher records an end the trainer could not record itself (never end silently).

The trainer writes `run_end` for every end it sees. The launcher adds one when the trainer never
started (node preflight failed), died without writing it (killed, crashed at import), or when the
job ran out of requeues after the trainer's last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeflow import rundir


def last_run_end(run_dir: str | Path, since: float = 0.0) -> dict[str, Any] | None:
    """The last `run_end` event written at or after `since` (Unix seconds), if any."""
    found = None
    for event in rundir.read_events(rundir.RunPaths(Path(run_dir)).events):
        if event.get("event") == "run_end" and float(event.get("time", 0.0)) >= since:
            found = event
    return found


def mark_run_end(run_dir: str | Path, experiment: str, job_id: str | None, status: str, reason: str,
                 **extra: Any) -> dict[str, Any]:
    """Emit `run_end` and set run.json's status atomically; run.json is created when missing."""
    if status not in rundir.END_STATUSES:
        raise ValueError(f"unknown end status {status!r}; expected one of {rundir.END_STATUSES}")
    paths = rundir.RunPaths(Path(run_dir))
    record = rundir.EventLog(paths.events, experiment, job_id).emit(
        "run_end", status=status, reason=reason, source="launcher", **extra)
    try:
        run = rundir.read_json(paths.run) or {"experiment": experiment}
    except ValueError:
        return record  # an unreadable run.json is left for a human; the event says what happened
    if run.get("status") and run.get("status") != "running":
        # E.g. an earlier run's "completed" when this job could not even start: keep it visible.
        run["previous_status"] = run["status"]
    run["status"] = status
    run["reason"] = reason
    run["end_time"] = time.time()
    if job_id:
        ids = run.get("job_ids") if isinstance(run.get("job_ids"), list) else []
        if job_id not in ids:
            ids.append(job_id)
        run["job_ids"] = ids
        run.setdefault("job_id", job_id)
    rundir.atomic_write_json(paths.run, run)
    return record
