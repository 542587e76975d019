"""`python -m edgeflow import-v1 --checkpoint PREFIX [--config CFG] --out RUN_DIR`: bring an old supernet.

Reads a checkpoint of the original TF1-style trainer and writes an edgeflow run directory holding the
same weights (docs/training.md). The work is edgeflow/v1import/; nothing is written on a refusal.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edgeflow import config as config_mod
from edgeflow.commands.interrupted import interrupted
from edgeflow.commands.options import add_config_options
from edgeflow.config import ConfigError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK, staging

DEFAULT_CONFIG = "configs/supernet_fc2_180x240.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow import-v1",
        description="Import a supernet checkpoint of the original EdgeFlowNAS v1 trainer (tf.compat.v1 "
                    "Saver, e.g. OLD_RUN/checkpoints/supernet_best.ckpt) as an edgeflow run directory, to "
                    "evaluate it or start a new experiment from it (checkpoint.init_from).")
    parser.add_argument("--checkpoint", required=True, metavar="PREFIX",
                        help="the Saver prefix (or one of its files: .index, .meta.json, .data-...)")
    add_config_options(parser, f"the data and evaluation settings the imported run carries (default "
                               f"{DEFAULT_CONFIG})", default=DEFAULT_CONFIG)
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="the new run directory (must not exist or be empty)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edgeflow.v1import import ImportRefused, MetaError, check_out, import_v1, resolve_prefix

    try:
        cfg = config_mod.load(args.config, args.overrides)
        # The cheap refusals first, before TensorFlow loads.
        resolve_prefix(args.checkpoint)
        check_out(Path(args.out))
        result = import_v1(args.checkpoint, cfg, args.out)
    except (ConfigError, ImportRefused, MetaError) as exc:
        print(f"edgeflow import-v1: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, staging.Interrupted) as exc:
        return interrupted("edgeflow import-v1", exc, Path(args.out))
    for warning in result.warnings:
        print(f"edgeflow import-v1: warning: {warning}", file=sys.stderr)
    ignored = ", ".join(f"{kind} {count}" for kind, count in result.ignored.items() if count)
    print(f"imported {result.variables} model variables ({result.values:,} values) from {result.source}")
    print(f"ignored {sum(result.ignored.values())} optimizer/bookkeeping variables ({ignored or 'none'})")
    meta = result.meta
    if meta is not None:
        print(f"source: epoch {meta.epoch}, step {meta.global_step}, metric {meta.metric} (batch statistics), "
              f"best {meta.best_metric}, bad epochs {meta.bad_epochs}")
    print(f"{len(result.uncalibrated_bn)} depth-branch BN statistics marked not calibrated "
          f"(evaluation recalibrates them)")
    print(f"run directory: {result.out}")
    run = shlex.quote(str(result.out))
    data_sets = ""
    if result.missing_data:
        # The run carries the config's data folders; eval cannot work from folders that are not there.
        absent = ", ".join(f"{key}={folder}" for key, folder in result.missing_data.items())
        print(f"edgeflow import-v1: warning: the data folders of {args.config} do not exist here ({absent}): "
              f"give eval yours with --set as below (or import again with a --config that names them)",
              file=sys.stderr)
        data_sets = "".join(f" --set {key}={key.split('.')[1].upper()}" for key in result.missing_data)
    print(f"next: python -m edgeflow eval --run {run} --bn-mode both{data_sets}")
    print(f"then: train a new experiment from it with --set checkpoint.init_from={run}")
    return EXIT_OK
