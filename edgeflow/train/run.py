"""`python -m edgeflow train --config CFG [--set key=value ...]`: train the supernet.

Order of a start: load and validate the config, resolve the data splits, check an existing run's
signature and checkpoints -- all before writing anything -- then write the run directory
(DESIGN §2) and train. A run directory with a checkpoint is resumed (checkpoint.resume: true).

Exit codes (edgeflow.rundir): 0 completed or early-stopped, 1 unexpected failure, 2 bad config or
data (nothing written), 3 diverged, 75 preempted by SIGTERM/SIGUSR2 (checkpoint written).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeflow import config as config_mod
from edgeflow import rundir
from edgeflow.config import Config, ConfigError
from edgeflow.data.scan import DataError, Splits, resolve_splits
from edgeflow.rundir import RunPaths
from edgeflow.train.checkpoint import CheckpointError, CheckpointStore, Pointer
from edgeflow.train.runinfo import SignatureMismatch, check_signature, start_run_json


class StartError(ValueError):
    """The run cannot start as configured; nothing was written."""


@dataclass
class Plan:
    cfg: Config
    splits: Splits
    paths: RunPaths
    previous_run: dict | None
    resume: Pointer | None       # this run's own checkpoint to continue from
    warm_start: Pointer | None   # another run's checkpoint to take weights from
    warm_start_from: str = ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow train",
                                     description="Train the EdgeFlowNAS strict-fairness supernet.")
    parser.add_argument("--config", required=True, help="experiment config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.num_epochs=3 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.set)
        plan = prepare(cfg)
    except (ConfigError, DataError, SignatureMismatch, StartError, CheckpointError) as exc:
        print(f"edgeflow train: {exc}", file=sys.stderr)
        return rundir.EXIT_BAD_INPUT
    if plan is None:
        return rundir.EXIT_OK
    from edgeflow.train.loop import Trainer  # TensorFlow loads only once the inputs are known good

    return Trainer(plan).run()


def prepare(cfg: Config) -> Plan | None:
    """Every check that can fail on bad input, without writing anything. None: nothing left to do."""
    splits = resolve_splits(cfg)
    print(f"train_samples={len(splits.train)} ({cfg.data.train_dir}) val_samples={len(splits.val)} "
          f"({splits.val_source})", flush=True)
    paths = RunPaths(cfg.run_dir)
    previous = _read_run_json(paths.run)
    check_signature(previous, cfg, paths.root)
    resume = CheckpointStore(paths.checkpoints).pointer("latest") if paths.checkpoints.is_dir() else None
    if resume is not None and not cfg.checkpoint.resume:
        raise StartError(f"{paths.root} already has a checkpoint ({resume.prefix.name}) and checkpoint.resume "
                         f"is false; set checkpoint.resume=true to continue it or choose another "
                         f"runtime.experiment_name")
    if resume is not None and _finished(resume.state, cfg):
        print(f"{paths.root}: already {resume.state['status']} at epoch {resume.state['epoch']}; "
              f"nothing to do (raise train.num_epochs to continue)", flush=True)
        return None
    warm, warm_from = None, ""
    if resume is None and cfg.checkpoint.resume_experiment_name:
        warm_from = cfg.checkpoint.resume_experiment_name
        source = RunPaths(Path(cfg.runtime.output_root) / warm_from)
        check_signature(_read_run_json(source.run), cfg, source.root)
        kind = cfg.checkpoint.resume_checkpoint
        warm = CheckpointStore(source.checkpoints).pointer(kind) if source.checkpoints.is_dir() else None
        if warm is None:
            raise StartError(f"checkpoint.resume_experiment_name={warm_from!r}: {source.checkpoints} has no "
                             f"'{kind}' checkpoint")
    return Plan(cfg=cfg, splits=splits, paths=paths, previous_run=previous, resume=resume, warm_start=warm,
                warm_start_from=warm_from)


def _finished(state: dict, cfg: Config) -> bool:
    status = state.get("status")
    if status == "completed":
        return int(state.get("epoch", 0)) >= cfg.train.num_epochs
    if status == "early_stopped":
        return not cfg.checkpoint.reset_early_stop_on_resume
    return False


def _read_run_json(path: Path) -> dict | None:
    try:
        return rundir.read_json(path)
    except ValueError as exc:
        raise StartError(f"{path} is not valid JSON ({exc}); it is not overwritten -- fix or move it") from None


def write_run_start_files(plan: Plan, job_id: str | None) -> dict:
    """config.yaml and run.json, atomically; called only after every check passed."""
    plan.paths.root.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(plan.paths.config, config_mod.dump(plan.cfg))
    return start_run_json(plan.paths.run, plan.previous_run, plan.cfg, job_id=job_id,
                          train_samples=len(plan.splits.train), val_samples=len(plan.splits.val),
                          val_source=plan.splits.val_source, holdout_seed=plan.splits.holdout_seed)


