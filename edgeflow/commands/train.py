"""`python -m edgeflow train --config CFG [--set key=value ...]`: train the supernet.

The start decision is edgeflow/train/start.py (checks first, nothing written until they pass); the
loop is edgeflow/train/loop.py. Exit codes are those of edgeflow/rundir/codes.py.
"""

from __future__ import annotations

import argparse
import sys

from edgeflow import config as config_mod
from edgeflow import rundir
from edgeflow.commands.options import add_config_options
from edgeflow.config import ConfigError
from edgeflow.data.samples import DataError
from edgeflow.train.checkpoint import CheckpointError
from edgeflow.train.signature import SignatureMismatch
from edgeflow.train.start import StartError, prepare


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow train",
                                     description="Train the EdgeFlowNAS strict-fairness supernet; a run "
                                                 "directory with a checkpoint is resumed.")
    add_config_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.overrides)
        plan = prepare(cfg)
    except DataError as exc:
        print(f"edgeflow train: {exc}", file=sys.stderr)
        return rundir.EXIT_DATA_ERROR
    except (ConfigError, SignatureMismatch, StartError, CheckpointError) as exc:
        print(f"edgeflow train: {exc}", file=sys.stderr)
        return rundir.EXIT_BAD_INPUT
    if plan is None:
        return rundir.EXIT_OK
    from edgeflow.train.loop import Trainer  # TensorFlow loads only once the inputs are known good

    try:
        trainer = Trainer(plan)
    except ConfigError as exc:  # a setup the devices cannot run (train.distribute), found before training
        print(f"edgeflow train: {exc}", file=sys.stderr)
        return rundir.EXIT_BAD_INPUT
    return trainer.run()
