"""`python -m jobs rank|search`: a ranking as a SLURM job array, a search as a job, after the same gate.

A ranking of N shards becomes an array of N elements; element K runs
`python -m edgeflow rank ... --shard K/N` on its own node/GPU, and all elements append to the same
RUN/rank/<name>/results.csv (safe: edgeflow/nas/results.py). Each element is an ordinary NodeJob with
the rank command in place of the trainer, so the node gate, the image, the signal forwarding and the
requeue are training's: on SIGUSR2/SIGTERM the command stops after its current arch with exit 75 and
the requeued element skips every arch already done. The folder RUN/rank/<name>/ is the job's run
directory for the launcher and the monitor: its events.jsonl carries the progress (`search` events),
`run_end`, and jobs/ holds submitit's files.

Light: the checks run on the login node without TensorFlow.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from edgeflow import config as efconfig
from edgeflow import rundir
from edgeflow.config import ConfigError
from edgeflow.data.scan import DataError
from edgeflow.nas import rank as rank_mod
from edgeflow.nas import results as results_mod

from .gate import run_gate
from .launch import NodeSpec, trainer_command
from .records import SUBMITTED_CONFIG, active_jobs, index_add, record_submission, squeue_states


class NasJobError(RuntimeError):
    """Refused before anything was queued; `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory of the trained supernet")
    p.add_argument("--cluster", default="local", metavar="NAME",
                   help="cluster profile: configs/clusters/NAME.yaml or a path (default: local)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="checkpoint (default best)")
    p.add_argument("--name", help="results folder name (default as the edgeflow command)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a key of the run's config")
    p.add_argument("--profile-set", action="append", default=[], metavar="KEY=VALUE", dest="profile_overrides",
                   help="override a cluster profile value, e.g. --profile-set slurm.time_min=30")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the batch script; queue nothing")
    p.add_argument("--wait", action="store_true", help="wait until the job(s) end")


def add_parsers(sub: Any) -> None:
    """`rank` and `search` subcommands of `python -m jobs`."""
    from edgeflow.commands.rank import add_selection
    from edgeflow.commands.search import add_settings

    r = sub.add_parser("rank", help="rank archs of a trained run as a job array (one shard per element)",
                       description="Rank archs of a trained run as a job array, one shard per element.")
    add_common(r)
    add_selection(r)
    r.add_argument("--shards", type=int, default=1, metavar="N", help="array elements (default 1)")
    r.add_argument("--array-parallelism", type=int, metavar="N", help="at most N elements at the same time")
    s = sub.add_parser("search", help="NSGA-II search of a trained run as a job (resumes on requeue)",
                       description="NSGA-II search of a trained run as a job; it resumes on requeue.")
    add_common(s)
    add_settings(s)


def _absolute(cfg: efconfig.Config) -> efconfig.Config:
    from .sweep import absolutize

    return absolutize(cfg, Path.cwd())


def _set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _gate(cfg: efconfig.Config) -> None:
    gate = run_gate(cfg)
    print("== preflight ==")
    if gate.report:
        print(gate.report)
    if not gate.ok:
        raise NasJobError(f"preflight failed: {gate.reason}; nothing was queued", rundir.EXIT_DATA_ERROR)


def _plan_rank(args: argparse.Namespace) -> tuple[Path, str, list[list[str]], efconfig.Config]:
    from edgeflow.commands.rank import selection_of

    if args.shards < 1:
        raise NasJobError(f"--shards: must be >= 1, got {args.shards}", rundir.EXIT_BAD_INPUT)
    run_dir = str(Path(args.run).resolve())
    plan = rank_mod.prepare(run_dir, selection_of(args), checkpoint=args.checkpoint, name=args.name,
                            overrides=args.overrides)
    if args.shards > len(plan.codes):
        raise NasJobError(f"--shards {args.shards}: more shards than the {len(plan.codes)} selected archs",
                          rundir.EXIT_BAD_INPUT)
    base = ["-m", "edgeflow", "rank", "--run", run_dir, "--checkpoint", args.checkpoint, "--name", plan.name,
            *selection_of(args).args(), *_set_args(args.overrides)]
    commands = [[*base, "--shard", f"{k}/{args.shards}"] for k in range(args.shards)]
    print(f"rank {plan.name}: {len(plan.codes)} archs, {len(plan.done)} already done for checkpoint "
          f"{plan.key.checkpoint}; {args.shards} element(s)")
    return plan.folder, plan.experiment, commands, plan.run.cfg


def _plan_search(args: argparse.Namespace) -> tuple[Path, str, list[list[str]], efconfig.Config]:
    from edgeflow.commands.search import settings_of
    from edgeflow.nas import search as search_mod

    run_dir = str(Path(args.run).resolve())
    settings = settings_of(args)
    plan = search_mod.prepare(run_dir, settings, checkpoint=args.checkpoint, name=args.name,
                              overrides=args.overrides)
    cmd = ["-m", "edgeflow", "search", "--run", run_dir, "--checkpoint", args.checkpoint, "--name", plan.name,
           "--objectives", ",".join(settings.objectives), "--evaluations", str(settings.evaluations),
           "--population", str(settings.population), "--seed", str(settings.seed)]
    if settings.max_flops is not None:
        cmd += ["--max-flops", repr(settings.max_flops)]
    if settings.max_params is not None:
        cmd += ["--max-params", repr(settings.max_params)]
    print(f"search {plan.name}: {len(plan.cache)} results of checkpoint {plan.key.checkpoint} already in the run")
    return plan.folder, plan.experiment, [[*cmd, *_set_args(args.overrides)]], plan.run.cfg


def main(args: argparse.Namespace) -> int:
    from . import profile as profiles
    from . import submit

    try:
        prof = profiles.load(args.cluster, args.profile_overrides)
        folder, experiment, commands, cfg = (_plan_rank if args.command == "rank" else _plan_search)(args)
        cfg = _absolute(cfg)
        _gate(cfg)
        busy = active_jobs(folder)
        if busy:
            raise NasJobError(f"{folder} already has jobs in the queue: {', '.join(sorted(busy))}; cancel them "
                              f"(python -m jobs cancel {folder}) or choose another --name", rundir.EXIT_BAD_INPUT)
    except NasJobError as exc:
        _err(str(exc))
        return exc.code
    except DataError as exc:
        _err(str(exc))
        return rundir.EXIT_DATA_ERROR
    except (ConfigError, rank_mod.RankError, ValueError) as exc:
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT

    jobs_dir = folder / rundir.JOBS_DIR
    config_path = jobs_dir / SUBMITTED_CONFIG
    specs = [NodeSpec(config_path=str(config_path), run_dir=str(folder), experiment=experiment, profile=prof,
                      workdir=str(Path.cwd()), args=tuple(cmd)) for cmd in commands]
    name = f"{args.command}-{folder.name}"
    parallelism = getattr(args, "array_parallelism", None)
    if args.dry_run:
        print(f"# dry run: nothing was queued (cluster {prof.name}, executor {prof.executor})")
        if prof.executor == "slurm":
            print(submit.batch_script(prof, jobs_dir, name, str(folder), len(specs), parallelism))
        for k, spec in enumerate(specs):
            print(f"# element {k}: {shlex.join(trainer_command(spec, cfg))}")
        return rundir.EXIT_OK
    rundir.atomic_write_text(config_path, efconfig.dump(cfg))
    try:
        subs = _submit(specs, prof, jobs_dir, name, str(folder), parallelism)
    except submit.SubmitError as exc:
        _err(str(exc))
        return rundir.EXIT_SUBMIT_FAILED
    for job_id, job in subs:
        record = {"job_id": job_id, "executor": prof.executor, "cluster": prof.name, "profile": prof.source,
                  "submitted_at": time.time(), "kind": args.command, "config": str(config_path),
                  "folder": str(jobs_dir), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
        process = getattr(job, "_process", None)
        if process is not None:
            record["pid"] = process.pid
        record_submission(folder, record)
        index_add(job_id, folder)
    ids = [j for j, _ in subs]
    print(f"submitted {args.command} job{'s' if len(ids) > 1 else ''} {' '.join(ids)}")
    print(f"  folder:  {folder}\n  logs:    {jobs_dir}\n  monitor: python -m monitor --run {folder} "
          f"--http 127.0.0.1:9464\n  cancel:  python -m jobs cancel {folder}")
    if not args.wait:
        return rundir.EXIT_OK
    print("waiting for the job(s) to end ...", flush=True)
    _wait(subs, prof.executor)
    end = rundir.last_event(folder / rank_mod.EVENTS_FILE, "run_end")
    status = end.get("status") if end else "unknown"
    print(f"{folder.name}: {status}" + (f" ({end.get('reason')})" if end else ""))
    if args.command == "rank":
        rows = results_mod.read_rows(folder / results_mod.RESULTS_CSV)
        print(f"{len(rows)} results in {folder / results_mod.RESULTS_CSV}")
    return rundir.EXIT_OK if status == "completed" else rundir.EXIT_FAILED


def _submit(specs: list[NodeSpec], prof: Any, jobs_dir: Path, name: str, comment: str,
            parallelism: int | None) -> list[tuple[str, Any]]:
    from . import submit

    jobs = submit.submit_specs(specs, prof, jobs_dir, name, comment, parallelism)
    return [(str(j.job_id) if prof.executor == "slurm" else f"local-{j.job_id}", j) for j in jobs]


def _wait(subs: list[tuple[str, Any]], executor: str, poll_s: float = 3.0) -> None:
    while True:
        if executor == "local":
            running = [j for _, j in subs if not j.done()]
        else:
            running = list(squeue_states([job_id for job_id, _ in subs]))
        if not running:
            return
        time.sleep(poll_s)


def _err(message: str) -> None:
    print(f"jobs: {message}", file=sys.stderr)
