"""The one submission pipeline: training jobs, sweeps and the rank/search arrays all go through it.

A submission is a list of batches, each one job or one job array, each after the jobs of the one
before (a chain; usually a single batch). For all of them, in this order and before anything is
queued: the task and bind checks, the preflight gate of every run, the busy check (a run directory
with a job still queued or running is refused); then a dry run prints what would be queued, or the
submitted config is written, the jobs are queued, recorded (`<run>/jobs/submissions.json` and the
user's job-id index) and summarised, and `--wait` follows their logs until they end.

What differs between the kinds of job is only how their units are built (jobs/kinds.py); what
differs between SLURM and this machine is in jobs/backends.py. submitit's folder is `<run>/jobs/`
when every unit of a batch shares one run directory; otherwise (a sweep) the array shares
`<output_root>/_sweeps/<name>-<time>/` and each run's `jobs/` gets links to its own logs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from submitit.core.utils import FailedJobError, FailedSubmissionError

from edgeflow import config as efconfig
from edgeflow import rundir
from edgeflow.config import Config, ConfigError
from edgeflow.console import console_logger
from edgeflow.train.layout import check_layout, replicas_of_job

from . import backends
from .backends import Backend, Dependency, Queued, QueueError, SubmitError
from .chain import OK_STATUSES, record_entry, run_outcome
from .gate import run_gate
from .launch import NodeSpec, container_binds, trainer_command
from .profile import ClusterProfile
from .records import SUBMITTED_CONFIG, SWEEPS_DIR, index_add, record_submission, submissions
from .supervise import NodeJob

log = console_logger("jobs", "jobs: %(message)s")


@dataclass(frozen=True)
class Unit:
    """One job (or array element): the run directory it writes, the config its gate checks, its command."""

    run_dir: Path
    experiment: str
    cfg: Config            # checked by the preflight, written as the run's submitted_config.yaml
    source: str            # what the user named: a config file, or the trained run
    args: tuple[str, ...] = ()       # Python arguments to run instead of training (rank, search)
    overrides: tuple[str, ...] = ()  # what makes this element differ from the others (--dry-run shows it)


@dataclass
class Batch:
    """Units queued together: one job, or one job array."""

    kind: str                        # "train", "rank", "search": recorded with every job
    units: list[Unit]
    name: str                        # the SLURM job name
    array_parallelism: int | None = None
    # A job of several SLURM tasks is one multi-worker training; other kinds run one process per job.
    multi_task: bool = True
    rename_hint: str = "choose another runtime.experiment_name"
    # A line for each run after --wait (a ranking: how many results it holds).
    outcome: Callable[[Unit], str] | None = None

    def runs(self) -> list[Unit]:
        """The first unit of each run directory (an array of shards shares one)."""
        first: dict[Path, Unit] = {}
        for unit in self.units:
            first.setdefault(unit.run_dir, unit)
        return list(first.values())


@dataclass
class Submitted:
    unit: Unit
    queued: Queued
    folder: Path
    submitted_at: float
    after: tuple[Dependency, ...] = field(default=())

    @property
    def job_id(self) -> str:
        return self.queued.job_id

    def dependency(self, stage: int) -> Dependency:
        pid = self.queued.fields.get("pid")
        return Dependency(self.job_id, str(self.unit.run_dir), self.submitted_at, int(pid) if pid else None, stage)


class Refused(Exception):
    """Nothing was queued; `code` is the exit code (rundir/codes.py), the message says why."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- checks before anything is queued ------------------------------------------------------------

def check_tasks(batch: Batch, profile: ClusterProfile) -> None:
    """Refuse (a ConfigError) a job whose processes could not work together, before queueing.

    Several SLURM tasks are one multi-worker run: each config must ask for that, and the replica count
    (tasks x GPUs per task, a CPU task being one replica) must suit train.distribute_mode. Other kinds
    (rank, search) run one process per job.
    """
    tasks = backends.of(profile).tasks(profile)
    if tasks == 1:
        return
    s = profile.slurm
    if not batch.multi_task:
        raise ConfigError(f"cluster profile {profile.name}: starts {tasks} tasks per job (slurm.nodes x "
                          f"slurm.tasks_per_node), but a {batch.kind} job runs one process; use "
                          "--profile-set slurm.nodes=1 --profile-set slurm.tasks_per_node=1")
    replicas = replicas_of_job(tasks, s.gpus_per_node // s.tasks_per_node)
    for unit in batch.runs():
        t = unit.cfg.train
        if t.distribute not in ("multi_worker", "auto"):
            raise ConfigError(f"{unit.source}: train.distribute: {t.distribute!r}, but cluster profile {profile.name} "
                              f"starts {tasks} trainers per job (slurm.nodes x slurm.tasks_per_node), which would "
                              f"each train alone into one run directory; set train.distribute: multi_worker")
        try:
            check_layout(t.distribute_mode, replicas, t.batch_size)
        except ConfigError as exc:
            raise ConfigError(f"{unit.source}: cluster profile {profile.name} ({s.nodes} node(s) x "
                              f"{s.tasks_per_node} task(s), {s.gpus_per_node} GPU(s) per node): {exc}") from None


def _spec(unit: Unit, profile: ClusterProfile, after: Sequence[Dependency] = ()) -> NodeSpec:
    return NodeSpec(config_path=str(unit.run_dir / rundir.JOBS_DIR / SUBMITTED_CONFIG), run_dir=str(unit.run_dir),
                    experiment=unit.experiment, profile=profile, workdir=str(Path.cwd()), args=unit.args,
                    after=tuple(after))


def check_binds(batch: Batch, profile: ClusterProfile) -> None:
    """Refuse (launch.BindError, a ConfigError) a folder the image could not be given, before queueing."""
    if not profile.uses_container:
        return
    for unit in batch.runs():
        container_binds(_spec(unit, profile), unit.cfg)


def check_run_dirs(batch: Batch) -> None:
    """Refuse (ConfigError) a run directory that is an existing folder edgeflow did not make: the
    submission would write its jobs/ folder into someone else's data."""
    for unit in batch.runs():
        foreign = rundir.foreign_folder(unit.run_dir)
        if foreign:
            raise ConfigError(f"{unit.source}: {foreign}")


def check(batches: Sequence[Batch], profile: ClusterProfile) -> None:
    """The checks that need no data and no queue (ConfigError)."""
    for batch in batches:
        check_run_dirs(batch)
        check_tasks(batch, profile)
        check_binds(batch, profile)


def gate(batches: Sequence[Batch], out: TextIO) -> None:
    """The preflight of every run; Refused (exit 4) when any fails."""
    refused = False
    for batch in batches:
        for unit in batch.runs():
            print(f"== preflight: {unit.experiment} ({unit.source}) ==", file=out, flush=True)
            result = run_gate(unit.cfg)
            if result.report:
                print(result.report, file=out, flush=True)
            if not result.ok:
                refused = True
                log.error(f"preflight failed for {unit.experiment}: {result.reason}")
    if refused:
        raise Refused("nothing was queued: fix the data (or the config) and submit again", rundir.EXIT_DATA_ERROR)


def check_busy(batches: Sequence[Batch]) -> None:
    """Refuse a run directory that has a job still queued or running: two writers must not share it."""
    for batch in batches:
        for unit in batch.runs():
            try:
                busy = backends.active_jobs(submissions(unit.run_dir))
            except QueueError as exc:
                raise Refused(f"cannot tell whether run {unit.run_dir} has a job in the queue ({exc}); "
                              "nothing was queued: try again", rundir.EXIT_SUBMIT_FAILED) from None
            if busy:
                listing = ", ".join(f"{j} ({s})" for j, s in sorted(busy.items()))
                raise Refused(f"run {unit.run_dir} already has a job in the queue: {listing}; two jobs must not "
                              f"write one run directory. Cancel it (python -m jobs cancel {unit.run_dir}) or "
                              f"{batch.rename_hint}", rundir.EXIT_SUBMIT_FAILED)


# -- where, and what would be queued -------------------------------------------------------------

def folder_of(batch: Batch, stamp: str | None = None) -> tuple[Path, str]:
    """submitit's folder of the batch and the job comment (`jobs status JOB_ID` finds the run by it)."""
    runs = batch.runs()
    if len(runs) == 1:
        return runs[0].run_dir / rundir.JOBS_DIR, str(runs[0].run_dir)
    first = runs[0]
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    folder = Path(first.cfg.runtime.output_root) / SWEEPS_DIR / f"{first.experiment}-{stamp}"
    return folder, str(folder)


def dry_run_text(batches: Sequence[Batch], profile: ClusterProfile) -> str:
    """The batch script (or the local command) and each element's command, as they would be queued."""
    backend = backends.of(profile)
    parts = [f"# dry run: nothing was queued (cluster {profile.name}, executor {profile.executor})"]
    after: list[Dependency] = []
    for k, batch in enumerate(batches):
        folder, comment = folder_of(batch, "<time>")
        if len(batches) > 1:
            parts.append(f"# stage {k + 1} of {len(batches)}: {batch.name}")
            parts.append("#   starts " + (f"after {_after_text(after)} ended well" if after else "first"))
        parts += backend.dry_run(profile, folder, batch.name, comment, len(batch.units), batch.array_parallelism,
                                 after)
        parts.append("# command on the node, per element:")
        many = len(batch.units) > 1
        for i, unit in enumerate(batch.units):
            cmd = shlex.join(trainer_command(_spec(unit, profile), unit.cfg))
            parts.append(f"#   {f'[{i}] ' if many else ''}{unit.experiment}: {cmd}")
            if unit.overrides:
                parts.append(f"#       overrides: {' '.join(unit.overrides)}")
        after += [Dependency(f"<{batch.name}:{i}>", str(u.run_dir), 0.0, stage=k + 1)
                  for i, u in enumerate(batch.units)]
    return "\n".join(parts)


def _after_text(after: Sequence[Dependency]) -> str:
    """`stage 1 (job 12) and stage 2 (job 13)`: the earlier stages of a chain and their jobs."""
    by_stage: dict[int, list[str]] = {}
    for d in after:
        by_stage.setdefault(d.stage, []).append(d.job_id)
    return " and ".join(f"stage {k} (job{'s' if len(ids) > 1 else ''} {' '.join(ids)})"
                        for k, ids in sorted(by_stage.items()))


# -- queueing --------------------------------------------------------------------------------------

class _Undo:
    """What a submission creates, removed again when the scheduler refuses it.

    submitit needs its final folder to write the pickle and the batch script, so they cannot be
    written elsewhere and moved; instead every file and folder that did not exist before is removed,
    and a submitted_config.yaml of an earlier submission gets its old text back.
    """

    def __init__(self, folders: list[Path]) -> None:
        self.before: dict[Path, set[str] | None] = {}
        self.configs: dict[Path, bytes] = {}
        for folder in folders:
            top = folder
            while not top.parent.exists():
                top = top.parent
            self.before.setdefault(top, None if not top.exists() else set(os.listdir(top)))
            if folder.is_dir():
                self.before[folder] = set(os.listdir(folder))
                config = folder / SUBMITTED_CONFIG
                if config.is_file():
                    self.configs[config] = config.read_bytes()

    def undo(self) -> None:
        for folder, names in self.before.items():
            if names is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not folder.is_dir():
                continue
            for name in set(os.listdir(folder)) - names:
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for config, data in self.configs.items():
            rundir.atomic_write_bytes(config, data)


def _queue(batch: Batch, profile: ClusterProfile, folder: Path, comment: str,
           after: Sequence[Dependency]) -> list[Queued]:
    """One submitit job per unit (one array when there are several); SubmitError when the scheduler refuses."""
    backend = backends.of(profile)
    for unit in batch.runs():
        rundir.atomic_write_text(unit.run_dir / rundir.JOBS_DIR / SUBMITTED_CONFIG, efconfig.dump(unit.cfg))
    ex = backend.executor(profile, folder, batch.name, comment, batch.array_parallelism, after)
    jobs = []
    try:
        with backend.submitting():
            if len(batch.units) == 1:
                jobs = [ex.submit(NodeJob(_spec(batch.units[0], profile, after)))]
            else:
                with ex.batch():
                    for unit in batch.units:
                        jobs.append(ex.submit(NodeJob(_spec(unit, profile, after))))
    except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise SubmitError(f"sbatch refused the job: {detail.strip()}") from None
    out = []
    for job in jobs:
        job_id, fields = backend.identify(job)
        out.append(Queued(job_id, Path(job.paths.stdout), Path(job.paths.stderr), fields, job))
    return out


def _record(batch: Batch, queued: list[Queued], profile: ClusterProfile, folder: Path, submitted_at: float,
            after: Sequence[Dependency], chain: dict[str, Any] | None = None) -> list[Submitted]:
    out = []
    for unit, q in zip(batch.units, queued, strict=True):
        jobs_dir = unit.run_dir / rundir.JOBS_DIR
        if q.stdout.parent.resolve() != jobs_dir.resolve():
            # Array element of a sweep: its logs live in the sweep folder; link them from the run directory.
            for target in (q.stdout, q.stderr):
                link = jobs_dir / target.name
                link.unlink(missing_ok=True)
                link.symlink_to(target)
        record = {
            "job_id": q.job_id, "executor": profile.executor, "cluster": profile.name, "profile": profile.source,
            "kind": batch.kind, "submitted_at": submitted_at, "source_config": unit.source,
            "config": str(jobs_dir / SUBMITTED_CONFIG), "folder": str(folder), "stdout": str(q.stdout),
            "stderr": str(q.stderr), **q.fields,
        }
        if unit.overrides:
            record["overrides"] = list(unit.overrides)
        if after:
            record["after"] = [d.job_id for d in after]
        if chain is not None:
            record["chain"] = chain
        record_submission(unit.run_dir, record)
        index_add(q.job_id, unit.run_dir)
        out.append(Submitted(unit, q, folder, submitted_at, tuple(after)))
    return out


def submit(batches: Sequence[Batch], profile: ClusterProfile) -> list[Submitted]:
    """Queue the batches, each after every job of the one before. The caller ran the checks and the gate.

    A refused submission leaves nothing behind (no run folder `jobs status` would call unknown), and a
    chain is queued whole or not at all: a later batch the scheduler refuses cancels the earlier ones.
    Batch K of several is stage K of a chain: it depends on every job of every earlier stage (so the
    first stage that failed is the one a later stage names), and its records say so (jobs/chain.py).
    """
    done: list[Submitted] = []
    after: list[Dependency] = []
    chain_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    runs = [[str(u.run_dir) for u in batch.runs()] for batch in batches]
    for k, batch in enumerate(batches, 1):
        folder, comment = folder_of(batch)
        undo = _Undo([*(u.run_dir / rundir.JOBS_DIR for u in batch.runs()), folder])
        started = time.time()
        chain = None
        if len(batches) > 1:
            chain = record_entry(chain_id, k, runs, [{"stage": d.stage, "job_id": d.job_id, "run_dir": d.run_dir,
                                                      "submitted_at": d.submitted_at} for d in after])
        try:
            queued = _queue(batch, profile, folder, comment, after)
            subs = _record(batch, queued, profile, folder, started, after, chain)
        except BaseException:
            undo.undo()
            if done:
                cancelled = backends.of(profile).cancel([{"job_id": s.job_id, **s.queued.fields} for s in done])
                log.error(f"cancelled the earlier stage(s) of the chain: {', '.join(cancelled) or 'none left'}")
            raise
        done += subs
        after += [s.dependency(k) for s in subs]
    return done


# -- telling the user, and waiting ---------------------------------------------------------------

def summary(subs: Sequence[Submitted]) -> str:
    """What was queued, per run directory, with the commands to follow it."""
    lines = []
    if len(subs) > 1:
        folders = sorted({str(s.folder) for s in subs})
        lines.append(f"submitted a job array of {len(subs)} elements (submitit folder {', '.join(folders)})"
                     if len(folders) == 1 else f"submitted {len(subs)} jobs")
    by_run: dict[Path, list[Submitted]] = {}
    for s in subs:
        by_run.setdefault(s.unit.run_dir, []).append(s)
    for run, group in by_run.items():
        ids = " ".join(s.job_id for s in group)
        lines.append(f"submitted job{'s' if len(group) > 1 else ''} {ids}: experiment {group[0].unit.experiment}")
        lines.append(f"  run directory: {run}")
        if len(group) == 1:
            lines += [f"  job log:       {group[0].queued.stdout}", f"  job errors:    {group[0].queued.stderr}"]
        else:
            lines.append(f"  job logs:      {run / rundir.JOBS_DIR}")
        if group[0].after:
            lines.append(f"  starts after:  {_after_text(group[0].after)} ended well")
        lines += [f"  status:        python -m jobs status {run}",
                  f"  monitor:       python -m monitor --run {run} --http 127.0.0.1:9464   (make monitor RUN={run})",
                  f"  cancel:        python -m jobs cancel {run}"]
    return "\n".join(lines)


def wait(subs: Sequence[Submitted], backend: Backend, poll_s: float = 5.0,
         stream: TextIO | None = None) -> dict[Path, tuple[str, str]]:
    """Block until every job ended; (status, reason) per run directory.

    With `stream`, the jobs' logs (the trainer's progress lines among them) are copied to it as they
    grow, prefixed with the experiment when there are several runs."""
    from .logs import Follower

    runs: dict[Path, Submitted] = {}
    for s in subs:
        runs.setdefault(s.unit.run_dir, s)
    followers = {run: Follower(run) for run in runs} if stream is not None else {}

    def copy_logs() -> None:
        for run, follower in followers.items():
            for _, text in follower.poll():
                print(f"[{runs[run].unit.experiment}] {text}" if len(runs) > 1 else text, file=stream)
        if stream is not None:
            stream.flush()

    queued = [s.queued for s in subs]
    while True:
        try:
            running = backend.running(queued)
        except QueueError as exc:  # ask again at the next poll; an unanswered squeue is not an empty queue
            log.warning(f"{exc}; asking again")
            running = queued
        copy_logs()
        if not running:
            break
        time.sleep(poll_s)
    copy_logs()
    return {run: run_outcome(run, min(x.submitted_at for x in subs if x.unit.run_dir == run)) for run in runs}


def launch(batches: Sequence[Batch], profile: ClusterProfile, *, dry_run: bool = False, wait_end: bool = False,
           out: TextIO | None = None) -> int:
    """The command: checks, gate, busy check, then the dry run or the submission (and --wait). Exit code."""
    out = out or sys.stdout
    try:
        check(batches, profile)
        gate(batches, out)
        check_busy(batches)
    except ConfigError as exc:
        log.error(str(exc))
        return rundir.EXIT_BAD_INPUT
    except Refused as exc:
        log.error(str(exc))
        return exc.code
    if dry_run:
        print(dry_run_text(batches, profile), file=out)
        return rundir.EXIT_OK
    try:
        subs = submit(batches, profile)
    except SubmitError as exc:
        log.error(str(exc))
        return rundir.EXIT_SUBMIT_FAILED
    print(summary(subs), file=out, flush=True)
    if not wait_end:
        return rundir.EXIT_OK
    print("waiting for the job(s) to end; their logs follow ...", file=out, flush=True)
    results = wait(subs, backends.of(profile), stream=out)
    for batch in batches:
        for unit in batch.runs():
            status, reason = results[unit.run_dir]
            print(f"{unit.experiment}: {status}" + (f" ({reason})" if status not in OK_STATUSES else ""), file=out)
            if batch.outcome is not None:
                print(batch.outcome(unit), file=out)
    return rundir.EXIT_OK if all(st in OK_STATUSES for st, _ in results.values()) else rundir.EXIT_FAILED
