"""`python -m edgeflow rank`: evaluate many archs of a run's checkpoint; rank correlation of two rankings.

    python -m edgeflow rank --run RUN (--archs CODE ... | --archs-file F | --sample N [--seed S] | --all)
                            [--checkpoint best|latest|epoch-N] [--name NAME] [--shard K/N]
                            [--device DEVICE [--deploy] [--workers N]]
    python -m edgeflow rank --compare A.csv B.csv [--columns COL_A COL_B]

The work is edgeflow/nas/rank.py (and nas/device.py for a device); results go to
RUN/rank/<name>/results.csv (+ results.json), device figures to RUN/device/<device>_<key>/.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.commands.search import add_device_options, print_report
from edgeflow.data.samples import DataError
from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.nas import device as dev
from edgeflow.nas import rank
from edgeflow.nas.search import results_files
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from edgeflow.train.checkpoint import CheckpointError
from edgeflow.train.signals import StopFlag


def add_selection(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The arch-selection options (shared with `python -m jobs rank`)."""
    which = parser.add_mutually_exclusive_group(required=required)
    which.add_argument("--archs", nargs="+", metavar="CODE", help="arch codes such as 000021222")
    which.add_argument("--archs-file", metavar="F", help="a file with one arch code per line ('#' comments), or a "
                                                          "CSV with a 'code' column (a search's front.csv)")
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
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|epoch-N",
                        help="best, latest or a kept epoch-N (checkpoint.keep_every); default best")
    parser.add_argument("--name", help="results folder RUN/rank/NAME (default: the checkpoint's name, "
                                       "e.g. best-000012)")
    parser.add_argument("--shard", metavar="K/N", help="evaluate only shard K (0-based) of N of the selection "
                                                       "(a job array element)")
    add_split_option(parser)
    add_device_options(parser)
    parser.add_argument("--deploy", action="store_true",
                        help="with --device: evaluate at the device's input size (BN recalibrated there; results "
                             "in RUN/rank/<checkpoint>_<H>x<W>) and, for the Pareto front of the selection (EPE "
                             "against Vela latency, within the limits) and the baseline 000021222, the int8 "
                             "model's EPE: deploy_report.csv")
    parser.add_argument("--figures-only", action="store_true",
                        help="with --device: only compute and cache the device figures of the selection (or "
                             "--shard), no EPE evaluation: a CPU job")
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
    if args.deploy and not args.device:
        parser.error("--deploy needs --device (the device's input size and Vela target)")
    if args.figures_only and (not args.device or args.deploy):
        parser.error("--figures-only needs --device, and evaluates nothing (so no --deploy)")
    figures_plan = deploy_plan = None
    try:
        device = device_mod.load(args.device) if args.device else None
        if device is not None:
            vela_mod.require()
        size = device.input_size if device is not None and args.deploy else None
        plan = rank.prepare(args.run, selection_of(args), checkpoint=args.checkpoint, name=args.name,
                            shard=args.shard, overrides=args.overrides, split=args.split, input_size=size)
        if device is not None:
            figures_plan = dev.prepare_figures(plan.run, device, plan.key)
        if device is not None and args.deploy:
            deploy_plan = dev.prepare_deploy(plan.run, device.input_size, name=plan.name)
        if args.workers is not None and args.workers < 1:
            raise rank.RankError(f"--workers: must be >= 1, got {args.workers}")
    except DataError as exc:
        _err(str(exc))
        return EXIT_DATA_ERROR
    except (rank.RankError, ValueError, vela_mod.VelaMissing) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    k, n = plan.shard
    if args.figures_only and device is not None and figures_plan is not None:
        return figures_main(args, plan, device, figures_plan)
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
    figures: dict = {}
    if figures_plan is not None and device is not None:
        try:
            code = device_main(args, plan, device, figures_plan, deploy_plan, figures)
        except vela_mod.VelaError as exc:
            _err(str(exc))
            return EXIT_FAILED
        except (CheckpointError, rank.RankError) as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
        if code != EXIT_OK:
            return code
    if args.json:
        print(json.dumps({"results": str(plan.results_csv), "rows": outcome.rows[:10]}, indent=2))
    else:
        print(f"{'rank':>4}  {'arch':<10}{'EPE mean':>10}{'median':>10}{'p90':>10}{'MFLOPs':>10}{'params':>10}"
              + (f"{'Vela ms':>9}{'SRAM KiB':>10}{'flash KiB':>11}{'CPU ops':>8}" if figures else ""))
        for i, r in enumerate(outcome.rows[:10], 1):
            f = figures.get(r["code"])
            print(f"{i:>4}  {r['code']:<10}{r['epe_mean']:>10.4f}{r['epe_median']:>10.4f}{r['epe_p90']:>10.4f}"
                  f"{r['flops'] / 1e6:>10.1f}{r['params']:>10d}"
                  + (f"{f['vela_inference_ms']:>9.2f}{f['vela_sram_kib']:>10.1f}{f['vela_flash_kib']:>11.1f}"
                     f"{f['vela_cpu_ops']:>8d}" if f else ""))
        if len(outcome.rows) > 10:
            print(f"      ... {len(outcome.rows) - 10} more in {plan.results_csv}")
    return EXIT_OK


def device_main(args: argparse.Namespace, plan: rank.Plan, device: device_mod.Device, figures_plan: dev.FigurePlan,
                deploy_plan: dev.DeployPlan | None, figures: dict) -> int:
    """The device figures of this shard's archs; with --deploy (unsharded), the int8 EPE of the front."""
    k, n = plan.shard
    mine = rank.shard_of(plan.codes, k, n)
    print(f"device {device.name}: figures of {len(mine)} archs ({sum(c in figures_plan.cached for c in mine)} "
          f"cached in {figures_plan.folder})", flush=True)
    workers = args.workers or dev.default_workers()
    with dev.Figures(figures_plan, workers) as computer, StopFlag() as stop:
        found = computer.ensure(mine, stop=lambda: stop.requested)
        if stop.requested and len(found) < len(mine):
            print(f"stopped by {stop.name} after {computer.stats.computed} compiles; run again to continue")
            return EXIT_PREEMPTED
        figures.update(found)
        print(f"device figures: {computer.stats.computed} compiled, {computer.stats.reused} reused")
        if deploy_plan is None:
            return EXIT_OK
        if n > 1:
            print("the int8 EPE of the front needs every shard's results: run `rank --deploy` without --shard "
                  "once the array is done (it reuses everything)")
            return EXIT_OK
        deployed = dev.DeployEvaluator(deploy_plan, results_files(plan.run.paths.root))
        rows = {c: deployed.float_row(c) for c in plan.codes}
        front = dev.deploy_front(rows, figures, device.limits)
        print(f"front of {len(front)} within the limits (float32 EPE at {device.input_size[0]}x"
              f"{device.input_size[1]} against Vela latency): {' '.join(front) or 'none'}")
        train_run = rank.open_checked(args.run, args.checkpoint, args.overrides)
        train_key, train_record = rank.key_for(train_run)
        wanted = [*front, dev.BASELINE]
        train = dev.training_rows(train_run, train_key, train_record, wanted, results_files(plan.run.paths.root),
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
        figures.update(computer.ensure(wanted))
        report = dev.report_rows(front, train, figures, deployed, device.limits)
        path = dev.write_report(plan.folder, report, dev.report_record(figures_plan, deploy_plan, train_key))
    print_report(report, device.input_size)
    print(f"report: {path}")
    return EXIT_OK


def figures_main(args: argparse.Namespace, plan: rank.Plan, device: device_mod.Device,
                 figures_plan: dev.FigurePlan) -> int:
    """--figures-only: the device figures of this shard's archs, nothing else."""
    figures: dict = {}
    try:
        code = device_main(args, plan, device, figures_plan, None, figures)
    except vela_mod.VelaError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except CheckpointError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if code != EXIT_OK:
        return code
    rows = sorted(figures.values(), key=lambda f: (f["vela_inference_ms"], f["code"]))
    print(f"{'arch':<10}{'Vela ms':>9}{'fps':>8}{'SRAM KiB':>10}{'flash KiB':>11}{'CPU ops':>8}")
    for f in rows[:10]:
        print(f"{f['code']:<10}{f['vela_inference_ms']:>9.2f}{f['vela_fps']:>8.2f}{f['vela_sram_kib']:>10.1f}"
              f"{f['vela_flash_kib']:>11.1f}{f['vela_cpu_ops']:>8d}")
    if len(rows) > 10:
        print(f"... {len(rows) - 10} more in {figures_plan.folder / dev.FIGURES_FILE}")
    return EXIT_OK
