"""`python -m edgeflow search`: NSGA-II search for the EPE/cost Pareto front of a run's checkpoint.

    python -m edgeflow search --run RUN --objectives epe,flops [--evaluations 800 --population 50 --seed S]
                              [--max-flops X --max-params Y] [--checkpoint best|latest|epoch-N] [--name NAME]
                              [--device DEVICE [--workers N]]

The work is edgeflow/nas/search.py; outputs go to RUN/search/<name>/ (front.csv, front.png, archs.csv,
and for a device deploy_report.csv).
"""

from __future__ import annotations

import argparse
import sys

from edgeflow.commands.options import add_run_overrides, add_split_option
from edgeflow.data.samples import DataError
from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.nas import search
from edgeflow.nas.rank import RankError
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from edgeflow.train.checkpoint import CheckpointError


def add_settings(parser: argparse.ArgumentParser) -> None:
    """The search options (shared with `python -m jobs search`)."""
    parser.add_argument("--objectives", default="epe,flops",
                        help="epe (or deployed_epe) and one or more costs of flops, params, latency, "
                             "vela_latency, vela_sram (default epe,flops); latency is the cost model's roofline "
                             "figure, vela_* are Vela's figures on --device, deployed_epe the int8 model's EPE "
                             "at the device's input size (docs/search.md)")
    parser.add_argument("--evaluations", type=int, default=800,
                        help="evaluation budget of NSGA-II, cached ones included (default 800)")
    parser.add_argument("--population", type=int, default=50, help="population size (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    parser.add_argument("--max-flops", type=float, metavar="X", help="constraint: FLOPs per sample <= X")
    parser.add_argument("--max-params", type=float, metavar="Y", help="constraint: active parameters <= Y")


def settings_of(args: argparse.Namespace) -> search.Settings:
    device = getattr(args, "device", None)
    if device is not None:  # a name or a path, as an absolute path: a job runs it from anywhere
        device = str(device_mod.resolve(device).resolve())
    return search.Settings(objectives=search.parse_objectives(args.objectives), evaluations=args.evaluations,
                           population=args.population, seed=args.seed, max_flops=args.max_flops,
                           max_params=args.max_params, device=device)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --workers (rank and search)."""
    parser.add_argument("--device", metavar="DEVICE",
                        help="a device file (configs/devices/NAME.yaml, or its NAME): Vela figures at its input "
                             "size for its board, its limits as constraints (docs/search.md)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes computing device figures (default: the CPU cores this job may use)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow search",
        description="Search the arch space of a trained supernet with NSGA-II (pymoo) for the Pareto front of "
                    "EPE against cost; every evaluation follows the evaluation protocol, evaluations already in "
                    "the run's rank results are reused, and a killed search resumes when run again. Writes "
                    "RUN/search/<name>/front.csv and front.png.")
    parser.add_argument("--run", required=True, help="run directory (<output_root>/<experiment>)")
    add_settings(parser)
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|epoch-N",
                        help="best, latest or a kept epoch-N (checkpoint.keep_every); default best")
    parser.add_argument("--name", help="folder RUN/search/NAME (default <checkpoint>_<objectives>[_<device>]_s<seed>, "
                                       "then _<split> for another split than the run selects on)")
    add_split_option(parser)
    add_device_options(parser)
    add_run_overrides(parser)
    return parser


def _err(message: str) -> None:
    print(f"edgeflow search: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = search.prepare(args.run, settings_of(args), checkpoint=args.checkpoint, name=args.name,
                              overrides=args.overrides, split=args.split, workers=args.workers)
    except DataError as exc:
        _err(str(exc))
        return EXIT_DATA_ERROR
    except (RankError, ValueError, vela_mod.VelaMissing) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    s = plan.settings
    print(f"search {plan.name}: NSGA-II, objectives {','.join(s.objectives)}, {s.evaluations} evaluations, "
          f"population {s.population}, seed {s.seed}, split {plan.key_record['split']}; {len(plan.cache)} results "
          f"of checkpoint {plan.key.checkpoint} on it already in the run", flush=True)
    if plan.device is not None and plan.figures is not None:
        d = plan.device
        print(f"device {d.name}: {d.accelerator}, {d.system_config} / {d.memory_mode}, input "
              f"{d.input_size[0]}x{d.input_size[1]}, limits {d.limits.record()}; {len(plan.figures.cached)} archs' "
              f"figures cached in {plan.figures.folder}; {plan.workers} worker(s)", flush=True)
    try:
        outcome = search.run(plan)
    except (CheckpointError, RankError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except vela_mod.VelaError as exc:
        _err(str(exc))
        return EXIT_FAILED
    print(f"{outcome.generations} generations, {outcome.n_eval} evaluations ({outcome.new_evaluations} new), "
          f"{outcome.visited} archs visited; front of {len(outcome.front)}:")
    costs = s.objectives[1:]
    print(f"  {'arch':<10}{s.objectives[0]:>14}" + "".join(f"{c:>14}" for c in costs))
    for r in outcome.front:
        print(f"  {r['code']:<10}{r[search.OBJECTIVES[s.objectives[0]]]:>14.4f}"
              + "".join(f"{r[search.OBJECTIVES[c]]:>14.6g}" for c in costs))
    if outcome.infeasible:
        print(f"{len(outcome.infeasible)} archs broke a limit (never evaluated; listed in "
              f"{plan.folder / search.ARCHS_CSV}):")
        for r in outcome.infeasible[:10]:
            print(f"  {r['code']:<10}{r['violated']}")
        if len(outcome.infeasible) > 10:
            print(f"  ... {len(outcome.infeasible) - 10} more")
    if outcome.figures is not None:
        f = outcome.figures
        print(f"device figures: {f.computed} compiled, {f.reused} reused from the cache")
    if outcome.report:
        print_report(outcome.report, plan.device.input_size if plan.device else (0, 0))
        print(f"report: {plan.folder / 'deploy_report.csv'}")
    print(f"front: {plan.folder / search.FRONT_CSV}\nplot:  {plan.folder / search.FRONT_PNG}")
    if outcome.stopped_by:
        print(f"stopped by {outcome.stopped_by}; run the same command again to continue")
        return EXIT_PREEMPTED
    return EXIT_OK


def print_report(rows: list[dict], size: tuple[int, int]) -> None:
    """The deployment report: the front and the baseline, EPEs and device figures side by side."""
    h, w = size
    print(f"deployment at {h}x{w}:")
    print(f"  {'arch':<10}{'role':<16}{'EPE f32':>9}{f'f32 {h}x{w}':>14}{f'int8 {h}x{w}':>14}{'ms':>9}"
          f"{'fps':>8}{'SRAM KiB':>10}{'flash KiB':>11}{'CPU ops':>8}  limits")
    for r in rows:
        print(f"  {r['code']:<10}{r['role']:<16}{r['epe_train_f32']:>9.4f}{r['epe_deploy_f32']:>14.4f}"
              f"{r['epe_deploy_int8']:>14.4f}{r['vela_inference_ms']:>9.2f}{r['vela_fps']:>8.2f}"
              f"{r['vela_sram_kib']:>10.1f}{r['vela_flash_kib']:>11.1f}{r['vela_cpu_ops']:>8d}  "
              f"{r['violated'] or 'met'}")
