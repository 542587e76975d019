"""`python -m edgeflow search`: NSGA-II search for the EPE/cost Pareto front of a run's checkpoint.

    python -m edgeflow search --run RUN --objectives epe,flops [--evaluations 800 --population 50 --seed S]
                              [--max-flops X --max-params Y] [--checkpoint best|latest] [--name NAME]

The work is edgeflow/nas/search.py; outputs go to RUN/search/<name>/ (front.csv, front.png).
"""

from __future__ import annotations

import argparse
import sys

from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.data.samples import DataError
from edgeflow.nas import search
from edgeflow.nas.rank import RankError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_OK, EXIT_PREEMPTED
from edgeflow.train.checkpoint import CheckpointError


def add_settings(parser: argparse.ArgumentParser) -> None:
    """The search options (shared with `python -m jobs search`)."""
    parser.add_argument("--objectives", default="epe,flops",
                        help="epe and one or more costs of flops, params, latency (default epe,flops); "
                             "latency is the cost model's roofline figure (docs/search.md)")
    parser.add_argument("--evaluations", type=int, default=800,
                        help="evaluation budget of NSGA-II, cached ones included (default 800)")
    parser.add_argument("--population", type=int, default=50, help="population size (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    parser.add_argument("--max-flops", type=float, metavar="X", help="constraint: FLOPs per sample <= X")
    parser.add_argument("--max-params", type=float, metavar="Y", help="constraint: active parameters <= Y")


def settings_of(args: argparse.Namespace) -> search.Settings:
    return search.Settings(objectives=search.parse_objectives(args.objectives), evaluations=args.evaluations,
                           population=args.population, seed=args.seed, max_flops=args.max_flops,
                           max_params=args.max_params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow search",
        description="Search the arch space of a trained supernet with NSGA-II (pymoo) for the Pareto front of "
                    "EPE against cost; every evaluation follows the evaluation protocol, evaluations already in "
                    "the run's rank results are reused, and a killed search resumes when run again. Writes "
                    "RUN/search/<name>/front.csv and front.png.")
    parser.add_argument("--run", required=True, help="run directory (<output_root>/<experiment>)")
    add_settings(parser)
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint of the run (default best)")
    parser.add_argument("--name", help="folder RUN/search/NAME (default <checkpoint>_<objectives>_s<seed>, "
                                       "then _<split> for another split than the run selects on)")
    add_split_option(parser)
    add_run_overrides(parser)
    return parser


def _err(message: str) -> None:
    print(f"edgeflow search: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = search.prepare(args.run, settings_of(args), checkpoint=args.checkpoint, name=args.name,
                              overrides=args.overrides, split=args.split)
    except DataError as exc:
        _err(str(exc))
        return EXIT_DATA_ERROR
    except (RankError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    s = plan.settings
    print(f"search {plan.name}: NSGA-II, objectives {','.join(s.objectives)}, {s.evaluations} evaluations, "
          f"population {s.population}, seed {s.seed}, split {plan.key_record['split']}; {len(plan.cache)} results "
          f"of checkpoint {plan.key.checkpoint} on it already in the run", flush=True)
    try:
        outcome = search.run(plan)
    except CheckpointError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(f"{outcome.generations} generations, {outcome.n_eval} evaluations ({outcome.new_evaluations} new), "
          f"{outcome.visited} archs visited; front of {len(outcome.front)}:")
    cost = s.objectives[1]
    column = search.OBJECTIVES[cost]
    print(f"  {'arch':<10}{'EPE':>10}{cost:>14}")
    for r in outcome.front:
        print(f"  {r['code']:<10}{r['epe_mean']:>10.4f}{r[column]:>14.6g}")
    print(f"front: {plan.folder / search.FRONT_CSV}\nplot:  {plan.folder / search.FRONT_PNG}")
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by}; run the same command again to continue")
        return EXIT_PREEMPTED
    return EXIT_OK
