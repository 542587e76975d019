"""`python -m edgeflow demo-data --layout fc2|ft3d|sintel --out DIR`: render a demo data set on purpose.

FC2 layout: `--train N --val M` samples of 384x512. FlyingThings3D layout: `--scenes N` TRAIN and
`--test-scenes M` TEST scenes of `--frames F` frames (default 540x960, the left camera; `--cameras left
right` for both). MPI-Sintel layout: `--scenes N` training scenes of `--frames F` frames (default
436x1024). `--height/--width` render smaller frames (tests) in the FT3D and Sintel layouts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgeflow.data.demo import HEIGHT, WIDTH, render_demo_dataset
from edgeflow.data.samples import DataError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK

LAYOUTS = ("fc2", "ft3d", "sintel")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgeflow demo-data",
                                     description="Render a demo data set with exact flow in the layout of "
                                                 "FlyingChairs2 (default), FlyingThings3D or MPI-Sintel.")
    parser.add_argument("--layout", choices=LAYOUTS, default="fc2", help="the data set's layout (default fc2)")
    parser.add_argument("--out", required=True, help="output folder (fc2: gets train/ and val/; ft3d, sintel: "
                                                     "the data set's top folder, data.root)")
    parser.add_argument("--train", type=int, help="fc2: number of training samples")
    parser.add_argument("--val", type=int, help="fc2: number of validation samples")
    parser.add_argument("--scenes", type=int, default=None,
                        help="ft3d: TRAIN scenes (default 2); sintel: scenes (default 2)")
    parser.add_argument("--test-scenes", type=int, default=1, help="ft3d: TEST scenes (default 1)")
    parser.add_argument("--frames", type=int, default=5, help="ft3d, sintel: frames per scene (default 5)")
    parser.add_argument("--cameras", nargs="+", choices=("left", "right"), default=["left"],
                        help="ft3d: cameras to render (default left)")
    parser.add_argument("--height", type=int, help="ft3d, sintel: frame height (default 540, 436)")
    parser.add_argument("--width", type=int, help="ft3d, sintel: frame width (default 960, 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scenes (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.layout == "fc2":
            if args.train is None or args.val is None:
                parser.error("--layout fc2 needs --train N and --val M")
            if args.height or args.width:
                parser.error("--height/--width: the fc2 layout renders 384x512")
            render_demo_dataset(args.out, args.train, args.val, args.seed)
            what = (f"{args.train} train and {args.val} val samples (seed {args.seed}, {HEIGHT}x{WIDTH}) to "
                    f"{Path(args.out) / 'train'} and {Path(args.out) / 'val'}")
        else:
            from edgeflow.data import demo_layouts

            if args.train is not None or args.val is not None:
                parser.error(f"--train/--val are for --layout fc2; {args.layout} takes --scenes and --frames")
            default = demo_layouts.FT3D_SIZE if args.layout == "ft3d" else demo_layouts.SINTEL_SIZE
            size = (args.height or default[0], args.width or default[1])
            scenes = 2 if args.scenes is None else args.scenes
            if args.layout == "ft3d":
                demo_layouts.render_ft3d(args.out, scenes=scenes, test_scenes=args.test_scenes, frames=args.frames,
                                         seed=args.seed, size=size, cameras=tuple(dict.fromkeys(args.cameras)))
                cameras = " and ".join(dict.fromkeys(args.cameras))
                what = (f"FlyingThings3D layout: {scenes} TRAIN + {args.test_scenes} TEST scenes of {args.frames} "
                        f"frames ({size[0]}x{size[1]}, {cameras} camera) to {args.out}")
            else:
                demo_layouts.render_sintel(args.out, scenes=scenes, frames=args.frames, seed=args.seed, size=size)
                what = f"MPI-Sintel layout: {scenes} scenes of {args.frames} frames ({size[0]}x{size[1]}) to {args.out}"
    except (DataError, ValueError, OSError) as exc:
        print(f"demo-data: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"demo-data: wrote {what} in {time.perf_counter() - start:.1f} s")
    return EXIT_OK
