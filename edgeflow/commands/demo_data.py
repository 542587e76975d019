"""`python -m edgeflow demo-data --out DIR --train N --val M`: render the demo data set on purpose."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgeflow.data.demo import HEIGHT, WIDTH, render_demo_dataset
from edgeflow.data.samples import DataError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow demo-data",
                                     description="Render the demo data set (FlyingChairs2 layout, exact flow).")
    parser.add_argument("--out", required=True, help="output folder; gets train/ and val/")
    parser.add_argument("--train", type=int, required=True, help="number of training samples")
    parser.add_argument("--val", type=int, required=True, help="number of validation samples")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scenes (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        render_demo_dataset(args.out, args.train, args.val, args.seed)
    except (DataError, ValueError, OSError) as exc:
        print(f"demo-data: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"demo-data: wrote {args.train} train and {args.val} val samples (seed {args.seed}, "
          f"{HEIGHT}x{WIDTH}) to {Path(args.out) / 'train'} and {Path(args.out) / 'val'} "
          f"in {time.perf_counter() - start:.1f} s")
    return EXIT_OK
