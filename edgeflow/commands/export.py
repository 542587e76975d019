"""`python -m edgeflow export --run RUN --arch CODE --out DIR [...]`: one arch as deployment files.

Writes a SavedModel, float32 and int8 TFLite models and export.json (with the measured agreement of
each with the supernet) into DIR, and with --vela the Ethos-U compilation and its report. Bad input is
a one-line error and exit 2 (4 for a data error) with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeflow.commands.interrupted import interrupted
from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.config import ConfigError
from edgeflow.data.samples import DataError
from edgeflow.export import vela as vela_mod
from edgeflow.export.export import ExportError, ExportRequest, export
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_FAILED, EXIT_OK, staging
from edgeflow.train.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow export",
        description="Export one arch of a run's checkpoint as a fixed-arch network (SavedModel, float32 and "
                    "int8 TFLite), recalibrated as evaluation does, with its agreement with the supernet "
                    "measured on the eval set and recorded in DIR/export.json.")
    parser.add_argument("--run", required=True, type=Path, metavar="DIR",
                        help="run directory (<output_root>/<experiment>)")
    parser.add_argument("--arch", required=True, metavar="CODE", help="arch code such as 000021222")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|epoch-N",
                        help="best, latest or a kept epoch-N (checkpoint.keep_every); default best")
    parser.add_argument("--height", type=int, help="input height (default: the run's data.input_height)")
    parser.add_argument("--width", type=int, help="input width (default: the run's data.input_width)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the export's path: new, or an export made before (replaced whole); created "
                             "as a link to a hidden folder beside it")
    parser.add_argument("--calibration-samples", type=int, default=32, metavar="N",
                        help="train samples (first N by id, centre crop) for the int8 quantisation "
                             "(default 32)")
    parser.add_argument("--vela", action="store_true",
                        help=f"also compile the int8 model for an Arm Ethos-U NPU ({vela_mod.EXTRA_HINT})")
    parser.add_argument("--vela-config", default=vela_mod.DEFAULT_ACCELERATOR, choices=vela_mod.ACCELERATORS,
                        metavar="ACCEL", help=f"Vela accelerator ({', '.join(vela_mod.ACCELERATORS)}; "
                                              f"default {vela_mod.DEFAULT_ACCELERATOR})")
    add_split_option(parser)
    parser.add_argument("--device", metavar="DEVICE",
                        help="a device file (configs/devices/NAME.yaml, or its NAME): export at its input size "
                             "(unless --height/--width) and compile with Vela for its board (implies --vela)")
    add_run_overrides(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    request = ExportRequest(run=args.run, arch=args.arch, out=args.out, checkpoint=args.checkpoint,
                            height=args.height, width=args.width, vela=args.vela,
                            vela_config=args.vela_config, calibration_samples=args.calibration_samples,
                            overrides=list(args.overrides), split=args.split, device=args.device)
    try:
        export(request)
    except DataError as exc:
        print(f"edgeflow export: {exc}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (ExportError, ConfigError, CheckpointError, vela_mod.VelaMissing) as exc:
        print(f"edgeflow export: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except vela_mod.VelaError as exc:
        print(f"edgeflow export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, staging.Interrupted) as exc:
        return interrupted("edgeflow export", exc, args.out)
    return EXIT_OK
