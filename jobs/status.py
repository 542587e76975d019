"""`python -m jobs status|cancel RUN_DIR_OR_JOB_ID`: what a run is doing, and stopping it.

A run directory is found from a job id through the job's SLURM comment (the launcher sets it to the
run directory) while SLURM knows the job, else by looking through `<output_root>/*/jobs/submissions.json`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeflow import jobenv, rundir
from edgeflow.progress import against_zero_flow, human_duration, significant

from . import backends, chain, health
from .records import SUBMISSIONS_FILE, index_lookup, index_path, submissions

JOB_ID_RE = re.compile(rf"^(\d+(_\d+)?|{re.escape(jobenv.LOCAL_PREFIX)}\d+)$")


class StatusError(LookupError):
    """The run directory or job could not be found."""


def find_run_dir(target: str, search_roots: list[Path] | None = None) -> Path:
    """A run directory from a path or a job id; StatusError says where it looked."""
    path = Path(target)
    if path.is_dir() and ((path / rundir.RUN_FILE).exists() or (path / rundir.JOBS_DIR).is_dir()):
        return path.resolve()
    if not JOB_ID_RE.match(target):
        raise StatusError(f"{target}: neither a run directory (no run.json or jobs/ in it) nor a job id")
    indexed = index_lookup(target)
    if indexed is not None and indexed.is_dir():
        return indexed.resolve()
    roots = search_roots if search_roots is not None else [Path.cwd() / "outputs"]
    for sub_file in (f for root in roots if root.is_dir() for f in root.glob(f"*/jobs/{SUBMISSIONS_FILE}")):
        run = sub_file.parent.parent
        if any(str(r.get("job_id")) == target for r in submissions(run)):
            return run.resolve()
    for backend in backends.BACKENDS.values():
        named = backend.run_dir_of(target)
        if named and Path(named).is_dir() and (Path(named) / rundir.JOBS_DIR).is_dir():
            return Path(named).resolve()
    where = ", ".join(str(r) for r in roots)
    raise StatusError(f"job {target}: no run directory records it (looked in {index_path()}, "
                      f"{where}/*/jobs/{SUBMISSIONS_FILE} and the job's SLURM comment); pass the run directory")


def _last(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((e for e in reversed(events) if e.get("event") == kind), None)


def _epoch_wall(events: list[dict[str, Any]]) -> float | None:
    """Measured wall time per epoch (evaluation and checkpoints included), the mean over the latest start's
    epochs; its first epoch counts only when alone (it pays the step's trace and follows no evaluation)."""
    walls: list[float] = []
    for e in events:
        if e.get("event") == "run_start":
            walls = []
        elif e.get("event") == "epoch":
            value = rundir.as_float(e.get("epoch_wall_seconds"))
            if value is not None and value >= 0:
                walls.append(value)
    walls = walls[1:] or walls
    return sum(walls) / len(walls) if walls else None


def describe(run_dir: Path, stall_s: float = health.DEFAULT_STALL_SECONDS) -> dict[str, Any]:
    """Everything `status` prints, as a dict (also used by the tests and `--json`)."""
    paths = rundir.RunPaths(run_dir)
    run = rundir.read_json(paths.run) or {}
    events = list(rundir.read_events(paths.events))
    records = submissions(run_dir)
    last = records[-1] if records else {}
    # Without squeue (not a login node), or when it fails, a job's absence from the queue proves nothing.
    visible = backends.queue_visible(records)
    try:
        queue = backends.active_jobs(records)
        pending = chain.pending(records, events)
    except backends.QueueError:
        queue, visible, pending = {}, False, None
    status = run.get("status", "not started" if records else "unknown")
    verdict = health.judge(run_dir, status, events, queue, records, stall_s, queue_visible=visible, pending=pending)
    return {
        "health": verdict.to_dict(),
        "state": rundir.read_state(paths.state) or {},
        "heartbeat": _last(events, "heartbeat"),
        "run_dir": str(run_dir),
        "experiment": run.get("experiment", run_dir.name),
        "status": status,
        "reason": run.get("reason", ""),
        "job_ids": run.get("job_ids", [r.get("job_id") for r in records]),
        "queue": queue,
        "last_job": last.get("job_id"),
        "stdout": last.get("stdout"),
        "stderr": last.get("stderr"),
        "epoch": _last(events, "epoch"),
        "epoch_wall_seconds": _epoch_wall(events),
        "eval": _last(events, "eval"),
        "zero_flow_epe": (_last(events, "run_start") or {}).get("zero_flow_epe"),
        "run_end": _last(events, "run_end"),
        # A warm start (init_from) also names the checkpoint it read as resumed_from; it is no resume.
        "resumes": sum(1 for e in events if e.get("event") == "run_start" and e.get("resumed_from")
                       and not e.get("warm_start_from")),
        "init_from": run.get("init_from"),
        "chain": chain.view(run_dir, records),
    }


def _round(value: Any, digits: int = 4) -> str:
    """A figure for people: 4 significant digits (trailing zeros kept), `-` when missing."""
    number = rundir.as_float(value)
    return "-" if number is None else significant(number, digits)


def format_status(info: dict[str, Any]) -> str:
    verdict = info.get("health") or {}
    lines = [f"run:        {info['run_dir']}", f"experiment: {info['experiment']}",
             f"status:     {info['status']}" + (f" ({info['reason']})" if info["reason"] else "")]
    ch = info.get("chain")
    if ch:
        lines.append(f"stage:      {ch['stage']} of {ch['stages']} (a chain: each stage starts once the one before "
                     "ended well)")
        for m in ch["members"]:
            mark = "  <- this run" if m["this"] else ""
            lines.append(f"  stage {m['stage']}:  job {m['job_id'] or '-'}, {m['status']}: {m['run_dir']}{mark}")
    if verdict:
        flag = {"dead": "LOOKS DEAD", "stalled": "STALLED"}.get(verdict["verdict"], verdict["verdict"])
        lines.append(f"verdict:    {flag}: {verdict['message']}")
        if verdict.get("advice"):
            lines.append(f"what to do: {verdict['advice']}")
        age = verdict.get("progress_age_s")
        lines.append("progress:   " + (f"last {verdict['progress_event']} {human_duration(age)} ago"
                                       if age is not None else "no progress event yet"))
    beat = info.get("heartbeat")
    if beat:
        lines.append(f"heartbeat:  epoch {beat.get('epoch')}, step {beat.get('step')}, "
                     f"{_round(beat.get('samples_per_second'), 3)} samples/s")
    queue = info["queue"]
    lines.append("queue:      " + (", ".join(f"job {j} {s}" for j, s in sorted(queue.items()))
                                   if queue else "no job of this run is queued or running"))
    if info["job_ids"]:
        lines.append(f"job ids:    {', '.join(str(j) for j in info['job_ids'])}")
    if info["epoch"]:
        e = info["epoch"]
        total = (info.get("state") or {}).get("num_epochs")
        steps = human_duration(rundir.as_float(e.get("epoch_seconds")))
        wall = info.get("epoch_wall_seconds")
        per_epoch = (f"{human_duration(wall)} per epoch with evaluation and checkpoints, {steps} of it training "
                     f"steps" if wall is not None else f"{steps} of training steps per epoch")
        lines.append(f"last epoch: {e.get('epoch')}" + (f"/{total}" if total else "") +
                     f" (step {e.get('step')}, train loss {_round(e.get('train_loss'))}, {per_epoch})")
    if info["eval"]:
        v = info["eval"]
        lines.append(f"last eval:  epoch {v.get('epoch')} mean EPE {_round(v.get('mean_epe'))} "
                     f"(best {_round(v.get('best_epe'))} at epoch {v.get('best_epoch')}; "
                     f"{v.get('bad_epochs')}/{v.get('patience')} without improvement)")
        if info.get("zero_flow_epe") is not None:
            lines.append(f"result:     {against_zero_flow(v.get('best_epe'), info['zero_flow_epe'])}")
    init = info.get("init_from")
    if isinstance(init, dict) and init.get("run"):
        lines.append(f"init from:  the {init.get('checkpoint')} checkpoint of {init['run']} "
                     f"(epoch {init.get('epoch')})")
    if info["resumes"]:
        lines.append(f"resumed:    {info['resumes']} time(s) from a checkpoint")
    if info["run_end"]:
        r = info["run_end"]
        lines.append(f"run_end:    {r.get('status')}: {r.get('reason', '')}")
    if info["stdout"]:
        lines.append(f"job log:    {info['stdout']}")
        lines.append(f"job errors: {info['stderr']}")
    return "\n".join(lines)


def cancel(run_dir: Path) -> list[str]:
    """Stop every queued or running job of the run. A running trainer checkpoints first (SIGTERM)."""
    return backends.cancel_jobs(submissions(run_dir))
