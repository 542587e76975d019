"""`python -m edgeflow pack --config CFG`: decode a config's data once into a pack (edgeflow.data.pack)."""

from __future__ import annotations

import argparse
import sys

from edgeflow import config as config_mod
from edgeflow.commands.options import add_config_options
from edgeflow.data.samples import DataError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow pack",
        description="Decode every valid sample of the config's splits (training, validation, eval.splits; any "
                    "data set) once into a pack that training reads without PNG decoding (data.format: "
                    "packed). Exit 0 when packed, 4 when the data cannot be packed, 2 for a bad config.")
    add_config_options(parser, "experiment config (YAML); its data section says what to pack")
    parser.add_argument("--out", default=None,
                        help="folder of the pack (gets train/ and val/); default: data.packed_dir")
    parser.add_argument("--split", default="all", metavar="NAME",
                        help="which split to pack: train, val or a name of eval.splits (default all: every split "
                             "the config uses)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, batch jobs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.overrides)
    except config_mod.ConfigError as exc:
        print(f"pack: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out is None and not cfg.data.packed_dir:
        print("pack: no output folder: pass --out DIR or set data.packed_dir", file=sys.stderr)
        return EXIT_BAD_INPUT
    from edgeflow.data.packing import pack_config  # after the config check: it loads TensorFlow

    try:
        pack_config(cfg, args.out, args.split, show_progress=not args.no_progress)
    except DataError as exc:
        print(f"pack: {exc}", file=sys.stderr)
        return EXIT_DATA_ERROR
    return EXIT_OK
