"""`python -m edgeflow arch-info --arch CODE`: parameters, output shapes and FLOPs of an arch."""

from __future__ import annotations

import argparse
import json
import sys

from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK
from edgeflow.space.arch import BLOCK_NAMES
from edgeflow.space.cost import arch_info


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow arch-info",
        description="Print JSON with an arch's parameter count, output shapes and forward FLOPs.")
    parser.add_argument("--arch", required=True,
                        help="arch code: 9 digits in 0..2 in the order " + " ".join(BLOCK_NAMES)
                        + ", e.g. 000021222 or '0 0 0 0 2 1 2 2 2'")
    parser.add_argument("--height", type=_positive_int, default=180, help="input height (default 180)")
    parser.add_argument("--width", type=_positive_int, default=240, help="input width (default 240)")
    parser.add_argument("--brief", action="store_true", help="leave out the per-layer breakdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    try:
        info = arch_info(args.arch, args.height, args.width)
    except ValueError as err:
        print(f"arch-info: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.brief:
        info.pop("layers")
    print(json.dumps(info, indent=2))
    return EXIT_OK
