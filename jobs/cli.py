"""`python -m jobs submit|rank|search|fidelity|status|list|logs|cancel`: the launcher's command line (no
TensorFlow needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.config import ConfigError
from edgeflow.console import console_logger

from . import health

# Exit codes of `submit`, `rank` and `search` (edgeflow/rundir/codes.py): 0 queued, 2 bad input (config,
# profile, arguments), 4 refused by the preflight gate (bad data), 5 refused by the queue (a job of the
# run is still queued or running) or SLURM refused or failed the submission.
EXIT_REFUSED = rundir.EXIT_DATA_ERROR
EXIT_SUBMIT_FAILED = rundir.EXIT_SUBMIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=(
        "Launch edgeflow training jobs on SLURM (or locally) after a preflight check of the data."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("submit", help="preflight, then queue one job, a job array for a sweep, or a chain of stages",
                       description="Check each config's data with the preflight on this machine, then queue "
                       "the training job (one per config and seed; several become one job array), or with "
                       "--stages one job per stage, each starting after the one before ended well, from its "
                       "best checkpoint. Nothing is queued when any preflight fails.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", action="append", metavar="CFG",
                       help="experiment config (YAML); repeat for a sweep over configs")
    which.add_argument("--stages", nargs="+", metavar="CFG",
                       help="a chain of stages, one config each, in order: stage N+1 is queued to start "
                       "once stage N ended well (completed or early-stopped), from stage N's best checkpoint "
                       "(the launcher sets checkpoint.init_from and checkpoint.resume_checkpoint: best); a "
                       "failed stage cancels the ones after it")
    p.add_argument("--cluster", default="local", metavar="NAME",
                   help="cluster profile: configs/clusters/NAME.yaml or a path (default: local)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set train.num_epochs=2 (repeatable; with --stages "
                   "it applies to every stage)")
    p.add_argument("--profile-set", action="append", default=[], metavar="KEY=VALUE", dest="profile_overrides",
                   help="override a cluster profile value, e.g. --profile-set slurm.time_min=30")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="one array element per seed; experiment names get a _s<SEED> suffix")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one array element per value (repeat for the cartesian product, with --seeds too); "
                   "names get a suffix per key and value, e.g. _lr3e-4_bs16")
    p.add_argument("--array-parallelism", type=int, metavar="N",
                   help="at most N array elements run at the same time")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the batch script; queue nothing")
    p.add_argument("--wait", action="store_true",
                   help="wait until the job(s) end; exit 0 only if every run completed or early-stopped")

    s = sub.add_parser("status", help="is a run alive? status, heartbeat age, queue, last epoch and eval",
                       description="Status of one run: what its files say, whether a job of it is queued, "
                       "how long ago it last made progress, and a plain verdict (alive, stalled, dead, ...) "
                       "with what to do.")
    s.add_argument("target", metavar="RUN_DIR_OR_JOB_ID", help="a run directory, or a job id the launcher queued")
    s.add_argument("--json", action="store_true", help="print everything as one JSON object (for scripts)")
    s.add_argument("--stall-minutes", type=float, default=health.DEFAULT_STALL_SECONDS / 60, metavar="M",
                   help="no progress for longer than this means stalled or dead (default: 15, as the alert)")
    ls = sub.add_parser("list", help="every run under an output root: status, epoch, best EPE, progress, queue",
                        description="One line per run directory under --root.")
    ls.add_argument("--root", default="outputs", metavar="DIR", help="output root (default: outputs)")
    ls.add_argument("--json", action="store_true", help="print a JSON list (for scripts)")
    ls.add_argument("--stall-minutes", type=float, default=health.DEFAULT_STALL_SECONDS / 60, metavar="M",
                    help="no progress for longer than this means stalled or dead (default: 15)")
    lg = sub.add_parser("logs", help="print (and follow) the trainer's log of a run, across requeues",
                        description="The job logs of a run (jobs/*_log.out), oldest first, one header per file.")
    lg.add_argument("target", metavar="RUN_DIR_OR_JOB_ID", help="a run directory, or a job id the launcher queued")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="keep printing new lines until the run ends (Ctrl-C stops following)")
    lg.add_argument("--stderr", action="store_true", help="the error logs (jobs/*_log.err) instead")
    c = sub.add_parser("cancel", help="cancel the queued or running jobs of a run (it checkpoints first)",
                       description="Cancel every queued or running job of a run; a running trainer writes a "
                       "checkpoint before it stops.")
    c.add_argument("target", metavar="RUN_DIR_OR_JOB_ID", help="a run directory, or a job id the launcher queued")
    _add_nas_parsers(sub)
    return parser


def _add_launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="local", metavar="NAME",
                   help="cluster profile: configs/clusters/NAME.yaml or a path (default: local)")
    p.add_argument("--profile-set", action="append", default=[], metavar="KEY=VALUE", dest="profile_overrides",
                   help="override a cluster profile value, e.g. --profile-set slurm.time_min=30")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the batch script; queue nothing")
    p.add_argument("--wait", action="store_true", help="wait until the job(s) end")


def _add_nas_parsers(sub: Any) -> None:
    """`rank` and `search`: the NAS commands of a trained run as jobs.

    Their options are the edgeflow command's own (its parser is the parent), plus the launcher's: an
    option added to `edgeflow rank` or `search` is accepted here and handed to the job as given
    (jobs/kinds.py), with no change to the launcher.
    """
    from edgeflow.commands import rank as rank_cmd
    from edgeflow.commands import search as search_cmd

    r = sub.add_parser("rank", parents=[rank_cmd.build_parser()], add_help=False,
                       help="rank archs of a trained run as a job array (one shard per element)",
                       description="Rank archs of a trained run as a job array, one shard per element; every "
                       "option of `python -m edgeflow rank` but --shard and --compare is passed to the job.")
    _add_launch_options(r)
    r.add_argument("--shards", type=int, default=1, metavar="N", help="array elements (default 1)")
    r.add_argument("--array-parallelism", type=int, metavar="N", help="at most N elements at the same time")
    s = sub.add_parser("search", parents=[search_cmd.build_parser()], add_help=False,
                       help="NSGA-II search of a trained run as a job (resumes on requeue)",
                       description="NSGA-II search of a trained run as a job; it resumes on requeue. Every "
                       "option of `python -m edgeflow search` is passed to the job.")
    _add_launch_options(s)
    from edgeflow.commands import fidelity as fidelity_cmd

    f = sub.add_parser("fidelity", parents=[fidelity_cmd.build_parser()], add_help=False,
                       help="a ranking-fidelity report as jobs: the stand-alone trainings as one array, then "
                            "the report",
                       description="Choose the pool of a fidelity report on this machine (from the supernet's "
                       "ranking of the candidates: `jobs rank --sample C --seed S` first, or --rank-shards), "
                       "queue its stand-alone trainings as one job array (one element per subnet, each a training "
                       "run with the gate, requeue and monitoring of `submit`), then the report as a job that "
                       "starts once every "
                       "training ended well. Finished trainings are not queued again.")
    _add_launch_options(f)
    f.add_argument("--array-parallelism", type=int, metavar="N",
                   help="at most N stand-alone trainings at the same time (GPUs in use)")
    f.add_argument("--rank-shards", type=int, metavar="N",
                   help="when the supernet has not ranked the candidates yet: queue that ranking first (`jobs "
                        "rank`, N array elements), wait for it, then choose the pool and queue the trainings")


log = console_logger("jobs", "jobs: %(message)s")


def _err(message: str) -> None:
    log.error(message)


def cmd_submit(args: argparse.Namespace) -> int:
    from . import kinds, submit
    from . import profile as profiles

    if args.array_parallelism is not None and args.array_parallelism < 1:
        _err(f"--array-parallelism: must be >= 1, got {args.array_parallelism}")
        return rundir.EXIT_BAD_INPUT
    if args.stages:
        sweep = [flag for flag, given in (("--seeds", args.seeds), ("--grid", args.grid),
                                          ("--array-parallelism", args.array_parallelism)) if given]
        if sweep:
            _err(f"--stages: cannot be combined with {' or '.join(sweep)}: a chain is one job per stage "
                 "(submit one chain per variant, each stage config with its own experiment_name)")
            return rundir.EXIT_BAD_INPUT
    try:
        # The experiment first: a typo in a --set or --grid key is refused before anything else.
        if args.stages:
            batches = kinds.stages(args.stages, args.overrides)
        else:
            batches = [kinds.training(args.config, args.seeds, args.overrides, args.grid, args.array_parallelism)]
        prof = profiles.load(args.cluster, args.profile_overrides)
    except ConfigError as exc:
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT
    return submit.launch(batches, prof, dry_run=args.dry_run, wait_end=args.wait)


def cmd_status(args: argparse.Namespace) -> int:
    from . import status

    info = status.describe(status.find_run_dir(args.target), stall_s=args.stall_minutes * 60)
    print(rundir.to_json(info, indent=2) if args.json else status.format_status(info))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import listing

    root = Path(args.root)
    if not root.is_dir():
        _err(f"--root {root}: no such folder")
        return rundir.EXIT_BAD_INPUT
    infos = listing.describe_all(root, stall_s=args.stall_minutes * 60)
    if args.json:
        print(rundir.to_json(infos, indent=2))
    elif not infos:
        print(f"{root}: no run directories")
    else:
        print(listing.table([listing.row(i) for i in infos]))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from . import logs, status

    run = status.find_run_dir(args.target)

    def ended() -> bool:
        verdict = status.describe(run)["health"]["verdict"]
        return verdict in (health.ENDED, health.DEAD)

    return logs.show(run, follow=args.follow, stream="err" if args.stderr else "out", ended=ended)


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import status

    run = status.find_run_dir(args.target)
    done = status.cancel(Path(run))
    if not done:
        print(f"{run}: no job of this run is queued or running")
        return 0
    print(f"{run}: cancelled {', '.join(done)}; a running trainer writes a checkpoint before it stops")
    return 0


def cmd_nas(args: argparse.Namespace) -> int:
    from edgeflow.data.samples import DataError
    from edgeflow.nas.rank import RankError

    from . import kinds, submit
    from . import profile as profiles

    if getattr(args, "array_parallelism", None) is not None and args.array_parallelism < 1:
        _err(f"--array-parallelism: must be >= 1, got {args.array_parallelism}")
        return rundir.EXIT_BAD_INPUT
    if getattr(args, "rank_shards", None) is not None and args.rank_shards < 1:
        _err(f"--rank-shards: must be >= 1, got {args.rank_shards}")
        return rundir.EXIT_BAD_INPUT
    try:
        prof = profiles.load(args.cluster, args.profile_overrides)
        plan = None
        if args.command == "fidelity" and args.rank_shards and kinds.fidelity_unranked(args):
            # The pool is chosen from the supernet's ranking of the candidates: rank them first, as jobs.
            ranking = build_parser().parse_args(kinds.fidelity_ranking(args, args.rank_shards))
            code = submit.launch([kinds.rank(ranking)], prof, dry_run=args.dry_run, wait_end=True)
            if args.dry_run or code != rundir.EXIT_OK:
                if args.dry_run:
                    print("then, once it has ranked them: the pool is chosen and the stand-alone trainings queued")
                return code
        if args.command == "fidelity":
            plan, batches = kinds.fidelity(args)
        else:
            batches = [(kinds.rank if args.command == "rank" else kinds.search)(args)]
    except DataError as exc:
        _err(str(exc))
        return rundir.EXIT_DATA_ERROR
    except (ConfigError, RankError, ValueError) as exc:
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT
    code = submit.launch(batches, prof, dry_run=args.dry_run, wait_end=args.wait)
    if plan is not None and not args.dry_run and code in (rundir.EXIT_OK, rundir.EXIT_FAILED):
        from edgeflow.nas import fidelity

        fidelity.write_start(plan, with_progress=False)  # queued: key.json and pool.json
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"submit": cmd_submit, "status": cmd_status, "list": cmd_list, "logs": cmd_logs,
               "cancel": cmd_cancel, "rank": cmd_nas, "search": cmd_nas, "fidelity": cmd_nas}[args.command]
    from .status import StatusError

    try:
        return handler(args)
    except StatusError as exc:  # an unknown run or job id: the user's input, not a crash
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT
