"""The options several commands share, spelled and explained the same way everywhere."""

from __future__ import annotations

import argparse


def add_config_options(parser: argparse.ArgumentParser, help_: str = "experiment config (YAML)",
                       default: str | None = None) -> None:
    """--config CFG and repeatable --set KEY=VALUE (args.config, args.overrides)."""
    parser.add_argument("--config", required=default is None, default=default, help=help_)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.num_epochs=3 (repeatable; checked like "
                             "the file)")


def add_run_overrides(parser: argparse.ArgumentParser) -> None:
    """Repeatable --set KEY=VALUE on a run's saved config (args.overrides)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the run's config, e.g. --set data.val_dir=... (repeatable)")


def add_split_option(parser: argparse.ArgumentParser) -> None:
    """--split NAME: the evaluation split to measure on (args.split)."""
    parser.add_argument("--split", metavar="NAME", default=None,
                        help="evaluation split: 'val' (the run's own) or a name of the run's eval.splits, e.g. "
                             "sintel-final (default: the one the run selects on, eval.select_on); results are "
                             "keyed by it")
