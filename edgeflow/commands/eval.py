"""`python -m edgeflow eval --run DIR [--archs CODE ...] [--checkpoint best|latest|epoch-N] [--bn-mode MODE]
[--split NAME]`: EPE table.

Uses the run's saved config.yaml (its data, input size and eval settings), the same BN recalibration
and eval batches as training, on the evaluation split the run selects on or the one --split names,
and never writes into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.config import BN_MODES, STANDALONE_BN_MODE, ConfigError, eval_archs, eval_bn_mode
from edgeflow.data.samples import DataError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_OK
from edgeflow.space.arch import format_arch, parse_arch
from edgeflow.train.checkpoint import CheckpointError
from edgeflow.train.restore import check_standalone_archs, open_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow eval",
                                     description="Evaluate archs of a run's checkpoint with the evaluation "
                                                 "protocol (BN recalibration, fixed eval batches), or the "
                                                 "original trainer's (batch statistics), or both.")
    parser.add_argument("--run", required=True, help="run directory (<output_root>/<experiment>)")
    parser.add_argument("--archs", nargs="+", metavar="CODE",
                        help="arch codes such as 000021222 (default: the run's eval pool; a stand-alone run's "
                             "own arch, the only one it has)")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|epoch-N",
                        help="best, latest or a kept epoch-N (checkpoint.keep_every); default best")
    add_split_option(parser)
    add_run_overrides(parser)
    parser.add_argument("--bn-mode", choices=(*BN_MODES, STANDALONE_BN_MODE, "both"), default=None,
                        help="recalibrate: this project's protocol; batch_stats: the original trainer's (BN on "
                             "each eval batch's statistics); moving_stats: a stand-alone net's own statistics; "
                             "both: side by side (default: the run's eval.bn_mode; a stand-alone run's: "
                             "moving_stats)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = open_run(args.run, args.checkpoint, args.overrides)
        codes = [format_arch(parse_arch(c)) for c in args.archs] if args.archs else eval_archs(run.cfg)
        check_standalone_archs(run.cfg, codes)
        if args.bn_mode == STANDALONE_BN_MODE and not run.cfg.train.arch:
            raise ConfigError("--bn-mode moving_stats: a supernet's shared BN statistics belong to no one arch; "
                              "it is for a stand-alone run (train.arch)")
        split = run.eval_split(args.split)
        splits = run.splits
    except DataError as exc:
        print(f"edgeflow eval: {exc}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (ConfigError, CheckpointError, ValueError) as exc:
        print(f"edgeflow eval: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from edgeflow.train.evaluate import Evaluator, datasets

    cfg = run.cfg
    mode = args.bn_mode or eval_bn_mode(cfg)
    both = [STANDALONE_BN_MODE, *BN_MODES] if cfg.train.arch else list(BN_MODES)
    modes = both if mode == "both" else [mode]
    imported = _imported_from(run.paths.run)
    if not run.bn_calibrated and not args.json:
        # Neither mode reads the imported moving statistics: recalibrate replaces them per arch first.
        print(f"note: {len(run.uncalibrated_bn)} imported depth-branch BN statistics are not calibrated; "
              f"recalibrate replaces them per arch, batch_stats does not use them", file=sys.stderr)
    model = run.build_model()
    recal, evals = datasets(cfg, splits.train, split.samples, size=split.size,
                            batches=split.num_batches(cfg.eval.batch_size))
    evaluator = Evaluator(model, cfg)
    results = {m: evaluator.evaluate(codes, recal, evals, bn_mode=m) for m in modes}
    if args.json:
        head = {"run": str(run.paths.root), "checkpoint": args.checkpoint, "epoch": run.epoch,
                "split": split.name, "val_samples": len(split.samples), "eval_size": list(split.size),
                "bn_mode": mode}
        if imported:
            head["imported_from"] = imported
        body = ({"results": {m: r.fields() for m, r in results.items()}} if mode == "both"
                else results[mode].fields())
        print(json.dumps({**head, **body}, indent=2))
        return EXIT_OK
    print(f"run {run.paths.root}  checkpoint {args.checkpoint} ({run.pointer.prefix.name}, epoch {run.epoch})  "
          f"eval split {split.record.get('source') or split.name}: {len(split.samples)} samples "
          f"at {split.size[0]}x{split.size[1]}")
    print(f"{'arch':<12}" + "".join(f"{'EPE ' + m:>22}" for m in modes))
    for code in codes:
        print(f"{code:<12}" + "".join(f"{results[m].arch_epe[code]:>22.4f}" for m in modes))
    for name in ("mean", "std", "median", "p90"):
        print(f"{name:<12}" + "".join(f"{getattr(results[m], name + '_epe'):>22.4f}" for m in modes))
    if imported and imported.get("metric") is not None:
        print(f"the original trainer logged mean EPE {imported['metric']:.4f} at epoch {imported.get('epoch')} "
              f"with batch statistics on its own eval batches: compare it with the batch_stats column")
    return EXIT_OK


def _imported_from(path: Path) -> dict[str, Any] | None:
    """What run.json says about an imported checkpoint's source (None for a trained run)."""
    try:
        record = (rundir.read_run(path) or {}).get("imported_from")
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return {k: record.get(k) for k in ("checkpoint", "epoch", "global_step", "metric", "best_metric")}
