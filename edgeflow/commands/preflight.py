"""`python -m edgeflow preflight --config CFG`: can this config's data train? (no TensorFlow)"""

from __future__ import annotations

import argparse
import json
import sys

from edgeflow import config as config_mod
from edgeflow.commands.options import add_config_options
from edgeflow.data.preflight import run_preflight
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow preflight",
        description="Check a config's data before training: exit 0 when it can train, 4 when the data "
                    "cannot, 2 for a bad config.")
    add_config_options(parser)
    parser.add_argument("--deep", action="store_true",
                        help="also decode every PNG, .flo and .pfm (needs Pillow or OpenCV)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.overrides)
    except config_mod.ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": str(exc)}))
        print(f"preflight: FAILED: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = run_preflight(cfg, deep=args.deep)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    if not report.ok:
        if args.json:
            print(f"preflight: FAILED: {report.reason}", file=sys.stderr)
        return EXIT_DATA_ERROR
    return EXIT_OK
