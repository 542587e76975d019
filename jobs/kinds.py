"""The kinds of job, each a small function that builds the batches of the one pipeline (jobs/submit.py).

- training: one job, or one job array of a sweep (configs x grid x seeds), each element its own run;
- rank: a ranking as a job array, element K running `python -m edgeflow rank ... --shard K/N`; all
  elements append to RUN/rank/<name>/results.csv (safe: edgeflow/nas/results.py);
- search: an NSGA-II search as one job.

A ranking's or search's folder RUN/rank|search/<name>/ is its job's run directory for the launcher and
the monitor: its events.jsonl carries the progress (`search` events) and `run_end`, and jobs/ holds
submitit's files. Each element is an ordinary node job with the command in place of the trainer, so the
node gate, the image, the signal forwarding and the requeue are training's: on SIGUSR2/SIGTERM the
command stops after its current arch with exit 75, and the requeued element skips every arch done.

Kinds that build on others are a list of batches, each after the one before (the backend's job
dependencies): a chain of training stages is `[training(a), training(b)]`; an array of stand-alone
trainings with a report after it is `[training(sweep), Batch(kind="report", units=[report])]`.

Light: the checks run on the login node without TensorFlow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeflow import config as efconfig

from .submit import Batch, Unit
from .sweep import absolutize, expand


def training(configs: list[str], seeds: list[int] | None, overrides: list[str], grid: list[str] | None = None,
             array_parallelism: int | None = None) -> Batch:
    """A training job, or one array of every (config, grid point, seed); ConfigError for bad input."""
    elements = expand(configs, seeds, overrides, grid=grid)
    units = [Unit(el.run_dir, el.experiment, el.cfg, el.source, overrides=el.own) for el in elements]
    name = elements[0].experiment if len(elements) == 1 else f"sweep-{elements[0].experiment}"
    return Batch("train", units, name, array_parallelism)


def _set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _absolute(cfg: efconfig.Config) -> efconfig.Config:
    return absolutize(cfg, Path.cwd())


def rank(args: argparse.Namespace) -> Batch:
    """`jobs rank`: one array element per shard (edgeflow.nas.rank.RankError, ConfigError, ValueError: refused)."""
    from edgeflow.commands.rank import selection_of
    from edgeflow.nas import rank as rank_mod
    from edgeflow.nas import results as results_mod

    if args.shards < 1:
        raise ValueError(f"--shards: must be >= 1, got {args.shards}")
    run_dir = str(Path(args.run).resolve())
    plan = rank_mod.prepare(run_dir, selection_of(args), checkpoint=args.checkpoint, name=args.name,
                            overrides=args.overrides)
    if args.shards > len(plan.codes):
        raise ValueError(f"--shards {args.shards}: more shards than the {len(plan.codes)} selected archs")
    base = ["-m", "edgeflow", "rank", "--run", run_dir, "--checkpoint", args.checkpoint, "--name", plan.name,
            *selection_of(args).args(), *_set_args(args.overrides)]
    print(f"rank {plan.name}: {len(plan.codes)} archs, {len(plan.done)} already done for checkpoint "
          f"{plan.key.checkpoint}; {args.shards} element(s)")
    cfg = _absolute(plan.run.cfg)
    units = [Unit(plan.folder, plan.experiment, cfg, run_dir, args=(*base, "--shard", f"{k}/{args.shards}"),
                  overrides=(f"--shard {k}/{args.shards}",) if args.shards > 1 else ())
             for k in range(args.shards)]

    def outcome(unit: Unit) -> str:
        rows = results_mod.read_rows(unit.run_dir / results_mod.RESULTS_CSV)
        return f"{len(rows)} results in {unit.run_dir / results_mod.RESULTS_CSV}"

    return Batch("rank", units, f"rank-{plan.folder.name}", args.array_parallelism, multi_task=False,
                 rename_hint="choose another --name", outcome=outcome)


def search(args: argparse.Namespace) -> Batch:
    """`jobs search`: one job (edgeflow.nas.rank.RankError, ConfigError, ValueError: refused)."""
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
    unit = Unit(plan.folder, plan.experiment, _absolute(plan.run.cfg), run_dir,
                args=(*cmd, *_set_args(args.overrides)))
    return Batch("search", [unit], f"search-{plan.folder.name}", multi_task=False,
                 rename_hint="choose another --name")
