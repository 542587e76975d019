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
dependencies): a chain of training stages is `stages([a, b])`, each stage one training job started from
the previous stage's best checkpoint; a fidelity report is `fidelity(args)`: an array of stand-alone
trainings, one element per subnet of the pool, then the report as a job after it.

Light: the checks run on the login node without TensorFlow.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Collection
from pathlib import Path
from typing import Any

from edgeflow import config as efconfig
from edgeflow.config import ConfigError
from edgeflow.train.signature import SignatureMismatch, check_signature, signature

from .submit import Batch, Unit
from .sweep import absolutize, expand


def training(configs: list[str], seeds: list[int] | None, overrides: list[str], grid: list[str] | None = None,
             array_parallelism: int | None = None) -> Batch:
    """A training job, or one array of every (config, grid point, seed); ConfigError for bad input."""
    elements = expand(configs, seeds, overrides, grid=grid)
    units = [Unit(el.run_dir, el.experiment, el.cfg, el.source, overrides=el.own) for el in elements]
    name = elements[0].experiment if len(elements) == 1 else f"sweep-{elements[0].experiment}"
    return Batch("train", units, name, array_parallelism)


# The keys a stage after the first gets from the launcher: where its weights come from.
STAGE_KEYS = ("checkpoint.init_from", "checkpoint.resume_checkpoint")


def _given_by(source: str, overrides: list[str], dotted: str) -> str:
    """Who set `dotted` (a `section.key`) explicitly: a --set or the config file ("" for neither)."""
    section, key = dotted.split(".", 1)
    for item in reversed(overrides):
        if item.partition("=")[0].strip() == dotted:
            return f"--set {item}"
    values = efconfig.read_mapping(Path(source)).get(section)
    return f"config {source}" if isinstance(values, dict) and key in values else ""


def stages(configs: list[str], overrides: list[str]) -> list[Batch]:
    """`submit --stages A B ...`: one training job per config, each after the one before and started from
    its best checkpoint (checkpoint.init_from, checkpoint.resume_checkpoint: best); `overrides` apply to
    every stage. ConfigError for bad input, before anything is checked against data or queue."""
    if not configs:
        raise ConfigError("--stages: at least one config file is needed")
    batches: list[Batch] = []
    previous: Unit | None = None
    seen: dict[Path, tuple[int, str]] = {}
    for number, source in enumerate(configs, 1):
        (el,) = expand([source], None, overrides)
        cfg, own = el.cfg, el.own
        if el.run_dir in seen:
            other, other_source = seen[el.run_dir]
            raise ConfigError(f"runtime.experiment_name: stages {other} ({other_source}) and {number} ({source}) "
                              f"would both write to {el.run_dir}; give each stage its own experiment_name "
                              f"(--set applies to every stage)")
        seen[el.run_dir] = (number, source)
        if previous is not None:
            cfg, own = _after_stage(number, source, overrides, cfg, previous)
        unit = Unit(el.run_dir, el.experiment, cfg, source, overrides=own)
        batches.append(Batch("train", [unit], unit.experiment))
        previous = unit
    return batches


def _after_stage(number: int, source: str, overrides: list[str], cfg: efconfig.Config,
                 previous: Unit) -> tuple[efconfig.Config, tuple[str, ...]]:
    """Stage `number`'s config, started from `previous`'s best checkpoint; refuses a config that names
    another warm start, or whose setup the previous stage's checkpoints cannot be loaded into."""
    start = str(previous.run_dir)
    wanted = {"checkpoint.init_from": start, "checkpoint.resume_checkpoint": "best"}
    why = (f"stage {number} ({source}) starts from the best checkpoint of stage {number - 1} ({previous.source}, "
           f"run {start}), which the launcher sets")
    for key in (*STAGE_KEYS, "checkpoint.resume_experiment_name"):
        value = getattr(cfg.checkpoint, key.split(".", 1)[1])
        where = _given_by(source, overrides, key)
        if not where or value == "":
            continue
        same = (key == "checkpoint.init_from" and Path(value).resolve() == Path(start).resolve()) or \
            (key == "checkpoint.resume_checkpoint" and value == "best")
        if not same:
            raise ConfigError(f"{where}: {key}: {efconfig.shown(value)}, but {why}; remove the key")
    cfg = copy.deepcopy(cfg)
    cfg.checkpoint.init_from = start
    cfg.checkpoint.resume_checkpoint = "best"
    cfg = efconfig.validate(cfg)
    try:
        check_signature({"signature": signature(previous.cfg)}, cfg, previous.run_dir)
    except SignatureMismatch as exc:
        raise ConfigError(f"{source}: stage {number} cannot start from stage {number - 1}'s checkpoint: "
                          f"{exc}") from None
    return cfg, tuple(f"{k}={v}" for k, v in wanted.items())


def _absolute(cfg: efconfig.Config) -> efconfig.Config:
    return absolutize(cfg, Path.cwd())


def passthrough(parser: argparse.ArgumentParser, args: argparse.Namespace, skip: Collection[str]) -> list[str]:
    """The options of an edgeflow command's `parser` that `args` holds, as command-line arguments again,
    but those whose dest is in `skip` (the launcher sets them itself). So an option added to the command
    reaches the job without a change here; values go as given (a path relative to the submission's
    working directory, where the job runs)."""
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in skip or \
                isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        value = getattr(args, action.dest, None)
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._CountAction):
            out += [flag] * int(value or 0)
        elif action.nargs == 0:  # store_true, store_false, store_const
            if value != action.default:
                out.append(flag)
        elif value is None or value == []:
            continue
        elif isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
            for item in value:
                out += [flag, *(map(str, item) if isinstance(item, (list, tuple)) else [str(item)])]
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


# Options of `edgeflow rank` the launcher sets itself, or refuses (--shard: --shards N; --compare runs here).
RANK_OWN = frozenset({"run", "checkpoint", "name", "shard", "compare", "columns",
                      "archs", "archs_file", "sample", "seed", "all"})
SEARCH_OWN = frozenset({"run", "checkpoint", "name"})


def rank(args: argparse.Namespace) -> Batch:
    """`jobs rank`: one array element per shard (edgeflow.nas.rank.RankError, ConfigError, ValueError: refused)."""
    from edgeflow.commands import rank as rank_cmd
    from edgeflow.commands.rank import selection_of
    from edgeflow.nas import rank as rank_mod
    from edgeflow.nas import results as results_mod

    if args.compare:
        raise ValueError("--compare: compares two rankings on this machine, not a job; run "
                         "python -m edgeflow rank --compare A.csv B.csv")
    if args.shard:
        raise ValueError("--shard: the launcher gives each array element its shard; use --shards N")
    if not args.run:
        raise ValueError("--run: the run directory of the trained supernet is required")
    if args.shards < 1:
        raise ValueError(f"--shards: must be >= 1, got {args.shards}")
    run_dir = str(Path(args.run).resolve())
    plan = rank_mod.prepare(run_dir, selection_of(args), checkpoint=args.checkpoint, name=args.name,
                            overrides=args.overrides)
    if args.shards > len(plan.codes):
        raise ValueError(f"--shards {args.shards}: more shards than the {len(plan.codes)} selected archs")
    base = ["-m", "edgeflow", "rank", "--run", run_dir, "--checkpoint", args.checkpoint, "--name", plan.name,
            *selection_of(args).args(), *passthrough(rank_cmd.build_parser(), args, RANK_OWN)]
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
    from edgeflow.commands import search as search_cmd
    from edgeflow.commands.search import settings_of
    from edgeflow.nas import search as search_mod

    run_dir = str(Path(args.run).resolve())
    settings = settings_of(args)
    plan = search_mod.prepare(run_dir, settings, checkpoint=args.checkpoint, name=args.name,
                              overrides=args.overrides)
    cmd = ["-m", "edgeflow", "search", "--run", run_dir, "--checkpoint", args.checkpoint, "--name", plan.name,
           *passthrough(search_cmd.build_parser(), args, SEARCH_OWN)]
    print(f"search {plan.name}: {len(plan.cache)} results of checkpoint {plan.key.checkpoint} already in the run")
    unit = Unit(plan.folder, plan.experiment, _absolute(plan.run.cfg), run_dir, args=tuple(cmd))
    return Batch("search", [unit], f"search-{plan.folder.name}", multi_task=False,
                 rename_hint="choose another --name")


def fidelity_ranking(args: argparse.Namespace, shards: int = 1) -> list[str]:
    """The `jobs rank` arguments that rank the candidates a fidelity report chooses its pool from."""
    from edgeflow.commands import fidelity as fidelity_cmd

    settings = fidelity_cmd.settings_of(args)
    return ["rank", "--cluster", args.cluster, "--run", str(Path(args.run).resolve()), "--sample",
            str(settings.candidate_count), "--seed", str(settings.seed), "--checkpoint", settings.checkpoint,
            *(["--shards", str(shards)] if shards > 1 else []),
            *[a for item in args.profile_overrides for a in ("--profile-set", item)]]


def fidelity_unranked(args: argparse.Namespace) -> bool:
    """Whether the supernet has yet to rank some of the report's candidates (refusals as `fidelity`)."""
    from edgeflow.commands import fidelity as fidelity_cmd
    from edgeflow.nas import fidelity as fid

    plan = fid.prepare(str(Path(args.run).resolve()), fidelity_cmd.settings_of(args), name=args.name)
    return bool(fid.missing_candidates(plan))


def fidelity(args: argparse.Namespace) -> tuple[Any, list[Batch]]:
    """`jobs fidelity`: the stand-alone trainings of the pool as one array (each element a training run,
    as `submit` queues it), then the report as a job after it (edgeflow.nas.rank.RankError, ConfigError,
    ValueError: refused); with the plan, whose start files are written once the jobs are queued. The
    pool is chosen here, on the login node, from the supernet's ranking of the candidates, which must
    exist (`jobs rank --sample C --seed S` makes it)."""
    from edgeflow.commands import fidelity as fidelity_cmd
    from edgeflow.nas import fidelity as fid

    if args.no_train:
        raise ValueError("--no-train: the launcher's report job sets it itself")
    run_dir = str(Path(args.run).resolve())
    settings = fidelity_cmd.settings_of(args)
    plan = fid.prepare(run_dir, settings, name=args.name)
    missing = fid.missing_candidates(plan)
    if missing:
        raise ValueError(
            f"the supernet has not ranked {len(missing)} of the {len(plan.candidates)} candidates the pool is "
            f"chosen from (checkpoint {plan.key.checkpoint}); rank them first, then submit again: python -m jobs "
            f"{' '.join(fidelity_ranking(args))} --wait (or add --rank-shards N: the same, queued and waited for "
            f"by this command)")
    fid.choose(plan)
    trainings = plan.trainings()
    todo = [t for t in trainings if not t.finished]
    print(f"fidelity {plan.name}: pool of {len(plan.pool)} ({' '.join(m.code for m in plan.pool)}), "
          f"{len(trainings)} stand-alone trainings, {len(trainings) - len(todo)} finished, {len(todo)} to train")
    units = [Unit(t.run_dir, t.experiment, _absolute(efconfig.load(plan.source, list(t.overrides))), plan.source,
                  overrides=tuple(t.overrides[-4:])) for t in todo]
    report_args = ("-m", "edgeflow", "fidelity", "--run", run_dir, "--name", plan.name, *settings.args(),
                   "--no-train")
    report = Unit(plan.folder, plan.experiment, _absolute(plan.run.cfg), run_dir, args=report_args)

    def outcome(unit: Unit) -> str:
        data = fid.read_report(unit.run_dir)
        return str(data["line"]) if data else f"no report in {unit.run_dir}"

    batches = [Batch("train", units, f"fidelity-{plan.name}", args.array_parallelism)] if units else []
    batches.append(Batch("fidelity", [report], f"fidelity-report-{plan.name}", multi_task=False,
                         rename_hint="choose another --name", outcome=outcome))
    return plan, batches
