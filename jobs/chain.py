"""Chains of stages: jobs that start only after the jobs before them ended and their runs ended well.

A submission of several batches (jobs/submit.py) is a chain; batch K is stage K. Every stage's
submission record carries a `chain` entry: the chain's id, its stage number, the run directories of
every stage and the earlier stages' jobs it depends on. From that, the node side decides whether it
may start (jobs/supervise.py), and `jobs status` / `list` say which stage a run is, what it waits for
and what comes after it.

Light: the standard library and the run-directory contract only (no submitit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.rundir import RunPaths

from . import backends
from .records import submissions

# Run statuses a later stage may build on.
OK_STATUSES = tuple(s for s, code in rundir.STATUS_EXIT_CODE.items() if code == rundir.EXIT_OK)


def _time(event: dict[str, Any]) -> float:
    value = rundir.as_float(event.get("time"))
    return value if value is not None else 0.0


def run_outcome(run_dir: str | Path, since: float) -> tuple[str, str]:
    """How a run ended after `since` (its submission): the last run_end's status and reason.

    A run that already ended well and was not started again since (the trainer found nothing left to
    do, which it does not record) keeps that end: a chain submitted again after a later stage failed
    builds on its finished first stage.
    """
    ends = [e for e in rundir.read_events(RunPaths(Path(run_dir)).events) if e.get("event") in ("run_start", "run_end")]
    recent = [e for e in ends if _time(e) >= since]
    end = next((e for e in reversed(recent) if e.get("event") == "run_end"), None)
    if end is not None:
        return str(end.get("status")), str(end.get("reason", ""))
    if not recent:
        earlier = next((e for e in reversed(ends) if e.get("event") == "run_end"), None)
        if earlier is not None and earlier.get("status") in OK_STATUSES:
            return str(earlier["status"]), f"already {earlier['status']} before this submission; nothing left to do"
    return "unknown", "no run_end was written after the submission; see the job log"


def started_since(events: list[dict[str, Any]], since: float) -> bool:
    """Whether a run started (or ended) at or after `since`."""
    return any(e.get("event") in ("run_start", "run_end") and _time(e) >= since for e in events)


def not_started_reason(stage: int, job_id: str, run_dir: str, status: str, why: str) -> str:
    """What a stage that never started records: which earlier stage ended how."""
    what = f"stage {stage} (run {run_dir})" if stage else f"job {job_id} (run {run_dir})"
    return f"not started: {what} ended {status}" + (f": {why}" if why else "")


def record_entry(chain_id: str, stage: int, runs: list[list[str]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """The `chain` entry of a stage's submission record (after: stage, job_id, run_dir, submitted_at)."""
    return {"id": chain_id, "stage": stage, "stages": len(runs), "runs": runs, "after": after}


@dataclass(frozen=True)
class Blocker:
    """The earlier stage a stage's job waits for (status None: it has not ended yet)."""

    stage: int
    job_id: str
    run_dir: str
    status: str | None
    reason: str = ""


@dataclass(frozen=True)
class Pending:
    """A chain stage whose trainer has not started since its submission; blocker None: the stages
    before it ended well."""

    stage: int
    blocker: Blocker | None


def _record_of(run_dir: str, job_id: str) -> dict[str, Any] | None:
    return next((r for r in reversed(submissions(Path(run_dir))) if str(r.get("job_id")) == job_id), None)


def pending(records: list[dict[str, Any]], events: list[dict[str, Any]]) -> Pending | None:
    """For a run whose last submission is a later stage of a chain and has not started since: what it
    waits for. QueueError when the queue cannot say whether an earlier stage's job is still there."""
    last = records[-1] if records else {}
    chain = last.get("chain") or {}
    deps = sorted(chain.get("after") or [], key=lambda d: int(d.get("stage", 0)))
    if not deps or started_since(events, float(last.get("submitted_at", 0.0))):
        return None
    dep_records = [r for r in (_record_of(str(d["run_dir"]), str(d["job_id"])) for d in deps) if r]
    active = backends.active_jobs(dep_records)
    waiting: Blocker | None = None
    for d in deps:
        stage, job_id, run = int(d.get("stage", 0)), str(d["job_id"]), str(d["run_dir"])
        if job_id in active:
            waiting = Blocker(stage, job_id, run, None)  # the latest stage still to end: the one next in line
            continue
        status, why = run_outcome(run, float(d.get("submitted_at", 0.0)))
        if status not in OK_STATUSES:
            return Pending(int(chain.get("stage", 0)), Blocker(stage, job_id, run, status, why))
    return Pending(int(chain.get("stage", 0)), waiting)


def view(run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chain of the run's last submission, for `jobs status`: this run's stage and every stage's
    run directory, job and status (None when the last submission was not part of a chain)."""
    last = records[-1] if records else {}
    chain = last.get("chain")
    if not chain:
        return None
    stages = []
    for number, runs in enumerate(chain.get("runs") or [], 1):
        for run in runs:
            record = next((r for r in reversed(submissions(Path(run)))
                           if (r.get("chain") or {}).get("id") == chain.get("id")), None)
            paths = RunPaths(Path(run))
            status = (rundir.read_json(paths.run) or {}).get("status", "not started")
            if record is None or not started_since(list(rundir.read_events(paths.events)),
                                                   float(record.get("submitted_at", 0.0))):
                status = "not started"  # whatever an earlier submission left in run.json
            stages.append({"stage": number, "run_dir": str(run), "job_id": record.get("job_id") if record else None,
                           "status": status,
                           "this": Path(run).resolve() == Path(run_dir).resolve()})
    return {"id": chain.get("id"), "stage": chain.get("stage"), "stages": chain.get("stages"), "members": stages}
