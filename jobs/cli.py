"""`python -m jobs submit|status|cancel`: the launcher's command line (no TensorFlow needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeflow import rundir
from edgeflow.config import ConfigError

# Exit codes of `submit`: 0 queued, 2 bad input (config, profile), 3 refused by the preflight gate,
# 4 SLURM refused or failed the submission.
EXIT_REFUSED = 3
EXIT_SUBMIT_FAILED = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=(
        "Launch edgeflow training jobs on SLURM (or locally) after a preflight check of the data."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("submit", help="preflight, then queue one job, or one job array for a sweep")
    p.add_argument("--config", action="append", required=True, metavar="CFG",
                   help="experiment config (YAML); repeat for a sweep over configs")
    p.add_argument("--cluster", default="local", metavar="NAME",
                   help="cluster profile: configs/clusters/NAME.yaml or a path (default: local)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set train.num_epochs=2 (repeatable)")
    p.add_argument("--profile-set", action="append", default=[], metavar="KEY=VALUE", dest="profile_overrides",
                   help="override a cluster profile value, e.g. --profile-set slurm.time_min=30")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="one array element per seed; experiment names get a _s<SEED> suffix")
    p.add_argument("--array-parallelism", type=int, metavar="N",
                   help="at most N array elements run at the same time")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the batch script; queue nothing")
    p.add_argument("--wait", action="store_true",
                   help="wait until the job(s) end; exit 0 only if every run completed or early-stopped")

    s = sub.add_parser("status", help="status of a run (directory or job id)")
    s.add_argument("target", metavar="RUN_DIR_OR_JOB_ID")
    c = sub.add_parser("cancel", help="cancel the queued or running jobs of a run (it checkpoints first)")
    c.add_argument("target", metavar="RUN_DIR_OR_JOB_ID")
    return parser


def _err(message: str) -> None:
    print(f"jobs: {message}", file=sys.stderr)


def cmd_submit(args: argparse.Namespace) -> int:
    from jobs import profile as profiles
    from jobs import submit, sweep

    if args.array_parallelism is not None and args.array_parallelism < 1:
        _err(f"--array-parallelism: must be >= 1, got {args.array_parallelism}")
        return rundir.EXIT_BAD_INPUT
    try:
        prof = profiles.load(args.cluster, args.profile_overrides)
        elements = sweep.expand(args.config, args.seeds, args.overrides)
    except ConfigError as exc:
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT

    refused = False
    for el, gate in submit.gate_all(elements):
        print(f"== preflight: {el.experiment} ({el.source}) ==")
        if gate.report:
            print(gate.report)
        if not gate.ok:
            refused = True
            _err(f"preflight failed for {el.experiment}: {gate.reason}")
    if refused:
        _err("nothing was queued: fix the data (or the config) and submit again")
        return EXIT_REFUSED

    if args.dry_run:
        print(submit.dry_run_text(elements, prof, args.array_parallelism))
        return 0
    try:
        subs = submit.submit(elements, prof, args.array_parallelism)
    except submit.SubmitError as exc:
        _err(str(exc))
        return EXIT_SUBMIT_FAILED
    if len(subs) > 1:
        print(f"submitted a job array of {len(subs)} elements (submitit folder {subs[0].folder})")
    for s in subs:
        print(submit.summary(s))
    if not args.wait:
        return 0
    print("waiting for the job(s) to end ...", flush=True)
    results = submit.wait(subs, prof.executor)
    for name, status in results.items():
        print(f"{name}: {status}")
    return 0 if all(st in ("completed", "early_stopped") for st in results.values()) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from jobs import status

    print(status.format_status(status.describe(status.find_run_dir(args.target))))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from jobs import status

    run = status.find_run_dir(args.target)
    done = status.cancel(Path(run))
    if not done:
        print(f"{run}: no job of this run is queued or running")
        return 0
    print(f"{run}: cancelled {', '.join(done)}; a running trainer writes a checkpoint before it stops")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel}[args.command]
    from jobs.status import StatusError

    try:
        return handler(args)
    except StatusError as exc:  # an unknown run or job id: the user's input, not a crash
        _err(str(exc))
        return rundir.EXIT_BAD_INPUT
