"""`python -m edgeflow eval --run DIR [--archs CODE ...] [--checkpoint best|latest]`: EPE table of a run.

Uses the run's saved config.yaml (its data, input size and eval settings), the same BN recalibration
and eval batches as training, and never writes into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeflow import config as config_mod
from edgeflow import rundir
from edgeflow.config import ConfigError
from edgeflow.data.scan import DataError, resolve_splits
from edgeflow.nas.arch import format_arch, parse_arch
from edgeflow.rundir import RunPaths
from edgeflow.train.checkpoint import CheckpointError, CheckpointStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow eval",
                                     description="Evaluate archs of a run's checkpoint (SPEC §5 protocol).")
    parser.add_argument("--run", required=True, help="run directory (<output_root>/<experiment>)")
    parser.add_argument("--archs", nargs="+", metavar="CODE",
                        help="arch codes such as 000021222 (default: the run's eval pool)")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the run's config (e.g. data.val_dir=...)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = RunPaths(Path(args.run))
    try:
        if not paths.config.is_file():
            raise ConfigError(f"{paths.root} is not a run directory: {paths.config} does not exist")
        cfg = config_mod.load(paths.config, args.set)
        codes = [format_arch(parse_arch(c)) for c in args.archs] if args.archs else list(cfg.eval.pool)
        pointer = CheckpointStore(paths.checkpoints).pointer(args.checkpoint) if paths.checkpoints.is_dir() else None
        if pointer is None:
            raise CheckpointError(f"{paths.checkpoints} has no '{args.checkpoint}' checkpoint")
        splits = resolve_splits(cfg)
    except (ConfigError, DataError, CheckpointError, ValueError) as exc:
        print(f"edgeflow eval: {exc}", file=sys.stderr)
        return rundir.EXIT_BAD_INPUT

    import tensorflow as tf

    from edgeflow.model.supernet import Supernet, compute_dtype_for
    from edgeflow.train.evaluate import Evaluator, datasets

    # The run's own compute dtype, so a mixed-precision run's eval events are reproduced exactly.
    model = Supernet(seed=cfg.runtime.seed, compute_dtype=compute_dtype_for(cfg.train.mixed_precision))
    tf.train.Checkpoint(model=model).read(str(pointer.prefix)).expect_partial()
    recal, evals = datasets(cfg, splits.train, splits.val)
    result = Evaluator(model, cfg).evaluate(codes, recal, evals)
    epoch = pointer.state.get("epoch")
    if args.json:
        print(json.dumps({"run": str(paths.root), "checkpoint": args.checkpoint, "epoch": epoch,
                          "val_samples": len(splits.val), **result.fields()}, indent=2))
        return rundir.EXIT_OK
    print(f"run {paths.root}  checkpoint {args.checkpoint} ({pointer.prefix.name}, epoch {epoch})  "
          f"eval split {splits.val_source}: {len(splits.val)} samples")
    print(f"{'arch':<12}{'EPE':>10}")
    for code, value in result.arch_epe.items():
        print(f"{code:<12}{value:>10.4f}")
    print(f"{'mean':<12}{result.mean_epe:>10.4f}")
    print(f"{'std':<12}{result.std_epe:>10.4f}")
    print(f"{'median':<12}{result.median_epe:>10.4f}")
    print(f"{'p90':<12}{result.p90_epe:>10.4f}")
    return rundir.EXIT_OK
