"""`python -m edgeflow report RUN [RUN ...] [--out F.png|F.html]`: a picture of one run or several."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow report",
        description="Draw train loss, gradient norm, learning rate, the early-stop counter, pool EPE (mean and "
                    "spread) against the zero-flow EPE and each pool arch's rank against epoch, from run "
                    "directories' events.jsonl, and the flow pictures of the latest evaluation (frames, ground "
                    "truth, the best and worst arch's flow and error maps) from flow_samples.npz. Several runs "
                    "share the panels; requeues and resumes are one curve, marked with dotted lines. Prints each "
                    "run's best EPE against the zero-flow EPE.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directory (<output_root>/<experiment>)")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write: a .png, or an .html page with the picture and a table "
                             "(default: report.png in the first run directory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from edgeflow.report import curves as plots
    except ImportError as exc:  # matplotlib is the `report` extra
        print(f"edgeflow report: {exc}; install it with `pip install -e '.[report]'` (make setup does)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out) if args.out else Path(args.runs[0]) / "report.png"
    try:
        plots.check_out(out)
        runs = [plots.load(r) for r in args.runs]
        written = plots.write_runs(runs, out)
    except plots.ReportError as exc:
        print(f"edgeflow report: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report: {written}")
    for run in runs:
        print(f"{run.name}: {run.result()}")
    return EXIT_OK
