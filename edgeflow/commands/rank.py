"""`python -m edgeflow rank`: evaluate many archs of a run's checkpoint; rank correlation of two rankings.

    python -m edgeflow rank --run RUN (--archs CODE ... | --archs-file F | --sample N [--seed S] | --all)
                            [--checkpoint best|latest] [--name NAME] [--shard K/N]
    python -m edgeflow rank --compare A.csv B.csv [--columns COL_A COL_B]

The work is edgeflow/nas/rank.py; results go to RUN/rank/<name>/results.csv (+ results.json).
"""

from __future__ import annotations

import argparse
import json
import sys

from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.data.samples import DataError
from edgeflow.nas import rank
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_OK, EXIT_PREEMPTED
from edgeflow.train.checkpoint import CheckpointError


def add_selection(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The arch-selection options (shared with `python -m jobs rank`)."""
    which = parser.add_mutually_exclusive_group(required=required)
    which.add_argument("--archs", nargs="+", metavar="CODE", help="arch codes such as 000021222")
    which.add_argument("--archs-file", metavar="F", help="a file with one arch code per line ('#' comments)")
    which.add_argument("--sample", type=int, metavar="N", help="N distinct archs drawn uniformly (see --seed)")
    which.add_argument("--all", action="store_true", help="all 3^9 = 19683 archs")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")


def selection_of(args: argparse.Namespace) -> rank.Selection:
    return rank.Selection(archs=tuple(args.archs or ()), archs_file=args.archs_file, sample=args.sample,
                          seed=args.seed, all=bool(args.all))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow rank",
        description="Evaluate archs of a run's checkpoint with the evaluation protocol (BN recalibration on the "
                    "fixed train batches, the fixed eval batches) and write RUN/rank/<name>/results.csv and "
                    "results.json: EPE mean/median/p90 over the eval batches, params, FLOPs, latency figure. "
                    "Rerun, it skips the archs already done for this checkpoint. With --compare, print Kendall "
                    "tau and Spearman rho between two rankings instead.")
    parser.add_argument("--run", help="run directory (<output_root>/<experiment>)")
    add_selection(parser, required=False)
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint of the run (default best)")
    parser.add_argument("--name", help="results folder RUN/rank/NAME (default: the checkpoint's name, "
                                       "e.g. best-000012)")
    parser.add_argument("--shard", metavar="K/N", help="evaluate only shard K (0-based) of N of the selection "
                                                       "(a job array element)")
    add_split_option(parser)
    add_run_overrides(parser)
    parser.add_argument("--compare", nargs=2, metavar=("A.csv", "B.csv"),
                        help="rank correlation of two rankings: results.csv files of this command, or CSVs "
                             "with a 'code' column and an EPE column (e.g. stand-alone EPEs)")
    parser.add_argument("--columns", nargs=2, metavar=("COL_A", "COL_B"),
                        help="value columns of the --compare files (default epe_mean, epe or standalone_epe)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _err(message: str) -> None:
    print(f"edgeflow rank: {message}", file=sys.stderr)


def compare_main(args: argparse.Namespace) -> int:
    cols = args.columns or (None, None)
    try:
        a = rank.read_ranking(args.compare[0], cols[0])
        b = rank.read_ranking(args.compare[1], cols[1])
        result = rank.compare(a, b)
    except rank.RankError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['archs']} archs in both rankings")
        print(f"Kendall tau   {result['kendall_tau']:+.4f}  (p = {result['kendall_p']:.3g})")
        print(f"Spearman rho  {result['spearman_rho']:+.4f}  (p = {result['spearman_p']:.3g})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        return compare_main(args)
    if not args.run:
        parser.error("--run is required (or --compare A B)")
    try:
        plan = rank.prepare(args.run, selection_of(args), checkpoint=args.checkpoint, name=args.name,
                            shard=args.shard, overrides=args.overrides, split=args.split)
    except DataError as exc:
        _err(str(exc))
        return EXIT_DATA_ERROR
    except (rank.RankError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    k, n = plan.shard
    print(f"rank {plan.name}: {len(plan.codes)} archs selected"
          + (f", shard {k}/{n}" if n > 1 else "")
          + f"; {len(plan.done)} already done for checkpoint {plan.key.checkpoint} "
            f"(digest {plan.key.checkpoint_digest}, protocol {plan.key.protocol}, split "
            f"{plan.key_record['split']}); {len(plan.todo)} to evaluate",
          flush=True)
    try:
        outcome = rank.run(plan)
    except CheckpointError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(f"results: {plan.results_csv} ({len(outcome.rows)} of {len(plan.codes)} archs)")
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by} after {outcome.evaluated} archs; run again to continue")
        return EXIT_PREEMPTED
    if args.json:
        print(json.dumps({"results": str(plan.results_csv), "rows": outcome.rows[:10]}, indent=2))
    else:
        print(f"{'rank':>4}  {'arch':<10}{'EPE mean':>10}{'median':>10}{'p90':>10}{'MFLOPs':>10}{'params':>10}")
        for i, r in enumerate(outcome.rows[:10], 1):
            print(f"{i:>4}  {r['code']:<10}{r['epe_mean']:>10.4f}{r['epe_median']:>10.4f}{r['epe_p90']:>10.4f}"
                  f"{r['flops'] / 1e6:>10.1f}{r['params']:>10d}")
        if len(outcome.rows) > 10:
            print(f"      ... {len(outcome.rows) - 10} more in {plan.results_csv}")
    return EXIT_OK
