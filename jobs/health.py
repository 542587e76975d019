"""Is a run alive? One plain verdict from its files and the queue, with what to do about it.

The files alone cannot tell: a job killed by the scheduler, the kernel's OOM killer or a node failure
never writes its end, so run.json keeps saying `running`. The verdict adds the queue (is a job of
the run still there?) and the age of the last progress event (heartbeat, epoch, eval, checkpoint, a
ranking's or search's progress: `rundir.figures.PROGRESS_EVENTS`, as the monitor's stall alert).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.progress import human_duration
from edgeflow.rundir.figures import PROGRESS_EVENTS

from .chain import Pending, not_started_reason

# The monitor's EdgeflowRunStalled alert fires after 15 minutes without progress: the same default.
DEFAULT_STALL_SECONDS = 900.0

# Verdicts, from the user's point of view; `waiting`: a later stage of a chain whose earlier stage has
# not ended yet (jobs/chain.py).
ALIVE, STALLED, DEAD, QUEUED, ENDED, UNKNOWN = "alive", "stalled", "dead", "queued", "ended", "unknown"
WAITING = "waiting"


@dataclass
class Health:
    verdict: str
    message: str
    advice: str = ""
    progress_age_s: float | None = None
    progress_event: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_progress(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in reversed(events) if e.get("event") in PROGRESS_EVENTS), None)


def _resubmit_hint(run_dir: Path, records: list[dict[str, Any]]) -> str:
    cluster = (records[-1].get("cluster") if records else None) or "NAME"
    config = Path(run_dir) / rundir.JOBS_DIR / "submitted_config.yaml"
    return f"python -m jobs submit --config {config} --cluster {cluster}"


def judge(run_dir: Path, status: str, events: list[dict[str, Any]], queue: dict[str, str],
          records: list[dict[str, Any]], stall_s: float = DEFAULT_STALL_SECONDS,
          now: float | None = None, queue_visible: bool = True, pending: Pending | None = None) -> Health:
    """The verdict on one run: `status` from run.json, `queue` = its jobs still queued or running
    (`queue_visible` False: SLURM jobs, but no squeue on this machine to ask), `pending` = what a later
    stage of a chain that has not started yet waits for (chain.pending)."""
    now = time.time() if now is None else now
    ev = last_progress(events)
    age = max(now - float(ev["time"]), 0.0) if ev and isinstance(ev.get("time"), (int, float)) else None
    kind = ev.get("event") if ev else None
    ago = f"{human_duration(age)} ago" if age is not None else "never"
    limit = human_duration(stall_s)
    logs = f"python -m jobs logs {run_dir}"
    running_jobs = ", ".join(f"{j} {s}" for j, s in sorted(queue.items()))

    def health(verdict: str, message: str, advice: str = "") -> Health:
        return Health(verdict, message, advice, None if age is None else round(age, 1), kind)

    if pending is not None:
        # A later stage of a chain, not started since it was submitted: whatever an earlier submission
        # left in run.json, what counts is the stage before it.
        b = pending.blocker
        if queue:
            if b is None:
                return health(QUEUED, f"job {running_jobs}; the stages before it ended well, the trainer has not "
                              "started yet")
            if b.status is None:
                return health(WAITING, f"waiting for stage {b.stage} (job {b.job_id}) to end well; job "
                              f"{running_jobs}")
            return health(WAITING, f"stage {b.stage} (job {b.job_id}) ended {b.status}, so this stage will not "
                          f"start; job {running_jobs} is leaving the queue")
        if not queue_visible:
            return health(UNKNOWN, "a later stage of a chain whose jobs ran on SLURM, but squeue is not available "
                          "here", "run `python -m jobs status` on the cluster's login node")
        if b is not None and b.status is not None:
            return health(ENDED, not_started_reason(b.stage, b.job_id, b.run_dir, b.status, b.reason)
                          + "; this stage's job was removed from the queue",
                          f"see python -m jobs status {b.run_dir}; once fixed, submit the chain again")
    if status in rundir.END_STATUSES:
        if queue:
            return health(QUEUED, f"{status}; job {running_jobs} will resume it from the last checkpoint")
        advice = (f"to resume from the last checkpoint: {_resubmit_hint(run_dir, records)}"
                  if status in ("preempted", "timeout") else "")
        return health(ENDED, f"{status}; nothing of this run is queued or running", advice)
    if status == "running":
        if queue:
            if age is not None and age > stall_s:
                return health(STALLED, f"job {running_jobs}, but no progress for {human_duration(age)} "
                              f"(more than {limit}): the trainer looks hung (input pipeline, a deadlock, a "
                              f"GPU fault)", f"read the log ({logs}); if it stays silent, cancel "
                              f"(python -m jobs cancel {run_dir}) and submit again to resume")
            return health(ALIVE, f"job {running_jobs}; last progress ({kind}) {ago}")
        if not records:
            # Started by hand (python -m edgeflow train): no queue to ask, only the files.
            if age is not None and age > stall_s:
                return health(DEAD, f"run.json says running, but no progress for {human_duration(age)} "
                              f"(more than {limit}) and no job of the launcher",
                              "if no trainer runs for it any more, start it again: it resumes from the "
                              "last checkpoint")
            return health(ALIVE, f"started outside the launcher; last progress ({kind}) {ago}")
        if not queue_visible:
            return health(UNKNOWN, f"its jobs ran on SLURM, but squeue is not available here; last progress "
                          f"({kind}) {ago}", "run `python -m jobs status` on the cluster's login node")
        if age is not None and age <= stall_s:
            return health(UNKNOWN, f"no job of this run is in the queue, but the last progress was only {ago}: "
                          "it may have just ended", f"look again in a minute, or read the log ({logs})")
        return health(DEAD, f"run.json says running, but no job of this run is queued or running and the "
                      f"last progress was {ago}: the job ended without recording it (killed by the "
                      f"scheduler, out of memory, or a node failure)",
                      f"read the log ({logs}); to resume from the last checkpoint: "
                      f"{_resubmit_hint(run_dir, records)}")
    # Nothing written by a trainer yet.
    after = " ".join(str(j) for j in (records[-1].get("after") or [])) if records else ""
    if queue:
        waits = f", waiting for job(s) {after} to end well" if after else ""
        return health(QUEUED, f"job {running_jobs}; the trainer has not started yet{waits}")
    if records:
        if after:
            return health(DEAD, f"submitted to start after job(s) {after}, but it left the queue before it "
                          "started: one of them did not end well (the scheduler removes a job whose "
                          "dependency can no longer be met)",
                          f"see `python -m jobs status` of job(s) {after}; once they ended well, submit again "
                          f"with {_resubmit_hint(run_dir, records)}")
        return health(DEAD, "submitted, but the job left the queue before the trainer started",
                      f"read the job's log ({logs}); submit again with {_resubmit_hint(run_dir, records)}")
    return health(UNKNOWN, "no trainer or launcher has written to this directory")
